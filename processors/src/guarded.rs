//! HTTP to addresses someone else chose (client endpoints, media URLs in webhooks): a
//! client that follows no redirects, ignores proxies, and never connects to an address
//! the allow-list forbids, checked on every resolution (DNS can change after a URL was
//! checked).

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use switchboard_runtime::netguard::AllowList;

/// A client builder with the guard in place; callers add timeouts and pool settings.
pub fn builder(allow: &AllowList) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver(allow.clone())))
}

/// A resolver that drops addresses the allow-list forbids, so a name that resolves to a
/// private address (now, or after a DNS change) is never connected to.
struct GuardedResolver(AllowList);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow.permits(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    format!("blocked_address: {host} has no allowed public address").into(),
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
