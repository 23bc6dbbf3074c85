//! Revocation and administration: password change, the users file as the
//! record (written safely, watched live), the `user` CLI, the admin API and
//! page, and the audit trail.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{authgate, set_cookie, Setup, TestGateway, ALICE_PASSWORD, BOB_PASSWORD};

/// Runs `authgate user ARGS -c CONFIG` with `stdin` as input.
fn user_cli(gw: &TestGateway, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut command = authgate();
    command
        .arg("user")
        .args(args)
        .arg("-c")
        .arg(gw.config_file());
    let out = crate::support::output_with_stdin(command, stdin);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` every 50 ms for up to `limit`; returns how long it took.
pub async fn within<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(gw: &TestGateway, session: &str, path: &str) -> u16 {
    gw.get_as(session, path).await.status().as_u16()
}

/// `name`'s entry in the admin API's `GET /users` answer.
pub fn user_entry(users: &Value, name: &str) -> Value {
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {users}"))
        .clone()
}

pub async fn csrf_of(gw: &TestGateway, session: &str) -> String {
    let whoami: Value = gw
        .get_as(session, "/.gateway/whoami")
        .await
        .json()
        .await
        .unwrap();
    whoami["csrf"].as_str().unwrap().to_owned()
}

pub fn password_form(
    gw: &TestGateway,
    session: &str,
    csrf: &str,
    current: &str,
    new: &str,
) -> reqwest::RequestBuilder {
    gw.client()
        .post(gw.url("/.gateway/password"))
        .header("cookie", format!("__Host-authgate={session}"))
        .form(&[("csrf", csrf), ("current", current), ("new", new)])
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_and_renews_this_one() {
    let gw = Setup::new().start().await;
    let here = gw.sign_in("bob", BOB_PASSWORD).await;
    let elsewhere = gw.sign_in("bob", BOB_PASSWORD).await;
    let csrf = csrf_of(&gw, &here).await;

    let page = gw.get_as(&here, "/.gateway/password").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("name=\"current\"") && page.contains("name=\"new\"") && page.contains(&csrf)
    );

    let forged = password_form(&gw, &here, "forged", BOB_PASSWORD, "a brand new password")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let short = password_form(&gw, &here, &csrf, BOB_PASSWORD, "too short")
        .send()
        .await
        .unwrap();
    assert_eq!(short.status(), 400);
    assert!(short
        .text()
        .await
        .unwrap()
        .contains("at least 12 characters"));
    let wrong = password_form(&gw, &here, &csrf, "not my password", "a brand new password")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        status_of(&gw, &elsewhere, "/private/x").await,
        200,
        "nothing changed yet"
    );

    let before = std::fs::read_to_string(gw.users_file()).unwrap();
    let done = password_form(&gw, &here, &csrf, BOB_PASSWORD, "a brand new password")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let renewed = set_cookie(&done, "__Host-authgate").expect("a new session ID");
    assert_ne!(renewed, here);
    assert_eq!(
        status_of(&gw, &elsewhere, "/private/x").await,
        401,
        "the other session ended"
    );
    assert_eq!(
        status_of(&gw, &here, "/private/x").await,
        401,
        "the old ID is dead"
    );
    assert_eq!(status_of(&gw, &renewed, "/private/x").await, 200);

    let after = std::fs::read_to_string(gw.users_file()).unwrap();
    assert_ne!(before, after);
    assert!(
        after.starts_with("[users.alice]"),
        "the rest of the file is kept"
    );
    let users = authgate::users::Users::parse(&after, &gw.users_file()).unwrap();
    let hash = &users.get("bob").unwrap().password_hash;
    assert!(hash.starts_with("$argon2id$"));

    let client = gw.client();
    let token = gw.login_form(&client).await;
    let old = gw
        .post_login(
            &client,
            &token,
            &[("username", "bob"), ("password", BOB_PASSWORD)],
        )
        .await;
    assert_eq!(old.status(), 401);
    gw.sign_in("bob", "a brand new password").await;
}

#[tokio::test]
async fn a_wrong_current_password_counts_toward_throttling() {
    let gw = Setup::new().login("max_failures = 2").start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let csrf = csrf_of(&gw, &bob).await;
    for _ in 0..2 {
        let r = password_form(&gw, &bob, &csrf, "guess", "a brand new password")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = password_form(&gw, &bob, &csrf, BOB_PASSWORD, "a brand new password")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_writer_killed_mid_way_leaves_the_old_file_whole() {
    let gw = Setup::new().start().await;
    let before = std::fs::read_to_string(gw.users_file()).unwrap();
    use std::io::Write;
    let mut writer = authgate()
        .args(["user", "add", "mallory", "--role", "user", "-c"])
        .arg(gw.config_file())
        .env(authgate::users::file::PAUSE_BEFORE_RENAME_ENV, "10000")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writer
        .stdin
        .take()
        .unwrap()
        .write_all(b"mallory's long password\n")
        .unwrap();
    // Wait until the new file is written in full beside the old one, then kill.
    let dir = gw.dir.path().to_owned();
    let temp = within(Duration::from_secs(10), || {
        let dir = dir.clone();
        async move {
            std::fs::read_dir(&dir)
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp-"))
        }
    })
    .await;
    let _ = temp;
    writer.kill().unwrap();
    writer.wait().unwrap();
    let after = std::fs::read_to_string(gw.users_file()).unwrap();
    assert_eq!(after, before, "the old file, whole");
    authgate::users::Users::parse(&after, &gw.users_file()).unwrap();
    // The lock died with the writer: the next change goes through.
    let (ok, _, err) = user_cli(
        &gw,
        &["add", "mallory", "--role", "user"],
        "mallory's long password\n",
    );
    assert!(ok, "{err}");
    let users = authgate::users::Users::parse(
        &std::fs::read_to_string(gw.users_file()).unwrap(),
        &gw.users_file(),
    )
    .unwrap();
    assert!(users.get("mallory").is_some());
}

#[tokio::test]
async fn the_cli_changes_the_file_and_a_lock_ends_a_live_session_within_2s() {
    let gw = Setup::new().start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;

    let (ok, out, _) = user_cli(&gw, &["list"], "");
    assert!(ok);
    assert!(
        out.contains("alice\tadmin,user") && out.contains("carol\tadmin  (locked)"),
        "{out}"
    );
    let (ok, _, err) = user_cli(
        &gw,
        &["add", "Bob", "--role", "user"],
        "another long password\n",
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = user_cli(&gw, &["add", "dave", "--role", "user"], "short\n");
    assert!(!ok && err.contains("too short"), "{err}");
    let (ok, _, err) = user_cli(&gw, &["passwd", "zed"], "a long enough password\n");
    assert!(!ok && err.contains("no user \"zed\""), "{err}");
    let (ok, _, err) = user_cli(&gw, &["lock", "zed"], "");
    assert!(!ok && err.contains("no user"), "{err}");

    let (ok, _, err) = user_cli(&gw, &["lock", "bob"], "");
    assert!(ok, "{err}");
    let took = within(Duration::from_secs(2), || async {
        status_of(&gw, &bob, "/private/x").await == 401
    })
    .await;
    assert!(took < Duration::from_secs(2));
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let refused = gw
        .post_login(
            &client,
            &token,
            &[("username", "bob"), ("password", BOB_PASSWORD)],
        )
        .await;
    assert_eq!(refused.status(), 401, "a locked user cannot sign in");

    let (ok, _, _) = user_cli(&gw, &["unlock", "bob"], "");
    assert!(ok);
    // Polling with sign-ins would trip the throttle: watch the gateway's record.
    let auth = gw.gateway().state().auth.clone();
    within(Duration::from_secs(2), || {
        let auth = auth.clone();
        async move { !auth.users().get("bob").unwrap().locked }
    })
    .await;
    gw.sign_in("bob", BOB_PASSWORD).await;

    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let (ok, _, _) = user_cli(&gw, &["passwd", "bob"], "changed on the command line\n");
    assert!(ok);
    within(Duration::from_secs(2), || async {
        status_of(&gw, &bob, "/private/x").await == 401
    })
    .await;
    let fresh = gw.sign_in("bob", "changed on the command line").await;
    let (ok, _, _) = user_cli(&gw, &["del", "bob"], "");
    assert!(ok);
    within(Duration::from_secs(2), || async {
        status_of(&gw, &fresh, "/private/x").await == 401
    })
    .await;
    let text = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(!text.contains("[users.bob]"));
}

#[tokio::test]
async fn role_changes_apply_to_live_sessions_and_a_broken_file_is_ignored() {
    let gw = Setup::new().start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(status_of(&gw, &bob, "/staff/x").await, 403);

    // By hand: an editor rewrites the file.
    let text = std::fs::read_to_string(gw.users_file()).unwrap();
    let granted = text.replace("roles = [\"user\"]", "roles = [\"user\", \"admin\"]");
    assert_ne!(granted, text);
    std::fs::write(gw.users_file(), &granted).unwrap();
    within(Duration::from_secs(2), || async {
        status_of(&gw, &bob, "/staff/x").await == 200
    })
    .await;
    assert_eq!(gw.upstream.last().headers["x-auth-roles"], "admin,user");

    // A broken file is reported and ignored: the last good one stays.
    std::fs::write(gw.users_file(), "[users.bob\npassword = ").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(status_of(&gw, &bob, "/staff/x").await, 200);
    assert_eq!(status_of(&gw, &bob, "/private/x").await, 200);

    let (ok, _, err) = {
        std::fs::write(gw.users_file(), &granted).unwrap();
        user_cli(&gw, &["roles", "bob", "user"], "")
    };
    assert!(ok, "{err}");
    within(Duration::from_secs(2), || async {
        status_of(&gw, &bob, "/staff/x").await == 403
    })
    .await;
    assert_eq!(
        status_of(&gw, &bob, "/private/x").await,
        200,
        "still signed in"
    );
}

pub fn api(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    session: Option<&str>,
    csrf: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = gw
        .client()
        .request(method, gw.url(&format!("/.gateway/admin/api{path}")));
    if let Some(session) = session {
        request = request.header("cookie", format!("__Host-authgate={session}"));
    }
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    request
}

#[tokio::test]
async fn the_admin_api_is_for_the_admin_role_with_its_csrf_header() {
    use reqwest::Method;
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let bob2 = gw.sign_in("bob", BOB_PASSWORD).await;
    let csrf = csrf_of(&gw, &alice).await;
    let bob_csrf = csrf_of(&gw, &bob).await;

    let anonymous = api(&gw, Method::GET, "/users", None, None)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.text().await.unwrap(),
        r#"{"error":"unauthenticated"}"#
    );
    let not_admin = api(
        &gw,
        Method::POST,
        "/users/alice/lock",
        Some(&bob),
        Some(&bob_csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(not_admin.status(), 403);
    let no_header = api(&gw, Method::POST, "/users/bob/lock", Some(&alice), None)
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), 403);
    let wrong_header = api(
        &gw,
        Method::POST,
        "/users/bob/lock",
        Some(&alice),
        Some(&bob_csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(wrong_header.status(), 403);
    assert_eq!(
        status_of(&gw, &bob, "/private/x").await,
        200,
        "nothing changed"
    );

    let users: Value = api(&gw, Method::GET, "/users", Some(&alice), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bob_entry = user_entry(&users, "bob");
    assert_eq!(
        bob_entry,
        json!({"name": "bob", "roles": ["user"], "locked": false, "totp": false, "passkeys": 0, "sessions": 2})
    );

    let sessions: Value = api(&gw, Method::GET, "/sessions?user=bob", Some(&alice), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = sessions["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for s in list {
        for key in [
            "id",
            "user",
            "created_at",
            "last_seen_at",
            "ip",
            "user_agent",
        ] {
            assert!(s.get(key).is_some(), "{key} missing in {s}");
        }
        assert_eq!(s["user"], "bob");
        assert_eq!(s["ip"], "127.0.0.1");
        let id = s["id"].as_str().unwrap();
        assert!(
            id != bob && id != bob2 && !bob.contains(id) && !bob2.contains(id),
            "the handle is no cookie value"
        );
    }
    let all: Value = api(&gw, Method::GET, "/sessions", Some(&alice), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["sessions"].as_array().unwrap().len(), 3);

    let id = list[0]["id"].as_str().unwrap();
    let ended = api(
        &gw,
        Method::DELETE,
        &format!("/sessions/{id}"),
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(ended.status(), 204);
    let live = [
        status_of(&gw, &bob, "/private/x").await,
        status_of(&gw, &bob2, "/private/x").await,
    ];
    assert!(
        live.contains(&401) && live.contains(&200),
        "exactly one of bob's sessions ended: {live:?}"
    );
    let missing = api(
        &gw,
        Method::DELETE,
        &format!("/sessions/{id}"),
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await.unwrap(), r#"{"error":"not_found"}"#);

    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let revoked = api(
        &gw,
        Method::POST,
        "/users/bob/revoke",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(status_of(&gw, &bob, "/private/x").await, 401);
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;

    let granted = api(
        &gw,
        Method::PUT,
        "/users/bob/roles",
        Some(&alice),
        Some(&csrf),
    )
    .json(&json!({"roles": ["user", "admin"]}))
    .send()
    .await
    .unwrap();
    assert_eq!(granted.status(), 204);
    assert_eq!(
        status_of(&gw, &bob, "/staff/x").await,
        200,
        "at the very next request"
    );
    assert!(std::fs::read_to_string(gw.users_file())
        .unwrap()
        .contains("roles = [\"user\", \"admin\"]"));
    let removed = api(
        &gw,
        Method::PUT,
        "/users/bob/roles",
        Some(&alice),
        Some(&csrf),
    )
    .json(&json!({"roles": ["user"]}))
    .send()
    .await
    .unwrap();
    assert_eq!(removed.status(), 204);
    assert_eq!(status_of(&gw, &bob, "/staff/x").await, 403);

    let malformed = api(
        &gw,
        Method::PUT,
        "/users/bob/roles",
        Some(&alice),
        Some(&csrf),
    )
    .header("content-type", "application/json")
    .body("{\"roles\": [\"user\"")
    .send()
    .await
    .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["error"],
        "bad_request"
    );
    let unknown = api(
        &gw,
        Method::POST,
        "/users/zed/lock",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(unknown.status(), 404);

    let locked = api(
        &gw,
        Method::POST,
        "/users/bob/lock",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(locked.status(), 204);
    assert_eq!(
        status_of(&gw, &bob, "/private/x").await,
        401,
        "a lock ends every session"
    );
    assert!(std::fs::read_to_string(gw.users_file())
        .unwrap()
        .contains("locked = true"));
    let users: Value = api(&gw, Method::GET, "/users", Some(&alice), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bob_entry = user_entry(&users, "bob");
    assert_eq!(bob_entry["locked"], true);
    assert_eq!(bob_entry["sessions"], 0);
    let unlocked = api(
        &gw,
        Method::POST,
        "/users/bob/unlock",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(unlocked.status(), 204);
    gw.sign_in("bob", BOB_PASSWORD).await;
}

#[tokio::test]
async fn the_admin_page_lists_users_and_sessions_with_working_buttons() {
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;

    let anonymous = gw
        .client()
        .get(gw.url("/.gateway/admin/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 302);
    assert_eq!(status_of(&gw, &bob, "/.gateway/admin/").await, 403);

    let page = gw.get_as(&alice, "/.gateway/admin/").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    let csrf = csrf_of(&gw, &alice).await;
    for needle in [
        "<td>bob</td>",
        "<td>carol</td>",
        "locked",
        "127.0.0.1",
        "value=\"lock\"",
        "value=\"unlock\"",
        "value=\"revoke\"",
        "value=\"end_session\"",
        &csrf,
    ] {
        assert!(html.contains(needle), "no {needle} in the admin page");
    }
    assert!(!html.contains("<script"));

    let press = |action: &'static str, target: &'static str, token: String| {
        gw.client()
            .post(gw.url("/.gateway/admin/"))
            .header("cookie", format!("__Host-authgate={alice}"))
            .form(&[
                ("csrf", token),
                ("action", action.to_owned()),
                ("target", target.to_owned()),
            ])
            .send()
    };
    let forged = press("lock", "bob", "forged".into()).await.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(status_of(&gw, &bob, "/private/x").await, 200);
    let done = press("lock", "bob", csrf.clone()).await.unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/.gateway/admin/");
    assert_eq!(status_of(&gw, &bob, "/private/x").await, 401);
    assert_eq!(
        press("unlock", "bob", csrf.clone()).await.unwrap().status(),
        303
    );
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(
        press("revoke", "bob", csrf.clone()).await.unwrap().status(),
        303
    );
    assert_eq!(status_of(&gw, &bob, "/private/x").await, 401);
}

#[tokio::test]
async fn every_change_is_audited_with_who_did_it() {
    let log = crate::logs::captured();
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = csrf_of(&gw, &alice).await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let bob_csrf = csrf_of(&gw, &bob).await;
    assert_eq!(
        password_form(&gw, &bob, &bob_csrf, BOB_PASSWORD, "audited new password")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for path in [
        "/users/bob/lock",
        "/users/bob/unlock",
        "/users/alice/revoke",
    ] {
        let response = api(&gw, reqwest::Method::POST, path, Some(&alice), Some(&csrf))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{path}");
    }
    let (ok, _, _) = user_cli(&gw, &["roles", "bob", "user", "ops"], "");
    assert!(ok);
    let auth = gw.gateway().state().auth.clone();
    within(Duration::from_secs(2), || {
        let auth = auth.clone();
        async move {
            auth.users()
                .get("bob")
                .unwrap()
                .roles
                .contains(&"ops".to_owned())
        }
    })
    .await;
    let text = std::fs::read_to_string(gw.users_file()).unwrap();
    std::fs::write(
        gw.users_file(),
        text.replace("[users.carol]", "[users.carol]\n# edited by hand\n")
            .replace("locked = true\n", ""),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let event = |name: &str, actor: &str, user: &str| {
        text.lines().any(|l| {
            l.contains(&format!("\"event\":\"{name}\""))
                && l.contains(&format!("\"actor\":\"{actor}\""))
                && l.contains(&format!("\"user\":\"{user}\""))
        })
    };
    assert!(
        event("password_changed", "user bob", "bob"),
        "password change"
    );
    assert!(event("user_locked", "admin alice", "bob"), "lock");
    assert!(event("user_unlocked", "admin alice", "bob"), "unlock");
    assert!(
        event("sessions_revoked", "admin alice", "alice"),
        "revocation"
    );
    assert!(
        event("roles_changed", "cli", "bob"),
        "role change by the CLI: {}",
        text.lines()
            .filter(|l| l.contains("roles_changed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(event("user_unlocked", "file edit", "carol"), "a hand edit");
}

#[tokio::test]
async fn a_change_made_here_and_undone_in_the_file_before_the_next_look_is_seen() {
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = csrf_of(&gw, &alice).await;
    let original = std::fs::read_to_string(gw.users_file()).unwrap();
    // The gateway writes "bob is locked" and puts it in force at once ...
    let locked = api(
        &gw,
        reqwest::Method::POST,
        "/users/bob/lock",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(locked.status(), 204);
    assert_eq!(gw.try_sign_in("bob", BOB_PASSWORD).await.status(), 401);
    // ... and someone puts the old file back before the watcher looks
    // again: the file no longer says so, and the file is the record.
    std::fs::write(gw.users_file(), &original).unwrap();
    let auth = gw.gateway().state().auth.clone();
    within(Duration::from_secs(3), || {
        let auth = auth.clone();
        async move { !auth.users().get("bob").unwrap().locked }
    })
    .await;
    assert_eq!(gw.try_sign_in("bob", BOB_PASSWORD).await.status(), 303);
}

/// Posts one of the admin page's forms as alice.
async fn admin_form(gw: &TestGateway, alice: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    gw.client()
        .post(gw.url("/.gateway/admin/"))
        .header("cookie", format!("__Host-authgate={alice}"))
        .form(fields)
        .send()
        .await
        .unwrap()
}

fn shown_password(page: &str) -> String {
    page.split("<p><code>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_admin_page_adds_changes_resets_and_deletes_users_and_shows_the_events() {
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = csrf_of(&gw, &alice).await;

    // Without the token nothing happens.
    let forged = admin_form(
        &gw,
        &alice,
        &[("csrf", "forged"), ("action", "add"), ("name", "eve")],
    )
    .await;
    assert_eq!(forged.status(), 403);
    assert!(gw.gateway().state().auth.users().get("eve").is_none());

    // Add with a generated password, shown once.
    let added = admin_form(
        &gw,
        &alice,
        &[
            ("csrf", &csrf),
            ("action", "add"),
            ("name", "dave"),
            ("roles", "user, ops"),
        ],
    )
    .await;
    assert_eq!(added.status(), 200);
    let password = shown_password(&added.text().await.unwrap());
    let dave = gw.sign_in("dave", &password).await;
    assert_eq!(gw.get_as(&dave, "/private/x").await.status(), 200);
    assert_eq!(gw.get_as(&dave, "/staff/x").await.status(), 403);

    // Roles, at the next request.
    let roles = admin_form(
        &gw,
        &alice,
        &[
            ("csrf", &csrf),
            ("action", "roles"),
            ("target", "dave"),
            ("roles", "admin"),
        ],
    )
    .await;
    assert_eq!(roles.status(), 303);
    assert_eq!(gw.get_as(&dave, "/staff/x").await.status(), 200);

    // Reset: a new password shown once, dave's sessions end.
    let reset = admin_form(
        &gw,
        &alice,
        &[
            ("csrf", &csrf),
            ("action", "reset_password"),
            ("target", "dave"),
        ],
    )
    .await;
    assert_eq!(reset.status(), 200);
    let new_password = shown_password(&reset.text().await.unwrap());
    assert_ne!(new_password, password);
    assert_eq!(gw.get_as(&dave, "/private/x").await.status(), 401);
    gw.sign_in("dave", &new_password).await;

    // A bad name is refused with a page that says why.
    let bad = admin_form(
        &gw,
        &alice,
        &[
            ("csrf", &csrf),
            ("action", "add"),
            ("name", "<b>x"),
            ("password", "long-enough-password"),
        ],
    )
    .await;
    assert_eq!(bad.status(), 400);
    let text = bad.text().await.unwrap();
    assert!(
        text.contains("invalid username") && text.contains("&lt;b&gt;x"),
        "{text}"
    );

    // Delete.
    let deleted = admin_form(
        &gw,
        &alice,
        &[("csrf", &csrf), ("action", "delete"), ("target", "dave")],
    )
    .await;
    assert_eq!(deleted.status(), 303);
    assert_eq!(gw.try_sign_in("dave", &new_password).await.status(), 401);
    assert!(!std::fs::read_to_string(gw.users_file())
        .unwrap()
        .contains("[users.dave]"));

    // The page shows who did what to whom, with the headers of SPEC §7.
    let response = gw.get_as(&alice, "/.gateway/admin/").await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("base-uri 'none'"),
        "{csp}"
    );
    let page = response.text().await.unwrap();
    let events = page.split("Recent security events").nth(1).unwrap();
    for event in [
        "user_added",
        "roles_changed",
        "password_changed",
        "user_removed",
    ] {
        assert!(events.contains(event), "{event} not shown");
    }
    assert!(events.contains("admin alice"));
    assert!(!events.contains(&new_password), "a password in the events");
}

#[tokio::test]
async fn the_admin_api_adds_resets_and_deletes_users_and_lists_events() {
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = csrf_of(&gw, &alice).await;
    let added = api(
        &gw,
        reqwest::Method::POST,
        "/users",
        Some(&alice),
        Some(&csrf),
    )
    .json(&json!({"name": "erin", "roles": ["user"]}))
    .send()
    .await
    .unwrap();
    assert_eq!(added.status(), 201);
    let body: Value = added.json().await.unwrap();
    let password = body["password"].as_str().unwrap().to_owned();
    let erin = gw.sign_in("erin", &password).await;
    let duplicate = api(
        &gw,
        reqwest::Method::POST,
        "/users",
        Some(&alice),
        Some(&csrf),
    )
    .json(&json!({"name": "ERIN", "roles": ["user"], "password": "another-long-one"}))
    .send()
    .await
    .unwrap();
    assert_eq!(duplicate.status(), 409);
    let weak = api(
        &gw,
        reqwest::Method::POST,
        "/users",
        Some(&alice),
        Some(&csrf),
    )
    .json(&json!({"name": "fay", "roles": ["user"], "password": "short"}))
    .send()
    .await
    .unwrap();
    assert_eq!(weak.status(), 400);

    let reset = api(
        &gw,
        reqwest::Method::POST,
        "/users/erin/password",
        Some(&alice),
        Some(&csrf),
    )
    .json(&json!({"password": "erins-new-password"}))
    .send()
    .await
    .unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(gw.get_as(&erin, "/private/x").await.status(), 401);
    gw.sign_in("erin", "erins-new-password").await;

    let deleted = api(
        &gw,
        reqwest::Method::DELETE,
        "/users/erin",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(deleted.status(), 204);
    let events: Value = api(&gw, reqwest::Method::GET, "/events", Some(&alice), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = events["events"].as_array().unwrap();
    assert_eq!(list[0]["event"], "user_removed", "newest first: {list:?}");
    assert_eq!(list[0]["actor"], "admin alice");
    assert_eq!(list[0]["user"], "erin");
    assert!(list.iter().any(|e| e["event"] == "user_added"));
    // bob is no admin.
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let refused = api(&gw, reqwest::Method::GET, "/events", Some(&bob), None)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn anonymous_sign_in_noise_cannot_flush_administrative_events() {
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = csrf_of(&gw, &alice).await;
    for path in ["/users/bob/lock", "/users/bob/unlock"] {
        let response = api(&gw, reqwest::Method::POST, path, Some(&alice), Some(&csrf))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{path}");
    }
    // Sixty anonymous sign-ins: a few fail, the rest are throttled.
    let mut statuses = Vec::new();
    for i in 0..60 {
        let user = if i % 2 == 0 { "bob" } else { "nobody" };
        statuses.push(gw.try_sign_in(user, "wrong").await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let events: Value = api(&gw, reqwest::Method::GET, "/events", Some(&alice), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = events["events"].as_array().unwrap();
    for event in ["user_locked", "user_unlocked"] {
        assert!(
            list.iter().any(|e| e["event"] == event),
            "{event} was pushed out: {list:?}"
        );
    }
    assert!(
        !list.iter().any(|e| e["event"] == "login_failed"),
        "sign-in noise among the administrative events: {list:?}"
    );
    let noise = events["sign_in_failures"].as_array().unwrap();
    assert_eq!(
        noise.len(),
        1,
        "one line for one client's minute: {noise:?}"
    );
    assert_eq!(noise[0]["client"], "127.0.0.1");
    assert_eq!(
        noise[0]["failed"].as_u64().unwrap() + noise[0]["throttled"].as_u64().unwrap(),
        60
    );
    let page = gw
        .client()
        .get(gw.url("/.gateway/admin"))
        .header("cookie", format!("__Host-authgate={alice}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("user_locked"), "{page}");
    assert!(
        page.contains("sign-ins from 127.0.0.1 within a minute"),
        "{page}"
    );
}

#[tokio::test]
async fn a_read_only_users_file_makes_the_pages_say_users_are_managed_elsewhere() {
    use std::os::unix::fs::PermissionsExt;
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let csrf = csrf_of(&gw, &alice).await;
    let bob_csrf = csrf_of(&gw, &bob).await;
    // As a Kubernetes Secret is mounted: nobody may write it (root neither,
    // by intent).
    std::fs::set_permissions(gw.users_file(), std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read_to_string(gw.users_file()).unwrap();

    let page = gw.get_as(&bob, "/.gateway/password").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("managed elsewhere"));
    let posted = password_form(&gw, &bob, &bob_csrf, BOB_PASSWORD, "a brand new password")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 409);
    assert!(posted.text().await.unwrap().contains("managed elsewhere"));
    let totp = gw.get_as(&bob, "/.gateway/totp").await;
    assert_eq!(totp.status(), 409);
    assert!(totp.text().await.unwrap().contains("managed elsewhere"));
    let locked = api(
        &gw,
        reqwest::Method::POST,
        "/users/bob/lock",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(locked.status(), 409);
    let body: Value = locked.json().await.unwrap();
    assert_eq!(body["error"], "managed_elsewhere");
    let admin = gw
        .get_as(&alice, "/.gateway/admin/")
        .await
        .text()
        .await
        .unwrap();
    assert!(admin.contains("Users are managed elsewhere"), "{admin}");
    // Sessions are not users: they can still be ended.
    let revoked = api(
        &gw,
        reqwest::Method::POST,
        "/users/bob/revoke",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(std::fs::read_to_string(gw.users_file()).unwrap(), before);
}

#[tokio::test]
async fn users_seed_makes_a_writable_users_file_once_and_check_names_a_read_only_one() {
    use std::os::unix::fs::PermissionsExt;
    let log = crate::logs::captured();
    let upstream = crate::support::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_config(dir.path(), &upstream.url(), "");
    let secret = dir.path().join("secret");
    let state = dir.path().join("state");
    std::fs::create_dir(&secret).unwrap();
    std::fs::create_dir(&state).unwrap();
    std::fs::rename(dir.path().join("users.toml"), secret.join("users.toml")).unwrap();
    std::fs::set_permissions(
        secret.join("users.toml"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();

    // The Secret itself as the users file: check says it cannot be written.
    std::fs::write(
        &config,
        text.replace("file = \"users.toml\"", "file = \"secret/users.toml\""),
    )
    .unwrap();
    let (ok, said) = crate::support::check(&config);
    assert!(ok, "{said}");
    assert!(said.contains("is read-only here"), "{said}");
    assert!(said.contains("[users] seed"), "{said}");
    let gateway = authgate::Gateway::start(authgate::Config::load(&config).unwrap())
        .await
        .unwrap();
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        logged.contains(&format!(
            "{} is read-only here",
            secret.join("users.toml").display()
        )),
        "said at start"
    );
    gateway.shutdown().await;

    // With a seed: the file on the state volume is made from it, once.
    std::fs::write(
        &config,
        text.replace(
            "file = \"users.toml\"",
            "file = \"state/users.toml\"\nseed = \"secret/users.toml\"",
        ),
    )
    .unwrap();
    let (ok, said) = crate::support::check(&config);
    assert!(ok && !said.contains("read-only"), "{said}");
    assert!(!state.join("users.toml").exists(), "check changes nothing");
    let gateway = authgate::Gateway::start(authgate::Config::load(&config).unwrap())
        .await
        .unwrap();
    let made = state.join("users.toml");
    assert_eq!(
        std::fs::read(&made).unwrap(),
        std::fs::read(secret.join("users.toml")).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&made).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let base = format!("https://{}", gateway.addr());
    let cert = std::fs::read_to_string(dir.path().join("gw.crt")).unwrap();
    let client = crate::support::https_client_builder(&cert).build().unwrap();
    let bob = crate::support::sign_in_at(&client, &base, "bob", BOB_PASSWORD).await;
    let whoami: Value = client
        .get(format!("{base}/.gateway/whoami"))
        .header("cookie", format!("__Host-authgate={bob}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let changed = client
        .post(format!("{base}/.gateway/password"))
        .header("cookie", format!("__Host-authgate={bob}"))
        .form(&[
            ("csrf", whoami["csrf"].as_str().unwrap()),
            ("current", BOB_PASSWORD),
            ("new", "bobs seeded new password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    gateway.shutdown().await;
    // A restart keeps the changed file; the seed is not copied again.
    let edited = std::fs::read(&made).unwrap();
    assert_ne!(edited, std::fs::read(secret.join("users.toml")).unwrap());
    let gateway = authgate::Gateway::start(authgate::Config::load(&config).unwrap())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&made).unwrap(), edited);
    gateway.shutdown().await;
}
