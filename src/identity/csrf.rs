//! CSRF tokens for the gateway's forms.
//!
//! - Signed-in forms (logout, password, admin) carry a token derived from
//!   the session: an HMAC-SHA-256, under a secret of the gateway's own, of
//!   a fixed label and the session's key (itself the SHA-256 of the ID).
//!   Only the gateway and the page it serves to the session's own browser
//!   know it; it reveals nothing about the ID. The secret is kept apart
//!   from the sessions (see [`crate::store::Sessions::secret`]): whoever
//!   reads the state file or the shared store learns session keys, and must not be
//!   able to compute the tokens from them.
//! - The login form has no session yet (login CSRF would sign a victim into
//!   the attacker's account), so it uses a double-submit token: a random
//!   value in a `__Host-` cookie that must come back in the form. Another
//!   site can neither read that cookie nor set it (the `__Host-` prefix
//!   forbids a `Domain`, so no sibling subdomain can plant one).
//! - A POST whose `Origin` names another site is refused outright.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::{self, HeaderValue};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The secret session tokens are made with.
pub struct CsrfSecret([u8; 32]);

impl CsrfSecret {
    pub fn new(secret: [u8; 32]) -> CsrfSecret {
        CsrfSecret(secret)
    }

    /// The token for forms of the session stored under `key`.
    pub fn session_token(&self, key: &crate::session::Key) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"authgate csrf v2\0");
        mac.update(key);
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn mac(&self, purpose: &str, text: &[u8]) -> hmac::Hmac<Sha256> {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(text);
        mac
    }

    /// `text` with this secret's seal for `purpose`: handed to a client and
    /// taken back unchanged, with nothing kept meanwhile ([`Self::open`]).
    pub fn seal(&self, purpose: &str, text: &str) -> String {
        use hmac::Mac;
        let tag = self.mac(purpose, text.as_bytes()).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(text),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The text of a value [`Self::seal`] made for `purpose`; `None` when
    /// it was changed, or sealed for something else or by another secret.
    pub fn open(&self, purpose: &str, sealed: &str) -> Option<String> {
        use hmac::Mac;
        let (text, tag) = sealed.split_once('.')?;
        let text = URL_SAFE_NO_PAD.decode(text).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(purpose, &text).verify_slice(&tag).ok()?;
        String::from_utf8(text).ok()
    }
}

/// A fresh random value for the login form's cookie and field.
pub fn new_login_token() -> String {
    crate::session::new_id()
}

/// Compares in constant time; an empty token never matches.
pub fn matches(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// False when the request says it comes from another origin. Browsers send
/// `Origin` on every POST, but as `null` when the page's referrer policy is
/// `no-referrer`, which SPEC §7 puts on every page of the gateway's own: so
/// `null`, like an absent header (an old client, curl), is left to the token
/// check, which stands on its own.
pub fn same_origin(headers: &HeaderMap, host: Option<&HeaderValue>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    if origin.as_bytes() == b"null" {
        return true;
    }
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), host.map(|h| h.to_str())) else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_unchanged_and_only_for_its_purpose() {
        let secret = CsrfSecret::new([7; 32]);
        let sealed = secret.seal("ceremony", "{\"a\":1}");
        assert_eq!(
            secret.open("ceremony", &sealed).as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(secret.open("other", &sealed), None);
        assert_eq!(CsrfSecret::new([8; 32]).open("ceremony", &sealed), None);
        let (text, tag) = sealed.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode("{\"a\":2}"));
        assert_eq!(secret.open("ceremony", &forged), None, "{text}");
    }

    #[test]
    fn session_tokens_are_stable_per_session_and_differ_between_sessions() {
        let secret = CsrfSecret::new([9; 32]);
        let a = secret.session_token(&[1; 32]);
        assert_eq!(a, secret.session_token(&[1; 32]));
        assert_ne!(a, secret.session_token(&[2; 32]));
        // Without the secret, the key alone does not give the token.
        assert_ne!(a, CsrfSecret::new([8; 32]).session_token(&[1; 32]));
        assert!(matches(&a, &a));
        assert!(!matches(&a, ""));
        assert!(!matches("", ""));
        assert!(!matches(&a, &a[1..]));
    }

    #[test]
    fn origin_must_be_this_site_over_https() {
        let host = HeaderValue::from_static("gw.example:8443");
        let with = |origin: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_static(origin));
            h
        };
        assert!(same_origin(&HeaderMap::new(), Some(&host)));
        assert!(same_origin(&with("https://gw.example:8443"), Some(&host)));
        assert!(!same_origin(&with("https://evil.example"), Some(&host)));
        assert!(!same_origin(&with("http://gw.example:8443"), Some(&host)));
        // What a browser sends from a no-referrer page: the token decides.
        assert!(same_origin(&with("null"), Some(&host)));
    }
}
