"""Verify webhook requests with the official Standard Webhooks Python library
(pip install standardwebhooks): an implementation independent of Switchboard's.

stdin: {"secret": "whsec_...", "requests": [{"headers": {...}, "body": "..."}]}
stdout: {"checked": n, "verified": m}
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

req = json.load(sys.stdin)
wh = Webhook(req["secret"])
verified = 0
for r in req["requests"]:
    try:
        wh.verify(r["body"], r["headers"])
        verified += 1
    except WebhookVerificationError:
        pass
json.dump({"checked": len(req["requests"]), "verified": verified}, sys.stdout)
