//! Sign-in through OpenID Connect providers (`[[oidc]]`), against a
//! provider whose tokens the test controls ([`super::oidc_fake`]): the
//! whole flow as a browser follows it, and every way the callback must
//! refuse.

use std::time::Duration;

use serde_json::json;

use super::oidc_fake::{FakeProvider, Key, CLIENT_ID};
use super::support::*;

const RULES: &str = r#"
[[rule]]
path = "/staff/**"
roles = ["admin"]

[[rule]]
path = "/sso/**"
access = "authenticated"
providers = ["fake"]

[[rule]]
path = "/fresh/**"
access = "authenticated"
max_auth_age = "1m"

[[rule]]
path = "/mfa/**"
access = "authenticated"
mfa = true

[[rule]]
path = "/private/**"
access = "authenticated"

[[rule]]
path = "/**"
access = "public"
"#;

/// A gateway with the fake provider as `fake` (`extra`: more keys of its
/// `[[oidc]]`).
async fn gateway_with(provider: &FakeProvider, extra: &str) -> TestGateway {
    gateway_from(Setup::new(), provider, extra).await
}

async fn gateway_from(setup: Setup, provider: &FakeProvider, extra: &str) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let entry = provider
        .config(dir.path(), "fake", extra)
        .replace("\"fake-", &format!("\"{}/fake-", dir.path().display()));
    let gw = setup.rules(&format!("{RULES}\n{entry}")).start().await;
    // The files the entry names must outlive the gateway.
    std::mem::forget(dir);
    gw
}

