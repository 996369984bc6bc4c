"""Every ClickHouse migration, and the shapes of the analytics queries, on a current
ClickHouse: chdb embeds one in-process (26.9 in chdb 4.4), so this needs no server.
The local server is Debian's 18.16, which the e2e tests use; this keeps the same DDL
valid on today's releases too.

usage: python deploy/clickhouse_current.py   (from the repository root)
"""
import glob
import tempfile

import chdb
import chdb.session

s = chdb.session.Session(tempfile.mkdtemp())
s.query("CREATE DATABASE IF NOT EXISTS sb")


def statements(path):
    """As the sink splits them: `;` at a line's end ends one; `--` lines are comments."""
    cur = []
    for line in open(path):
        t = line.strip()
        if not t or t.startswith("--"):
            continue
        cur.append(line)
        if t.endswith(";"):
            yield "".join(cur).strip().rstrip(";").replace("{db}", "sb")
            cur = []


for path in sorted(glob.glob("sinks/migrations/clickhouse/*.sql")):
    n = 0
    for stmt in statements(path):
        s.query(stmt)
        n += 1
    print(f"{path}: {n} statements")

# One read-without-delivered event that reaches every view, then each rollup read the
# way the gateway reads it (sinks/src/ch/credit.rs, gateway/src/api/analytics/report.rs).
s.query("""INSERT INTO sb.events (event_id, event_type, status, bsp, tenant_id,
  business_number, customer_id, wamid, occurred_at, occurred_at_ms, received_at,
  received_at_ms, stored_at_ms, country, stages, credits, latency_ms, read_latency_ms,
  pricing_category, pricing_type, pricing_model, billable, template_name,
  template_language, error_code, error_title, message_type, sent_at_ms)
VALUES ('e1', 'message.status', 'read', 'meta', 't1', '+15550001', '+919812345670',
  'w1', toDateTime(1764786600), 1764786600000, toDateTime(1764786600), 1764786600000,
  0, 'IN', 23, 22, 1500, 1500, 'marketing', 'regular', 'PMP', 1, 'order_update',
  'en_US', '', '', 'text', 1764786598500)""")

tz = "'Asia/Kolkata'"
checks = {
    "funnel, day in Kolkata": (
        f"SELECT toUnixTimestamp(toStartOfDay(toTimeZone(slot, {tz}))) AS period_start, "
        f"formatDateTime(toStartOfDay(toTimeZone(slot, {tz})), '%Y-%m-%d', {tz}) AS period, "
        "sum(sent_messages), sum(delivered_messages), sum(read_messages) FROM sb.funnel_slots "
        "WHERE tenant_id = 't1' GROUP BY period_start, period",
        "1764786600,\"2025-12-04\",0,1,1",
    ),
    "templates, month": (
        f"SELECT formatDateTime(toDateTime(toStartOfMonth(toTimeZone(slot, {tz})), {tz}), '%Y-%m', {tz}) AS period, "
        "template_name, template_language, sum(read_messages) FROM sb.funnel_slots GROUP BY period, template_name, template_language",
        "\"2025-12\",\"order_update\",\"en_US\",1",
    ),
    "billing": (
        "SELECT pricing_category, pricing_type, country, sum(priced_messages), sum(billable_messages) FROM sb.billing_slots "
        "GROUP BY pricing_category, pricing_type, country",
        "\"marketing\",\"regular\",\"IN\",1,1",
    ),
    "latency, hour": (
        f"SELECT formatDateTime(toStartOfHour(toTimeZone(slot, {tz})), '%Y-%m-%dT%H:00', {tz}) AS period, "
        "countIfMerge(delivered_messages), quantilesIfMerge(0.5, 0.9, 0.99)(read_ms) FROM sb.latency_slots GROUP BY period",
        "\"2025-12-04T00:00\",1,\"[1500,1500,1500]\"",
    ),
    "message state": (
        "SELECT wamid, groupBitOrMerge(reached), minIfMerge(sent_at_ms), anyIfMerge(template_name) "
        "FROM sb.message_state WHERE wamid IN ('w1') GROUP BY wamid, bsp",
        "\"w1\",23,1764786598500,\"order_update\"",
    ),
}
bad = 0
for name, (sql, want) in checks.items():
    got = str(s.query(sql, "CSV")).strip()
    ok = got == want
    bad += not ok
    print(f"{'ok' if ok else 'FAIL'}  {name}: {got}" + ("" if ok else f" (want {want})"))
print(f"ClickHouse {s.query('SELECT version()', 'CSV')}".strip())
raise SystemExit(1 if bad else 0)
