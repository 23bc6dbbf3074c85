//! Signed identity assertions (issue 15): verified with an independent JWT
//! library (jsonwebtoken) from nothing but the JWKS document.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::support::{Setup, TestGateway, ALICE_PASSWORD, BOB_PASSWORD, DEFAULT_RULES};

fn with_assertions(extra: &str) -> Setup {
    Setup::new().rules(&format!(
        "{DEFAULT_RULES}\n[identity]\nassertion = true\n{extra}\n"
    ))
}

async fn jwks(gw: &TestGateway) -> JwkSet {
    let response = gw
        .client()
        .get(gw.url("/.gateway/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The assertion the upstream got with the last request.
fn assertion_seen(gw: &TestGateway) -> String {
    gw.upstream.last().headers["x-auth-assertion"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn verify(token: &str, set: &JwkSet, audience: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let kid = decode_header(token)?.kid.expect("a kid");
    let jwk = set.find(&kid).expect("the kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["authgate"]);
    validation.leeway = 0;
    decode::<Value>(token, &key, &validation).map(|data| data.claims)
}

#[tokio::test]
async fn an_assertion_verifies_with_the_jwks_alone_and_a_forged_one_does_not() {
    let gw = with_assertions("").start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(gw.get_as(&alice, "/private/x").await.status(), 200);
    let token = assertion_seen(&gw);
    let set = jwks(&gw).await;
    let claims = verify(&token, &set, "127.0.0.1").expect("verifies");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iss"], "authgate");
    assert_eq!(claims["roles"], serde_json::json!(["admin", "user"]));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    let sid = claims["sid"].as_str().unwrap();
    assert_eq!(sid.len(), 16);
    assert!(!alice.contains(sid), "the sid is no cookie value");

    // Wrong audience.
    assert!(verify(&token, &set, "other.example").is_err());
    // Tampered: bob's claims under alice's signature.
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = "bob".into();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(payload.to_string()),
        parts[2]
    );
    assert!(verify(&forged, &set, "127.0.0.1").is_err());

    // The same session's next request reuses it; bob's is his own.
    assert_eq!(gw.get_as(&alice, "/private/y").await.status(), 200);
    assert_eq!(assertion_seen(&gw), token);
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    gw.get_as(&bob, "/private/x").await;
    let bobs = verify(&assertion_seen(&gw), &set, "127.0.0.1").unwrap();
    assert_eq!(bobs["sub"], "bob");

    // Nobody can bring their own: a client's copy never reaches the app.
    let anonymous = gw
        .client()
        .get(gw.url("/public/x"))
        .header("x-auth-assertion", &forged)
        .header("x_auth_assertion", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 200);
    let seen = gw.upstream.last();
    assert!(!seen.headers.contains_key("x-auth-assertion"));
    assert!(!seen.headers.contains_key("x_auth_assertion"));
}

#[tokio::test]
async fn an_expired_assertion_is_refused_and_a_fresh_one_is_made() {
    let gw = with_assertions("assertion_lifetime = \"1s\"\nassertion_audience = \"notes.internal\"\nassertion_issuer = \"authgate\"")
        .start()
        .await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    gw.get_as(&alice, "/private/x").await;
    let first = assertion_seen(&gw);
    let set = jwks(&gw).await;
    assert!(verify(&first, &set, "notes.internal").is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = verify(&first, &set, "notes.internal").unwrap_err();
    assert_eq!(
        *expired.kind(),
        jsonwebtoken::errors::ErrorKind::ExpiredSignature
    );
    gw.get_as(&alice, "/private/x").await;
    let second = assertion_seen(&gw);
    assert_ne!(first, second);
    assert!(verify(&second, &set, "notes.internal").is_ok());
}

#[tokio::test]
async fn a_new_key_signs_at_once_and_the_old_one_stays_published() {
    let gw = with_assertions("").start().await;
    // Made in the state folder on first start, private.
    let key = gw.dir.path().join("authgate-assertion-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    gw.get_as(&alice, "/private/x").await;
    let before = assertion_seen(&gw);
    let old_kid = decode_header(&before).unwrap().kid.unwrap();

    let out = crate::support::authgate()
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The public half, printed for a provider that knows the gateway by it.
    let printed = String::from_utf8_lossy(&out.stdout);
    let jwk = printed
        .split("public JWK: ")
        .nth(1)
        .expect("the public JWK is printed");
    let jwk: serde_json::Value = serde_json::from_str(jwk.trim()).unwrap();
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert!(jwk.get("d").is_none(), "never the private part");
    crate::admin::within(Duration::from_secs(3), || async {
        gw.get_as(&alice, "/private/x").await;
        decode_header(&assertion_seen(&gw)).unwrap().kid.unwrap() != old_kid
    })
    .await;
    let set = jwks(&gw).await;
    assert_eq!(set.keys.len(), 2, "the new key and the one before");
    assert!(verify(&before, &set, "127.0.0.1").is_ok());
    assert!(verify(&assertion_seen(&gw), &set, "127.0.0.1").is_ok());
}

#[test]
fn replicas_must_share_a_configured_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.path().join("gw.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("gw.key"), &cert.key_pem).unwrap();
    let base = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let redis = format!("{base}[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n[identity]\nassertion = true\n");
    let err = authgate::Config::parse(&redis, &dir.path().join("gateway.toml")).unwrap_err();
    assert!(
        err.to_string()
            .contains("every replica must sign with the same key"),
        "{err}"
    );
    // A configured key that is not a P-256 key is named.
    std::fs::write(
        dir.path().join("rsa.pem"),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/rsa-pkcs1.key"
        ))
        .unwrap(),
    )
    .unwrap();
    let bad = format!("{base}[store]\nbackend = \"memory\"\n[identity]\nassertion = true\nassertion_key = \"rsa.pem\"\n");
    let err = authgate::Config::parse(&bad, &dir.path().join("gateway.toml")).unwrap_err();
    assert!(err.to_string().contains("gateway.toml:"), "{err}");
    assert!(err.to_string().contains("assertion key"), "{err}");
}
