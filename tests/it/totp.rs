//! The second factor and fresh sign-in (issue 14). Codes are computed with
//! `totp-lite`, an implementation independent of the gateway's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::Value;

use crate::admin::api;
use crate::support::{default_users, set_cookie, Setup, TestGateway, ALICE_PASSWORD, BOB_PASSWORD};

/// dave's key (base32) and one of his recovery codes.
pub const DAVE_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const DAVE_RECOVERY: &str = "abcd-efgh-ijkl-mnop";
const PENDING: &str = "__Host-authgate-mfa";
const SESSION: &str = "__Host-authgate";

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code an authenticator app shows for `secret` at Unix time `at`.
pub fn code(secret: &str, at: u64) -> String {
    let key = data_encoding::BASE32_NOPAD
        .decode(secret.replace(' ', "").as_bytes())
        .unwrap();
    totp_lite::totp_custom::<totp_lite::Sha1>(30, 6, &key, at)
}

/// Waits, if need be, until at least `margin` seconds of the current
/// 30-second step are left, so that "now" stays in one step meanwhile.
pub async fn early_in_a_step(margin: u64) {
    let into = now_secs() % 30;
    if into + margin >= 30 {
        tokio::time::sleep(Duration::from_secs(30 - into)).await;
    }
}

/// The default users plus dave (admin, with a second factor).
pub fn users_with_dave() -> String {
    format!(
        "{}\n[users.dave]\npassword = \"{}\"\nroles = [\"admin\", \"user\"]\ntotp = \"{DAVE_SECRET}\"\nrecovery_codes = [\"{}\"]\n",
        default_users(),
        // dave's password is alice's.
        default_users()
            .split("password = \"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap(),
        authgate::users::totp::recovery_hash(DAVE_RECOVERY),
    )
}

/// Password step: the pending cookie, and that no session cookie came.
async fn password_step(gw: &TestGateway, user: &str, password: &str) -> (String, String) {
    let response = gw.try_sign_in(user, password).await;
    assert_eq!(response.status(), 303, "password step of {user}");
    assert!(
        set_cookie(&response, SESSION).is_none(),
        "a session cookie before the second factor"
    );
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let pending = set_cookie(&response, PENDING).expect("a pending sign-in cookie");
    (pending, location)
}

/// The `csrf` hidden field of a page.
fn csrf_in(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

async fn page_with(gw: &TestGateway, cookie: &str, path: &str) -> reqwest::Response {
    gw.client()
        .get(gw.url(path))
        .header("cookie", cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
}

async fn post_with(
    gw: &TestGateway,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    gw.client()
        .post(gw.url(path))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

/// The code step of a pending sign-in: the response to posting `code`.
async fn code_step(gw: &TestGateway, pending: &str, code: &str) -> reqwest::Response {
    let cookie = format!("{PENDING}={pending}");
    let form = page_with(gw, &cookie, "/.gateway/login/code").await;
    assert_eq!(form.status(), 200);
    let csrf = csrf_in(&form.text().await.unwrap());
    post_with(
        gw,
        &cookie,
        "/.gateway/login/code",
        &[("csrf", &csrf), ("code", code)],
    )
    .await
}

async fn sign_in_with_code(gw: &TestGateway, user: &str, at: u64) -> reqwest::Response {
    let (pending, location) = password_step(gw, user, ALICE_PASSWORD).await;
    assert_eq!(location, "/.gateway/login/code");
    code_step(gw, &pending, &code(DAVE_SECRET, at)).await
}

#[tokio::test]
async fn a_user_with_a_second_factor_signs_in_in_two_steps() {
    let gw = Setup::new().users(&users_with_dave()).start().await;
    early_in_a_step(8).await;
    let (pending, location) = password_step(&gw, "dave", ALICE_PASSWORD).await;
    assert_eq!(location, "/.gateway/login/code");
    // The pending cookie is no session.
    let anonymous = page_with(&gw, &format!("{PENDING}={pending}"), "/private/x").await;
    assert_eq!(anonymous.status(), 302);
    assert!(anonymous.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/.gateway/login"));

    let wrong = code_step(&gw, &pending, "000000").await;
    assert_eq!(wrong.status(), 401);
    assert!(set_cookie(&wrong, SESSION).is_none());
    let now = now_secs();
    let right = code_step(&gw, &pending, &code(DAVE_SECRET, now - 30)).await;
    assert_eq!(right.status(), 303, "a code one step old (drift) is taken");
    let session = set_cookie(&right, SESSION).expect("a session after the code");
    assert_eq!(set_cookie(&right, PENDING).as_deref(), Some(""));
    assert_eq!(gw.get_as(&session, "/private/x").await.status(), 200);
    // The pending sign-in was single-use.
    let again = page_with(&gw, &format!("{PENDING}={pending}"), "/.gateway/login/code").await;
    assert_eq!(again.status(), 303);

    // This step's code works once, a later step's too; older ones never.
    assert_eq!(sign_in_with_code(&gw, "dave", now).await.status(), 303);
    assert_eq!(
        sign_in_with_code(&gw, "dave", now).await.status(),
        401,
        "a replayed code"
    );
    assert_eq!(
        sign_in_with_code(&gw, "dave", now - 30).await.status(),
        401,
        "an older code after a newer one"
    );
    assert_eq!(
        sign_in_with_code(&gw, "dave", now + 30).await.status(),
        303,
        "a code one step ahead (drift)"
    );
    assert_eq!(
        sign_in_with_code(&gw, "dave", now + 90).await.status(),
        401,
        "three steps ahead"
    );
}

#[tokio::test]
async fn a_recovery_code_works_once() {
    let log = crate::logs::captured();
    let gw = Setup::new().users(&users_with_dave()).start().await;
    let (pending, _) = password_step(&gw, "dave", ALICE_PASSWORD).await;
    let used = code_step(&gw, &pending, "ABCD EFGH IJKL MNOP").await;
    assert_eq!(used.status(), 303);
    assert!(set_cookie(&used, SESSION).is_some());
    let users = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(!users.contains(&authgate::users::totp::recovery_hash(DAVE_RECOVERY)));

    let (pending, _) = password_step(&gw, "dave", ALICE_PASSWORD).await;
    let again = code_step(&gw, &pending, DAVE_RECOVERY).await;
    assert_eq!(again.status(), 401);
    // Both are security events: the use, and the refused second try.
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let events_of = |name: &str| {
        logged
            .lines()
            .filter(|l| l.contains(&format!("\"event\":\"{name}\"")) && l.contains("dave"))
            .count()
    };
    assert!(events_of("recovery_code_used") >= 1);
    assert!(events_of("totp_failed") >= 1);
    assert!(
        !logged.contains(DAVE_RECOVERY),
        "a recovery code in the log"
    );
}

#[tokio::test]
async fn wrong_codes_and_wrong_passwords_share_one_throttle() {
    let gw = Setup::new()
        .users(&users_with_dave())
        .login("max_failures = 3")
        .start()
        .await;
    assert_eq!(
        gw.try_sign_in("dave", "wrong-password-1").await.status(),
        401
    );
    for _ in 0..2 {
        let (pending, _) = password_step(&gw, "dave", ALICE_PASSWORD).await;
        assert_eq!(code_step(&gw, &pending, "000000").await.status(), 401);
    }
    // Three failures, two of them codes: the right password is throttled now.
    let throttled = gw.try_sign_in("dave", ALICE_PASSWORD).await;
    assert_eq!(throttled.status(), 429);
}

/// Enrolls through the pages: returns the key shown and the page after the code.
async fn scan_and_confirm(gw: &TestGateway, cookie: &str) -> (String, reqwest::Response) {
    let page = page_with(gw, cookie, "/.gateway/totp").await;
    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    assert!(text.contains("<svg"), "no QR code:\n{text}");
    assert!(!text.contains("<script"));
    let key: String = text
        .split("Key: <code>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .replace(' ', "");
    let csrf = csrf_in(&text);
    let wrong = post_with(
        gw,
        cookie,
        "/.gateway/totp",
        &[("csrf", &csrf), ("step", "confirm"), ("code", "000000")],
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let right = post_with(
        gw,
        cookie,
        "/.gateway/totp",
        &[
            ("csrf", &csrf),
            ("step", "confirm"),
            ("code", &code(&key, now_secs())),
        ],
    )
    .await;
    (key, right)
}

fn recovery_codes_in(page: &str) -> Vec<String> {
    page.split("<li><code>")
        .skip(1)
        .map(|c| c.split('<').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_role_that_must_have_a_second_factor_enrolls_before_any_session() {
    let gw = Setup::new()
        .login("require_totp = [\"admin\"]")
        .start()
        .await;
    early_in_a_step(8).await;
    // bob (no admin) signs in as before.
    gw.sign_in("bob", BOB_PASSWORD).await;
    let (pending, location) = password_step(&gw, "alice", ALICE_PASSWORD).await;
    assert_eq!(location, "/.gateway/totp");
    let cookie = format!("{PENDING}={pending}");
    let (key, done) = scan_and_confirm(&gw, &cookie).await;
    assert_eq!(done.status(), 200);
    let session = set_cookie(&done, SESSION).expect("a session once enrolled");
    let page = done.text().await.unwrap();
    let codes = recovery_codes_in(&page);
    assert_eq!(codes.len(), 10, "{page}");
    assert_eq!(gw.get_as(&session, "/private/x").await.status(), 200);
    let users = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(users.contains(&format!("totp = \"{key}\"")), "{users}");
    for c in &codes {
        assert!(!users.contains(c.as_str()), "a recovery code in clear");
        assert!(users.contains(&authgate::users::totp::recovery_hash(c)));
    }
}

#[tokio::test]
async fn a_signed_in_user_enrolls_after_the_password_and_is_asked_for_codes_after() {
    let log = crate::logs::captured();
    let gw = Setup::new().start().await;
    early_in_a_step(8).await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let cookie = format!("{SESSION}={bob}");
    let first = page_with(&gw, &cookie, "/.gateway/totp").await;
    let text = first.text().await.unwrap();
    assert!(text.contains("name=\"password\""), "{text}");
    let csrf = csrf_in(&text);
    let wrong = post_with(
        &gw,
        &cookie,
        "/.gateway/totp",
        &[
            ("csrf", &csrf),
            ("step", "password"),
            ("password", "not-bobs-password"),
        ],
    )
    .await;
    assert_eq!(wrong.status(), 401);
    // Without the session's token: refused.
    let forged = post_with(
        &gw,
        &cookie,
        "/.gateway/totp",
        &[
            ("csrf", "forged"),
            ("step", "password"),
            ("password", BOB_PASSWORD),
        ],
    )
    .await;
    assert_eq!(forged.status(), 403);
    let shown = post_with(
        &gw,
        &cookie,
        "/.gateway/totp",
        &[
            ("csrf", &csrf),
            ("step", "password"),
            ("password", BOB_PASSWORD),
        ],
    )
    .await;
    assert_eq!(shown.status(), 200);
    let (key, done) = scan_and_confirm(&gw, &cookie).await;
    assert_eq!(done.status(), 200);
    assert_eq!(recovery_codes_in(&done.text().await.unwrap()).len(), 10);
    // The session goes on; the next sign-in asks for a code.
    assert_eq!(gw.get_as(&bob, "/private/x").await.status(), 200);
    let (pending, location) = password_step(&gw, "bob", BOB_PASSWORD).await;
    assert_eq!(location, "/.gateway/login/code");
    let in_next_step = code(&key, now_secs() + 30);
    assert_eq!(code_step(&gw, &pending, &in_next_step).await.status(), 303);

    // The secret is never logged.
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(!logged.contains(&key), "the TOTP secret is in the log");
    assert!(logged.contains("\"event\":\"totp_enrolled\""));

    // An admin resets it (the CLI does the same): a password is enough again.
    let (ok, _, stderr) = {
        let output = crate::support::authgate()
            .args(["user", "totp-reset", "bob", "-c"])
            .arg(gw.config_file())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert!(ok, "{stderr}");
    crate::admin::within(Duration::from_secs(3), || async {
        let response = gw.try_sign_in("bob", BOB_PASSWORD).await;
        set_cookie(&response, SESSION).is_some()
    })
    .await;
}

const GUARDED_RULES: &str = r#"
[[rule]]
path = "/ops/**"
roles = ["admin"]
mfa = true

[[rule]]
path = "/billing/**"
access = "authenticated"
max_auth_age = "1s"

[[rule]]
path = "/**"
access = "authenticated"

[[test]]
user = "bob"
method = "GET"
path = "/billing/x"
auth_age = "20m"
expect = "reauth"

[[test]]
user = "bob"
method = "GET"
path = "/billing/x"
expect = "allow"

[[test]]
user = "alice"
method = "GET"
path = "/ops/x"
expect = "reauth"

[[test]]
user = "dave"
method = "GET"
path = "/ops/x"
expect = "allow"
"#;

#[tokio::test]
async fn a_rule_may_ask_for_the_second_factor() {
    let gw = Setup::new()
        .users(&users_with_dave())
        .rules(GUARDED_RULES)
        .start()
        .await;
    early_in_a_step(8).await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let browser = page_with(&gw, &format!("{SESSION}={alice}"), "/ops/x?a=1").await;
    assert_eq!(browser.status(), 302);
    assert_eq!(
        browser.headers()["location"],
        "/.gateway/totp?next=/ops/x%3Fa%3D1"
    );
    let api_call = gw.get_as(&alice, "/ops/x").await;
    assert_eq!(api_call.status(), 401);
    let body: Value = api_call.json().await.unwrap();
    assert_eq!(body["error"], "second_factor_required");
    assert!(gw
        .upstream
        .requests()
        .iter()
        .all(|s| !s.uri.starts_with("/ops")));

    let dave = sign_in_with_code(&gw, "dave", now_secs()).await;
    let dave = set_cookie(&dave, SESSION).unwrap();
    assert_eq!(gw.get_as(&dave, "/ops/x").await.status(), 200);
}

#[tokio::test]
async fn a_route_may_ask_for_a_fresh_sign_in() {
    let gw = Setup::new()
        .users(&users_with_dave())
        .rules(GUARDED_RULES)
        .start()
        .await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(gw.get_as(&bob, "/billing/x").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cookie = format!("{SESSION}={bob}");
    let browser = page_with(&gw, &cookie, "/billing/x").await;
    assert_eq!(browser.status(), 302);
    assert_eq!(
        browser.headers()["location"],
        "/.gateway/reauth?next=/billing/x"
    );
    let api_call = gw.get_as(&bob, "/billing/x").await;
    assert_eq!(api_call.status(), 401);
    let body: Value = api_call.json().await.unwrap();
    assert_eq!(body["error"], "reauthentication_required");
    // Other routes do not care.
    assert_eq!(gw.get_as(&bob, "/reports/x").await.status(), 200);

    let form = page_with(&gw, &cookie, "/.gateway/reauth?next=/billing/x").await;
    let text = form.text().await.unwrap();
    assert!(!text.contains("name=\"code\""), "bob has no second factor");
    let csrf = csrf_in(&text);
    let wrong = post_with(
        &gw,
        &cookie,
        "/.gateway/reauth",
        &[
            ("csrf", &csrf),
            ("next", "/billing/x"),
            ("password", "not-it-at-all"),
        ],
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let done = post_with(
        &gw,
        &cookie,
        "/.gateway/reauth",
        &[
            ("csrf", &csrf),
            ("next", "/billing/x"),
            ("password", BOB_PASSWORD),
        ],
    )
    .await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/billing/x");
    assert!(
        set_cookie(&done, SESSION).is_none(),
        "the same session goes on"
    );
    assert_eq!(gw.get_as(&bob, "/billing/x").await.status(), 200);

    // dave has a second factor: his fresh sign-in needs the code too.
    early_in_a_step(8).await;
    let dave = sign_in_with_code(&gw, "dave", now_secs()).await;
    let dave = set_cookie(&dave, SESSION).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cookie = format!("{SESSION}={dave}");
    let form = page_with(&gw, &cookie, "/.gateway/reauth").await;
    let text = form.text().await.unwrap();
    assert!(text.contains("name=\"code\""));
    let csrf = csrf_in(&text);
    let without_code = post_with(
        &gw,
        &cookie,
        "/.gateway/reauth",
        &[("csrf", &csrf), ("password", ALICE_PASSWORD), ("code", "")],
    )
    .await;
    assert_eq!(without_code.status(), 401);
    let with_code = post_with(
        &gw,
        &cookie,
        "/.gateway/reauth",
        &[
            ("csrf", &csrf),
            ("password", ALICE_PASSWORD),
            ("code", &code(DAVE_SECRET, now_secs() + 30)),
        ],
    )
    .await;
    assert_eq!(with_code.status(), 303);
    assert_eq!(gw.get_as(&dave, "/billing/x").await.status(), 200);
}

#[tokio::test]
async fn check_and_explain_know_reauth() {
    let gw = Setup::new()
        .users(&users_with_dave())
        .rules(GUARDED_RULES)
        .start()
        .await;
    let check = crate::support::authgate()
        .args(["check", "-c"])
        .arg(gw.config_file())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let explain = |args: &[&str]| {
        let out = crate::support::authgate()
            .args(["explain", "-c"])
            .arg(gw.config_file())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let old = explain(&["--user", "bob", "--auth-age", "20m", "GET", "/billing/x"]);
    assert!(old.contains("decision:  reauth"), "{old}");
    assert!(old.contains("max_auth_age"), "{old}");
    let fresh = explain(&["--user", "bob", "GET", "/billing/x"]);
    assert!(fresh.contains("decision:  allow"), "{fresh}");
    let no_code = explain(&["--user", "dave", "--mfa", "false", "GET", "/ops/x"]);
    assert!(no_code.contains("decision:  reauth"), "{no_code}");
    assert!(no_code.contains("second factor"), "{no_code}");
}

#[tokio::test]
async fn the_admin_api_shows_and_resets_second_factors() {
    let gw = Setup::new().users(&users_with_dave()).start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = crate::admin::csrf_of(&gw, &alice).await;
    let users: Value = api(&gw, Method::GET, "/users", Some(&alice), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let totp_of = |users: &Value, name: &str| crate::admin::user_entry(users, name)["totp"].clone();
    assert_eq!(totp_of(&users, "dave"), true);
    assert_eq!(totp_of(&users, "bob"), false);
    let page = gw
        .get_as(&alice, "/.gateway/admin/")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("TOTP, 1 recovery code(s) left"), "{page}");

    let reset = api(
        &gw,
        Method::POST,
        "/users/dave/totp-reset",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(reset.status(), 204);
    let users: Value = api(&gw, Method::GET, "/users", Some(&alice), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(totp_of(&users, "dave"), false);
    let events: Value = api(&gw, Method::GET, "/events", Some(&alice), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["events"][0]["event"], "totp_reset");
    assert_eq!(events["events"][0]["actor"], "admin alice");
    let response = gw.try_sign_in("dave", ALICE_PASSWORD).await;
    assert!(set_cookie(&response, SESSION).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_the_code_step_may_reach_any_replica_and_a_code_works_once_on_all() {
    let redis = crate::replicas::RedisServer::start();
    let replica = || {
        Setup::new()
            .users(&users_with_dave())
            .store("backend = \"redis\"")
            .store(&format!("url = \"{}\"", redis.url()))
            .start()
    };
    let a = replica().await;
    let b = replica().await;
    early_in_a_step(8).await;
    let now = now_secs();
    // The password on A, the code on B.
    let (pending, _) = password_step(&a, "dave", ALICE_PASSWORD).await;
    let done = code_step(&b, &pending, &code(DAVE_SECRET, now)).await;
    assert_eq!(done.status(), 303);
    let session = set_cookie(&done, SESSION).unwrap();
    assert_eq!(a.get_as(&session, "/private/x").await.status(), 200);
    // Used once for both: the pending sign-in, and the code.
    let again = page_with(&a, &format!("{PENDING}={pending}"), "/.gateway/login/code").await;
    assert_eq!(again.status(), 303);
    let (pending, _) = password_step(&b, "dave", ALICE_PASSWORD).await;
    assert_eq!(
        code_step(&a, &pending, &code(DAVE_SECRET, now))
            .await
            .status(),
        401,
        "a code used on B replayed on A"
    );
    // Enrollment begun on one replica ends on the other.
    let bob = a.sign_in("bob", BOB_PASSWORD).await;
    let cookie = format!("{SESSION}={bob}");
    let form = page_with(&a, &cookie, "/.gateway/totp").await;
    let csrf = csrf_in(&form.text().await.unwrap());
    let shown = post_with(
        &a,
        &cookie,
        "/.gateway/totp",
        &[
            ("csrf", &csrf),
            ("step", "password"),
            ("password", BOB_PASSWORD),
        ],
    )
    .await;
    let text = shown.text().await.unwrap();
    let key: String = text
        .split("Key: <code>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .replace(' ', "");
    let done = post_with(
        &b,
        &cookie,
        "/.gateway/totp",
        &[
            ("csrf", &csrf),
            ("step", "confirm"),
            ("code", &code(&key, now_secs())),
        ],
    )
    .await;
    assert_eq!(done.status(), 200);
    assert_eq!(recovery_codes_in(&done.text().await.unwrap()).len(), 10);
}

#[tokio::test]
async fn a_signed_in_user_cannot_reset_the_throttle_with_steps_that_verify_nothing() {
    let gw = Setup::new().start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let cookie = format!("{SESSION}={bob}");
    let page = page_with(&gw, &cookie, "/.gateway/totp").await;
    let csrf = csrf_in(&page.text().await.unwrap());
    let mut statuses = Vec::new();
    for round in 0..6 {
        for _ in 0..4 {
            let wrong = post_with(
                &gw,
                &cookie,
                "/.gateway/totp",
                &[("csrf", &csrf), ("step", "password"), ("password", "guess")],
            )
            .await;
            statuses.push(wrong.status().as_u16());
        }
        // A confirm with no secret shown, or a step that does not exist:
        // nothing is verified, so nothing is reset.
        let step = if round % 2 == 0 { "confirm" } else { "bogus" };
        let _ = post_with(
            &gw,
            &cookie,
            "/.gateway/totp",
            &[("csrf", &csrf), ("step", step), ("code", "000000")],
        )
        .await;
    }
    assert!(
        statuses.contains(&429),
        "24 wrong passwords and never throttled: {statuses:?}"
    );
    assert_eq!(statuses[..5], [401, 401, 401, 401, 401], "{statuses:?}");
}

/// A directory user's second factor (issue 27) is the gateway's to keep,
/// under their directory name: enrolled at a sign-in their role demands
/// it of, asked for at the next, and with the directory's password at a
/// fresh sign-in.
#[tokio::test]
async fn a_directory_users_second_factor_is_kept_here_under_their_name() {
    use crate::slapd::{Slapd, CAROL_PASSWORD};
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let section = slapd.section(
        dir.path(),
        &slapd.ldaps_url(),
        "role_map = { \"cn=admins,ou=groups,dc=example,dc=org\" = [\"admin\"] }",
    );
    let local = default_users()
        .split("[users.carol]")
        .next()
        .unwrap()
        .to_owned();
    let gw = Setup::new()
        .users(&local)
        .login("require_totp = [\"admin\"]")
        .rules(&format!("{GUARDED_RULES}\n{section}"))
        .start()
        .await;
    early_in_a_step(10).await;
    let (pending, location) = password_step(&gw, "carol", CAROL_PASSWORD).await;
    assert_eq!(
        location, "/.gateway/totp",
        "her directory role must have one"
    );
    let (key, done) = scan_and_confirm(&gw, &format!("{PENDING}={pending}")).await;
    assert_eq!(done.status(), 200);
    let session = set_cookie(&done, SESSION).expect("a session once enrolled");
    let recovery = recovery_codes_in(&done.text().await.unwrap());
    assert_eq!(gw.get_as(&session, "/ops/x").await.status(), 200);
    assert_eq!(gw.upstream.last().headers["x-auth-user"], "carol");
    let users = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(
        users.contains("[users.carol]\nprovider = \"ldap\"\ntotp = "),
        "{users}"
    );
    assert!(!users.contains(CAROL_PASSWORD));

    // The next sign-in asks for a code, then makes a directory session.
    let (pending, location) = password_step(&gw, "carol", CAROL_PASSWORD).await;
    assert_eq!(location, "/.gateway/login/code");
    assert_eq!(code_step(&gw, &pending, "000000").await.status(), 401);
    let done = code_step(&gw, &pending, &code(&key, now_secs() + 30)).await;
    assert_eq!(done.status(), 303);
    let session = set_cookie(&done, SESSION).unwrap();
    assert_eq!(gw.get_as(&session, "/ops/x").await.status(), 200);
    assert_eq!(gw.upstream.last().headers["x-auth-roles"], "admin");

    // A fresh sign-in checks the directory's password and the code (here
    // a recovery code: the next step's code was used just now).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cookie = format!("{SESSION}={session}");
    let browser = page_with(&gw, &cookie, "/billing/x").await;
    assert_eq!(
        browser.headers()["location"],
        "/.gateway/reauth?next=/billing/x"
    );
    let form = page_with(&gw, &cookie, "/.gateway/reauth?next=/billing/x").await;
    let text = form.text().await.unwrap();
    assert!(text.contains("name=\"code\""), "she has a second factor");
    let csrf = csrf_in(&text);
    let fresh = |password: &'static str, code: String| {
        let (gw, cookie, csrf) = (&gw, cookie.clone(), csrf.clone());
        async move {
            post_with(
                gw,
                &cookie,
                "/.gateway/reauth",
                &[
                    ("csrf", &csrf),
                    ("next", "/billing/x"),
                    ("password", password),
                    ("code", &code),
                ],
            )
            .await
            .status()
            .as_u16()
        }
    };
    assert_eq!(fresh("not her password", recovery[0].clone()).await, 401);
    assert_eq!(fresh(CAROL_PASSWORD, recovery[1].clone()).await, 303);
    assert_eq!(gw.get_as(&session, "/billing/x").await.status(), 200);
}

/// With Redis, a directory user's second factor enrolled on one replica
/// is asked for on another (its entry lives in Redis, made at enrollment).
#[tokio::test]
async fn with_redis_a_directory_users_second_factor_reaches_every_replica() {
    use crate::replicas::{on, RedisServer};
    use crate::slapd::{Slapd, CAROL_PASSWORD};
    let slapd = Slapd::start();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let section = slapd.section(dir.path(), &slapd.ldaps_url(), "");
    let local = default_users()
        .split("[users.carol]")
        .next()
        .unwrap()
        .to_owned();
    let replica = || {
        on(&redis)
            .users(&local)
            .login("require_totp = [\"admin\"]")
            .rules(&format!("{GUARDED_RULES}\n{section}"))
            .start()
    };
    let (a, b) = (replica().await, replica().await);
    early_in_a_step(10).await;
    // Carol has no admin role here: she enrolls of her own accord on a.
    let session = a.sign_in("carol", CAROL_PASSWORD).await;
    let cookie = format!("{SESSION}={session}");
    let form = page_with(&a, &cookie, "/.gateway/totp").await;
    let csrf = csrf_in(&form.text().await.unwrap());
    let scan = post_with(
        &a,
        &cookie,
        "/.gateway/totp",
        &[
            ("csrf", &csrf),
            ("step", "password"),
            ("password", CAROL_PASSWORD),
        ],
    )
    .await;
    assert_eq!(
        scan.status(),
        200,
        "the directory's password opens enrollment"
    );
    let (key, done) = scan_and_confirm(&a, &cookie).await;
    assert_eq!(done.status(), 200);
    // On b (once it has polled the users, within a second), her next
    // sign-in asks for the code.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (pending, location) = password_step(&b, "carol", CAROL_PASSWORD).await;
    assert_eq!(location, "/.gateway/login/code");
    let done = code_step(&b, &pending, &code(&key, now_secs() + 30)).await;
    assert_eq!(done.status(), 303);
    let on_b = set_cookie(&done, SESSION).unwrap();
    assert_eq!(b.get_as(&on_b, "/billing/x").await.status(), 200);
    assert_eq!(b.upstream.last().headers["x-auth-user"], "carol");
}
