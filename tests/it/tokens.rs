//! API tokens and service accounts (issue 29): made by the command line
//! into the store beside the sessions, shown once, accepted only where a
//! rule says so, refused the moment they should be, never passed on.

use std::time::{Duration, Instant};

use base64::Engine;

use crate::support::{authgate, output_with_stdin, Setup, TestGateway, BOB_PASSWORD};

const RULES: &str = r#"
[[rule]]
path = "/api/**"
access = "authenticated"
tokens = true

[[rule]]
path = "/git/**"
access = "authenticated"
basic_auth = true

[[rule]]
path = "/pass/**"
access = "authenticated"
tokens = true
pass_authorization = true

[[rule]]
path = "/deploy/**"
roles = ["deploy"]
tokens = true

[[rule]]
path = "/**"
access = "authenticated"
"#;

/// Runs `authgate ARGS -c CONFIG`: (success, stdout, stderr).
pub fn cli(gw: &TestGateway, args: &[&str]) -> (bool, String, String) {
    let output = authgate()
        .args(args)
        .arg("-c")
        .arg(gw.config_file())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A new token made by the command line (its stdout is the token alone).
pub fn make_token(gw: &TestGateway, user: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", user];
    args.extend_from_slice(extra);
    let (ok, out, err) = cli(gw, &args);
    assert!(ok, "{err}");
    let token = out.trim().to_owned();
    assert!(token.starts_with("agt_") && token.len() == 47, "{token:?}");
    token
}

/// `authgate user passwd bob` with a new password.
fn new_password_for_bob(gw: &TestGateway) {
    let changed = output_with_stdin(
        {
            let mut c = authgate();
            c.args(["user", "passwd", "bob", "-c"])
                .arg(gw.config_file());
            c
        },
        "a brand new password for bob\n",
    );
    assert!(changed.status.success(), "{changed:?}");
}

async fn with_bearer(gw: &TestGateway, path: &str, token: &str) -> reqwest::Response {
    gw.client()
        .get(gw.url(path))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
}

async fn with_basic(gw: &TestGateway, path: &str, user: &str, token: &str) -> reqwest::Response {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    gw.client()
        .get(gw.url(path))
        .header("authorization", format!("Basic {pair}"))
        .send()
        .await
        .unwrap()
}

/// Waits up to 2 s for `path` with `token` to answer `status`, asking
/// every 150 ms (a token not there yet counts against the client's
/// allowance of wrong ones).
async fn until(gw: &TestGateway, path: &str, token: &str, status: u16) -> Duration {
    let started = Instant::now();
    loop {
        let response = with_bearer(gw, path, token).await;
        if response.status() == status {
            return started.elapsed();
        }
        if started.elapsed() >= Duration::from_secs(2) {
            let got = response.status();
            panic!(
                "{path} never answered {status}: {got} {}",
                response.text().await.unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[tokio::test]
async fn a_token_gets_in_where_a_rule_says_so_and_nowhere_else() {
    let gw = Setup::new()
        .rules(RULES)
        .server("ops_listen = \"127.0.0.1:0\"")
        .start()
        .await;
    let token = make_token(&gw, "bob", &["--name", "ci"]);
    // The store keeps its hash, never the token.
    // The state file and its write-ahead log, where new rows sit first.
    let mut state = std::fs::read(gw.dir.path().join("authgate-state.db")).unwrap();
    state.extend(std::fs::read(gw.dir.path().join("authgate-state.db-wal")).unwrap_or_default());
    let state = String::from_utf8_lossy(&state).into_owned();
    assert!(
        state.contains("\"name\":\"ci\""),
        "the record is in the state file"
    );
    assert!(!state.contains(&token[4..]));

    let response = until(&gw, "/api/things", &token, 200).await;
    assert!(response < Duration::from_secs(2));
    let response = with_bearer(&gw, "/api/things", &token).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("set-cookie").is_none(),
        "no cookie for a token"
    );
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["x-auth-user"], "bob");
    assert_eq!(seen.headers["x-auth-roles"], "user");
    assert_eq!(seen.headers["x-auth-token"], "ci");
    assert!(
        !seen.headers.contains_key("authorization"),
        "the token never goes on"
    );

    // Where the rule takes no token: 401 with a clear word.
    let refused = with_bearer(&gw, "/web/page", &token).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"error":"token_not_accepted"}"#
    );
    // HTTP Basic only where `basic_auth = true`, as the account's token.
    assert_eq!(
        with_basic(&gw, "/git/repo.git", "bob", &token)
            .await
            .status(),
        200
    );
    assert_eq!(
        with_basic(&gw, "/git/repo.git", "", &token).await.status(),
        200
    );
    assert_eq!(
        with_basic(&gw, "/git/repo.git", "alice", &token)
            .await
            .status(),
        401
    );
    assert_eq!(
        with_basic(&gw, "/api/things", "bob", &token).await.status(),
        401
    );
    // Never the gateway's own pages.
    let whoami = with_bearer(&gw, "/.gateway/whoami", &token).await;
    assert_eq!(whoami.status(), 401);
    // A rule that passes Authorization on never passes a token.
    assert_eq!(with_bearer(&gw, "/pass/x", &token).await.status(), 200);
    assert!(!gw.upstream.last().headers.contains_key("authorization"));
    let session = gw.sign_in("bob", BOB_PASSWORD).await;
    let other_credentials = |path: &'static str| {
        gw.client()
            .get(gw.url(path))
            .header("cookie", format!("__Host-authgate={session}"))
            .header("authorization", "Basic YXBwOmFwcC1wYXNzd29yZA==")
            .send()
    };
    assert_eq!(other_credentials("/pass/x").await.unwrap().status(), 200);
    assert_eq!(
        gw.upstream.last().headers["authorization"],
        "Basic YXBwOmFwcC1wYXNzd29yZA=="
    );
    assert_eq!(other_credentials("/api/x").await.unwrap().status(), 200);
    assert!(!gw.upstream.last().headers.contains_key("authorization"));

    // Wrong tokens: 401, the same whatever they are; then 429 for the client.
    for wrong in [
        format!("{}x", &token[..token.len() - 1]),
        "agt_nothing".to_owned(),
    ] {
        let response = with_bearer(&gw, "/api/things", &wrong).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"error":"invalid_token"}"#
        );
    }
    let mut throttled = false;
    for _ in 0..authgate::identity::tokens::FAILURES_PER_CLIENT {
        let status = with_bearer(&gw, "/api/things", "agt_wrong").await.status();
        throttled |= status == 429;
    }
    assert!(throttled);
    let response = with_bearer(&gw, "/api/things", &token).await;
    assert_eq!(
        response.status(),
        429,
        "even a good token waits out the minute"
    );
    assert!(response.headers().contains_key("retry-after"));
    let metrics = crate::metrics::scrape(&gw).await;
    assert!(
        crate::metrics::sample(
            &metrics,
            "authgate_token_requests_total{result=\"accepted\"}"
        ) >= 5.0
    );
    assert!(
        crate::metrics::sample(
            &metrics,
            "authgate_token_requests_total{result=\"throttled\"}"
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_token_ends_with_its_revocation_expiry_lock_and_named_roles() {
    let gw = Setup::new().rules(RULES).start().await;
    let long = make_token(&gw, "bob", &["--name", "long"]);
    let brief = make_token(&gw, "bob", &["--name", "brief", "--expires", "1s"]);
    until(&gw, "/api/x", &long, 200).await;
    assert_eq!(with_bearer(&gw, "/api/x", &brief).await.status(), 200);
    // The names are the account's to keep apart.
    let (ok, _, err) = cli(&gw, &["token", "create", "bob", "--name", "long"]);
    assert!(!ok && err.contains("already has a token called"), "{err}");
    // Longer than [tokens] max_lifetime (365 days): refused.
    let (ok, _, err) = cli(
        &gw,
        &["token", "create", "bob", "--name", "x", "--expires", "400d"],
    );
    assert!(!ok && err.contains("at most"), "{err}");
    // Listed without the token, with its dates.
    let (_, list, _) = cli(&gw, &["token", "list", "bob"]);
    assert!(
        list.contains("bob\tlong\t(all)") && list.contains("last used"),
        "{list}"
    );
    assert!(!list.contains(&long[4..]));

    // Expired: refused at the next request.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(with_bearer(&gw, "/api/x", &brief).await.status(), 401);
    // Revoked by the command line: refused within a second.
    let (ok, out, _) = cli(&gw, &["token", "revoke", "bob", "--name", "long"]);
    assert!(ok, "{out}");
    let took = until(&gw, "/api/x", &long, 401).await;
    assert!(took < Duration::from_secs(1), "{took:?}");

    // A lock ends the account's tokens; an unlock brings them back.
    let again = make_token(&gw, "bob", &["--name", "again"]);
    until(&gw, "/api/x", &again, 200).await;
    assert!(cli(&gw, &["user", "lock", "bob"]).0);
    until(&gw, "/api/x", &again, 401).await;
    assert!(cli(&gw, &["user", "unlock", "bob"]).0);
    until(&gw, "/api/x", &again, 200).await;

    // A token naming a role the account then loses ends with it; one that
    // names none goes on with the roles left.
    assert!(cli(&gw, &["user", "roles", "bob", "user", "deploy"]).0);
    let (ok, _, err) = cli(
        &gw,
        &["token", "create", "bob", "--name", "d", "--role", "admin"],
    );
    assert!(!ok && err.contains("does not hold the role"), "{err}");
    let deploy = make_token(&gw, "bob", &["--name", "deploy", "--role", "deploy"]);
    until(&gw, "/deploy/now", &deploy, 200).await;
    assert_eq!(
        gw.upstream.last().headers["x-auth-roles"],
        "deploy",
        "only the roles it names"
    );
    assert_eq!(with_bearer(&gw, "/deploy/now", &again).await.status(), 200);
    assert!(cli(&gw, &["user", "roles", "bob", "user"]).0);
    until(&gw, "/deploy/now", &deploy, 401).await;
    assert_eq!(with_bearer(&gw, "/api/x", &again).await.status(), 200);
    // A password change leaves tokens alone (unless the config says).
    new_password_for_bob(&gw);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(with_bearer(&gw, "/api/x", &again).await.status(), 200);
}

#[tokio::test]
async fn a_service_account_has_no_password_and_lives_by_its_tokens() {
    let gw = Setup::new().rules(RULES).start().await;
    let (ok, out, err) = cli(&gw, &["user", "add", "ci", "--service", "--role", "deploy"]);
    assert!(ok, "{err}");
    assert!(out.contains("service account"), "{out}");
    let file = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(
        file.contains("[users.ci]\nservice = true\nroles = [\"deploy\"]"),
        "{file}"
    );
    // No password signs it in, not even an empty one.
    for password in ["", "anything at all"] {
        let response = gw.try_sign_in("ci", password).await;
        assert_eq!(response.status(), 401);
    }
    let token = make_token(&gw, "ci", &["--name", "pipeline", "--expires", "30d"]);
    until(&gw, "/deploy/release", &token, 200).await;
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["x-auth-user"], "ci");
    assert_eq!(seen.headers["x-auth-token"], "pipeline");
    let (_, list, _) = cli(&gw, &["user", "list"]);
    assert!(list.contains("ci\tdeploy  (service account)"), "{list}");
    // Deleting the account ends its tokens.
    assert!(cli(&gw, &["user", "del", "ci"]).0);
    until(&gw, "/deploy/release", &token, 401).await;
}

#[tokio::test]
async fn the_access_line_names_the_token_and_never_shows_it() {
    let log = crate::logs::captured();
    let gw = Setup::new().rules(RULES).start().await;
    let token = make_token(&gw, "bob", &["--name", "nightly-report"]);
    until(&gw, "/api/report-for-the-log", &token, 200).await;
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("/api/report-for-the-log") && l.contains("\"status\":200"))
        .expect("an access line");
    assert!(line.contains("\"token\":\"nightly-report\""), "{line}");
    assert!(line.contains("\"user\":\"bob\""), "{line}");
    assert!(
        !text.contains(&token[4..]),
        "a token's value is never logged"
    );
}

