//! `X-Request-Id`: every request has one, kept from a trusted proxy or made
//! here; it goes to the upstream and back to the client, into the access
//! log line and into every security event the request causes (through a
//! task-local, so code deep in `auth/` need not carry it).

use std::fmt;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use rand::RngCore;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request ID kept from a proxy.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: HeaderValue;
}

/// The request's ID: the trusted proxy's if it sent a usable one (printable,
/// no spaces or quotes, at most [`MAX_LEN`] bytes), else a new one.
pub fn of_request(headers: &HeaderMap, from_trusted_proxy: bool) -> HeaderValue {
    if from_trusted_proxy {
        if let Some(id) = headers.get(&X_REQUEST_ID).filter(|v| usable(v.as_bytes())) {
            return id.clone();
        }
    }
    generate()
}

fn usable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b))
}

/// 128 random bits as 32 hex digits.
pub fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut text = [0u8; 32];
    for (i, b) in bytes.iter().enumerate() {
        text[2 * i] = HEX[usize::from(b >> 4)];
        text[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

/// Runs `work` with `id` as the request ID its security events carry.
///
/// A plain function, not an `async fn`: an async wrapper would hold `work`
/// twice (its argument and the scope around it), and the request's whole
/// future is copied each time it moves.
pub fn scope<F: std::future::Future>(
    id: HeaderValue,
    work: F,
) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(id, work)
}

/// The current request's ID for a log field; `-` outside a request (the
/// users file's watcher, the command line, the WebSocket watcher).
pub fn current() -> Current {
    Current
}

pub struct Current;

impl fmt::Display for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        CURRENT
            .try_with(|id| f.write_str(id.to_str().unwrap_or("-")))
            .unwrap_or_else(|_| f.write_str("-"))
    }
}

/// A security event (`target: authgate::security`) with the request ID of
/// the request that caused it: `security_event!(warn, event = "...", ...)`.
#[macro_export]
macro_rules! security_event {
    ($level:ident, $($rest:tt)+) => {
        tracing::$level!(
            target: "authgate::security",
            request_id = %$crate::request_id::current(),
            $($rest)+
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxys_id_is_kept_only_when_trusted_and_sane() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("lb-42.abc"));
        assert_eq!(of_request(&headers, true), "lb-42.abc");
        assert_ne!(of_request(&headers, false), "lb-42.abc");
        for bad in ["", "has space", "quote\"d", &"x".repeat(129)] {
            headers.insert(&X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = of_request(&headers, true);
            assert_eq!(id.len(), 32, "{bad:?} kept");
        }
    }

    #[test]
    fn generated_ids_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.to_str().unwrap().bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
