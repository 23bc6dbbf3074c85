//! Sessions that survive restarts (issue 10): the real binary killed with
//! SIGKILL right after an answer, stopped with SIGTERM, started on a damaged
//! state file; the `sessions` commands against a running gateway; and a
//! state file another process holds locked.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{
    authgate, https_client_builder, set_cookie, sigterm, spawn_run, wait_for_exit, wait_for_line,
    write_config, Running, Setup, Upstream, ALICE_PASSWORD, BOB_PASSWORD,
};

/// The binary, started on one config, with what it logs.
struct Node {
    child: Running,
    /// What it logged until it was serving.
    startup: Vec<String>,
    /// The rest, kept so that its stderr is read and never fills up.
    _lines: Box<dyn Iterator<Item = String> + Send>,
    base: String,
    client: reqwest::Client,
}

impl Node {
    fn start(config: &Path) -> Node {
        let cert = std::fs::read_to_string(config.parent().unwrap().join("gw.crt")).unwrap();
        let (child, mut lines) = spawn_run(&["-c"], config);
        let mut startup = Vec::new();
        let serving = loop {
            let line = wait_for_line(&mut lines, "");
            startup.push(line.clone());
            if line.contains("authgate is serving") {
                break line;
            }
        };
        let listen = serving
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .expect("the listen address in the line")
            .to_owned();
        Node {
            child,
            startup,
            _lines: Box::new(lines),
            base: format!("https://{listen}"),
            client: https_client_builder(&cert).build().unwrap(),
        }
    }

    /// SIGKILL: no chance to write anything more.
    fn kill_9(mut self) {
        self.child.0.kill().unwrap();
        self.child.0.wait().unwrap();
    }

