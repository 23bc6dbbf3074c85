//! Header rules for both directions of the proxy.

use http::header::{self, HeaderName, HeaderValue};
use http::uri::Authority;
use http::HeaderMap;

use crate::config::Identity;
use crate::users::User;

/// Hop-by-hop headers: RFC 9110 §7.6.1 names Connection, Proxy-Connection,
/// Keep-Alive, TE, Transfer-Encoding and Upgrade; Trailer and the
/// Proxy-Authenticate/-Authorization pair are per-hop in RFC 2616 §13.5.1
/// and still treated so by proxies. Whatever `Connection` lists is per-hop too.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers some upstream frameworks read to route or re-interpret a request
/// (SPEC §6): honouring them would let a client reach a path or method the
/// policy never judged.
static ROUTING_OVERRIDES: [HeaderName; 5] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Client-sent claims about the connection; the gateway states its own.
static FORWARDING_CLAIMS: [HeaderName; 7] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-real-ip"),
];

/// Removes every header whose name `drop` picks. One pass over the names
/// that are there (a handful, usually none to drop) instead of one hash
/// lookup per name that might be: this runs twice per proxied request.
fn remove_where(headers: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    if !headers.keys().any(&drop) {
        return;
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| drop(n)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Removes the hop-by-hop headers, those named in `Connection` first.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_connection_listed(headers);
    remove_where(headers, |name| HOP_BY_HOP.contains(name));
}

/// Removes the headers `Connection` names (it stays, for the caller).
fn remove_connection_listed(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            // Split as bytes: a token past ASCII is no header name, but
            // must not hide the names beside it.
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
}

/// True for `X-Auth-*` in any case and with `_` for `-`, which CGI-style
/// upstreams read as the same header.
fn is_identity_like(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 7
        && b[0].eq_ignore_ascii_case(&b'x')
        && matches!(b[1], b'-' | b'_')
        && b[2..6].eq_ignore_ascii_case(b"auth")
        && matches!(b[6], b'-' | b'_')
}

/// True when `name` is `configured` with any `-` written as `_` (both are
/// lower case, as header names are kept).
fn same_but_underscores(name: &str, configured: &str) -> bool {
    name.len() == configured.len()
        && name
            .bytes()
            .zip(configured.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// Readies a client's headers for the upstream: hop-by-hop headers and every
/// client claim the gateway itself is the authority on are removed, then the
/// gateway's own statements are set. Removal comes first so that a header
/// named in `Connection` can never knock out one the gateway sets.
pub fn prepare_request(
    headers: &mut HeaderMap,
    identity: &Identity,
    forwarded_for: HeaderValue,
    host: Option<&HeaderValue>,
    user: Option<(&User, &[(HeaderName, HeaderValue)])>,
    own_cookies: &[&str],
) {
    remove_connection_listed(headers);
    strip_cookies(headers, own_cookies);
    // Hop-by-hop headers, the claims the gateway is the authority on, and
    // every spelling the upstream may read as an identity header: the
    // configured names and `X-Auth-*`, each also with `_` for `-`.
    remove_where(headers, |name| {
        HOP_BY_HOP.contains(name)
            || ROUTING_OVERRIDES.contains(name)
            || FORWARDING_CLAIMS.contains(name)
            || {
                let name = name.as_str();
                is_identity_like(name)
                    || same_but_underscores(name, identity.user_header.as_str())
                    || same_but_underscores(name, identity.roles_header.as_str())
                    || identity
                        .claim_headers
                        .iter()
                        .any(|claim| same_but_underscores(name, claim.as_str()))
                    || identity
                        .assertion
                        .as_ref()
                        .is_some_and(|a| same_but_underscores(name, a.header.as_str()))
            }
    });

    headers.insert(HeaderName::from_static("x-forwarded-for"), forwarded_for);
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("https"),
    );
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
        headers.insert(header::HOST, host.clone());
    }
    if let Some((user, claims)) = user {
        headers.insert(identity.user_header.clone(), user.name_header.clone());
        headers.insert(identity.roles_header.clone(), user.roles_header.clone());
        for (name, value) in claims {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Every cookie under this prefix is the gateway's, whatever the configured name.
const OWN_COOKIE_PREFIX: &str = crate::config::DEFAULT_COOKIE_NAME;

/// Removes the upstream's `Set-Cookie`s that name one of the gateway's own
/// cookies (SPEC §6): an app must not be able to plant a session or a login
/// token in the browser. Names compare without case, as browsers treat the
/// `__Host-` prefix. Returns how many went.
pub fn drop_own_set_cookies(headers: &mut HeaderMap, own: &[&str]) -> usize {
    let is_own = |value: &HeaderValue| {
        let name = value
            .as_bytes()
            .split(|&b| b == b'=')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        name.get(..OWN_COOKIE_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(OWN_COOKIE_PREFIX.as_bytes()))
            || own.iter().any(|o| name.eq_ignore_ascii_case(o.as_bytes()))
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(is_own) {
        return 0;
    }
    let all: Vec<HeaderValue> = match headers.entry(header::SET_COOKIE) {
        header::Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
        header::Entry::Vacant(_) => return 0,
    };
    let mut dropped = 0;
    for value in all {
        if is_own(&value) {
            dropped += 1;
        } else {
            headers.append(header::SET_COOKIE, value);
        }
    }
    dropped
}

/// `Connection: upgrade` and `Upgrade: websocket`: hop-by-hop, so removed
/// with the others, and set again for a hop that upgrades (RFC 6455 §4).
pub fn ask_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// `Refresh: 5; url=...`, which browsers follow like a redirect.
static REFRESH: HeaderName = HeaderName::from_static("refresh");

/// Headers that can carry a URL the browser follows or shows.
const URL_HEADERS: [header::HeaderName; 2] = [header::LOCATION, header::CONTENT_LOCATION];

/// Puts the client-facing origin in place of the upstream's own address in
/// `Location`, `Content-Location` and `Refresh` (SPEC §6): an app that
/// redirects to `http://127.0.0.1:3000/x` (or `//127.0.0.1:3000/x`) must
/// neither send the browser there nor tell it where the app lives. Other
/// absolute URLs are left alone. `origin` is asked only when a URL is
/// rewritten (nearly no response has one); it says `https://host[:port]`
/// for a host the config knows, or nothing, and then the URL becomes a
/// path on whatever origin the browser is on (see [`super::KnownHosts`]).
pub fn rewrite_upstream_urls(
    headers: &mut HeaderMap,
    upstream: &Authority,
    upstream_default_port: u16,
    origin: impl Fn() -> String,
) {
    for name in URL_HEADERS {
        if let Some(value) = headers.get(&name) {
            if let Some(rewritten) =
                rewrite_url(value.as_bytes(), upstream, upstream_default_port, &origin)
            {
                headers.insert(name, rewritten);
            }
        }
    }
    if let Some(value) = headers.get(&REFRESH) {
        // `5; url=http://...`: only the URL part, however it is spelt.
        let text = value.as_bytes();
        let lower = text.to_ascii_lowercase();
        if let Some(at) = lower.windows(4).position(|w| w == b"url=") {
            let (head, url) = text.split_at(at + 4);
            if let Some(rewritten) = rewrite_url(url, upstream, upstream_default_port, &origin) {
                let mut joined = head.to_vec();
                joined.extend_from_slice(rewritten.as_bytes());
                if let Ok(value) = HeaderValue::from_bytes(&joined) {
                    headers.insert(&REFRESH, value);
                }
            }
        }
    }
}

/// `url` with the upstream's scheme and authority replaced by `origin`, or
/// `None` when it does not point at the upstream. A scheme-relative URL
/// (`//host/path`) has the upstream connection's scheme.
fn rewrite_url(
    url: &[u8],
    upstream: &Authority,
    upstream_default_port: u16,
    origin: &impl Fn() -> String,
) -> Option<HeaderValue> {
    let text = std::str::from_utf8(url).ok()?.trim();
    let (default_port, rest) = match text.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => (80, rest),
            "https" => (443, rest),
            _ => return None,
        },
        None => (upstream_default_port, text.strip_prefix("//")?),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority: Authority = rest[..end].parse().ok()?;
    let same_host = authority.host().eq_ignore_ascii_case(upstream.host());
    let same_port = authority.port_u16().unwrap_or(default_port)
        == upstream.port_u16().unwrap_or(upstream_default_port);
    if !same_host || !same_port || rest[..end].contains('@') {
        return None;
    }
    let path = match &rest[end..] {
        "" => "/",
        p if p.starts_with('/') => p,
        p => return HeaderValue::from_str(&format!("{}/{p}", origin())).ok(),
    };
    HeaderValue::from_str(&format!("{}{path}", origin())).ok()
}

/// The request's cookies without the named ones, as one `Cookie` value
/// (`None` when nothing is left): what forward-auth tells the edge proxy
/// to send the app instead of the client's `Cookie`.
pub fn cookies_without(headers: &HeaderMap, names: &[&str]) -> Option<HeaderValue> {
    let mut copy = HeaderMap::new();
    for value in headers.get_all(header::COOKIE) {
        copy.append(header::COOKIE, value.clone());
    }
    rebuild_cookies(&mut copy, names);
    copy.remove(header::COOKIE)
}

/// Removes the named cookies and joins what is left into one `Cookie`
/// header (HTTP/2 clients may split cookies over several; an HTTP/1.1
/// upstream expects one, RFC 6265 §5.4).
fn strip_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), None) = (values.next(), values.next()) else {
        if headers.contains_key(header::COOKIE) {
            rebuild_cookies(headers, names);
        }
        return;
    };
    let text = first.as_bytes();
    let mentions_ours = names
        .iter()
        .any(|n| text.windows(n.len()).any(|w| w == n.as_bytes()));
    if mentions_ours {
        rebuild_cookies(headers, names);
    }
}

/// Works on bytes: another app's cookie may carry UTF-8 or other
/// non-ASCII bytes (browsers send them as they were set), and it is kept
/// as it came.
fn rebuild_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        let pairs = value
            .as_bytes()
            .split(|&b| b == b';')
            .map(<[u8]>::trim_ascii);
        for pair in pairs.filter(|p| !p.is_empty()) {
            let name = pair
                .split(|&b| b == b'=')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if names.iter().any(|n| n.as_bytes() == name) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        let value = HeaderValue::from_bytes(&kept).expect("pieces of header values");
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn upstream_addresses_in_redirects_become_the_client_facing_origin() {
        let upstream: Authority = "127.0.0.1:3000".parse().unwrap();
        let host = HeaderValue::from_static("gw.example:8443");
        let rewrite = |name: &str, value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
            rewrite_upstream_urls(&mut headers, &upstream, 80, || {
                format!("https://{}", host.to_str().unwrap())
            });
            headers.get(name).unwrap().to_str().unwrap().to_owned()
        };
        assert_eq!(
            rewrite("location", "http://127.0.0.1:3000/x?y=1#z"),
            "https://gw.example:8443/x?y=1#z"
        );
        assert_eq!(
            rewrite("location", "HTTP://127.0.0.1:3000"),
            "https://gw.example:8443/"
        );
        assert_eq!(
            rewrite("content-location", "http://127.0.0.1:3000/doc"),
            "https://gw.example:8443/doc"
        );
        assert_eq!(
            rewrite("refresh", "5; URL=http://127.0.0.1:3000/next"),
            "5; URL=https://gw.example:8443/next"
        );
        // Other places stay as they are.
        for other in [
            "https://elsewhere.example/x",
            "http://127.0.0.1:3001/x",
            "http://127.0.0.1:3000@evil.example/x",
            "/relative",
            "ftp://127.0.0.1:3000/x",
        ] {
            assert_eq!(rewrite("location", other), other);
        }
        // Default ports match the upstream's when it names them.
        let default: Authority = "app.internal:80".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("http://APP.internal/x"),
        );
        rewrite_upstream_urls(&mut headers, &default, 80, String::new);
        assert_eq!(headers[header::LOCATION], "/x");
        // Scheme-relative: the upstream connection's scheme.
        assert_eq!(
            rewrite("location", "//127.0.0.1:3000/x"),
            "https://gw.example:8443/x"
        );
        assert_eq!(
            rewrite("location", "//127.0.0.1:3001/x"),
            "//127.0.0.1:3001/x"
        );
    }
    use super::*;

    #[test]
    fn own_cookies_are_removed_and_the_rest_joined() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; __Host-authgate=SECRET"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-authgate-login=T; lang=en"),
        );
        strip_cookies(&mut headers, &["__Host-authgate", "__Host-authgate-login"]);
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE], "theme=dark; lang=en");

        let mut only_ours = HeaderMap::new();
        only_ours.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-authgate=SECRET"),
        );
        strip_cookies(&mut only_ours, &["__Host-authgate"]);
        assert!(!only_ours.contains_key(header::COOKIE));

        let mut similar = HeaderMap::new();
        similar.insert(
            header::COOKIE,
            HeaderValue::from_static("x__Host-authgate=1; __Host-authgate2=2"),
        );
        strip_cookies(&mut similar, &["__Host-authgate"]);
        assert_eq!(
            similar[header::COOKIE],
            "x__Host-authgate=1; __Host-authgate2=2"
        );
    }

    #[test]
    fn identity_like_names() {
        for name in [
            "x-auth-user",
            "x_auth_user",
            "x-auth_roles",
            "x_auth-anything",
            "X-AUTH-USER",
        ] {
            assert!(is_identity_like(name), "{name}");
        }
        for name in [
            "x-author",
            "x-auth",
            "x-authx-user",
            "auth-user",
            "x-forwarded-for",
        ] {
            assert!(!is_identity_like(name), "{name}");
        }
    }

    /// Found in the review of issue 30 (the `forwarded` fuzz target's
    /// flaw, in another list header): one non-ASCII token in `Connection`
    /// made the whole value name nothing.
    #[test]
    fn a_non_ascii_token_does_not_hide_the_names_beside_it() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-hop, \xc3\xa9").unwrap(),
        );
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert!(!headers.contains_key("x-hop"));
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn connection_named_headers_go_and_gateway_values_stay() {
        let identity = Identity {
            user_header: HeaderName::from_static("x-auth-user"),
            roles_header: HeaderName::from_static("x-auth-roles"),
            claim_headers: vec![HeaderName::from_static("x-email")],
            assertion: None,
        };
        let mut headers = HeaderMap::new();
        // A client's copy of a header a provider's claims fill, in either spelling.
        headers.insert("x-email", HeaderValue::from_static("ceo@example.com"));
        headers.insert("x_email", HeaderValue::from_static("ceo@example.com"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-forwarded-for, x-custom"),
        );
        headers.insert("x-custom", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        headers.insert("x_auth_user", HeaderValue::from_static("root"));
        headers.insert("x-original-url", HeaderValue::from_static("/admin"));
        let host = HeaderValue::from_static("app.example");
        prepare_request(
            &mut headers,
            &identity,
            HeaderValue::from_static("10.0.0.7"),
            Some(&host),
            None,
            &[],
        );
        assert!(headers.get("x-email").is_none() && headers.get("x_email").is_none());
        assert_eq!(headers["x-forwarded-for"], "10.0.0.7");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "app.example");
        assert_eq!(headers["x-kept"], "1");
        for gone in [
            "connection",
            "x-custom",
            "keep-alive",
            "x_auth_user",
            "x-original-url",
        ] {
            assert!(!headers.contains_key(gone), "{gone} survived");
        }
    }
}
