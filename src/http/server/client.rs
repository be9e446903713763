//! Who the client is: its address and whether it reached us over TLS, as the limits, the
//! logs and the session cookie see it.
//!
//! Behind a reverse proxy every connection comes from the proxy, so one attacker would lock
//! everyone out and the logs would name only the proxy. `--trusted_proxies` names the peers
//! whose forwarding headers are believed; from anyone else those headers are ignored, so a
//! client cannot choose its own address. Only the header the proxies write
//! (`--trusted_proxy_header`) is read: a proxy passes the other through as the client sent
//! it (an attack review chose its own address with a `Forwarded` header behind a proxy that
//! appends to `X-Forwarded-For`).

use std::net::IpAddr;

use poem::Request;
use poem::http::HeaderMap;
use poem::http::uri::Scheme;

pub use crate::config::{Cidr, ProxyHeader};

/// The client of a request, resolved once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address (through trusted proxies).
    pub ip: IpAddr,
    /// Whether the client's own connection was TLS (directly, or to a trusted proxy).
    pub https: bool,
}

/// `::ffff:1.2.3.4` as `1.2.3.4`: one client, one key.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The block one client is counted by: an IPv4 address as is, an IPv6 address by its /64 (what
/// one machine is usually given), so a client cannot dodge a limit by changing the low bits.
pub fn block(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

/// The network `ip` is likely one of many addresses of: its IPv4 /24, its IPv6 /48 (what
/// one site or one cloud customer is commonly given). The password-check line ranks by it
/// too, so that a flood from many addresses of one network does not rank as fresh.
pub fn network(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[6..].fill(0);
            IpAddr::from(octets)
        }
        IpAddr::V4(v4) => {
            let mut octets = v4.octets();
            octets[3] = 0;
            IpAddr::from(octets)
        }
    }
}

/// The peers whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// `--trusted_proxies`.
    pub cidrs: Vec<Cidr>,
    /// `--trusted_proxy_header`.
    pub header: ProxyHeader,
}

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that arrived from `peer` over `tls` with `headers`.
    pub fn client(&self, peer: IpAddr, tls: bool, headers: &HeaderMap) -> Client {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return Client {
                ip: peer,
                https: tls,
            };
        }
        let (hops, protos) = forwarded_chain(headers, self.header);
        // The chain grows rightwards, one hop per proxy: the rightmost address no trusted
        // proxy vouches for is the client. Anything left of it is the client's own claim.
        let mut client = Client {
            ip: peer,
            https: tls,
        };
        for (i, hop) in hops.iter().enumerate().rev() {
            client.ip = canonical(*hop);
            if let Some(proto) = protos.get(i).and_then(|p| p.as_deref()) {
                client.https = proto.eq_ignore_ascii_case("https");
            }
            if !self.trusts(client.ip) {
                break;
            }
        }
        if hops.is_empty()
            && let Some(proto) = protos.last().and_then(|p| p.as_deref())
        {
            client.https = proto.eq_ignore_ascii_case("https");
        }
        client
    }
}

