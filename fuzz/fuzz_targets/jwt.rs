//! JWS/JWT as the gateway reads them (a provider's ID and bearer tokens,
//! the gateway's own assertions): a token signed by the key in the key set
//! verifies; the same token with any one byte changed is refused; bytes
//! that are no token are refused, never a panic.
#![no_main]

use std::sync::OnceLock;

use authgate::assertion::{generate, JwtKey};
use authgate::identity::oidc::token::parse;
use libfuzzer_sys::fuzz_target;
use openidconnect::core::CoreJsonWebKeySet;

struct Signed {
    token: String,
    keys: CoreJsonWebKeySet,
}

fn signed() -> &'static Signed {
    static SIGNED: OnceLock<Signed> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        generate(&path).unwrap();
        let key = JwtKey::load(&path).unwrap();
        let token = key.sign(&serde_json::json!({
            "iss": "https://id.example.test",
            "sub": "alice",
            "aud": "authgate",
            "exp": 4_000_000_000u64,
            "roles": ["admin"],
        }));
        let keys = serde_json::from_value(serde_json::json!({ "keys": [key.jwk()] })).unwrap();
        Signed { token, keys }
    })
}

fn accepted(token: &str) -> bool {
    parse(token).and_then(|p| p.verify(&signed().keys)).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let signed = signed();
    // Any bytes as a token: nobody but the key's holder can sign.
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(text == signed.token || !accepted(text), "forged: {text:?}");
    }
    // The real token with one byte changed.
    assert!(accepted(&signed.token));
    let [at_0, at_1, byte, ..] = *data else {
        return;
    };
    let mut changed = signed.token.clone().into_bytes();
    let at = usize::from(u16::from_le_bytes([at_0, at_1])) % changed.len();
    if changed[at] == byte {
        return;
    }
    changed[at] = byte;
    if let Ok(changed) = String::from_utf8(changed) {
        assert!(
            !accepted(&changed),
            "one byte changed at {at} and still accepted: {changed}"
        );
    }
});
