//! Outbound safety for client endpoints: an endpoint URL is tenant input, so without a
//! guard a tenant could make Switchboard call its own network (cloud metadata at
//! 169.254.169.254, the database, the admin API). Addresses that are not globally
//! routable are refused unless an operator allow-lists them (tests allow loopback).
//!
//! URLs are parsed with the `url` crate, the WHATWG parser reqwest itself uses, so every
//! spelling of an address (`10.1`, `0x0a.0.0.1`, `10.0.0.1.`, `169.254.43518`) is judged
//! as the address reqwest would connect to. IPv6 forms that carry an IPv4 address
//! (mapped, compatible, 6to4, NAT64) are judged as that address; Teredo is refused.
//!
//! The gateway checks URLs at creation; the fan-out checks them again at delivery (reqwest
//! connects to a literal address without resolving it) and checks every address a name
//! resolves to, because DNS can change after creation (rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::Host;
pub use url::Url;

/// Networks an operator allows despite being private (`SWITCHBOARD_ENDPOINT_ALLOW_NETS`).
#[derive(Debug, Clone, Default)]
pub struct AllowList(Vec<IpNet>);

impl AllowList {
    /// Comma-separated CIDRs or single addresses, e.g. `127.0.0.0/8,10.1.2.3`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not a CIDR or an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    /// May a delivery connect to `ip`?
    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.lists(ip)
    }

    /// Is `ip` (or the IPv4 address it carries) on the operator's list?
    fn lists(&self, ip: IpAddr) -> bool {
        let carried = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.0
            .iter()
            .any(|n| n.contains(&ip) || carried.is_some_and(|c| n.contains(&c)))
    }
}

/// Globally routable, by the IANA special-purpose registries (the subset that matters
/// for outbound calls).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) if is_teredo(v6) => false,
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 address stands for, when it is one of the forms that route to
/// IPv4 space: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, IPv4-translated
/// `::ffff:0:a.b.c.d`, 6to4 `2002:aabb:ccdd::/48` and NAT64 `64:ff9b::/96` and
/// `64:ff9b:1::/48`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    match s {
        // `::` and `::1` are judged as themselves (unspecified, loopback).
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x64, 0xff9b, 1, ..] => Some(low(s[6], s[7])),
        _ => None,
    }
}

/// Teredo (`2001::/32`) hides the client's IPv4 address; nobody serves webhooks there.
fn is_teredo(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    s[0] == 0x2001 && s[1] == 0
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || s[0] == 0 // the rest of ::/16 (reserved; embedded forms are judged above)
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inside sites)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010) // ORCHID
        || s[0] == 0x3fff) // documentation (RFC 9637)
}

/// The URL, parsed as reqwest will parse it, if it may be an endpoint. Names are not
/// resolved here (the fan-out checks resolved addresses); literal addresses are.
pub fn check_url(raw: &str, allow: &AllowList) -> Result<Url, String> {
    if raw.len() > 2048 {
        return Err("the URL is longer than 2048 characters".into());
    }
    // The WHATWG parser silently drops tabs, newlines and surrounding spaces: refuse
    // them instead, so the URL stored is the URL called.
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains whitespace or control characters".into());
    }
    let url = Url::parse(raw).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            "not an absolute URL (scheme://host/...)".to_string()
        }
        e => format!("not a valid URL: {e}"),
    })?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err("the URL must be http or https".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed; use custom headers".into());
    }
    let ip = check_host(&url, allow)?;
    if url.scheme() == "http" && !ip.is_some_and(|ip| allow.lists(ip)) {
        return Err("plain http is only allowed for allow-listed addresses; use https".into());
    }
    Ok(url)
}

