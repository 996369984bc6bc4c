//! Opening a media URL a webhook gave: the BSP's own API origin through the router's BSP
//! client with the tenant's credentials, anything else through the address guard without
//! them; redirects followed by hand, each hop judged again (Twilio answers its media URL
//! with a redirect to a signed CDN URL that must not see the account's token).

use reqwest::header::LOCATION;
use serde_json::{Map, Value};
use switchboard_connectors::media::{same_origin, transport, url_auth, FetchError};
use switchboard_connectors::Bsp;
use switchboard_runtime::netguard::{check_url, AllowList, Url};

const MAX_REDIRECTS: usize = 3;

/// The two clients a media URL may go through.
#[derive(Clone)]
pub struct UrlClients {
    /// The router's BSP client: no redirects, the operator's proxy.
    pub bsp: reqwest::Client,
    /// Guarded: public addresses (and the operator's allowed networks) only.
    pub guarded: reqwest::Client,
    pub allow: AllowList,
}

impl UrlClients {
    /// The answer at the end of `first`'s redirects (not yet read).
    pub async fn open(
        &self,
        bsp: Bsp,
        base_url: &str,
        first: &str,
        creds: Option<&Map<String, Value>>,
    ) -> Result<reqwest::Response, FetchError> {
        let mut url = Url::parse(first)
            .map_err(|e| FetchError::UrlRefused(format!("{first:?} is not a URL: {e}")))?;
        for _ in 0..=MAX_REDIRECTS {
            let req = if same_origin(&url, base_url) {
                let none = Map::new();
                let auth = url_auth(bsp, base_url, &url, creds.unwrap_or(&none))?;
                auth.apply(self.bsp.get(url.clone()))
            } else {
                let checked = check_url(url.as_str(), &self.allow)
                    .map_err(|e| FetchError::UrlRefused(format!("{url}: {e}")))?;
                self.guarded.get(checked)
            };
            let resp = req.send().await.map_err(|e| {
                // The guarded resolver's refusal is policy, not an outage.
                if format!("{e:?}").contains("blocked_address") {
                    FetchError::UrlRefused(format!("{url}: no allowed public address"))
                } else {
                    transport("media download", e)
                }
            })?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    FetchError::Gone(format!(
                        "{url}: HTTP {} without a usable Location",
                        resp.status()
                    ))
                })?;
            url = next;
        }
        Err(FetchError::Gone(format!(
            "{first}: more than {MAX_REDIRECTS} redirects"
        )))
    }
}