/// The hops of `Forwarded` (RFC 7239) or of `X-Forwarded-For`, as `header` says, with the
/// protocol each hop was reached by where known (`X-Forwarded-Proto` applies to the last).
fn forwarded_chain(headers: &HeaderMap, header: ProxyHeader) -> (Vec<IpAddr>, Vec<Option<String>>) {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if header == ProxyHeader::Forwarded {
        let mut hops = Vec::new();
        let mut protos = Vec::new();
        for element in values("forwarded") {
            let mut ip = None;
            let mut proto = None;
            for pair in element.split(';') {
                let Some((k, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"');
                match k.trim().to_ascii_lowercase().as_str() {
                    "for" => ip = parse_node(v),
                    "proto" => proto = Some(v.to_owned()),
                    _ => {}
                }
            }
            // An obfuscated or unknown node ends what can be believed: stop at it.
            let Some(ip) = ip else {
                hops.clear();
                protos.clear();
                continue;
            };
            hops.push(ip);
            protos.push(proto);
        }
        return (hops, protos);
    }
    let mut hops = Vec::new();
    for hop in values("x-forwarded-for") {
        match parse_node(&hop) {
            Some(ip) => hops.push(ip),
            None => hops.clear(),
        }
    }
    let mut protos = vec![None; hops.len()];
    let proto = values("x-forwarded-proto").pop();
    match protos.last_mut() {
        Some(last) => *last = proto,
        None => protos.push(proto),
    }
    (hops, protos)
}

/// `1.2.3.4`, `1.2.3.4:5`, `[::1]`, `[::1]:5` or `::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    node.rsplit_once(':')?.0.parse().ok()
}

/// Resolves [`Client`] once and keeps it in the request's extensions, when proxies are
/// trusted; without them [`of`] reads the TCP peer itself and the request stays unallocated.
pub fn resolve(req: &mut Request, trusted: &TrustedProxies) {
    if trusted.cidrs.is_empty() {
        return;
    }
    let tls = *req.scheme() == Scheme::HTTPS;
    let peer = req
        .remote_addr()
        .as_socket_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let client = trusted.client(peer, tls, req.headers());
    req.extensions_mut().insert(client);
}

/// The request's client ([`resolve`] ran), or its TCP peer when it did not.
pub fn of(req: &Request) -> Client {
    req.extensions()
        .get::<Client>()
        .copied()
        .unwrap_or_else(|| Client {
            ip: req
                .remote_addr()
                .as_socket_addr()
                .map_or(IpAddr::from([0, 0, 0, 0]), |a| canonical(a.ip())),
            https: *req.scheme() == Scheme::HTTPS,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                poem::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_is_counted_by_its_ipv4_address_or_ipv6_64() {
        assert_eq!(block(ip("1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(block(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(block(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn a_network_is_an_ipv4_24_or_an_ipv6_48() {
        assert_eq!(network(ip("1.2.3.4")), ip("1.2.3.0"));
        assert_eq!(network(ip("::ffff:1.2.3.4")), ip("1.2.3.0"));
        assert_eq!(network(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1::"));
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.2.3.4")));
        assert!(c.contains(ip("::ffff:10.2.3.4")));
        assert!(!c.contains(ip("11.0.0.1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nope", "1.2.3.4/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_peers() {
        let trusted = TrustedProxies {
            cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            header: ProxyHeader::XForwardedFor,
        };
        let rfc_trusted = TrustedProxies {
            header: ProxyHeader::Forwarded,
            ..trusted.clone()
        };
        let spoof = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            trusted.client(ip("8.8.8.8"), false, &spoof),
            Client {
                ip: ip("8.8.8.8"),
                https: false
            },
            "an untrusted peer's headers are ignored"
        );
        // The client claims 6.6.6.6; the proxy appended the real peer 1.2.3.4.
        let chained = headers(&[
            ("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            trusted.client(ip("10.0.0.1"), false, &chained),
            Client {
                ip: ip("1.2.3.4"),
                https: true
            }
        );
        let rfc = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::1]:443\";proto=https",
        )]);
        assert_eq!(
            rfc_trusted.client(ip("10.0.0.1"), false, &rfc),
            Client {
                ip: ip("2001:db8::1"),
                https: true
            }
        );
        // Garbage and `unknown` hops end what can be believed: the client is the hop after
        // them, never a name the client made up.
        let garbage = headers(&[("x-forwarded-for", "not-an-ip, 1.2.3.4, <script>")]);
        assert_eq!(
            trusted.client(ip("10.0.0.1"), false, &garbage).ip,
            ip("10.0.0.1"),
            "the last hop is garbage: nothing after the proxy is believed"
        );
        let unknown = headers(&[("forwarded", "for=unknown, for=5.6.7.8")]);
        assert_eq!(
            rfc_trusted.client(ip("10.0.0.1"), false, &unknown).ip,
            ip("5.6.7.8")
        );
        let huge = "9.9.9.9, ".repeat(10_000) + "1.2.3.4";
        assert_eq!(
            trusted
                .client(
                    ip("10.0.0.1"),
                    false,
                    &headers(&[("x-forwarded-for", &huge)])
                )
                .ip,
            ip("1.2.3.4")
        );
        let none = headers(&[]);
        assert_eq!(
            trusted.client(ip("10.0.0.1"), true, &none),
            Client {
                ip: ip("10.0.0.1"),
                https: true
            }
        );
    }

    #[test]
    fn only_the_header_the_proxies_write_is_read() {
        // The proxy appended the real peer to X-Forwarded-For and passed the client's own
        // `Forwarded` (and, RFC-style, a proto) through untouched.
        let both = headers(&[
            ("forwarded", "for=198.51.100.7;proto=https"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        let xff = TrustedProxies {
            cidrs: vec!["127.0.0.1".parse().unwrap()],
            header: ProxyHeader::XForwardedFor,
        };
        assert_eq!(
            xff.client(ip("127.0.0.1"), false, &both),
            Client {
                ip: ip("203.0.113.7"),
                https: false
            }
        );
        // And the other way round: a proxy that writes `Forwarded` passes a client's
        // X-Forwarded-For and X-Forwarded-Proto through.
        let both = headers(&[
            ("forwarded", "for=203.0.113.7"),
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
        ]);
        let rfc = TrustedProxies {
            header: ProxyHeader::Forwarded,
            ..xff
        };
        assert_eq!(
            rfc.client(ip("127.0.0.1"), false, &both),
            Client {
                ip: ip("203.0.113.7"),
                https: false
            }
        );
    }
}