    async fn stop(mut self) {
        sigterm(&self.child.0);
        assert!(wait_for_exit(&mut self.child).await.success());
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn sign_in(&self, user: &str, password: &str) -> String {
        crate::support::sign_in_at(&self.client, &self.url(""), user, password).await
    }

    /// The status of a GET of a page that needs a session (API-style, so
    /// no session is 401).
    async fn status(&self, session: &str) -> u16 {
        self.client
            .get(self.url("/private/page"))
            .header("cookie", format!("__Host-authgate={session}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn csrf(&self, session: &str) -> String {
        let whoami: serde_json::Value = self
            .client
            .get(self.url("/.gateway/whoami"))
            .header("cookie", format!("__Host-authgate={session}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        whoami["csrf"].as_str().unwrap().to_owned()
    }
}

/// The handle the admin API and the CLI show for a session cookie.
pub fn handle_of(session: &str) -> String {
    authgate::session::handle(&authgate::session::key_of(session).unwrap())
}

/// Appends `section` (a `[session]` table, say) to the config file.
pub fn with_session_section(config: &Path, section: &str) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(section);
    std::fs::write(config, text).unwrap();
}

fn state_file(config: &Path) -> PathBuf {
    config.parent().unwrap().join("authgate-state.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_that_was_answered_survives_kill_9() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url(), "");

    let node = Node::start(&config);
    let session = node.sign_in("bob", BOB_PASSWORD).await;
    node.kill_9();

    let node = Node::start(&config);
    assert_eq!(node.status(&session).await, 200, "the session came back");
    assert_eq!(
        upstream.last().headers["x-auth-user"],
        "bob",
        "as bob's session"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_that_were_answered_stay_dead_after_kill_9() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url(), "");

    let node = Node::start(&config);
    let alice_out = node.sign_in("alice", ALICE_PASSWORD).await;
    let alice = node.sign_in("alice", ALICE_PASSWORD).await;
    let bob_revoked = node.sign_in("bob", BOB_PASSWORD).await;
    let bob = node.sign_in("bob", BOB_PASSWORD).await;

    // A sign-out ...
    let csrf = node.csrf(&alice_out).await;
    let logout = node
        .client
        .post(node.url("/.gateway/logout"))
        .header("cookie", format!("__Host-authgate={alice_out}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    node.kill_9();
    let node = Node::start(&config);
    assert_eq!(node.status(&alice_out).await, 401, "signed out for good");
    assert_eq!(node.status(&alice).await, 200);

    // ... an admin's revocation ...
    let csrf = node.csrf(&alice).await;
    let revoke = node
        .client
        .delete(node.url(&format!(
            "/.gateway/admin/api/sessions/{}",
            handle_of(&bob_revoked)
        )))
        .header("cookie", format!("__Host-authgate={alice}"))
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    node.kill_9();
    let node = Node::start(&config);
    assert_eq!(node.status(&bob_revoked).await, 401, "revoked for good");
    assert_eq!(node.status(&bob).await, 200);

    // ... and a password change, whose new session must survive too.
    let csrf = node.csrf(&bob).await;
    let changed = node
        .client
        .post(node.url("/.gateway/password"))
        .header("cookie", format!("__Host-authgate={bob}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("current", BOB_PASSWORD),
            ("new", "a brand new password for bob"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let renewed = set_cookie(&changed, "__Host-authgate").unwrap();
    node.kill_9();
    let node = Node::start(&config);
    assert_eq!(node.status(&bob).await, 401, "ended by the password change");
    assert_eq!(node.status(&renewed).await, 200, "the renewed session");
    assert_eq!(node.status(&alice).await, 200);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_keeps_sessions_and_their_last_seen() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url(), "");

    let node = Node::start(&config);
    let session = node.sign_in("alice", ALICE_PASSWORD).await;
    let signed_in_at = authgate::session::now_ms();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(node.status(&session).await, 200);
    let used_at = authgate::session::now_ms();
    // Stopped before the batch of touches is due: the stop writes it.
    node.stop().await;

    let db = rusqlite::Connection::open(state_file(&config)).unwrap();
    let (created, last_seen): (i64, i64) = db
        .query_row("SELECT created_ms, last_seen_ms FROM sessions", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    drop(db);
    assert!(created as u64 <= signed_in_at);
    assert!(
        last_seen as u64 >= used_at - 1000 && last_seen - created >= 1000,
        "last_seen {last_seen} kept (created {created}, used at {used_at})"
    );

    let node = Node::start(&config);
    assert_eq!(node.status(&session).await, 200);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_idle_past_its_timeout_while_the_gateway_was_down_is_gone() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url(), "");
    with_session_section(
        &config,
        "\n[session]\nidle_timeout = \"1500ms\"\nabsolute_timeout = \"1h\"\n",
    );

    let node = Node::start(&config);
    let idle = node.sign_in("alice", ALICE_PASSWORD).await;
    node.stop().await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let node = Node::start(&config);
    let loaded = node
        .startup
        .iter()
        .find(|l| l.contains("sessions loaded"))
        .expect("a line about the sessions loaded");
    assert!(loaded.contains("expired=1"), "{loaded}");
    assert_eq!(node.status(&idle).await, 401);
    node.stop().await;
}

#[test]
fn a_damaged_state_file_stops_the_start_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    std::fs::write(
        state_file(&config),
        b"this is not a SQLite database, at all...\n".repeat(200),
    )
    .unwrap();
    let output = authgate()
        .arg("run")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&state_file(&config).display().to_string())
            && stderr.contains("is damaged")
            && stderr.contains("Move it aside")
            && stderr.contains("users are not lost"),
        "{stderr}"
    );
}

async fn ends_within(gw: &crate::support::TestGateway, session: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let status = gw.get_as(session, "/private/x").await.status();
        if status == 401 {
            return;
        }
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < limit,
            "the running gateway still lets the session in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_commands_list_and_end_sessions_of_a_running_gateway() {
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let bob1 = gw.sign_in("bob", BOB_PASSWORD).await;
    let bob2 = gw.sign_in("Bob", BOB_PASSWORD).await;

    let (ok, listed, _) = gw.sessions_cli(&["list"]);
    assert!(ok);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        !listed.contains(&alice) && !listed.contains(&bob1),
        "no cookie values"
    );
    let (ok, bobs, _) = gw.sessions_cli(&["list", "--user", "BOB"]);
    assert!(ok);
    assert_eq!(bobs.lines().count(), 2, "{bobs}");
    let line = bobs
        .lines()
        .find(|l| l.starts_with(&handle_of(&bob1)))
        .unwrap();
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields[1], "bob");
    assert_eq!(fields[4], "127.0.0.1");

    // One by its handle ...
    let (ok, out, err) = gw.sessions_cli(&["revoke", &handle_of(&bob1)]);
    assert!(ok, "{err}");
    assert!(out.contains("ended 1 session"), "{out}");
    ends_within(&gw, &bob1, Duration::from_secs(2)).await;
    assert_eq!(gw.get_as(&bob2, "/private/x").await.status(), 200);
    let (ok, _, err) = gw.sessions_cli(&["revoke", &handle_of(&bob1)]);
    assert!(!ok && err.contains("no session has the handle"), "{err}");

    // ... a user's ...
    let (ok, out, _) = gw.sessions_cli(&["revoke", "--user", "bob"]);
    assert!(ok && out.contains("ended 1 session"), "{out}");
    ends_within(&gw, &bob2, Duration::from_secs(2)).await;
    assert_eq!(gw.get_as(&alice, "/private/x").await.status(), 200);

    // ... or all.
    let (ok, out, _) = gw.sessions_cli(&["revoke", "--all"]);
    assert!(ok && out.contains("ended 1 session"), "{out}");
    ends_within(&gw, &alice, Duration::from_secs(2)).await;
    let (ok, listed, _) = gw.sessions_cli(&["list"]);
    assert!(ok && listed.is_empty(), "{listed}");
}

#[tokio::test]
async fn the_sessions_commands_explain_that_a_memory_store_has_no_file() {
    let gw = Setup::new().store("backend = \"memory\"").start().await;
    let (ok, _, err) = gw.sessions_cli(&["list"]);
    assert!(!ok);
    assert!(
        err.contains("memory store") && err.contains("admin API"),
        "{err}"
    );
    assert!(
        !state_file(&gw.config_file()).exists(),
        "the memory store writes no file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sign_in_is_answered_while_the_state_file_cannot_take_it() {
    let gw = Setup::new()
        .lock_wait(Duration::from_millis(200))
        .start()
        .await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    // Another process (a stuck script, say) holds the write lock.
    let other = rusqlite::Connection::open(state_file(&gw.config_file())).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let client = gw.client();
    let token = gw.login_form(&client).await;
    let refused = gw
        .post_login(
            &client,
            &token,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        set_cookie(&refused, "__Host-authgate"),
        None,
        "no cookie for a session that is not kept"
    );
    // Sessions already made go on: requests never wait for the file.
    assert_eq!(gw.get_as(&bob, "/private/x").await.status(), 200);

    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(gw.get_as(&alice, "/private/x").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_tokens_need_a_secret_the_state_file_does_not_hold() {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url(), "");

    let node = Node::start(&config);
    let bob = node.sign_in("bob", BOB_PASSWORD).await;
    let csrf = node.csrf(&bob).await;
    // What a reader of the state file can compute: the session's key is in
    // it, and the token used to be SHA-256 of a label and that key.
    let key = authgate::session::key_of(&bob).unwrap();
    let mut from_state = Sha256::new();
    from_state.update(b"authgate csrf v1\0");
    from_state.update(key);
    let from_state = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(from_state.finalize());
    assert_ne!(csrf, from_state);
    let forged = node
        .client
        .post(node.url("/.gateway/logout"))
        .header("cookie", format!("__Host-authgate={bob}"))
        .form(&[("csrf", from_state.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "a token computed from the state");
    // The secret is a file of its own beside the state, for the owner only.
    let secret = dir.path().join("authgate-state.db.csrf-key");
    let meta = std::fs::metadata(&secret).expect("the secret beside the state file");
    assert_eq!(meta.len(), 32);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let state = std::fs::read(state_file(&config)).unwrap();
    let secret_bytes = std::fs::read(&secret).unwrap();
    assert!(
        !state.windows(32).any(|w| w == secret_bytes.as_slice()),
        "the secret is in the state file"
    );
    // It outlives a restart, like the sessions: an open form still works.
    node.kill_9();
    let node = Node::start(&config);
    assert_eq!(node.csrf(&bob).await, csrf);
    let logout = node
        .client
        .post(node.url("/.gateway/logout"))
        .header("cookie", format!("__Host-authgate={bob}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    node.stop().await;
}