/// A browser: keeps cookies, follows redirects, trusts the gateway and the
/// provider.
fn browser(gw: &TestGateway, provider: &FakeProvider) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(gw.cert_pem.as_bytes()).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(provider.cert_pem.as_bytes()).unwrap())
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::limited(10))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A client of the provider alone that does not follow redirects (to stop
/// at the callback).
fn provider_client(provider: &FakeProvider) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(provider.cert_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Clicks the provider's button on the way to `next`; the last answer.
async fn sign_in(gw: &TestGateway, browser: &reqwest::Client, next: &str) -> reqwest::Response {
    browser
        .get(gw.url(&format!("/.gateway/oidc/fake/start?next={next}")))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_provider_sign_in_reaches_the_app_with_mapped_roles_and_claim_headers() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(
        &provider,
        "roles_claim = \"groups\"\ndefault_roles = [\"viewer\"]\n[oidc.role_map]\nstaff = [\"user\"]\nops = [\"admin\"]\n[oidc.headers]\nX-Email = \"email\"",
    )
    .await;
    let b = browser(&gw, &provider);
    let landed = sign_in(&gw, &b, "/private/report").await;
    assert_eq!(landed.status(), 200);
    assert_eq!(landed.url().path(), "/private/report");
    assert_eq!(landed.text().await.unwrap(), "hello from upstream");
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["x-auth-user"], "dana");
    // `staff` maps to `user`, plus the default; the raw group never is a role.
    assert_eq!(seen.headers["x-auth-roles"], "user,viewer");
    assert_eq!(seen.headers["x-email"], "dana@example.com");
    // The provider was asked the right way.
    let grant = provider
        .state
        .lock()
        .unwrap()
        .grants
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(grant.query["code_challenge_method"], "S256");
    assert_eq!(grant.query["response_type"], "code");
    assert_eq!(grant.query["client_id"], CLIENT_ID);
    assert!(grant.query["state"].len() >= 43 && grant.query["nonce"].len() >= 43);
    assert_eq!(grant.query["scope"], "openid profile email");
    // A client's own copy of a claim header never reaches the upstream.
    let spoofed = b
        .get(gw.url("/private/again"))
        .header("X-Email", "ceo@example.com")
        .header("X_Email", "ceo@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 200);
    let seen = gw.upstream.last();
    assert_eq!(seen.headers.get_all("x-email").iter().count(), 1);
    assert_eq!(seen.headers["x-email"], "dana@example.com");
    assert!(seen.headers.get("x_email").is_none());
    // An ordinary session: whoami knows it, roles apply.
    let whoami: serde_json::Value = b
        .get(gw.url("/.gateway/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["user"], "dana");
    assert_eq!(
        b.get(gw.url("/staff/x")).send().await.unwrap().status(),
        403
    );
    // Without a session, the same flow is the sign-in page's button.
    let page = gw
        .client()
        .get(gw.url("/.gateway/login?next=/private/x"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("href=\"/.gateway/oidc/fake/start?next=%2Fprivate%2Fx\""),
        "{page}"
    );
    assert!(page.contains("Sign in with fake"));
    assert!(
        page.contains("name=\"password\""),
        "the local form stays beside the buttons"
    );
}

#[tokio::test]
async fn a_callback_is_good_once_and_only_in_the_browser_that_started_it() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    // Stop at the callback: the browser does not follow the provider's redirect back.
    let b = browser(&gw, &provider);
    let to_provider = gw
        .client()
        .get(gw.url("/.gateway/oidc/fake/start?next=/private/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(to_provider.status(), 303);
    let pre_login =
        set_cookie_line(&to_provider, "__Host-authgate-oidc").expect("a pre-login cookie");
    assert!(
        pre_login.contains("HttpOnly")
            && pre_login.contains("Secure")
            && pre_login.contains("SameSite=Lax"),
        "{pre_login}"
    );
    let authorize = to_provider.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let no_follow = provider_client(&provider);
    let back = no_follow.get(&authorize).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    // Another browser (no pre-login cookie) gets nowhere with it...
    let stolen = b.get(&callback).send().await.unwrap();
    assert_eq!(stolen.status(), 400);
    assert!(stolen.text().await.unwrap().contains("Start again"));
    // ...and the state is spent: the right browser cannot use it either now.
    let cookie = set_cookie(&to_provider, "__Host-authgate-oidc").unwrap();
    let late = gw
        .client()
        .get(&callback)
        .header("cookie", format!("__Host-authgate-oidc={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 400);
    assert!(set_cookie(&late, "__Host-authgate").is_none());

    // A fresh start, followed through by the browser that made it, works;
    // replaying its callback does not.
    let fresh = gw
        .client()
        .get(gw.url("/.gateway/oidc/fake/start?next=/private/x"))
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&fresh, "__Host-authgate-oidc").unwrap();
    let authorize = fresh.headers()["location"].to_str().unwrap().to_owned();
    let callback = no_follow.get(&authorize).send().await.unwrap().headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    let with_cookie = |url: &str| {
        gw.client()
            .get(url)
            .header("cookie", format!("__Host-authgate-oidc={cookie}"))
            .send()
    };
    let first = with_cookie(&callback).await.unwrap();
    assert_eq!(first.status(), 303);
    assert_eq!(first.headers()["location"], "/private/x");
    assert!(set_cookie(&first, "__Host-authgate").is_some());
    let again = with_cookie(&callback).await.unwrap();
    assert_eq!(again.status(), 400);
    assert!(set_cookie(&again, "__Host-authgate").is_none());
    // No state at all.
    let bare = with_cookie(&gw.url("/.gateway/oidc/fake/callback?code=x"))
        .await
        .unwrap();
    assert_eq!(bare.status(), 400);

    // A code the provider already gave out (with a fresh state): the
    // provider refuses it, and so does the gateway.
    let other = gw
        .client()
        .get(gw.url("/.gateway/oidc/fake/start"))
        .send()
        .await
        .unwrap();
    let other_cookie = set_cookie(&other, "__Host-authgate-oidc").unwrap();
    let other_state = form_urlencoded::parse(
        other.headers()["location"]
            .to_str()
            .unwrap()
            .split_once('?')
            .unwrap()
            .1
            .as_bytes(),
    )
    .find(|(k, _)| k == "state")
    .unwrap()
    .1
    .into_owned();
    let used_code = form_urlencoded::parse(callback.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let reused = gw
        .client()
        .get(gw.url(&format!(
            "/.gateway/oidc/fake/callback?code={used_code}&state={other_state}"
        )))
        .header("cookie", format!("__Host-authgate-oidc={other_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 400);
    assert!(set_cookie(&reused, "__Host-authgate").is_none());
    assert!(reused.text().await.unwrap().contains("invalid_grant"));
}

/// Each tampered ID token is refused: a page that says so, no session.
#[tokio::test]
async fn tampered_id_tokens_are_refused() {
    let provider = FakeProvider::start().await;
    // Every case below fails from one client: more than the throttle allows.
    let gw = gateway_from(Setup::new().login("max_failures = 100"), &provider, "").await;
    let now = (authgate::session::now_ms() / 1000) as i64;
    let cases: Vec<(&str, serde_json::Value, serde_json::Value)> = vec![
        (
            "another issuer",
            json!({"iss": "https://evil.example"}),
            json!({}),
        ),
        (
            "another audience",
            json!({"aud": "someone-else"}),
            json!({}),
        ),
        (
            "two audiences without azp",
            json!({"aud": [CLIENT_ID, "someone-else"]}),
            json!({}),
        ),
        (
            "azp of another client",
            json!({"azp": "someone-else"}),
            json!({}),
        ),
        ("expired", json!({"exp": now - 600}), json!({})),
        (
            "issued in the future",
            json!({"iat": now + 3600}),
            json!({}),
        ),
        ("issued long ago", json!({"iat": now - 3600}), json!({})),
        (
            "another nonce",
            json!({"nonce": "not-the-one-sent"}),
            json!({}),
        ),
        // Signed ES256; the header claims an alg the provider's key does not allow.
        (
            "an alg the key does not allow",
            json!({}),
            json!({"alg": "ES384"}),
        ),
        ("no nonce", json!({"nonce": null}), json!({})),
    ];
    for (case, claims, header) in cases {
        provider.set(|s| {
            s.claims = claims.clone();
            s.header = header.clone();
        });
        let b = browser(&gw, &provider);
        let answer = sign_in(&gw, &b, "/private/x").await;
        assert_eq!(answer.status(), 403, "{case}");
        assert!(answer.url().path().ends_with("/callback"), "{case}");
        let page = answer.text().await.unwrap();
        assert!(page.contains("did not pass the gateway"), "{case}: {page}");
        let after = b.get(gw.url("/private/x")).send().await.unwrap();
        assert_eq!(after.status(), 401, "{case}: no session");
    }
    provider.set(|s| {
        s.claims = json!({});
        s.header = json!({});
    });
    // A signature that is not the provider's key's.
    let foreign = Key::new("k1");
    let forged = foreign.sign(&provider.claims(None), &json!({}));
    // `alg: none`, and HS256 "signed" with the client secret or a public key.
    let unsigned = {
        let mut parts: Vec<String> = forged.split('.').map(str::to_owned).collect();
        parts[0] = base64_url(&json!({"alg": "none", "typ": "JWT"}).to_string());
        parts[2] = String::new();
        parts.join(".")
    };
    let hmac = {
        let claims = provider.claims(None);
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(super::oidc_fake::CLIENT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    for (case, token) in [
        ("foreign key", forged),
        ("alg none", unsigned),
        ("HS256", hmac),
    ] {
        provider.set(|s| s.raw_token = Some(token.clone()));
        let b = browser(&gw, &provider);
        let answer = sign_in(&gw, &b, "/private/x").await;
        assert_eq!(answer.status(), 403, "{case}");
        assert_eq!(
            b.get(gw.url("/private/x")).send().await.unwrap().status(),
            401,
            "{case}"
        );
    }
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// Keys that rotate at the provider are fetched again (no restart); a
/// `kid` nobody publishes costs one fetch, not one per callback.
#[tokio::test]
async fn rotated_keys_are_followed_and_unknown_kids_fetch_at_most_once() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    let b = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &b, "/private/x").await.status(), 200);
    let b = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &b, "/private/x").await.status(), 200);
    let fetched = provider.jwks_fetches();
    assert_eq!(fetched, 1, "discovery fetched the keys once");
    assert_eq!(
        provider.state.lock().unwrap().discovery_fetches,
        1,
        "two sign-ins, one discovery: it is cached"
    );
    provider.rotate("k2", true);
    let b = browser(&gw, &provider);
    assert_eq!(
        sign_in(&gw, &b, "/private/x").await.status(),
        200,
        "the new key was fetched"
    );
    assert_eq!(provider.jwks_fetches(), 2);
    // A kid nobody publishes: a gateway that has not seen it fetches the
    // keys once more, then refuses; the next ones within the limit fetch
    // nothing.
    let second = gateway_with(&provider, "").await;
    provider.set(|s| s.header = json!({"kid": "nobody"}));
    let before = provider.jwks_fetches();
    for round in 0..3 {
        let b = browser(&second, &provider);
        assert_eq!(
            sign_in(&second, &b, "/private/x").await.status(),
            403,
            "round {round}"
        );
    }
    assert_eq!(
        provider.jwks_fetches() - before,
        2,
        "discovery's keys, then one refresh for three unknown kids"
    );
}

#[tokio::test]
async fn the_providers_error_is_shown_escaped_and_next_keeps_its_rules() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    provider.set(|s| s.error = Some(("access_denied".into(), "<script>alert(1)</script>".into())));
    let b = browser(&gw, &provider);
    let answer = sign_in(&gw, &b, "/private/x").await;
    assert_eq!(answer.status(), 403);
    let page = answer.text().await.unwrap();
    assert!(
        page.contains("access_denied: &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>"));
    provider.set(|s| s.error = None);
    // An absolute `next` elsewhere is not followed; a local one is kept.
    let b = browser(&gw, &provider);
    let landed = sign_in(&gw, &b, "https%3A%2F%2Fevil.example%2F").await;
    assert_eq!(landed.url().host_str(), Some("127.0.0.1"));
    assert_eq!(landed.url().path(), "/");
    let b = browser(&gw, &provider);
    let landed = sign_in(&gw, &b, "%2Fprivate%2Fa%3Fq%3D1").await;
    assert_eq!(landed.url().path(), "/private/a");
    assert_eq!(landed.url().query(), Some("q=1"));
}

#[tokio::test]
async fn a_provider_that_is_down_answers_503_while_local_sign_in_and_sessions_go_on() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    let b = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &b, "/private/x").await.status(), 200);
    provider.set(|s| s.down = true);
    // The session it gave goes on; its discovery is cached.
    assert_eq!(
        b.get(gw.url("/private/y")).send().await.unwrap().status(),
        200
    );
    // A gateway that has not reached it yet answers its button with 503.
    let fresh_gw = gateway_with(&provider, "").await;
    let answer = fresh_gw
        .client()
        .get(fresh_gw.url("/.gateway/oidc/fake/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    assert!(answer.text().await.unwrap().contains("cannot be reached"));
    let local = fresh_gw.sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(fresh_gw.get_as(&local, "/private/x").await.status(), 200);
}

#[tokio::test]
async fn rules_can_name_providers_and_local_users_cannot_take_their_place() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    let b = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &b, "/sso/x").await.status(), 200);
    let local = gw.sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(gw.get_as(&local, "/sso/x").await.status(), 403);
    assert_eq!(gw.get_as(&local, "/private/x").await.status(), 200);
    // A provider user whose name is a local user's is refused.
    provider.set(|s| s.user = "alice".into());
    let b = browser(&gw, &provider);
    let answer = sign_in(&gw, &b, "/private/x").await;
    assert_eq!(answer.status(), 403);
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("belongs to a user of this gateway"));
}

#[tokio::test]
async fn who_may_come_in_is_the_providers_entry_to_say() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(
        &provider,
        "allowed_domains = [\"example.com\"]\nrequire_email_verified = true\nallowed_users = [\"dana\", \"erin\"]",
    )
    .await;
    let b = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &b, "/private/x").await.status(), 200);
    for (case, claims, user) in [
        ("unverified email", json!({"email_verified": false}), "dana"),
        (
            "other domain",
            json!({"email": "dana@elsewhere.example"}),
            "dana",
        ),
        ("not allowed", json!({}), "frank"),
        (
            "no username",
            json!({"preferred_username": null, "email": null}),
            "dana",
        ),
    ] {
        provider.set(|s| {
            s.claims = claims.clone();
            s.user = user.into();
        });
        let b = browser(&gw, &provider);
        assert_eq!(sign_in(&gw, &b, "/private/x").await.status(), 403, "{case}");
    }
}

