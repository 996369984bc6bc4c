//! Outbound safety for client endpoints: an endpoint URL is tenant input, so without a
//! guard a tenant could make Switchboard call its own network (cloud metadata at
//! 169.254.169.254, the database, the admin API). Addresses that are not globally
//! routable are refused unless an operator allow-lists them (tests allow loopback).
//!
//! The gateway checks URLs at creation; the fan-out checks every address a name resolves
//! to at delivery time too, because DNS can change after creation (rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

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
        is_public(ip) || self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Globally routable, by the IANA special-purpose registries (the subset that matters
/// for outbound calls). IPv4-mapped IPv6 addresses are judged as their IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64: would reach IPv4 space unchecked
}

/// Why a URL cannot be an endpoint, if it cannot. Names are not resolved here (the
/// fan-out checks resolved addresses); IP literals are checked now.
pub fn check_url(url: &str, allow: &AllowList) -> Result<(), String> {
    let u = reqwest_free_parse(url)?;
    if u.scheme != "https" && u.scheme != "http" {
        return Err("the URL must be http or https".into());
    }
    if u.userinfo {
        return Err("credentials in the URL are not allowed; use custom headers".into());
    }
    if let Ok(ip) = u.host.trim_matches(['[', ']']).parse::<IpAddr>() {
        if !allow.permits(ip) {
            return Err(format!(
                "{ip} is a private, loopback or link-local address; endpoints must be publicly reachable"
            ));
        }
    } else if u.host.eq_ignore_ascii_case("localhost") || u.host.ends_with(".localhost") {
        if !allow.permits(IpAddr::V4(Ipv4Addr::LOCALHOST)) {
            return Err("localhost is not publicly reachable".into());
        }
    } else if !u.host.contains('.') {
        return Err(format!("{:?} is not a fully qualified host name", u.host));
    }
    if u.scheme == "http" && !u.host_is_allow_listed(allow) {
        return Err("plain http is only allowed for allow-listed addresses; use https".into());
    }
    Ok(())
}

struct Parts {
    scheme: String,
    host: String,
    userinfo: bool,
}

impl Parts {
    fn host_is_allow_listed(&self, allow: &AllowList) -> bool {
        let host = self.host.trim_matches(['[', ']']);
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        } else {
            host.parse::<IpAddr>().ok()
        };
        ip.is_some_and(|ip| allow.0.iter().any(|n| n.contains(&ip)))
    }
}

/// Just enough URL parsing for the checks above (scheme, authority), without pulling a
/// URL crate into every binary; reqwest parses the URL again before any request.
fn reqwest_free_parse(url: &str) -> Result<Parts, String> {
    if url.len() > 2048 {
        return Err("the URL is longer than 2048 characters".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains whitespace or control characters".into());
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "not an absolute URL (scheme://host/...)".to_string())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((_, hp)) => (true, hp),
        None => (false, authority),
    };
    let host = if hostport.starts_with('[') {
        hostport
            .split_once(']')
            .map(|(h, _)| format!("{h}]"))
            .ok_or_else(|| "unterminated IPv6 address".to_string())?
    } else {
        match hostport.rsplit_once(':') {
            Some((h, port)) => {
                port.parse::<u16>()
                    .map_err(|_| format!("invalid port {port:?}"))?;
                h.to_string()
            }
            None => hostport.to_string(),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("the URL has no host".into());
    }
    Ok(Parts {
        scheme: scheme.to_ascii_lowercase(),
        host: host.to_ascii_lowercase(),
        userinfo,
    })
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
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_at_creation() {
        let none = AllowList::default();
        assert!(check_url("https://hooks.example.com/wa?x=1", &none).is_ok());
        for (bad, why) in [
            ("ftp://example.com/", "http or https"),
            ("example.com/hook", "absolute"),
            ("https://user:pw@example.com/", "credentials"),
            ("https://127.0.0.1:8080/", "private"),
            ("https://[::1]/", "private"),
            ("https://169.254.169.254/latest/meta-data", "private"),
            ("https://localhost/", "localhost"),
            ("https://intranet/", "fully qualified"),
            ("http://example.com/", "https"),
            ("https://example.com:99999/", "port"),
            ("https://exa mple.com/", "whitespace"),
        ] {
            let e = check_url(bad, &none).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let lo = AllowList::parse("127.0.0.0/8, ::1").unwrap();
        assert!(check_url("http://127.0.0.1:18091/e/a", &lo).is_ok());
        assert!(check_url("http://localhost:18091/e/a", &lo).is_ok());
        assert!(check_url("http://10.0.0.1/", &lo).is_err());
        assert!(AllowList::parse("10.0.0.0/33").is_err());
    }
}