/// Whether a delivery may call `url`'s host, as far as the URL alone tells: literal
/// addresses and `localhost` names are judged now; other names when they resolve. Returns
/// the address the host stands for, if it is one.
pub fn check_host(url: &Url, allow: &AllowList) -> Result<Option<IpAddr>, String> {
    let ip = match url.host() {
        None => return Err("the URL has no host".into()),
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            if name == "localhost" || name.ends_with(".localhost") {
                let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
                if !allow.permits(lo) {
                    return Err("localhost is not publicly reachable".into());
                }
                return Ok(Some(lo));
            } else if !name.contains('.') {
                return Err(format!("{name:?} is not a fully qualified host name"));
            } else {
                return Ok(None);
            }
        }
    };
    if !allow.permits(ip) {
        return Err(format!(
            "{ip} is a private, loopback, link-local or tunnelled address; endpoints must be publicly reachable"
        ));
    }
    Ok(Some(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "192.88.99.1",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:10.0.0.1",
            "::10.0.0.1",                           // IPv4-compatible
            "::127.0.0.1",                          // IPv4-compatible loopback
            "2002:a00:1::",                         // 6to4 of 10.0.0.1
            "2002:a9fe:a9fe::1",                    // 6to4 of the metadata address
            "2002:7f00:1::",                        // 6to4 of 127.0.0.1
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "64:ff9b::a00:1",                       // NAT64 of 10.0.0.1
            "64:ff9b:1::a00:1",
            "100::1",
            "2001:db8::1",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1", // 6to4 of 8.8.8.8
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    /// Every spelling WHATWG parsing turns into a private address is refused: the guard
    /// sees the address reqwest will connect to.
    #[test]
    fn every_spelling_of_a_private_address_is_refused() {
        let none = AllowList::default();
        for bad in [
            "https://10.0.0.1/",
            "https://10.1/",
            "https://0x0a.0.0.1/",
            "https://0x0A000001/",
            "https://012.0.0.1/",
            "https://167772161/",
            "https://10.0.0.1./",
            "https://169.254.43518/",
            "https://0xa9.0xfe.0xa9.0xfe/latest/meta-data",
            "https://127.1/",
            "https://0/",
            "https://[::ffff:a00:1]/",
            "https://[::a00:1]/",
            "https://[2002:a00:1::]/",
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[fe80::1%25eth0]/",
            "HTTPS://LOCALHOST./",
            "https://app.localhost/",
        ] {
            let e = check_url(bad, &none).expect_err(bad);
            assert!(
                e.contains("publicly reachable") || e.contains("not a valid URL"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn urls_are_checked_at_creation() {
        let none = AllowList::default();
        let ok = check_url("https://hooks.example.com/wa?x=1", &none).unwrap();
        assert_eq!(ok.host_str(), Some("hooks.example.com"));
        assert!(check_url("https://8.8.8.8/", &none).is_ok());
        assert!(check_url("https://[2606:4700::1111]:8443/", &none).is_ok());
        for (bad, why) in [
            ("ftp://example.com/", "http or https"),
            ("example.com/hook", "absolute"),
            ("https://user:pw@example.com/", "credentials"),
            ("https://user@example.com/", "credentials"),
            ("https://127.0.0.1:8080/", "private"),
            ("https://[::1]/", "private"),
            ("https://169.254.169.254/latest/meta-data", "private"),
            ("https://localhost/", "localhost"),
            ("https://intranet/", "fully qualified"),
            ("https://intranet./", "fully qualified"),
            ("http://example.com/", "https"),
            ("https://example.com:99999/", "port"),
            ("https://exa mple.com/", "whitespace"),
            ("https://exa\tmple.com/", "whitespace"),
            ("https:///path", "fully qualified"),
        ] {
            let e = check_url(bad, &none).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let lo = AllowList::parse("127.0.0.0/8, ::1").unwrap();
        assert!(check_url("http://127.0.0.1:18091/e/a", &lo).is_ok());
        assert!(check_url("http://localhost:18091/e/a", &lo).is_ok());
        assert!(check_url("http://[::ffff:127.0.0.1]:18091/e/a", &lo).is_ok());
        assert!(check_url("http://10.0.0.1/", &lo).is_err());
        assert!(check_url("http://10.1/", &lo).is_err());
        assert!(AllowList::parse("10.0.0.0/33").is_err());
    }
}