#[tokio::test]
async fn a_password_change_ends_tokens_only_when_the_config_says_so() {
    let gw = Setup::new()
        .rules(&format!("[tokens]\nend_on_password_change = true\n{RULES}"))
        .start()
        .await;
    let token = make_token(&gw, "bob", &["--name", "ci"]);
    until(&gw, "/api/x", &token, 200).await;
    new_password_for_bob(&gw);
    until(&gw, "/api/x", &token, 401).await;
}

#[tokio::test]
async fn on_redis_a_revocation_on_one_replica_holds_on_every_replica_within_a_second() {
    let redis = crate::replicas::RedisServer::start();
    let a = crate::replicas::on(&redis).rules(RULES).start().await;
    let b = crate::replicas::on(&redis).rules(RULES).start().await;
    let token = make_token(&a, "bob", &["--name", "ci"]);
    until(&a, "/api/x", &token, 200).await;
    until(&b, "/api/x", &token, 200).await;
    // Nothing of it in Redis but its hash.
    assert_eq!(
        redis.command(&format!(
            "EVAL \"return #redis.call('KEYS', '*{}*')\" 0",
            &token[4..12]
        )),
        ":0"
    );
    let (ok, _, err) = cli(&a, &["token", "revoke", "bob", "--all"]);
    assert!(ok, "{err}");
    let on_a = until(&a, "/api/x", &token, 401).await;
    let on_b = until(&b, "/api/x", &token, 401).await;
    assert!(
        on_a < Duration::from_secs(1) && on_b < Duration::from_secs(1),
        "{on_a:?} {on_b:?}"
    );
}

