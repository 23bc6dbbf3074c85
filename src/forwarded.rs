//! Who the client is when the gateway sits behind a load balancer or an
//! ingress (`[server] trusted_proxies`).
//!
//! Behind one, the TCP peer is the balancer and every user shares its
//! address. A peer in `trusted_proxies` is believed about the hops before
//! it: the client is the right-most address in `X-Forwarded-For` (or, when
//! there is none, in `Forwarded: for=`, RFC 7239) that is not itself a
//! trusted proxy. Entries left of that one were written by whoever sent the
//! request and prove nothing. A peer that is not trusted is the client, and
//! whatever forwarding headers it sent are ignored.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use ipnet::IpNet;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// The client as the gateway states it upstream and counts it.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: IpAddr,
    /// The `X-Forwarded-For` to send upstream: the client's address, or a
    /// trusted proxy's chain with the peer appended.
    pub forwarded_for: HeaderValue,
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32`, `/128`).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("{text:?} is not an address or a CIDR block (like \"10.0.0.0/8\" or \"fd00::/8\")")
    })
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { nets }
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer` (canonical, and `peer_value` as a header
    /// value), judged from the request's headers.
    pub fn client(&self, peer: IpAddr, peer_value: &HeaderValue, headers: &HeaderMap) -> Client {
        if !self.trusts(peer) {
            return Client {
                ip: peer,
                forwarded_for: peer_value.clone(),
            };
        }
        let chain = chain_of(headers);
        let mut client = peer;
        for entry in chain.iter().rev() {
            match entry {
                // Garbage from the hop before: believe nothing further left.
                None => break,
                Some(ip) => {
                    client = *ip;
                    if !self.trusts(*ip) {
                        break;
                    }
                }
            }
        }
        let mut forwarded_for = String::new();
        for entry in &chain {
            match entry {
                Some(ip) => forwarded_for.push_str(&ip.to_string()),
                None => forwarded_for.push_str("unknown"),
            }
            forwarded_for.push_str(", ");
        }
        forwarded_for.push_str(peer_value.to_str().expect("an address is ASCII"));
        Client {
            ip: client,
            forwarded_for: HeaderValue::from_str(&forwarded_for)
                .expect("addresses and commas are a valid header value"),
        }
    }
}

/// The elements of every value of a comma-separated list header, each
/// `None` if it is not text. Split as bytes: a client's non-ASCII bytes
/// spoil its own element, never the ones a proxy appends after it.
fn elements<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = Option<&'h str>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|element| std::str::from_utf8(element).ok())
}

/// The addresses the earlier hops named, left to right (`None` for an
/// entry that is not an address). `X-Forwarded-For` wins over `Forwarded`.
fn chain_of(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<Option<IpAddr>> = elements(headers, &X_FORWARDED_FOR)
        .map(|element| element.and_then(parse_node))
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    elements(headers, &FORWARDED)
        .map(|element| {
            element?
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')))
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return inside.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| parse_net(n).unwrap()).collect())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// `client` for a peer given as text, the way the pipeline calls it.
    fn client_of(proxies: &TrustedProxies, peer: &str, headers: &HeaderMap) -> Client {
        let peer = ip(peer).to_canonical();
        let value = HeaderValue::from_str(&peer.to_string()).unwrap();
        proxies.client(peer, &value, headers)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        let claims = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        let client = client_of(&none, "10.1.1.1", &claims);
        assert_eq!(client.ip, ip("10.1.1.1"));
        assert_eq!(client.forwarded_for, "10.1.1.1");
        let other = proxies(&["192.168.0.0/16"]);
        assert_eq!(client_of(&other, "10.1.1.1", &claims).ip, ip("10.1.1.1"));
    }

    /// Found by the `forwarded` fuzz target: one byte past ASCII in the
    /// client's own `X-Forwarded-For` made the whole header unreadable,
    /// and the trusted balancer's address became the client's.
    #[test]
    fn a_clients_non_ascii_bytes_spoil_only_its_own_entry() {
        let lb = proxies(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_bytes(b"\x8fY, 203.0.113.9").unwrap(),
        );
        let client = client_of(&lb, "10.0.0.2", &h);
        assert_eq!(client.ip, ip("203.0.113.9"));
        assert_eq!(client.forwarded_for, "unknown, 203.0.113.9, 10.0.0.2");
        let mut h = HeaderMap::new();
        h.append(
            FORWARDED.clone(),
            HeaderValue::from_bytes(b"for=\"\xc3\xa9\", for=203.0.113.9").unwrap(),
        );
        assert_eq!(client_of(&lb, "10.0.0.2", &h).ip, ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_peer_names_the_right_most_untrusted_hop() {
        let lb = proxies(&["10.0.0.0/8"]);
        // The client wrote "6.6.6.6" itself; the balancer appended the real address.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9")]);
        let client = client_of(&lb, "10.0.0.2", &h);
        assert_eq!(client.ip, ip("203.0.113.9"));
        assert_eq!(client.forwarded_for, "6.6.6.6, 203.0.113.9, 10.0.0.2");
        // Two trusted hops, and the chain split over two headers.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.4"),
            ("x-forwarded-for", "10.9.9.9"),
        ]);
        assert_eq!(client_of(&lb, "10.0.0.2", &h).ip, ip("198.51.100.4"));
        // Garbage right of the client: stop at the hop that passed it on.
        let h = headers(&[("x-forwarded-for", "198.51.100.4, not-an-ip, 10.9.9.9")]);
        assert_eq!(client_of(&lb, "10.0.0.2", &h).ip, ip("10.9.9.9"));
        // No header at all: the balancer itself.
        assert_eq!(
            client_of(&lb, "10.0.0.2", &HeaderMap::new()).ip,
            ip("10.0.0.2")
        );
        // Only trusted hops: the left-most of them.
        let h = headers(&[("x-forwarded-for", "10.3.3.3, 10.4.4.4")]);
        assert_eq!(client_of(&lb, "10.0.0.2", &h).ip, ip("10.3.3.3"));
    }

    #[test]
    fn ipv6_and_the_forwarded_header() {
        let lb = proxies(&["fd00::/8", "127.0.0.1"]);
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\";by=x",
        )]);
        let client = client_of(&lb, "fd00::5", &h);
        assert_eq!(client.ip, ip("2001:db8:cafe::17"));
        assert_eq!(
            client.forwarded_for,
            "192.0.2.60, 2001:db8:cafe::17, fd00::5"
        );
        let h = headers(&[("x-forwarded-for", "2001:db8::9, [fd00::1]:80")]);
        assert_eq!(client_of(&lb, "::ffff:127.0.0.1", &h).ip, ip("2001:db8::9"));
        assert_eq!(parse_node("192.0.2.1:4711"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("unknown"), None);
        assert_eq!(parse_node("[::1]x"), None);
    }

    #[test]
    fn nets_parse_with_clear_errors() {
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("lb.internal").unwrap_err().contains("CIDR"));
    }
}
