//! Passkeys (issue 28): added on the account page, asked for after the
//! password, signing in alone, removed; challenges single-use and bound;
//! origin, relying party, user verification and the signature counter
//! checked; throttled like passwords; every event recorded. The
//! authenticator is webauthn-authenticator-rs's software passkey (a P-256
//! key per credential, user verification claimed when asked); the
//! real-browser test is in `browser.rs`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use crate::support::{Setup, TestGateway, ALICE_PASSWORD, BOB_PASSWORD};

const RULES: &str = r#"
[[rule]]
path = "/ops/**"
access = "authenticated"
mfa = true

[[rule]]
path = "/**"
access = "authenticated"
"#;

/// A browser's view of the gateway: cookies kept, the gateway reached
/// under a host name (WebAuthn needs one), as the origin `https://HOST:PORT`.
pub struct Visitor {
    client: reqwest::Client,
    base: String,
    pub origin: Url,
}

impl Visitor {
    pub fn new(gw: &TestGateway, host: &str) -> Visitor {
        let client = gw
            .client_builder()
            .cookie_store(true)
            .resolve(host, gw.addr())
            // The test certificate names localhost only.
            .danger_accept_invalid_certs(host != "localhost")
            .build()
            .unwrap();
        let base = format!("https://{host}:{}", gw.addr().port());
        Visitor {
            client,
            origin: Url::parse(&base).unwrap(),
            base,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("origin", &self.base)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The sign-in form's CSRF token (its cookie is kept).
    async fn login_token(&self) -> String {
        token_in(&self.get("/.gateway/login").await.text().await.unwrap())
    }

    /// Posts the password form: the gateway's answer.
    pub async fn sign_in(&self, user: &str, password: &str) -> reqwest::Response {
        let token = self.login_token().await;
        self.post(
            "/.gateway/login",
            &[("csrf", &token), ("username", user), ("password", password)],
        )
        .await
    }

    /// Who the session says this is (`None`: not signed in).
    pub async fn whoami(&self) -> Option<Value> {
        let response = self.get("/.gateway/whoami").await;
        (response.status() == 200).then_some(response.json().await.unwrap())
    }

    async fn session_csrf(&self) -> String {
        self.whoami().await.expect("signed in")["csrf"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// The first CSRF token a page carries (a form field or a button's).
fn token_in(html: &str) -> String {
    for start in ["data-csrf=\"", "name=\"csrf\" value=\""] {
        if let Some(at) = html.find(start) {
            let rest = &html[at + start.len()..];
            return rest[..rest.find('"').unwrap()].to_owned();
        }
    }
    panic!("no CSRF token in {html}");
}

/// A passkey the gateway registered: its credential ID and the user
/// handle it was made for (base64url), as a discoverable credential keeps them.
pub struct Registered {
    pub id: String,
    pub handle: String,
}

/// Adds a passkey made by `key` (the password again, as the page asks).
async fn add(
    visitor: &Visitor,
    key: &mut SoftPasskey,
    name: &str,
    password: &str,
) -> Result<Registered, (StatusCode, String)> {
    let csrf = visitor.session_csrf().await;
    let response = visitor
        .post(
            "/.gateway/passkeys/options",
            &[("csrf", &csrf), ("password", password)],
        )
        .await;
    if response.status() != 200 {
        return Err((response.status(), response.text().await.unwrap()));
    }
    let options: Value = response.json().await.unwrap();
    let handle = options["publicKey"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let options: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let credential = key
        .do_registration(visitor.origin.clone(), options)
        .expect("the software passkey registers");
    let response = visitor
        .post(
            "/.gateway/passkeys",
            &[
                ("csrf", &csrf),
                ("action", "add"),
                ("name", name),
                ("credential", &serde_json::to_string(&credential).unwrap()),
            ],
        )
        .await;
    if response.status() != 200 {
        return Err((response.status(), response.text().await.unwrap()));
    }
    Ok(Registered {
        id: credential.id.clone(),
        handle,
    })
}

/// bob, signed in, with a software passkey called `name` added.
async fn bob_with_a_passkey(gw: &TestGateway, name: &str) -> (Visitor, SoftPasskey, Registered) {
    let bob = Visitor::new(gw, "localhost");
    assert_eq!(bob.sign_in("bob", BOB_PASSWORD).await.status(), 303);
    let mut key = SoftPasskey::new(true);
    let registered = add(&bob, &mut key, name, BOB_PASSWORD).await.unwrap();
    (bob, key, registered)
}

/// The options of the passkey step of the pending sign-in (its CSRF token
/// from the page).
async fn second_step_options(visitor: &Visitor) -> (String, Value) {
    let page = visitor.get("/.gateway/login/passkey").await;
    assert_eq!(page.status(), 200);
    let csrf = token_in(&page.text().await.unwrap());
    let response = visitor
        .post("/.gateway/login/passkey/options", &[("csrf", &csrf)])
        .await;
    assert_eq!(response.status(), 200);
    (csrf, response.json().await.unwrap())
}

/// What `key` answers to `options`, as a browser at `origin` would send it.
fn assertion(key: &mut SoftPasskey, origin: &Url, options: &Value) -> String {
    let options: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    let credential = key
        .do_authentication(origin.clone(), options)
        .expect("the software passkey signs");
    serde_json::to_string(&credential).unwrap()
}

async fn finish_second_step(visitor: &Visitor, csrf: &str, credential: &str) -> reqwest::Response {
    visitor
        .post(
            "/.gateway/login/passkey",
            &[("csrf", csrf), ("credential", credential)],
        )
        .await
}

/// The whole passkey step of a pending sign-in.
async fn second_step(visitor: &Visitor, key: &mut SoftPasskey) -> reqwest::Response {
    let (csrf, started) = second_step_options(visitor).await;
    let credential = assertion(key, &visitor.origin, &started["options"]);
    finish_second_step(visitor, &csrf, &credential).await
}

/// A sign-in with a passkey alone. The software passkey keeps no
/// discoverable credentials, so the test does what a resident-key
/// authenticator does: picks the credential for the RP itself and
/// returns the user handle it was made with. `verified`: false asks the
/// authenticator for no user verification.
async fn passkey_only(
    visitor: &Visitor,
    key: &mut SoftPasskey,
    registered: &Registered,
    verified: bool,
) -> reqwest::Response {
    let fields = passkey_only_form(visitor, key, registered, verified).await;
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    visitor.post("/.gateway/login/passkey", &fields).await
}

/// The form a passkey-alone sign-in posts.
async fn passkey_only_form(
    visitor: &Visitor,
    key: &mut SoftPasskey,
    registered: &Registered,
    verified: bool,
) -> Vec<(&'static str, String)> {
    let csrf = visitor.login_token().await;
    let response = visitor
        .post("/.gateway/login/passkey/options", &[("csrf", &csrf)])
        .await;
    assert_eq!(response.status(), 200);
    let started: Value = response.json().await.unwrap();
    let ceremony = started["ceremony"].as_str().unwrap().to_owned();
    let mut options = started["options"].clone();
    assert_eq!(
        options["publicKey"]["userVerification"], "required",
        "a passkey alone must verify the user"
    );
    options["publicKey"]["allowCredentials"] =
        json!([{ "type": "public-key", "id": registered.id }]);
    if !verified {
        options["publicKey"]["userVerification"] = json!("discouraged");
    }
    let mut credential: Value =
        serde_json::from_str(&assertion(key, &visitor.origin, &options)).unwrap();
    credential["response"]["userHandle"] = json!(registered.handle);
    vec![
        ("csrf", csrf),
        ("ceremony", ceremony),
        ("credential", credential.to_string()),
    ]
}

/// The security events the admin API lists (event, user, detail), newest
/// first, asked by alice at `host`.
async fn events(gw: &TestGateway, host: &str) -> Vec<(String, String, String)> {
    let alice = Visitor::new(gw, host);
    assert_eq!(alice.sign_in("alice", ALICE_PASSWORD).await.status(), 303);
    let list: Value = alice
        .get("/.gateway/admin/api/events")
        .await
        .json()
        .await
        .unwrap();
    list["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("event"), text("user"), text("detail"))
        })
        .collect()
}

async fn gateway() -> TestGateway {
    Setup::new().rules(RULES).start().await
}

#[tokio::test]
async fn a_passkey_is_added_with_the_password_asked_after_it_and_removed() {
    let gw = gateway().await;
    let bob = Visitor::new(&gw, "localhost");
    assert_eq!(bob.sign_in("bob", BOB_PASSWORD).await.status(), 303);
    // Enrolment is never blocked by a rule, even one that wants a second factor.
    let account = bob.get("/.gateway/account").await;
    assert_eq!(account.status(), 200);
    let csp = account.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline'; script") && !csp.contains("script-src 'unsafe"));
    let script = bob.get("/.gateway/passkey.js").await;
    assert_eq!(script.status(), 200);
    assert!(script
        .text()
        .await
        .unwrap()
        .contains("navigator.credentials"));

    let mut key = SoftPasskey::new(true);
    // The password again first: none, or a wrong one, adds nothing.
    for typed in ["", "not bob's password"] {
        let (status, _) = add(&bob, &mut key, "laptop", typed).await.err().unwrap();
        assert_eq!(status, 401, "{typed:?}");
    }
    add(&bob, &mut key, "laptop", BOB_PASSWORD).await.unwrap();
    let page = bob.get("/.gateway/account").await.text().await.unwrap();
    assert!(page.contains("laptop") && page.contains("never"), "{page}");
    // The users file keeps the public key and credential ID; nothing secret.
    let file = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(file.contains("[[users.bob.passkeys]]"), "{file}");
    assert!(
        file.contains("name = \"laptop\"") && file.contains("counter"),
        "{file}"
    );
    assert!(!file.to_lowercase().contains("private"), "{file}");

    // Signed out, the password leads to the passkey step, not a session.
    let later = Visitor::new(&gw, "localhost");
    let response = later.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/.gateway/login/passkey");
    assert!(later.whoami().await.is_none());
    assert_eq!(later.get("/ops/x").await.status(), 401, "no session yet");
    let done = second_step(&later, &mut key).await;
    assert_eq!(done.status(), 200);
    let next: Value = done.json().await.unwrap();
    assert_eq!(next["next"], "/");
    // The passkey is a second factor: the mfa route lets bob in.
    assert_eq!(later.get("/ops/x").await.status(), 200);
    let page = later.get("/.gateway/account").await.text().await.unwrap();
    assert!(!page.contains("never"), "last used is shown: {page}");
    assert!(std::fs::read_to_string(gw.users_file())
        .unwrap()
        .contains("used = "));

    // Removed, the password alone signs in again.
    let csrf = later.session_csrf().await;
    let list = &page[page.find("id=\"passkeys\"").unwrap()..];
    let id = &list[list.find("name=\"target\" value=\"").unwrap() + 21..];
    let id = &id[..id.find('"').unwrap()];
    let removed = later
        .post(
            "/.gateway/passkeys",
            &[("csrf", &csrf), ("action", "remove"), ("target", id)],
        )
        .await;
    assert_eq!(removed.status(), 303);
    assert!(!std::fs::read_to_string(gw.users_file())
        .unwrap()
        .contains("passkeys"));
    let again = Visitor::new(&gw, "localhost");
    let response = again.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(response.headers()["location"], "/");
    assert!(again.whoami().await.is_some());

    let seen = events(&gw, "localhost").await;
    for wanted in [
        "passkey_added",
        "passkey_used",
        "passkey_removed",
        "passkey_refused",
    ] {
        assert!(
            seen.iter().any(|(e, user, _)| e == wanted && user == "bob"),
            "{wanted} missing: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_challenge_is_used_once_and_belongs_to_its_own_sign_in() {
    let gw = gateway().await;
    let (_bob, mut key, _) = bob_with_a_passkey(&gw, "laptop").await;

    // An assertion for one pending sign-in...
    let first = Visitor::new(&gw, "localhost");
    first.sign_in("bob", BOB_PASSWORD).await;
    let (first_csrf, started) = second_step_options(&first).await;
    let answer = assertion(&mut key, &first.origin, &started["options"]);
    // ...is refused by another pending sign-in with a challenge of its own.
    let second = Visitor::new(&gw, "localhost");
    second.sign_in("bob", BOB_PASSWORD).await;
    let (second_csrf, _) = second_step_options(&second).await;
    let stolen = finish_second_step(&second, &second_csrf, &answer).await;
    assert_eq!(stolen.status(), 401);
    assert!(second.whoami().await.is_none());
    // Its own sign-in takes it once.
    let used = finish_second_step(&first, &first_csrf, &answer).await;
    assert_eq!(used.status(), 200);
    assert!(first.whoami().await.is_some());
    // Replayed (a new pending sign-in, a new challenge, the old answer): no.
    let third = Visitor::new(&gw, "localhost");
    third.sign_in("bob", BOB_PASSWORD).await;
    let (third_csrf, _) = second_step_options(&third).await;
    let replayed = finish_second_step(&third, &third_csrf, &answer).await;
    assert_eq!(replayed.status(), 401);
    // And the same challenge twice, by its own sign-in: the second finds none.
    let (csrf, started) = second_step_options(&third).await;
    let fresh = assertion(&mut key, &third.origin, &started["options"]);
    let once = finish_second_step(&third, &csrf, &fresh).await;
    assert_eq!(once.status(), 200);
    let twice = third
        .post(
            "/.gateway/login/passkey",
            &[("csrf", &csrf), ("credential", &fresh)],
        )
        .await;
    assert_ne!(twice.status(), 200);
}

#[tokio::test]
async fn a_passkey_alone_signs_in_only_with_user_verification() {
    let gw = gateway().await;
    let (_bob, mut key, registered) = bob_with_a_passkey(&gw, "phone").await;

    let visitor = Visitor::new(&gw, "localhost");
    let refused = passkey_only(&visitor, &mut key, &registered, false).await;
    assert_eq!(refused.status(), 401);
    assert!(visitor.whoami().await.is_none());

    let fields = passkey_only_form(&visitor, &mut key, &registered, true).await;
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = visitor.post("/.gateway/login/passkey", &fields).await;
    assert_eq!(response.status(), 200);
    // The same answer again (its ceremony, its signature): refused.
    let replayed = Visitor::new(&gw, "localhost");
    let token = replayed.login_token().await;
    let mut again = fields.clone();
    again[0] = ("csrf", &token);
    let response = replayed.post("/.gateway/login/passkey", &again).await;
    assert_eq!(response.status(), 401);
    assert!(replayed.whoami().await.is_none());
    // A ceremony changed on its way back: refused before anything is checked.
    let mut forged = fields.clone();
    let tampered = format!("x{}", &fields[1].1[1..]);
    forged[1] = ("ceremony", &tampered);
    forged[0] = ("csrf", &token);
    assert_eq!(
        replayed
            .post("/.gateway/login/passkey", &forged)
            .await
            .status(),
        409
    );
    let who = visitor.whoami().await.expect("signed in");
    assert_eq!(who["user"], "bob");
    // Password and second factor at once: the mfa route is open.
    assert_eq!(visitor.get("/ops/x").await.status(), 200);
    assert_eq!(gw.upstream.last().headers["x-auth-user"], "bob");

    // A passkey the gateway never saw names nobody, and says no more.
    let mut stranger = SoftPasskey::new(true);
    let elsewhere = Visitor::new(&gw, "localhost");
    let foreign = Setup::new().rules(RULES).start().await;
    let there = Visitor::new(&foreign, "localhost");
    there.sign_in("bob", BOB_PASSWORD).await;
    let unknown = add(&there, &mut stranger, "other", BOB_PASSWORD)
        .await
        .unwrap();
    let response = passkey_only(&elsewhere, &mut stranger, &unknown, true).await;
    assert_eq!(response.status(), 401);
    let body = response.text().await.unwrap();
    assert!(body.contains("not accepted"), "{body}");
    // The handle of a real account with a credential ID it does not hold: the same words.
    let mixed = Registered {
        id: unknown.id.clone(),
        handle: registered.handle.clone(),
    };
    let response = passkey_only(&elsewhere, &mut stranger, &mixed, true).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().await.unwrap(), body);

    // A locked account: no.
    assert_eq!(
        as_admin(&gw, reqwest::Method::POST, "/users/bob/lock", None).await,
        204
    );
    let locked = Visitor::new(&gw, "localhost");
    let response = passkey_only(&locked, &mut key, &registered, true).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn another_origin_another_relying_party_and_a_counter_that_goes_back_are_refused() {
    let gw = Setup::new()
        .rules(RULES)
        .session("cookie_domain = \"example.test\"")
        .login("max_failures = 20")
        .start()
        .await;
    // Added on one app of the domain...
    let app = Visitor::new(&gw, "app.example.test");
    assert_eq!(app.sign_in("bob", BOB_PASSWORD).await.status(), 303);
    let mut key = SoftPasskey::new(true);
    add(&app, &mut key, "laptop", BOB_PASSWORD).await.unwrap();
    // ...it serves another: the relying party is the cookie domain.
    let wiki = Visitor::new(&gw, "wiki.example.test");
    wiki.sign_in("bob", BOB_PASSWORD).await;
    let (_, started) = second_step_options(&wiki).await;
    assert_eq!(started["options"]["publicKey"]["rpId"], "example.test");
    let response = {
        let (csrf, started) = second_step_options(&wiki).await;
        let answer = assertion(&mut key, &wiki.origin, &started["options"]);
        finish_second_step(&wiki, &csrf, &answer).await
    };
    assert_eq!(response.status(), 200);

    // An assertion a page of another origin asked for.
    let visitor = Visitor::new(&gw, "app.example.test");
    visitor.sign_in("bob", BOB_PASSWORD).await;
    let (csrf, started) = second_step_options(&visitor).await;
    let phished = Url::parse(&format!("https://evil.example.test:{}", gw.addr().port())).unwrap();
    let answer = assertion(&mut key, &phished, &started["options"]);
    assert_eq!(
        finish_second_step(&visitor, &csrf, &answer).await.status(),
        401
    );
    // One made for another relying party (a subdomain's own RP ID).
    let (csrf, started) = second_step_options(&visitor).await;
    let mut options = started["options"].clone();
    options["publicKey"]["rpId"] = json!("app.example.test");
    let answer = assertion(&mut key, &visitor.origin, &options);
    assert_eq!(
        finish_second_step(&visitor, &csrf, &answer).await.status(),
        401
    );
    assert!(visitor.whoami().await.is_none());

    // The stored counter ahead of the authenticator's (a clone used it):
    // refused, and said so.
    let file = std::fs::read_to_string(gw.users_file()).unwrap();
    // The credential is a TOML literal string: its JSON as it is.
    let at = file.find("\"counter\":").unwrap() + "\"counter\":".len();
    let digits = file[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
    let edited = format!("{}1000{}", &file[..at], &file[at + digits..]);
    std::fs::write(gw.users_file(), edited).unwrap();
    // Until the gateway has read the edit, the use is refused too (the
    // passkey in the file is not the one it checked).
    let deadline = Instant::now() + Duration::from_secs(10);
    let reasons = loop {
        let (csrf, started) = second_step_options(&visitor).await;
        let answer = assertion(&mut key, &visitor.origin, &started["options"]);
        assert_eq!(
            finish_second_step(&visitor, &csrf, &answer).await.status(),
            401
        );
        let reasons: Vec<String> = events(&gw, "app.example.test")
            .await
            .into_iter()
            .filter(|(e, _, _)| e == "passkey_refused")
            .map(|(_, _, why)| why)
            .collect();
        if reasons.iter().any(|r| r.contains("counter went backwards")) {
            break reasons;
        }
        assert!(
            Instant::now() < deadline,
            "the edit was never read: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for wanted in [
        "another origin",
        "another relying party",
        "counter went backwards",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(wanted)),
            "{wanted}: {reasons:?}"
        );
    }
}

#[tokio::test]
async fn passkey_tries_take_from_the_sign_in_throttle() {
    let gw = Setup::new()
        .rules(RULES)
        .login("max_failures = 2")
        .start()
        .await;
    let (_bob, mut key, _) = bob_with_a_passkey(&gw, "laptop").await;

    let visitor = Visitor::new(&gw, "localhost");
    visitor.sign_in("bob", BOB_PASSWORD).await;
    let phished = Url::parse(&format!("https://evil.localhost:{}", gw.addr().port())).unwrap();
    for _ in 0..2 {
        let (csrf, started) = second_step_options(&visitor).await;
        let answer = assertion(&mut key, &phished, &started["options"]);
        assert_eq!(
            finish_second_step(&visitor, &csrf, &answer).await.status(),
            401
        );
    }
    // Now even the right passkey waits.
    let throttled = second_step(&visitor, &mut key).await;
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key("retry-after"));
    assert!(visitor.whoami().await.is_none());
}

/// An admin API call as alice: its status.
async fn as_admin(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> u16 {
    let session = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = crate::admin::csrf_of(gw, &session).await;
    let mut request = crate::admin::api(gw, method, path, Some(&session), Some(&csrf));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn require_second_factor_is_met_by_a_passkey_and_a_reset_ends_the_sessions() {
    let gw = Setup::new()
        .rules(RULES)
        .login("require_second_factor = [\"ops\"]")
        .start()
        .await;
    let (bob, mut key, _) = bob_with_a_passkey(&gw, "laptop").await;
    add(&bob, &mut SoftPasskey::new(true), "spare", BOB_PASSWORD)
        .await
        .unwrap();
    let roles = json!({ "roles": ["user", "ops"] });
    let put = reqwest::Method::PUT;
    assert_eq!(
        as_admin(&gw, put.clone(), "/users/bob/roles", Some(roles)).await,
        204
    );
    // bob must have a second factor now, and his passkey is one.
    let signed_in = Visitor::new(&gw, "localhost");
    let response = signed_in.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(response.headers()["location"], "/.gateway/login/passkey");
    assert_eq!(second_step(&signed_in, &mut key).await.status(), 200);
    assert!(signed_in.whoami().await.is_some());
    // The admin sees two passkeys and removes them all: his sessions end.
    let session = gw.sign_in("alice", ALICE_PASSWORD).await;
    let users: Value = crate::admin::api(&gw, reqwest::Method::GET, "/users", Some(&session), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(crate::admin::user_entry(&users, "bob")["passkeys"], 2);
    let reset = as_admin(
        &gw,
        reqwest::Method::POST,
        "/users/bob/passkeys-reset",
        None,
    )
    .await;
    assert_eq!(reset, 204);
    assert!(signed_in.whoami().await.is_none(), "bob's session ended");
    assert!(bob.whoami().await.is_none());
    // With none left and the rule on him, the password leads to enrolment.
    let again = Visitor::new(&gw, "localhost");
    let response = again.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(response.headers()["location"], "/.gateway/totp");
    assert!(events(&gw, "localhost")
        .await
        .iter()
        .any(|(e, user, detail)| e == "passkeys_reset"
            && user == "bob"
            && detail.contains("2 passkey")));

    // The command line does the same to the users file; the running
    // gateway ends the sessions it sees go.
    let ops = Visitor::new(&gw, "localhost");
    let roles = json!({ "roles": ["user"] });
    assert_eq!(
        as_admin(&gw, put, "/users/bob/roles", Some(roles)).await,
        204
    );
    ops.sign_in("bob", BOB_PASSWORD).await;
    add(&ops, &mut key, "laptop again", BOB_PASSWORD)
        .await
        .unwrap();
    let listed = crate::support::authgate()
        .args(["user", "list", "-c"])
        .arg(gw.config_file())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("bob\tuser  (1 passkey)"), "{listed}");
    let output = crate::support::authgate()
        .args(["user", "passkeys-reset", "bob", "-c"])
        .arg(gw.config_file())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(!std::fs::read_to_string(gw.users_file())
        .unwrap()
        .contains("passkeys"));
    crate::admin::within(Duration::from_secs(5), || async {
        ops.whoami().await.is_none()
    })
    .await;
}

#[tokio::test]
async fn on_redis_a_passkey_added_on_one_replica_serves_on_another() {
    let redis = crate::replicas::RedisServer::start();
    let replica = || {
        crate::replicas::on(&redis)
            .rules(RULES)
            .login("max_failures = 50")
    };
    let a = replica().start().await;
    let b = replica().start().await;
    let bob = Visitor::new(&a, "localhost");
    bob.sign_in("bob", BOB_PASSWORD).await;
    let mut key = SoftPasskey::new(true);
    let registered = add(&bob, &mut key, "laptop", BOB_PASSWORD).await.unwrap();

    // The other replica asks for it within a second or so.
    let visitor = Visitor::new(&b, "localhost");
    crate::admin::within(Duration::from_secs(3), || async {
        let response = Visitor::new(&b, "localhost")
            .sign_in("bob", BOB_PASSWORD)
            .await;
        response.headers()["location"] == "/.gateway/login/passkey"
    })
    .await;
    visitor.sign_in("bob", BOB_PASSWORD).await;
    let (csrf, started) = second_step_options(&visitor).await;
    // The challenge waits in Redis for five minutes, no longer.
    let ttl = redis.command(
        "EVAL \"return redis.call('PTTL', redis.call('KEYS', '*passkey-second-factor:*')[1])\" 0",
    );
    let ttl: u64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!((290_000..=300_000).contains(&ttl), "{ttl}");
    let answer = assertion(&mut key, &visitor.origin, &started["options"]);
    assert_eq!(
        finish_second_step(&visitor, &csrf, &answer).await.status(),
        200
    );
    // A passkey alone, on the first replica this time: once it has read
    // the counter b saved (until then its use is refused, never counted
    // from a stale state).
    let alone = Visitor::new(&a, "localhost");
    let deadline = Instant::now() + Duration::from_secs(5);
    while passkey_only(&alone, &mut key, &registered, true)
        .await
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "a never took the passkey");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(alone.whoami().await.is_some());

    // Removed on a: bob's sessions end on both.
    let reset = as_admin(&a, reqwest::Method::POST, "/users/bob/passkeys-reset", None).await;
    assert_eq!(reset, 204);
    crate::admin::within(Duration::from_secs(3), || async {
        visitor.whoami().await.is_none() && alone.whoami().await.is_none()
    })
    .await;
}

#[tokio::test]
async fn a_directory_user_keeps_passkeys_here_and_the_directory_still_decides() {
    let slapd = crate::slapd::Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let section = slapd.section(
        dir.path(),
        &slapd.ldaps_url(),
        "group_base = \"ou=groups,dc=example,dc=org\"\nrole_map = { \"admins\" = [\"admin\"] }\nheaders = { \"X-Auth-Email\" = \"mail\" }",
    );
    let local = crate::support::default_users();
    let local = local.split("[users.carol]").next().unwrap();
    let gw = Setup::new()
        .users(local)
        .rules(&format!("{RULES}\n{section}"))
        .start()
        .await;
    let password = crate::slapd::CAROL_PASSWORD;
    let carol = Visitor::new(&gw, "localhost");
    assert_eq!(carol.sign_in("carol", password).await.status(), 303);
    let mut key = SoftPasskey::new(true);
    // The password again is the directory's.
    let (status, _) = add(&carol, &mut key, "laptop", BOB_PASSWORD)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    let registered = add(&carol, &mut key, "laptop", password).await.unwrap();
    let file = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(
        file.contains("provider = \"ldap\"") && file.contains("[[users.carol.passkeys]]"),
        "{file}"
    );

    // After the directory's password, the passkey is her second factor.
    let visitor = Visitor::new(&gw, "localhost");
    let response = visitor.sign_in("carol", password).await;
    assert_eq!(response.headers()["location"], "/.gateway/login/passkey");
    assert_eq!(second_step(&visitor, &mut key).await.status(), 200);
    assert_eq!(visitor.get("/ops/x").await.status(), 200);
    assert_eq!(gw.upstream.last().headers["x-auth-roles"], "admin");

    // Alone, it signs her in with what the directory says of her today.
    let alone = Visitor::new(&gw, "localhost");
    assert_eq!(
        passkey_only(&alone, &mut key, &registered, true)
            .await
            .status(),
        200
    );
    assert_eq!(alone.get("/ops/x").await.status(), 200);
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["x-auth-user"], "carol");
    assert_eq!(seen.headers["x-auth-roles"], "admin");
    assert_eq!(seen.headers["x-auth-email"], "carol@example.org");
    // Gone from the directory, her passkey signs nobody in.
    slapd
        .delete(&format!("uid=carol,ou=people,{}", crate::slapd::BASE))
        .await;
    let after = Visitor::new(&gw, "localhost");
    assert_eq!(
        passkey_only(&after, &mut key, &registered, true)
            .await
            .status(),
        401
    );
    assert!(after.whoami().await.is_none());
}

/// Signs `visitor` in with a password and a TOTP code at `at`.
async fn sign_in_with_code(visitor: &Visitor, user: &str, password: &str, at: u64) {
    let response = visitor.sign_in(user, password).await;
    assert_eq!(response.status(), 303);
    let page = visitor
        .get("/.gateway/login/code")
        .await
        .text()
        .await
        .unwrap();
    let code = crate::totp::code(crate::totp::DAVE_SECRET, at);
    let done = visitor
        .post(
            "/.gateway/login/code",
            &[("csrf", &token_in(&page)), ("code", &code)],
        )
        .await;
    assert_eq!(done.status(), 303, "the code step");
}

#[tokio::test]
async fn a_code_stays_the_alternative_and_no_rule_blocks_adding_a_passkey() {
    let gw = Setup::new()
        .users(&crate::totp::users_with_dave())
        .rules("[[rule]]\npath = \"/**\"\naccess = \"authenticated\"\nmfa = true\n")
        .start()
        .await;
    // bob has no second factor and every route wants one: his account
    // page still adds a passkey.
    let bob = Visitor::new(&gw, "localhost");
    assert_eq!(bob.sign_in("bob", BOB_PASSWORD).await.status(), 303);
    assert_ne!(bob.get("/x").await.status(), 200);
    assert_eq!(bob.get("/.gateway/account").await.status(), 200);
    add(&bob, &mut SoftPasskey::new(true), "laptop", BOB_PASSWORD)
        .await
        .unwrap();
    let file = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(
        file.contains("backup_eligible") && file.contains("backup_state"),
        "{file}"
    );

    // dave has a TOTP app and now a passkey: the passkey step offers the code.
    crate::totp::early_in_a_step(5).await;
    let now = crate::totp::now_secs();
    let dave = Visitor::new(&gw, "localhost");
    sign_in_with_code(&dave, "dave", ALICE_PASSWORD, now).await;
    add(&dave, &mut SoftPasskey::new(true), "phone", ALICE_PASSWORD)
        .await
        .unwrap();
    let later = Visitor::new(&gw, "localhost");
    let response = later.sign_in("dave", ALICE_PASSWORD).await;
    assert_eq!(response.headers()["location"], "/.gateway/login/passkey");
    let page = later
        .get("/.gateway/login/passkey")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("href=\"/.gateway/login/code\""), "{page}");
    let other = Visitor::new(&gw, "localhost");
    sign_in_with_code(&other, "dave", ALICE_PASSWORD, now + 30).await;
    assert_eq!(
        other.get("/x").await.status(),
        200,
        "the code met mfa = true"
    );

    // The admin page counts each user's passkeys.
    let alice = Visitor::new(&gw, "localhost");
    alice.sign_in("alice", ALICE_PASSWORD).await;
    let admin = alice.get("/.gateway/admin/").await.text().await.unwrap();
    assert!(admin.contains("1 passkey(s)"), "{admin}");
}

#[tokio::test]
async fn a_route_that_wants_a_second_factor_is_met_by_a_passkey_on_the_fresh_sign_in_page() {
    let gw = gateway().await;
    // Signed in with the password alone, then a passkey added: the
    // session has passed no second factor yet.
    let (bob, mut key, _) = bob_with_a_passkey(&gw, "laptop").await;
    let refused = bob.get("/ops/x").await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"error":"second_factor_required"}"#
    );
    // The fresh sign-in page offers the passkey (bob has no TOTP code to give).
    let page = bob
        .get("/.gateway/reauth?next=/ops/x")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("data-finish=\"/.gateway/reauth/passkey\""),
        "{page}"
    );
    let csrf = bob.session_csrf().await;
    let before = bob.whoami().await.unwrap();
    let started: Value = bob
        .post("/.gateway/reauth/passkey/options", &[("csrf", &csrf)])
        .await
        .json()
        .await
        .unwrap();
    // An answer from another origin does not do.
    let phished = Url::parse(&format!("https://evil.localhost:{}", gw.addr().port())).unwrap();
    let wrong = assertion(&mut key, &phished, &started["options"]);
    let fields = |credential: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("credential", credential.to_owned()),
            ("next", "/ops/x".to_owned()),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let bob = &bob;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            bob.post("/.gateway/reauth/passkey", &fields).await
        }
    };
    assert_eq!(post(fields(&wrong)).await.status(), 401);
    assert_eq!(bob.get("/ops/x").await.status(), 401);
    let started: Value = bob
        .post("/.gateway/reauth/passkey/options", &[("csrf", &csrf)])
        .await
        .json()
        .await
        .unwrap();
    let right = assertion(&mut key, &bob.origin, &started["options"]);
    let done = post(fields(&right)).await;
    assert_eq!(done.status(), 200);
    assert_eq!(done.json::<Value>().await.unwrap()["next"], "/ops/x");
    assert_eq!(bob.get("/ops/x").await.status(), 200);
    // The same session, its sign-in renewed.
    assert_eq!(bob.whoami().await.unwrap()["csrf"], before["csrf"]);
}
