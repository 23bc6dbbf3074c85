//! The cookie header: whatever other cookies a browser sends before it,
//! the session cookie the gateway set is found, only values of that name
//! are taken, only a value shaped like an ID the gateway issues is ever
//! looked up, and what goes to the app has every cookie but the gateway's.
#![no_main]

use authgate::identity::cookie_values;
use authgate::proxy::headers::cookies_without;
use authgate::session::{key_of, new_id};
use http::header::{HeaderMap, HeaderValue, COOKIE};
use libfuzzer_sys::fuzz_target;

const NAME: &str = "__Host-authgate";

fuzz_target!(|data: &[u8]| {
    let Ok(others) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(alone) = HeaderValue::from_str(others) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.append(COOKIE, alone);
    for value in cookie_values(&headers, NAME) {
        assert!(others.contains(value) && !value.contains(';'), "{others:?}");
        assert_eq!(value, value.trim());
        if key_of(value).is_some() {
            assert!(value.len() == 43, "{value:?} taken for an ID");
            assert!(value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }
    // The browser's other cookies, then the gateway's.
    let id = new_id();
    let both = format!("{others}; {NAME}={id}");
    let mut headers = HeaderMap::new();
    headers.append(
        COOKIE,
        HeaderValue::from_str(&both).expect("still a header value"),
    );
    assert!(
        cookie_values(&headers, NAME).any(|v| v == id),
        "the session cookie is lost after {others:?}"
    );
    assert!(key_of(&id).is_some());
    // For the app: the same pairs, in order, without the gateway's.
    let pairs = |bytes: &[u8]| -> Vec<Vec<u8>> {
        bytes
            .split(|&b| b == b';')
            .map(|p| p.trim_ascii().to_vec())
            .filter(|p| !p.is_empty())
            .collect()
    };
    let ours = |pair: &Vec<u8>| {
        let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
        name.trim_ascii() == NAME.as_bytes()
    };
    let wanted: Vec<Vec<u8>> = pairs(both.as_bytes())
        .into_iter()
        .filter(|p| !ours(p))
        .collect();
    let sent = cookies_without(&headers, &[NAME]);
    let sent = sent.as_ref().map_or(Vec::new(), |v| pairs(v.as_bytes()));
    assert_eq!(sent, wanted, "{others:?}");
    assert!(!sent.iter().any(ours));
});
