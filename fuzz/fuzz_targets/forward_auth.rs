//! Forward-auth's original request: with a family configured, the other
//! family's headers (which the client can fill) change nothing; with none
//! configured, an answer is the one the family present would give; what
//! comes out is an origin-form target and a canonical host.
#![no_main]

use authgate::config::ForwardAuthFamily;
use authgate::forward_auth::original;
use authgate::policy::host::Host;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NGINX: [&str; 2] = ["x-original-url", "x-original-method"];
const TRAEFIK: [&str; 4] = [
    "x-forwarded-method",
    "x-forwarded-host",
    "x-forwarded-uri",
    "x-forwarded-proto",
];

fn only(headers: &HeaderMap, names: &[&str]) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in headers {
        if names.contains(&name.as_str()) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

fuzz_target!(|data: &[u8]| {
    // Values separated by newlines, in the order of NGINX then TRAEFIK;
    // an empty one leaves its header out.
    let mut headers = HeaderMap::new();
    for (name, value) in NGINX
        .iter()
        .chain(TRAEFIK.iter())
        .zip(data.split(|&b| b == b'\n'))
    {
        if value.is_empty() {
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(value) else {
            return;
        };
        headers.append(HeaderName::from_static(name), value);
    }
    let nginx = original(&headers, Some(ForwardAuthFamily::Nginx));
    let traefik = original(&headers, Some(ForwardAuthFamily::Traefik));
    assert_eq!(
        nginx,
        original(&only(&headers, &NGINX), Some(ForwardAuthFamily::Nginx))
    );
    assert_eq!(
        traefik,
        original(&only(&headers, &TRAEFIK), Some(ForwardAuthFamily::Traefik))
    );
    if let Ok(guessed) = original(&headers, None) {
        assert!(
            Ok(&guessed) == nginx.as_ref() || Ok(&guessed) == traefik.as_ref(),
            "a guess that neither family gives: {guessed:?}"
        );
    }
    for found in [nginx, traefik].into_iter().flatten() {
        assert!(found.uri.starts_with('/'), "{found:?}");
        assert!(
            found.uri.bytes().all(|b| b.is_ascii_graphic() && b != b'#'),
            "{found:?}"
        );
        assert_eq!(
            Host::parse(found.host.value().as_bytes()).as_ref(),
            Ok(&found.host)
        );
        assert!(found.scheme == "https" || found.scheme == "http");
    }
});
