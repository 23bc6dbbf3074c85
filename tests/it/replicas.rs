//! Several replicas on one Redis (issue 11): sessions, user changes and
//! sign-in counters shared; a Redis outage that fails closed and heals by
//! itself. Every test starts a real `redis-server` (Debian's package;
//! `.ci/run` installs it) on a free port; without it they fail, never skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::admin::{api, csrf_of, within};
use crate::support::{authgate, set_cookie, Setup, TestGateway, ALICE_PASSWORD, BOB_PASSWORD};

/// A real redis-server in a folder of its own, with an append-only file so
/// that a restart keeps what it had (as a deployment that keeps
/// revocations must).
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// More `redis-server` arguments (they win over the defaults).
    extra: &'static [&'static str],
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::with_args(&[])
    }

    pub fn with_args(extra: &'static [&'static str]) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: crate::support::free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .args(["--maxmemory-policy", "noeviction"])
            .args(self.extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): these tests need a real Redis; install it with `apt-get install redis-server` (.ci/run does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
        let mut answer = [0u8; 64];
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp
                .read(&mut answer)
                // With a password an unauthenticated PING is refused: up too.
                .is_ok_and(|n| {
                    answer[..n].starts_with(b"+PONG") || answer[..n].starts_with(b"-NOAUTH")
                })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`-STOP`, `-CONT`) to the server.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Sends one command (no password) and returns the first line of the answer.
    pub fn command(&self, command: &str) -> String {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        let mut answer = [0u8; 256];
        let n = tcp.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).trim_end().to_owned()
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn on(redis: &RedisServer) -> Setup {
    Setup::new()
        .store("backend = \"redis\"")
        .store(&format!("url = \"{}\"", redis.url()))
}

async fn status(gw: &TestGateway, session: &str, path: &str) -> u16 {
    gw.get_as(session, path).await.status().as_u16()
}

