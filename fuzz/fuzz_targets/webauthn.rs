//! WebAuthn answers as the passkey endpoints read them (the credential
//! JSON a browser posts: client data, authenticator data, signature): a
//! real assertion passes, the same assertion with any one byte of what it
//! signs (or of the signature) changed is refused, and bytes that are not
//! an assertion made for this challenge are refused, never a panic.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use url::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{PasskeyAuthentication, PublicKeyCredential, Uuid};
use webauthn_rs::{Webauthn, WebauthnBuilder};

const PARTS: [&str; 3] = ["authenticatorData", "clientDataJSON", "signature"];

struct Ceremony {
    webauthn: Webauthn,
    state: PasskeyAuthentication,
    answer: Value,
}

fn ceremony() -> &'static Ceremony {
    static CEREMONY: OnceLock<Ceremony> = OnceLock::new();
    CEREMONY.get_or_init(|| {
        let origin = Url::parse("https://app.example.test").unwrap();
        let webauthn = WebauthnBuilder::new("app.example.test", &origin)
            .unwrap()
            .build()
            .unwrap();
        let mut key = SoftPasskey::new(true);
        let (options, registering) = webauthn
            .start_passkey_registration(Uuid::from_u128(7), "bob", "Bob", None)
            .unwrap();
        let made = key.do_registration(origin.clone(), options).unwrap();
        let passkey = webauthn
            .finish_passkey_registration(&made, &registering)
            .unwrap();
        let (options, state) = webauthn.start_passkey_authentication(&[passkey]).unwrap();
        let answer = key.do_authentication(origin, options).unwrap();
        let answer = serde_json::to_value(&answer).unwrap();
        for part in PARTS {
            assert!(answer["response"][part].is_string(), "{part} in {answer}");
        }
        Ceremony {
            webauthn,
            state,
            answer,
        }
    })
}

fn accepted(answer: &Value) -> bool {
    let ceremony = ceremony();
    serde_json::from_value::<PublicKeyCredential>(answer.clone()).is_ok_and(|c| {
        ceremony
            .webauthn
            .finish_passkey_authentication(&c, &ceremony.state)
            .is_ok()
    })
}

fuzz_target!(|data: &[u8]| {
    let ceremony = ceremony();
    if let Ok(answer) = serde_json::from_slice::<Value>(data) {
        assert!(
            answer == ceremony.answer || !accepted(&answer),
            "forged: {answer}"
        );
    }
    assert!(accepted(&ceremony.answer));
    let [which, at_0, at_1, byte, ..] = *data else {
        return;
    };
    let part = PARTS[usize::from(which) % PARTS.len()];
    let mut bytes = URL_SAFE_NO_PAD
        .decode(ceremony.answer["response"][part].as_str().unwrap())
        .unwrap();
    let at = usize::from(u16::from_le_bytes([at_0, at_1])) % bytes.len();
    if bytes[at] == byte {
        return;
    }
    bytes[at] = byte;
    let mut changed = ceremony.answer.clone();
    changed["response"][part] = Value::String(URL_SAFE_NO_PAD.encode(&bytes));
    assert!(
        !accepted(&changed),
        "{part} byte {at} set to {byte} and still accepted"
    );
});
