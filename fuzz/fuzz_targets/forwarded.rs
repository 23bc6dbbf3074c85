//! Who the client is behind a trusted proxy: whatever a client writes in
//! its own `X-Forwarded-For` or `Forwarded`, the address the trusted proxy
//! appends is the client; from an untrusted peer the headers count for
//! nothing.
#![no_main]

use std::net::IpAddr;

use authgate::forwarded::{parse_net, TrustedProxies};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn client(proxies: &TrustedProxies, peer: &str, headers: &HeaderMap) -> IpAddr {
    let ip: IpAddr = peer.parse().unwrap();
    proxies
        .client(ip, &HeaderValue::from_str(peer).unwrap(), headers)
        .ip
}

fuzz_target!(|data: &[u8]| {
    let balancer = TrustedProxies::new(vec![parse_net("10.0.0.0/8").unwrap()]);
    // What the client sent: X-Forwarded-For, then (after a newline) Forwarded.
    let mut parts = data.splitn(2, |&b| b == b'\n');
    let xff = parts.next().unwrap_or_default();
    let forwarded = parts.next().unwrap_or_default();
    let mut sent = HeaderMap::new();
    for (name, value) in [("x-forwarded-for", xff), ("forwarded", forwarded)] {
        if value.is_empty() {
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(value) else {
            return;
        };
        sent.append(HeaderName::from_static(name), value);
    }
    // Straight from the client: its headers say nothing.
    assert_eq!(
        client(&balancer, "203.0.113.7", &sent),
        "203.0.113.7".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        client(&TrustedProxies::default(), "10.0.0.2", &sent),
        "10.0.0.2".parse::<IpAddr>().unwrap()
    );
    // Through the balancer, which appends the address it saw to the
    // client's X-Forwarded-For (as nginx's $proxy_add_x_forwarded_for does).
    let mut appended = sent.clone();
    let mut chain = xff.to_vec();
    if !chain.is_empty() {
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(b"203.0.113.7");
    appended.insert(
        HeaderName::from_static("x-forwarded-for"),
        HeaderValue::from_bytes(&chain).expect("still a header value"),
    );
    assert_eq!(
        client(&balancer, "10.0.0.2", &appended),
        "203.0.113.7".parse::<IpAddr>().unwrap(),
        "the client spoofed its address with {:?}",
        String::from_utf8_lossy(data)
    );
});