/// How long until `session` gets `want` on `path` at `gw` (at most 1 s).
async fn applies_within_a_second(
    gw: &TestGateway,
    session: &str,
    path: &str,
    want: u16,
) -> Duration {
    within(Duration::from_secs(1), || async {
        status(gw, session, path).await == want
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_replica_works_on_all_and_a_logout_ends_it_on_all() {
    let redis = RedisServer::start();
    let a = on(&redis).start().await;
    let b = on(&redis).start().await;
    let c = on(&redis).start().await;

    let alice = a.sign_in("alice", ALICE_PASSWORD).await;
    for gw in [&a, &b, &c] {
        assert_eq!(status(gw, &alice, "/private/x").await, 200);
        assert_eq!(gw.upstream.last().headers["x-auth-user"], "alice");
    }

    let csrf = csrf_of(&b, &alice).await;
    // One CSRF secret, kept in Redis: a form from one replica posts to any.
    assert_eq!(csrf_of(&a, &alice).await, csrf);
    assert_eq!(csrf_of(&c, &alice).await, csrf);
    let logout = b
        .client()
        .post(b.url("/.gateway/logout"))
        .header("cookie", format!("__Host-authgate={alice}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    assert_eq!(
        status(&b, &alice, "/private/x").await,
        401,
        "at once where it was ended"
    );
    for gw in [&a, &c] {
        let took = applies_within_a_second(gw, &alice, "/private/x", 401).await;
        println!("logout on B reached another replica in {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_changes_on_any_replica_apply_on_every_replica_within_a_second() {
    let redis = RedisServer::start();
    let a = on(&redis).start().await;
    let b = on(&redis).start().await;
    let c = on(&redis).start().await;
    let admin = b.sign_in("alice", ALICE_PASSWORD).await;

    // A lock from the command line (a Redis config) ...
    let bob = a.sign_in("bob", BOB_PASSWORD).await;
    let output = authgate()
        .args(["user", "lock", "bob", "-c"])
        .arg(a.config_file())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    for gw in [&a, &b, &c] {
        let took = applies_within_a_second(gw, &bob, "/private/x", 401).await;
        println!("lock from the CLI applied in {took:?}");
    }
    let output = authgate()
        .args(["user", "unlock", "bob", "-c"])
        .arg(c.config_file())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    // ... an unlock (bob can sign in again) and an admin's "end all sessions" ...
    within(Duration::from_secs(1), || async {
        a.try_sign_in("bob", BOB_PASSWORD).await.status() == 303
    })
    .await;
    let bob = a.sign_in("bob", BOB_PASSWORD).await;
    let csrf = csrf_of(&b, &admin).await;
    let revoked = api(
        &b,
        reqwest::Method::POST,
        "/users/bob/revoke",
        Some(&admin),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(revoked.status(), 204);
    for gw in [&a, &b, &c] {
        applies_within_a_second(gw, &bob, "/private/x", 401).await;
    }

    // ... a role change ...
    let bob = c.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(status(&a, &bob, "/staff/x").await, 403);
    let roles = api(
        &b,
        reqwest::Method::PUT,
        "/users/bob/roles",
        Some(&admin),
        Some(&csrf),
    )
    .json(&serde_json::json!({ "roles": ["admin", "user"] }))
    .send()
    .await
    .unwrap();
    assert_eq!(roles.status(), 204);
    for gw in [&a, &b, &c] {
        applies_within_a_second(gw, &bob, "/staff/x", 200).await;
    }

    // ... and a password change in the browser.
    let bob_csrf = csrf_of(&c, &bob).await;
    let changed = crate::admin::password_form(
        &c,
        &bob,
        &bob_csrf,
        BOB_PASSWORD,
        "bob's new shared password",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(changed.status(), 200);
    let renewed = set_cookie(&changed, "__Host-authgate").unwrap();
    for gw in [&a, &b, &c] {
        applies_within_a_second(gw, &bob, "/private/x", 401).await;
        assert_eq!(status(gw, &renewed, "/private/x").await, 200);
    }
    // The new password works on every replica, the old one on none.
    a.sign_in("bob", "bob's new shared password").await;
    let old = b.try_sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(old.status(), 401);
    assert_eq!(status(&b, &admin, "/staff/x").await, 200, "alice untouched");

    // What Redis holds, as a users.toml for backup and review.
    let export = authgate()
        .args(["user", "export", "-c"])
        .arg(a.config_file())
        .output()
        .unwrap();
    assert!(export.status.success(), "{export:?}");
    let text = String::from_utf8(export.stdout).unwrap();
    let users = authgate::users::Users::parse(&text, std::path::Path::new("export.toml")).unwrap();
    let exported = users.get("bob").unwrap();
    assert_eq!(exported.roles, ["admin", "user"]);
    assert!(users.get("carol").unwrap().locked);
    assert_eq!(users.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_on_any_replica_count_toward_one_throttle_and_any_admin_lists_every_session() {
    let redis = RedisServer::start();
    let replicas = [
        on(&redis).login("max_failures = 3").start().await,
        on(&redis).login("max_failures = 3").start().await,
        on(&redis).login("max_failures = 3").start().await,
    ];
    for gw in &replicas {
        let failed = gw.try_sign_in("bob", "wrong").await;
        assert_eq!(failed.status(), 401);
    }
    for gw in &replicas {
        let refused = gw.try_sign_in("bob", BOB_PASSWORD).await;
        assert_eq!(
            refused.status(),
            429,
            "three failures in all, one on each replica"
        );
        assert!(refused.headers().contains_key("retry-after"));
    }

    let on_a = replicas[0].sign_in("alice", ALICE_PASSWORD).await;
    let on_b = replicas[1].sign_in("alice", ALICE_PASSWORD).await;
    let c = &replicas[2];
    let csrf = csrf_of(c, &on_a).await;
    let listed: serde_json::Value = api(
        c,
        reqwest::Method::GET,
        "/sessions",
        Some(&on_a),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let handles: Vec<&str> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for session in [&on_a, &on_b] {
        let handle = authgate::session::handle(&authgate::session::key_of(session).unwrap());
        assert!(
            handles.contains(&handle.as_str()),
            "{handle} in {handles:?}"
        );
    }

    // The command line sees and ends them in Redis too.
    let cli = |args: &[&str]| {
        let (ok, out, err) = c.sessions_cli(args);
        assert!(ok, "{err}");
        out
    };
    assert_eq!(cli(&["list", "--user", "Alice"]).lines().count(), 2);
    let handle_b = authgate::session::handle(&authgate::session::key_of(&on_b).unwrap());
    assert!(cli(&["revoke", &handle_b]).contains("ended 1 session"));
    applies_within_a_second(&replicas[1], &on_b, "/private/x", 401).await;
    assert_eq!(status(&replicas[0], &on_a, "/private/x").await, 200);
    assert!(cli(&["revoke", "--user", "alice"]).contains("ended 1 session"));
    applies_within_a_second(&replicas[0], &on_a, "/private/x", 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_fails_closed_and_service_resumes_by_itself() {
    let mut redis = RedisServer::start();
    let gw = on(&redis)
        .server("ops_listen = \"127.0.0.1:0\"")
        .start()
        .await;
    let ops = format!("http://{}", gw.gateway().ops_addr().unwrap());
    let plain = reqwest::Client::new();
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(status(&gw, &alice, "/private/x").await, 200);

    redis.stop();
    let stopped = Instant::now();
    // Nothing remembered is used past its maximum age ...
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let asked = Instant::now();
    let refused = gw.get_as(&alice, "/private/x").await;
    let took = asked.elapsed();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(
        refused.headers().get("set-cookie").is_none(),
        "the cookie is left alone"
    );
    assert!(
        took < Duration::from_millis(900),
        "answered in {took:?}, not after a long wait"
    );
    println!("503 {:?} after the stop, in {took:?}", stopped.elapsed());

    // ... public routes still work, as anonymous ...
    let public = gw.get_as(&alice, "/open/x").await;
    assert_eq!(public.status(), 200);
    assert!(gw.upstream.last().headers.get("x-auth-user").is_none());
    // ... sign-in is refused ...
    let sign_in = gw.try_sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(sign_in.status(), 503);
    assert!(sign_in.headers().contains_key("retry-after"));
    // ... and the probes keep the replica in service while saying why.
    within(Duration::from_secs(2), || async {
        let r = plain.get(format!("{ops}/healthz")).send().await.unwrap();
        r.status() == 200 && r.text().await.unwrap().contains("unavailable")
    })
    .await;
    assert_eq!(
        plain
            .get(format!("{ops}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = plain
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("authgate_store_up 0"), "{metrics}");
    // The failed calls are counted as errors of the redis backend.
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("authgate_store_errors_total{backend=\"redis\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(errors > 0, "{metrics}");
    assert!(
        !metrics.contains("authgate_sessions "),
        "replicas cannot count Redis's sessions: {metrics}"
    );

    // A Redis that hangs instead of refusing: the configured timeout.
    redis.restart();
    within(Duration::from_secs(2), || async {
        status(&gw, &alice, "/private/x").await == 200
    })
    .await;
    redis.signal("-STOP");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let asked = Instant::now();
    let hung = gw.get_as(&alice, "/private/x").await;
    let took = asked.elapsed();
    assert_eq!(hung.status(), 503);
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(700),
        "a hung Redis is given up on after the 250 ms timeout, not {took:?}"
    );
    println!("503 from a hung Redis in {took:?}");
    redis.signal("-CONT");

    redis.restart();
    let back = within(Duration::from_secs(2), || async {
        status(&gw, &alice, "/private/x").await == 200
    })
    .await;
    println!("service resumed {back:?} after Redis came back");
    within(Duration::from_secs(2), || async {
        plain
            .get(format!("{ops}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("authgate_store_up 1")
    })
    .await;
}

#[tokio::test]
async fn a_redis_that_may_evict_keys_is_refused_at_start() {
    let redis = RedisServer::with_args(&["--maxmemory-policy", "allkeys-lru"]);
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_config(dir.path(), "http://127.0.0.1:9", "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[store]\nbackend = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ));
    std::fs::write(&config, text).unwrap();
    let output = authgate()
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("allkeys-lru") && stderr.contains("maxmemory-policy noeviction"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_password_file_or_the_url_reaches_redis() {
    let redis = RedisServer::with_args(&["--requirepass", "s3cret-redis"]);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("redis.pass");
    std::fs::write(&secret, "s3cret-redis\n").unwrap();
    let from_file = Setup::new()
        .store("backend = \"redis\"")
        .store(&format!("url = \"{}\"", redis.url()))
        .store(&format!("password_file = \"{}\"", secret.display()))
        .start()
        .await;
    let alice = from_file.sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(status(&from_file, &alice, "/private/x").await, 200);

    let in_url = Setup::new()
        .store("backend = \"redis\"")
        .store(&format!(
            "url = \"redis://:s3cret-redis@127.0.0.1:{}/0\"",
            redis.port
        ))
        .start()
        .await;
    assert_eq!(
        status(&in_url, &alice, "/private/x").await,
        200,
        "the same Redis"
    );

    // Without it the gateway does not start, and says why.
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_config(dir.path(), "http://127.0.0.1:9", "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[store]\nbackend = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ));
    std::fs::write(&config, text).unwrap();
    let output = authgate()
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot use Redis"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_comes_back_empty_gets_the_newer_users_not_the_file() {
    let log = crate::logs::captured();
    let redis = RedisServer::start();
    let a = on(&redis).start().await;
    let b = on(&redis).start().await;
    let alice = a.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = csrf_of(&a, &alice).await;
    let changed = api(
        &a,
        reqwest::Method::POST,
        "/users/bob/password",
        Some(&alice),
        Some(&csrf),
    )
    .json(&serde_json::json!({ "password": "bobs brand new password" }))
    .send()
    .await
    .unwrap();
    assert_eq!(changed.status(), 204);
    // Every replica has the change; then Redis loses everything.
    within(Duration::from_secs(2), || async {
        b.try_sign_in("bob", BOB_PASSWORD).await.status() == 401
    })
    .await;
    assert_eq!(redis.command("FLUSHALL"), "+OK");
    // One replica restarts, with the users file that still has the old
    // password.
    drop(b);
    let b = on(&redis).start().await;
    for gw in [&a, &b] {
        assert_eq!(
            gw.try_sign_in("bob", BOB_PASSWORD).await.status(),
            401,
            "the old password came back"
        );
        assert_eq!(
            gw.try_sign_in("bob", "bobs brand new password")
                .await
                .status(),
            303
        );
    }
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        text.contains("REDIS CAME BACK EMPTY"),
        "said loudly: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_an_edit_of_the_users_file_is_named_as_doing_nothing() {
    let log = crate::logs::captured();
    let redis = RedisServer::start();
    let gw = on(&redis).start().await;
    let file = gw.users_file();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\n# edited by hand\n")).unwrap();
    within(Duration::from_secs(5), || async {
        String::from_utf8_lossy(&log.lock().unwrap())
            .contains("the users file changed, but with [store] backend = \\\"redis\\\"")
    })
    .await;
    // check says where users come from.
    let (_, said) = crate::support::check(&gw.config_file());
    assert!(said.contains("users live in Redis"), "{said}");
}