#[tokio::test]
async fn tokens_are_made_once_and_revoked_on_the_account_page_and_by_the_admin_api() {
    let gw = Setup::new().rules(RULES).start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let csrf = crate::admin::csrf_of(&gw, &bob).await;
    let post = |fields: Vec<(&'static str, String)>| {
        gw.client()
            .post(gw.url("/.gateway/account"))
            .header("cookie", format!("__Host-authgate={bob}"))
            .header("origin", gw.url(""))
            .form(&fields)
            .send()
    };
    let made = post(vec![
        ("csrf", csrf.clone()),
        ("action", "token_create".into()),
        ("name", "laptop-script".into()),
        ("expires", "7".into()),
    ])
    .await
    .unwrap();
    assert_eq!(made.status(), 200);
    let page = made.text().await.unwrap();
    let at = page.find("agt_").expect("the token, shown once");
    let token = page[at..at + 47].to_owned();
    until(&gw, "/api/x", &token, 200).await;
    let account = gw
        .get_as(&bob, "/.gateway/account")
        .await
        .text()
        .await
        .unwrap();
    assert!(account.contains("laptop-script"), "{account}");
    assert!(!account.contains(&token[4..]), "never shown again");
    let row = &account[account.find("id=\"tokens\"").unwrap()..];
    assert!(!row.contains("never"), "its last use is listed: {row}");
    let revoked = post(vec![
        ("csrf", csrf.clone()),
        ("action", "token_revoke".into()),
        ("target", "laptop-script".into()),
    ])
    .await
    .unwrap();
    assert_eq!(revoked.status(), 303);
    until(&gw, "/api/x", &token, 401).await;

    // An admin makes, lists and revokes another user's tokens.
    let alice = gw.sign_in("alice", crate::support::ALICE_PASSWORD).await;
    let alice_csrf = crate::admin::csrf_of(&gw, &alice).await;
    let api =
        |method, path: &str| crate::admin::api(&gw, method, path, Some(&alice), Some(&alice_csrf));
    let made = api(reqwest::Method::POST, "/users/bob/tokens")
        .json(&serde_json::json!({ "name": "from-admin", "expires": "30d", "roles": ["user"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let token = made.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    until(&gw, "/api/x", &token, 200).await;
    let too_long = api(reqwest::Method::POST, "/users/bob/tokens")
        .json(&serde_json::json!({ "name": "x", "expires": "999d" }))
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), 400);
    let listed: serde_json::Value = api(reqwest::Method::GET, "/users/bob/tokens")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["tokens"][0]["name"], "from-admin");
    assert_eq!(listed["tokens"][0]["roles"], serde_json::json!(["user"]));
    assert!(!listed.to_string().contains(&token[4..]));
    let gone = api(reqwest::Method::DELETE, "/users/bob/tokens/from-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    until(&gw, "/api/x", &token, 401).await;
    let events: serde_json::Value = api(reqwest::Method::GET, "/events")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen = events.to_string();
    assert!(
        seen.contains("token_created") && seen.contains("token_revoked"),
        "{seen}"
    );
}

/// An access token from `provider`'s token endpoint by the
/// client-credentials grant: the JWT an API's caller sends.
async fn client_credentials(
    provider: &crate::oidc_real::RealProvider,
    client_id: &str,
    scope: &str,
) -> String {
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(provider.cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let answer: serde_json::Value = client
        .post(format!("{}/token", provider.issuer))
        .basic_auth(client_id, Some(format!("secret-{client_id}")))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {answer}"))
        .to_owned()
}

#[tokio::test]
async fn a_providers_jwt_access_token_counts_where_tokens_do() {
    let audience = "https://api.authgate.test";
    let provider =
        crate::oidc_real::RealProvider::for_services("deployer", audience, "deploy read");
    let section = |dir: &std::path::Path, audience: &str| {
        let ca = dir.join("idp-ca.pem");
        std::fs::write(&ca, &provider.cert_pem).unwrap();
        format!(
            "[[bearer]]\nname = \"idp\"\nissuer = \"{}\"\naudience = \"{audience}\"\nca = \"{}\"\nroles_claim = \"scope\"\nrole_map = {{ \"deploy\" = [\"deploy\"] }}\n",
            provider.issuer,
            ca.display()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let gw = Setup::new()
        .rules(&format!("{RULES}\n{}", section(dir.path(), audience)))
        .start()
        .await;
    let jwt = client_credentials(&provider, "deployer", "deploy").await;
    assert_eq!(jwt.split('.').count(), 3, "a JWT: {jwt}");

    let response = with_bearer(&gw, "/deploy/release", &jwt).await;
    assert_eq!(response.status(), 200);
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["x-auth-user"], "deployer");
    assert_eq!(seen.headers["x-auth-roles"], "deploy");
    assert_eq!(seen.headers["x-auth-bearer"], "idp");
    assert!(!seen.headers.contains_key("authorization"));
    assert!(!seen.headers.contains_key("x-auth-token"));
    // Where the rule takes no token: refused, whoever signed it.
    assert_eq!(with_bearer(&gw, "/web/x", &jwt).await.status(), 401);
    // A scope that maps to no role: in, but not where the role is needed.
    let reader = client_credentials(&provider, "deployer", "read").await;
    assert_eq!(with_bearer(&gw, "/api/x", &reader).await.status(), 200);
    assert_eq!(with_bearer(&gw, "/deploy/x", &reader).await.status(), 403);

    // Changed by one character, or with its alg set to none: refused.
    let mut forged = jwt.clone().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(with_bearer(&gw, "/deploy/x", &forged).await.status(), 401);
    use base64::Engine;
    let none =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
    let payload = jwt.split('.').nth(1).unwrap();
    assert_eq!(
        with_bearer(&gw, "/deploy/x", &format!("{none}.{payload}."))
            .await
            .status(),
        401
    );
    // A gateway that is not its audience takes none of it.
    let elsewhere = Setup::new()
        .rules(&format!(
            "{RULES}\n{}",
            section(dir.path(), "https://other.api")
        ))
        .start()
        .await;
    assert_eq!(
        with_bearer(&elsewhere, "/deploy/x", &jwt).await.status(),
        401
    );
}

/// The tests' own provider, with its CA written into a folder (kept while
/// the folder is).
async fn fake_provider() -> (
    crate::oidc_fake::FakeProvider,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let provider = crate::oidc_fake::FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("fake-ca.pem");
    std::fs::write(&ca, &provider.cert_pem).unwrap();
    (provider, dir, ca)
}

#[tokio::test]
async fn a_providers_jwt_is_checked_claim_by_claim_and_keys_refetch_once_a_minute() {
    use serde_json::json;
    let (provider, _dir, ca) = fake_provider().await;
    let gw = Setup::new()
        .rules(&format!(
            "{RULES}\n[[bearer]]\nname = \"fake\"\nissuer = \"{}\"\naudience = \"https://api.example\"\nca = \"{}\"\nroles_claim = \"roles\"\nrole_map = {{ \"deployer\" = [\"deploy\"] }}\n",
            provider.issuer(),
            ca.display()
        ))
        .start()
        .await;
    let now = crate::totp::now_secs() as i64;
    let claims = |patch: serde_json::Value| {
        let mut c = json!({
            "iss": provider.issuer(), "aud": "https://api.example", "sub": "robot",
            "exp": now + 300, "iat": now, "roles": ["deployer"],
        });
        crate::oidc_fake::merge(&mut c, &patch);
        c
    };
    let status = |token: String| {
        let gw = &gw;
        async move { with_bearer(gw, "/deploy/x", &token).await.status().as_u16() }
    };
    assert_eq!(
        status(provider.sign(&claims(json!({})), &json!({}))).await,
        200
    );
    assert_eq!(gw.upstream.last().headers["x-auth-user"], "robot");
    // A minute of skew at most, either way.
    assert_eq!(
        status(provider.sign(&claims(json!({"exp": now - 30})), &json!({}))).await,
        200
    );
    for (patch, why) in [
        (json!({"exp": now - 90}), "expired beyond the skew"),
        (json!({"exp": null}), "no exp"),
        (json!({"nbf": now + 90}), "not valid yet"),
        (json!({"aud": "https://other.example"}), "another audience"),
        (json!({"iss": "https://127.0.0.1:9/"}), "another issuer"),
        (json!({"sub": null}), "no subject"),
    ] {
        assert_eq!(
            status(provider.sign(&claims(patch), &json!({}))).await,
            401,
            "{why}"
        );
    }
    // The alg is the key's: an HMAC or none never passes.
    for alg in ["HS256", "none"] {
        let token = provider.sign(&claims(json!({})), &json!({ "alg": alg }));
        assert_eq!(status(token).await, 401, "{alg}");
    }
    // A key the gateway has not seen: its keys are fetched again once...
    let fetched = provider.jwks_fetches();
    provider.rotate("second", false);
    assert_eq!(
        status(provider.sign(&claims(json!({})), &json!({}))).await,
        200
    );
    assert_eq!(provider.jwks_fetches(), fetched + 1);
    // ...and not again within the minute, whatever kids come.
    provider.rotate("third", false);
    for kid in ["third", "forged-1", "forged-2"] {
        let token = provider.sign(&claims(json!({})), &json!({ "kid": kid }));
        assert_eq!(status(token).await, 401, "{kid}");
    }
    assert_eq!(provider.jwks_fetches(), fetched + 1);
}

#[tokio::test]
async fn the_admin_api_takes_a_token_only_where_a_rule_says_so() {
    let closed = Setup::new().rules(RULES).start().await;
    let token = make_token(&closed, "alice", &["--name", "ops"]);
    until(&closed, "/api/x", &token, 200).await;
    let refused = with_bearer(&closed, "/.gateway/admin/api/users", &token).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.text().await.unwrap(),
        r#"{"error":"token_not_accepted"}"#
    );

    let open = Setup::new()
        .rules(&format!(
            "[[rule]]\npath = \"/.gateway/admin/api/**\"\nroles = [\"admin\"]\ntokens = true\n{RULES}"
        ))
        .start()
        .await;
    let alice = make_token(&open, "alice", &["--name", "ops"]);
    let bob = make_token(&open, "bob", &["--name", "ci"]);
    until(&open, "/api/x", &alice, 200).await;
    let users = with_bearer(&open, "/.gateway/admin/api/users", &alice).await;
    assert_eq!(users.status(), 200);
    assert!(users.text().await.unwrap().contains("\"bob\""));
    // No CSRF header for a token: no page can send one along.
    let locked = open
        .client()
        .post(open.url("/.gateway/admin/api/users/carol/unlock"))
        .header("authorization", format!("Bearer {alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(locked.status(), 204);
    // The rule's roles still count: bob is no admin.
    until(&open, "/api/x", &bob, 200).await;
    assert_eq!(
        with_bearer(&open, "/.gateway/admin/api/users", &bob)
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn a_bearer_may_take_its_keys_from_a_jwks_address_without_discovery() {
    use serde_json::json;
    let (provider, _dir, ca) = fake_provider().await;
    // An issuer nobody serves: only the keys' address is asked.
    let issuer = "https://issuer.invalid";
    let gw = Setup::new()
        .rules(&format!(
            "{RULES}\n[[bearer]]\nname = \"keys-only\"\nissuer = \"{issuer}\"\njwks = \"{}/jwks\"\naudience = \"https://api.example\"\nca = \"{}\"\n",
            provider.issuer(),
            ca.display()
        ))
        .start()
        .await;
    let now = crate::totp::now_secs() as i64;
    let jwt = provider.sign(
        &json!({"iss": issuer, "aud": "https://api.example", "sub": "robot", "exp": now + 60}),
        &json!({}),
    );
    assert_eq!(with_bearer(&gw, "/api/x", &jwt).await.status(), 200);
    assert_eq!(gw.upstream.last().headers["x-auth-bearer"], "keys-only");
    assert!(provider.jwks_fetches() >= 1);
}

#[tokio::test]
async fn tokens_never_wait_for_the_password_hashing_threads() {
    let gw = Setup::new()
        .rules(RULES)
        .login("hashing_threads = 1\nmax_failures = 1000")
        .start()
        .await;
    let token = make_token(&gw, "bob", &["--name", "ci"]);
    until(&gw, "/api/x", &token, 200).await;
    // A flood of password sign-ins fills the one hashing thread and its
    // queue (those beyond it are answered 503)...
    let client = gw.client();
    let mut forms = Vec::new();
    for _ in 0..150 {
        forms.push(gw.login_form(&client).await);
    }
    let flood: Vec<_> = forms
        .iter()
        .map(|form| {
            let fields = [
                ("username", "bob"),
                ("password", "a wrong password, hashed all the same"),
            ];
            let (gw, client) = (&gw, &client);
            async move { gw.post_login(client, form, &fields).await.status() }
        })
        .collect();
    // ...while tokens, right and wrong, are answered at once: one
    // SHA-256 each, never a place in that queue.
    let tokens = async {
        let mut seen = Vec::new();
        for i in 0..15 {
            let wrong = format!("agt_{}", "x".repeat(40 + i));
            seen.push(with_bearer(&gw, "/api/x", &wrong).await.status().as_u16());
            seen.push(with_bearer(&gw, "/api/x", &token).await.status().as_u16());
        }
        seen
    };
    let (statuses, seen) = tokio::join!(futures_util::future::join_all(flood), tokens);
    assert!(
        statuses.iter().any(|s| *s == 503),
        "the hashing queue was full: {statuses:?}"
    );
    for pair in seen.chunks(2) {
        assert_eq!(pair, [401, 200], "{seen:?}");
    }
}