#[tokio::test]
async fn local_false_hides_the_form_and_refuses_its_post() {
    let provider = FakeProvider::start().await;
    let gw = gateway_from(Setup::new().login("local = false"), &provider, "").await;
    let page = gw
        .client()
        .get(gw.url("/.gateway/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign in with fake"));
    assert!(!page.contains("name=\"password\""), "{page}");
    let answer = gw.try_sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(answer.status(), 404);
    assert!(set_cookie(&answer, "__Host-authgate").is_none());
}

#[tokio::test]
async fn max_auth_age_and_mfa_send_the_user_back_to_the_provider() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(
        &provider,
        "mfa_amr = [\"otp\", \"hwk\"]\nacr_values = \"urn:example:mfa\"",
    )
    .await;
    let b = browser(&gw, &provider);
    // Signed in with a password alone: `/mfa` sends the browser back to
    // the provider asking for more; a provider that says `pwd` again is
    // refused there (no loop).
    assert_eq!(sign_in(&gw, &b, "/private/x").await.status(), 200);
    let answer = b
        .get(gw.url("/mfa/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
    let grants: Vec<_> = provider
        .state
        .lock()
        .unwrap()
        .grants
        .values()
        .cloned()
        .collect();
    assert!(grants
        .iter()
        .any(|g| g.query.get("acr_values").map(String::as_str) == Some("urn:example:mfa")));
    // With `otp` in `amr`, the same trip ends on the page.
    provider.set(|s| s.claims = json!({"amr": ["pwd", "otp"]}));
    let answer = b
        .get(gw.url("/mfa/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.url().path(), "/mfa/x");
    // A route's max_auth_age: the provider is asked to sign in again
    // (prompt=login, max_age=0), and one that did not is refused.
    provider.set(|s| {
        s.claims = json!({"auth_time": (authgate::session::now_ms() / 1000) as i64 - 7200})
    });
    let b2 = browser(&gw, &provider);
    let first = sign_in(&gw, &b2, "/private/x").await;
    assert_eq!(
        first.status(),
        200,
        "an old auth_time is fine for routes without max_auth_age"
    );
    provider.set(|s| s.claims = json!({}));
    let fresh = b2
        .get(gw.url("/fresh/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let grants: Vec<_> = provider
        .state
        .lock()
        .unwrap()
        .grants
        .values()
        .cloned()
        .collect();
    assert!(grants.iter().any(
        |g| g.query.get("prompt").map(String::as_str) == Some("login")
            && g.query.get("max_age").map(String::as_str) == Some("0")
    ));
    assert_eq!(fresh.status(), 200);
    assert_eq!(fresh.url().path(), "/fresh/x");
    provider.set(|s| {
        s.claims = json!({"auth_time": (authgate::session::now_ms() / 1000) as i64 - 7200})
    });
    let b3 = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &b3, "/private/x").await.status(), 200);
    let stale = b3
        .get(gw.url("/fresh/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status(),
        403,
        "the provider did not sign the user in again"
    );
}

#[tokio::test]
async fn sign_out_ends_the_providers_session_too() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    let b = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &b, "/private/x").await.status(), 200);
    let whoami: serde_json::Value = b
        .get(gw.url("/.gateway/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let csrf = whoami["csrf"].as_str().unwrap().to_owned();
    let out = b
        .post(gw.url("/.gateway/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    // The browser was sent to the provider's end_session_endpoint.
    assert_eq!(out.url().path(), "/logout");
    let query: std::collections::HashMap<String, String> =
        out.url().query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert!(query["id_token_hint"].split('.').count() == 3);
    assert!(query["post_logout_redirect_uri"].ends_with("/.gateway/login"));
    assert_eq!(
        b.get(gw.url("/.gateway/whoami"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

/// A logout token, as the provider would send it.
fn logout_token(provider: &FakeProvider, patch: serde_json::Value) -> String {
    let now = (authgate::session::now_ms() / 1000) as i64;
    let mut claims = json!({
        "iss": provider.issuer(),
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": authgate::session::new_id(),
        "sub": "sub-dana",
        "sid": "sid-1",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    });
    super::oidc_fake::merge(&mut claims, &patch);
    provider.sign(&claims, &json!({"typ": "logout+jwt"}))
}

#[tokio::test]
async fn back_channel_logout_ends_the_named_sessions_and_refuses_bad_tokens() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    let dana = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &dana, "/private/x").await.status(), 200);
    provider.set(|s| {
        s.user = "erin".into();
        s.claims = json!({"sid": "sid-2"});
    });
    let erin = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &erin, "/private/x").await.status(), 200);
    let post = |token: String| {
        gw.client()
            .post(gw.url("/.gateway/oidc/fake/backchannel-logout"))
            .form(&[("logout_token", token)])
            .send()
    };
    let now = (authgate::session::now_ms() / 1000) as i64;
    for (case, patch) in [
        ("a nonce", json!({"nonce": "x"})),
        ("no event", json!({"events": null})),
        ("neither sub nor sid", json!({"sub": null, "sid": null})),
        ("another issuer", json!({"iss": "https://evil.example"})),
        ("another audience", json!({"aud": "other"})),
        ("old", json!({"iat": now - 3600})),
        ("no jti", json!({"jti": null})),
    ] {
        let answer = post(logout_token(&provider, patch)).await.unwrap();
        assert_eq!(answer.status(), 400, "{case}");
        assert_eq!(answer.headers()["cache-control"], "no-store");
    }
    let forged = Key::new("k1").sign(&json!({"iss": provider.issuer()}), &json!({}));
    assert_eq!(post(forged).await.unwrap().status(), 400);
    assert_eq!(
        dana.get(gw.url("/private/x"))
            .send()
            .await
            .unwrap()
            .url()
            .path(),
        "/private/x",
        "no bad token ended a session"
    );
    // By sid: dana's session ends, erin's stays.
    let token = logout_token(&provider, json!({"sub": null, "sid": "sid-1"}));
    assert_eq!(post(token.clone()).await.unwrap().status(), 200);
    assert_eq!(
        dana.get(gw.url("/.gateway/whoami"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        erin.get(gw.url("/.gateway/whoami"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The same token again is a replay.
    assert_eq!(post(token).await.unwrap().status(), 400);
    // By sub alone.
    let token = logout_token(&provider, json!({"sub": "sub-erin", "sid": null}));
    assert_eq!(post(token).await.unwrap().status(), 200);
    assert_eq!(
        erin.get(gw.url("/.gateway/whoami"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn failed_callbacks_are_throttled_per_client() {
    let provider = FakeProvider::start().await;
    let gw = gateway_from(Setup::new().login("max_failures = 3"), &provider, "").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let answer = gw
            .client()
            .get(gw.url("/.gateway/oidc/fake/callback?state=forged&code=x"))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses, [400, 400, 400, 429, 429]);
    // Starts, each of which the store keeps a record of for ten minutes,
    // are limited per client too.
    let mut statuses = Vec::new();
    for _ in 0..authgate::identity::oidc::STARTS_PER_MINUTE + 2 {
        let answer = gw
            .client()
            .get(gw.url("/.gateway/oidc/fake/start"))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    let limit = authgate::identity::oidc::STARTS_PER_MINUTE as usize;
    assert!(statuses[..limit].iter().all(|s| *s == 303), "{statuses:?}");
    assert_eq!(statuses[limit..], [429, 429]);
}

#[tokio::test]
async fn an_admin_sees_provider_sessions_and_can_end_them() {
    use reqwest::Method;
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    let b = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &b, "/private/x").await.status(), 200);
    let admin = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = super::admin::csrf_of(&gw, &admin).await;
    let sessions: serde_json::Value = gw
        .get_as(&admin, "/.gateway/admin/api/sessions")
        .await
        .json()
        .await
        .unwrap();
    let listed = sessions["sessions"].as_array().unwrap();
    let dana = listed
        .iter()
        .find(|s| s["user"] == "dana")
        .expect("dana's session is listed");
    assert_eq!(dana["provider"], "fake", "{dana}");
    let alice = listed.iter().find(|s| s["user"] == "alice").unwrap();
    assert_eq!(alice["provider"], "local");
    let id = dana["id"].as_str().unwrap();
    let ended = super::admin::api(
        &gw,
        Method::DELETE,
        &format!("/sessions/{id}"),
        Some(&admin),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(ended.status(), 204);
    assert_eq!(
        b.get(gw.url("/private/x")).send().await.unwrap().status(),
        401
    );
}

/// `authgate check --online` reaches each provider and says what it found,
/// or fails naming the one it could not reach.
#[tokio::test]
async fn check_online_reaches_each_provider() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "http://127.0.0.1:1", "");
    let entry = provider.config(dir.path(), "fake", "");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n{entry}")).unwrap();
    let run = |online: bool| {
        let path = path.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut command = authgate();
                command.args(["check", "-c"]).arg(&path);
                if online {
                    command.arg("--online");
                }
                command.output().unwrap()
            })
            .await
            .unwrap()
        }
    };
    let offline = run(false).await;
    assert!(offline.status.success());
    assert!(!String::from_utf8_lossy(&offline.stdout).contains("discovery"));
    assert_eq!(
        provider.state.lock().unwrap().discovery_fetches,
        0,
        "offline means offline"
    );
    let online = run(true).await;
    let stdout = String::from_utf8_lossy(&online.stdout);
    assert!(
        online.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&online.stderr)
    );
    assert!(stdout.contains("oidc fake: discovery ok"), "{stdout}");
    assert!(
        stdout.contains(&format!("token {}/token", provider.issuer())),
        "{stdout}"
    );
    assert!(stdout.contains("1 key(s) [k1]"), "{stdout}");
    provider.set(|s| s.down = true);
    let down = run(true).await;
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(!down.status.success());
    assert!(stderr.contains("[[oidc]] fake"), "{stderr}");
}

/// Replicas on Redis behind a load balancer: a sign-in started on one may
/// come back to another; its session serves on every one, with the claim
/// headers; a back-channel logout posted to any one ends it on all within
/// a second, and its token cannot be replayed on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_provider_sign_ins_sessions_and_back_channel_logouts() {
    let redis = super::replicas::RedisServer::start();
    let provider = FakeProvider::start().await;
    let on_redis = || {
        Setup::new()
            .store("backend = \"redis\"")
            .store(&format!("url = \"{}\"", redis.url()))
    };
    let extra = "[oidc.headers]\nX-Email = \"email\"";
    let a = gateway_from(on_redis(), &provider, extra).await;
    let b = gateway_from(on_redis(), &provider, extra).await;
    let c = gateway_from(on_redis(), &provider, extra).await;
    // Start on A; the provider's answer reaches B.
    let start = a
        .client()
        .get(a.url("/.gateway/oidc/fake/start?next=/private/x"))
        .send()
        .await
        .unwrap();
    let pre_login = set_cookie(&start, "__Host-authgate-oidc").unwrap();
    let no_follow = provider_client(&provider);
    let callback = no_follow
        .get(start.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap()
        .headers()["location"]
        .to_str()
        .unwrap()
        .replace(&a.addr().to_string(), &b.addr().to_string());
    let signed_in = b
        .client()
        .get(&callback)
        .header("cookie", format!("__Host-authgate-oidc={pre_login}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = set_cookie(&signed_in, "__Host-authgate").unwrap();
    for gw in [&a, &b, &c] {
        assert_eq!(gw.get_as(&session, "/private/x").await.status(), 200);
        let seen = gw.upstream.last();
        assert_eq!(seen.headers["x-auth-user"], "dana");
        assert_eq!(seen.headers["x-email"], "dana@example.com");
    }
    let token = logout_token(&provider, json!({"sub": null, "sid": "sid-1"}));
    let post = |gw: &TestGateway, token: &str| {
        gw.client()
            .post(gw.url("/.gateway/oidc/fake/backchannel-logout"))
            .form(&[("logout_token", token)])
            .send()
    };
    assert_eq!(post(&c, &token).await.unwrap().status(), 200);
    for gw in [&a, &b, &c] {
        super::admin::within(Duration::from_secs(1), || async {
            gw.get_as(&session, "/private/x").await.status() == 401
        })
        .await;
    }
    assert_eq!(
        post(&a, &token).await.unwrap().status(),
        400,
        "a replay on another replica"
    );
}

/// An admin locks a provider's user out by name: their sessions end at
/// once, new sign-ins are refused, the users file says so; unlocking lets
/// them back in and leaves no entry behind.
#[tokio::test]
async fn an_admin_locks_a_provider_user_out_by_name() {
    use reqwest::Method;
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    let dana = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &dana, "/private/x").await.status(), 200);
    let admin = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = super::admin::csrf_of(&gw, &admin).await;
    // The admin page offers it beside the provider's session.
    let page = gw
        .get_as(&admin, "/.gateway/admin/")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("dana (fake)"), "{page}");
    assert!(page.contains("value=\"fake/dana\""), "{page}");
    let api = |method: Method, path: &str| {
        super::admin::api(&gw, method, path, Some(&admin), Some(&csrf))
    };
    let unknown = api(Method::POST, "/providers/nobody/users/dana/lock")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let locked = api(Method::POST, "/providers/fake/users/dana/lock")
        .send()
        .await
        .unwrap();
    assert_eq!(locked.status(), 204);
    assert_eq!(
        dana.get(gw.url("/private/x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let file = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(
        file.contains("[users.dana]\nprovider = \"fake\"\nlocked = true"),
        "{file}"
    );
    let again = browser(&gw, &provider);
    let refused = sign_in(&gw, &again, "/private/x").await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("locked you out"));
    // No password opens the entry.
    let by_password = gw.try_sign_in("dana", "").await;
    assert_eq!(by_password.status(), 401);
    // A local user's name is not a provider's to lock.
    let clash = api(Method::POST, "/providers/fake/users/bob/lock")
        .send()
        .await
        .unwrap();
    assert_eq!(clash.status(), 409);
    let users: serde_json::Value = api(Method::GET, "/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = super::admin::user_entry(&users, "dana");
    assert_eq!(
        (entry["provider"].as_str(), entry["locked"].as_bool()),
        (Some("fake"), Some(true))
    );
    let unlocked = api(Method::POST, "/users/dana/unlock")
        .send()
        .await
        .unwrap();
    assert_eq!(unlocked.status(), 204);
    assert!(!std::fs::read_to_string(gw.users_file())
        .unwrap()
        .contains("dana"));
    let back = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &back, "/private/x").await.status(), 200);
}

/// A users file's provider entries: a name and a provider, never a password.
#[test]
fn a_provider_users_entry_has_no_password_and_a_local_user_has_one() {
    let parse =
        |text: &str| authgate::users::Users::parse(text, std::path::Path::new("users.toml"));
    let users = parse("[users.dana]\nprovider = \"acme\"\nlocked = true\n").unwrap();
    let dana = users.get("dana").unwrap();
    assert!(dana.locked && dana.provider.as_deref() == Some("acme"));
    let both = parse(&format!(
        "[users.dana]\nprovider = \"acme\"\npassword = \"{}\"\n",
        authgate::users::password::hash_password("x-password-long")
    ))
    .unwrap_err()
    .to_string();
    assert!(both.contains("provider's user"), "{both}");
    let neither = parse("[users.erin]\nroles = [\"user\"]\n")
        .unwrap_err()
        .to_string();
    assert!(neither.contains("has no password"), "{neither}");
}

/// A provider a reload removes takes its sessions with it; local sessions
/// stay.
#[tokio::test]
async fn removing_a_provider_from_the_config_ends_its_sessions() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    let dana = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &dana, "/private/x").await.status(), 200);
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let text = std::fs::read_to_string(gw.config_file()).unwrap();
    let without = text
        .split("[[oidc]]")
        .next()
        .unwrap()
        .replace("providers = [\"fake\"]\n", "");
    std::fs::write(gw.config_file(), without).unwrap();
    let reloaded = gw.gateway().reload().await;
    assert!(
        matches!(reloaded, authgate::reload::Reloaded::Applied { .. }),
        "{reloaded:?}"
    );
    assert_eq!(
        dana.get(gw.url("/private/x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(gw.get_as(&alice, "/private/x").await.status(), 200);
    let gone = gw
        .client()
        .get(gw.url("/.gateway/oidc/fake/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

/// A provider that does not answer: the button gives up after the
/// provider's `timeout` with a 503, it does not hang the browser.
#[tokio::test]
async fn a_provider_that_hangs_is_given_up_on_after_its_timeout() {
    let provider = FakeProvider::start().await;
    provider.set(|s| s.hang = Some(Duration::from_secs(10)));
    let gw = gateway_with(&provider, "timeout = \"300ms\"").await;
    let started = std::time::Instant::now();
    let answer = gw
        .client()
        .get(gw.url("/.gateway/oidc/fake/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A provider's user has no password or second factor here: the account
/// page says where they are kept, those pages say so too, and a fresh
/// sign-in is the provider's.
#[tokio::test]
async fn a_provider_users_account_pages_point_to_the_provider() {
    let provider = FakeProvider::start().await;
    let gw = gateway_with(&provider, "").await;
    let b = browser(&gw, &provider);
    assert_eq!(sign_in(&gw, &b, "/private/x").await.status(), 200);
    let account = b
        .get(gw.url("/.gateway/account"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        account.contains("You signed in through <strong>fake</strong>"),
        "{account}"
    );
    assert!(!account.contains("/.gateway/password"));
    for page in ["/.gateway/password", "/.gateway/totp"] {
        let answer = b.get(gw.url(page)).send().await.unwrap();
        assert_eq!(answer.status(), 403, "{page}");
        assert!(answer
            .text()
            .await
            .unwrap()
            .contains("kept there, not here"));
    }
    let reauth = b
        .get(gw.url("/.gateway/reauth?next=/fresh/x"))
        .send()
        .await
        .unwrap();
    // Followed: back through the provider to the page.
    assert_eq!(reauth.url().path(), "/fresh/x");
    let grants: Vec<_> = provider
        .state
        .lock()
        .unwrap()
        .grants
        .values()
        .cloned()
        .collect();
    assert!(grants
        .iter()
        .any(|g| g.query.get("prompt").map(String::as_str) == Some("login")));
}

/// With users in Redis, locking a provider's user out on one replica ends
/// their session on every replica and is listed everywhere; unlocking
/// removes it for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_a_provider_users_lock() {
    use reqwest::Method;
    let redis = super::replicas::RedisServer::start();
    let provider = FakeProvider::start().await;
    let on_redis = || {
        Setup::new()
            .store("backend = \"redis\"")
            .store(&format!("url = \"{}\"", redis.url()))
    };
    let a = gateway_from(on_redis(), &provider, "").await;
    let b = gateway_from(on_redis(), &provider, "").await;
    let dana = browser(&b, &provider);
    assert_eq!(sign_in(&b, &dana, "/private/x").await.status(), 200);
    let admin = a.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = super::admin::csrf_of(&a, &admin).await;
    let api =
        |method: Method, path: &str| super::admin::api(&a, method, path, Some(&admin), Some(&csrf));
    assert_eq!(
        api(Method::POST, "/providers/fake/users/dana/lock")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    super::admin::within(Duration::from_secs(1), || async {
        dana.get(b.url("/private/x")).send().await.unwrap().status() == 401
    })
    .await;
    let on_b: serde_json::Value = super::admin::api(&b, Method::GET, "/users", Some(&admin), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = super::admin::user_entry(&on_b, "dana");
    assert_eq!(
        (entry["provider"].as_str(), entry["locked"].as_bool()),
        (Some("fake"), Some(true))
    );
    let again = browser(&b, &provider);
    assert_eq!(sign_in(&b, &again, "/private/x").await.status(), 403);
    // A local user's name is not a provider's to lock, in Redis either.
    assert_eq!(
        api(Method::POST, "/providers/fake/users/bob/lock")
            .send()
            .await
            .unwrap()
            .status(),
        409
    );
    assert_eq!(
        api(Method::POST, "/users/dana/unlock")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    // Every failed sign-in counts against the client: wait for the unlock
    // to reach B without trying, then try once.
    super::admin::within(Duration::from_secs(1), || async {
        let users: serde_json::Value =
            super::admin::api(&b, Method::GET, "/users", Some(&admin), None)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        !users["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "dana")
    })
    .await;
    let back = browser(&b, &provider);
    assert_eq!(sign_in(&b, &back, "/private/x").await.status(), 200);
}
