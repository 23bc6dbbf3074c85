//! Chaos with the real stores (issue 30): Redis killed and restarted, and
//! frozen with SIGSTOP, under sign-ins, sign-outs and command-line
//! revocations on three replicas; the gateway process killed with
//! `kill -9` in the middle of a burst of sign-ins and sign-outs on its
//! SQLite file; the disk filling up under the state file and the users
//! file.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admin::{csrf_of, within};
use crate::replicas::{on, RedisServer};
use crate::support::{set_cookie, TestGateway, ALICE_PASSWORD, BOB_PASSWORD};

/// Longer than a replica answers from what it last found of a session
/// (`store::redis::CACHE_AGE`, 800 ms): a session ended this long ago is
/// ended on every replica.
const EVERY_REPLICA_KNOWS: Duration = Duration::from_millis(1000);

async fn status(gw: &TestGateway, session: &str) -> Option<u16> {
    gw.client()
        .get(gw.url("/private/x"))
        .header("cookie", format!("__Host-authgate={session}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Signs out `session` through `gw`: whether the gateway said it did.
async fn sign_out(gw: &TestGateway, session: &str) -> bool {
    let Ok(whoami) = gw
        .client()
        .get(gw.url("/.gateway/whoami"))
        .header("cookie", format!("__Host-authgate={session}"))
        .send()
        .await
    else {
        return false;
    };
    let Ok(whoami) = whoami.json::<serde_json::Value>().await else {
        return false;
    };
    let Some(csrf) = whoami["csrf"].as_str() else {
        return false;
    };
    gw.client()
        .post(gw.url("/.gateway/logout"))
        .header("cookie", format!("__Host-authgate={session}"))
        .form(&[("csrf", csrf)])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok_and(|r| r.status() == 303)
}

/// Revokes `session` with `authgate sessions revoke HANDLE` against
/// `gw`'s config: whether the command said it did.
async fn revoke(gw: &TestGateway, session: &str) -> bool {
    let handle = crate::store::handle_of(session);
    let config = gw.config_file();
    tokio::task::spawn_blocking(move || {
        crate::support::authgate()
            .args(["sessions", "revoke", &handle, "-c"])
            .arg(config)
            .output()
            .unwrap()
            .status
            .success()
    })
    .await
    .unwrap()
}

/// What the clients saw while the store was failing.
#[derive(Default)]
struct Seen {
    /// Sessions whose sign-in was answered with a cookie.
    signed_in: Vec<String>,
    /// Sessions whose sign-out or revocation was answered as done, and when.
    ended: HashMap<String, Instant>,
    /// How many of those were revocations.
    revoked: usize,
    /// Every request with a session: (session, sent at, status).
    requests: Vec<(String, Instant, Option<u16>)>,
    /// Answers that are never right (a sign-in's other than 303 or 503).
    wrong: Vec<String>,
}

/// Sign-ins, requests and sign-outs on every replica in turn (starting
/// at `first`), until `stop`.
async fn traffic(
    replicas: Arc<[TestGateway; 3]>,
    first: usize,
    mut live: Vec<String>,
    ended_before: Vec<String>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut round = first;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        round += 1;
        let gw = &replicas[round % 3];
        // A sign-in: a cookie only with a 303, and a 503 otherwise.
        let (user, password) = if round.is_multiple_of(2) {
            ("alice", ALICE_PASSWORD)
        } else {
            ("bob", BOB_PASSWORD)
        };
        let answer = gw.try_sign_in(user, password).await;
        let cookie = set_cookie(&answer, "__Host-authgate").filter(|c| !c.is_empty());
        match (answer.status().as_u16(), cookie) {
            (303, Some(session)) => {
                seen.lock().unwrap().signed_in.push(session.clone());
                live.push(session);
            }
            (503, None) => {}
            (status, cookie) => seen.lock().unwrap().wrong.push(format!(
                "a sign-in answered {status} with cookie {:?}",
                cookie.is_some()
            )),
        }
        // Every session we know of, live or ended, on this replica.
        for session in live.iter().chain(&ended_before) {
            let sent = Instant::now();
            let got = status(gw, session).await;
            seen.lock()
                .unwrap()
                .requests
                .push((session.clone(), sent, got));
        }
        // Now and then a sign-out on another replica, or a revocation from
        // the command line. One that was not answered as done may or may
        // not have ended: that session is not asked about again.
        if round.is_multiple_of(4) && live.len() > 1 {
            let session = live.remove(round % live.len());
            let other = &replicas[(round + 1) % 3];
            let revoking = round.is_multiple_of(8);
            let done = if revoking {
                revoke(other, &session).await
            } else {
                sign_out(other, &session).await
            };
            if done {
                let mut seen = seen.lock().unwrap();
                seen.ended.insert(session, Instant::now());
                seen.revoked += usize::from(revoking);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_or_frozen_under_traffic_loses_no_revocation_and_invents_no_session() {
    let mut redis = RedisServer::start();
    let replicas = Arc::new([
        on(&redis).start().await,
        on(&redis).start().await,
        on(&redis).start().await,
    ]);
    // Before the fault: twelve sessions over the replicas; three signed
    // out on another replica than their own, and every one of bob's
    // revoked from the command line.
    let mut sessions = Vec::new();
    for i in 0..12 {
        let gw = &replicas[i % 3];
        let (user, password) = if i % 3 == 2 {
            ("bob", BOB_PASSWORD)
        } else {
            ("alice", ALICE_PASSWORD)
        };
        sessions.push((user, gw.sign_in(user, password).await));
    }
    let mut ended_before = Vec::new();
    for i in [0, 1, 3] {
        let (_, session) = &sessions[i];
        assert!(sign_out(&replicas[(i + 1) % 3], session).await);
        ended_before.push(session.clone());
    }
    let (ok, _, err) = replicas[0].sessions_cli(&["revoke", "--user", "bob"]);
    assert!(ok, "{err}");
    for (user, session) in &sessions {
        if *user == "bob" {
            ended_before.push(session.clone());
        }
    }
    let live: Vec<String> = sessions
        .iter()
        .map(|(_, s)| s.clone())
        .filter(|s| !ended_before.contains(s))
        .collect();
    tokio::time::sleep(EVERY_REPLICA_KNOWS).await;
    let fault_began = Instant::now();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Three clients at once, each with its share of the live sessions.
    let load: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(traffic(
                replicas.clone(),
                i,
                live.iter().skip(i).step_by(3).cloned().collect(),
                ended_before.clone(),
                seen.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Killed (SIGKILL) and restarted on its append-only file ...
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ... then frozen, and thawed.
    redis.signal("-STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.signal("-CONT");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in load {
        client.await.unwrap();
    }

    let seen = Arc::into_inner(seen).unwrap().into_inner().unwrap();
    assert!(seen.wrong.is_empty(), "{:?}", seen.wrong);
    let unavailable = seen.requests.iter().filter(|r| r.2 == Some(503)).count();
    assert!(unavailable > 0, "the faults were felt: some 503s");
    println!(
        "{} requests, {unavailable} answered 503; {} sign-ins and {} sign-outs or revocations answered during the faults",
        seen.requests.len(),
        seen.signed_in.len(),
        seen.ended.len()
    );
    assert!(!seen.signed_in.is_empty() && seen.ended.len() > seen.revoked && seen.revoked > 0);
    // No revocation lost: a session ended before the faults never served
    // again; one ended during them (signed out or revoked) never once every
    // replica knew.
    for (session, sent, got) in &seen.requests {
        if got != &Some(200) {
            continue;
        }
        assert!(
            !ended_before.contains(session),
            "a session ended before the fault served {:?} into it",
            sent.duration_since(fault_began)
        );
        if let Some(ended) = seen.ended.get(session) {
            assert!(
                *sent < *ended + EVERY_REPLICA_KNOWS,
                "a session signed out during the faults served {:?} later",
                sent.duration_since(*ended)
            );
        }
    }
    // Afterwards, on every replica: what was signed in (and not out)
    // works, whatever was ended stays ended.
    tokio::time::sleep(EVERY_REPLICA_KNOWS).await;
    let ended: HashSet<&String> = ended_before.iter().chain(seen.ended.keys()).collect();
    for gw in replicas.iter() {
        for session in live.iter().chain(&seen.signed_in) {
            let want = if ended.contains(session) { 401 } else { 200 };
            assert_eq!(status(gw, session).await, Some(want));
        }
        for session in &ended {
            assert_eq!(status(gw, session).await, Some(401));
        }
    }
    // And the replicas serve as before.
    let again = replicas[2].sign_in("alice", ALICE_PASSWORD).await;
    assert!(!csrf_of(&replicas[0], &again).await.is_empty());
    within(Duration::from_secs(2), || async {
        status(&replicas[1], &again).await == Some(200)
    })
    .await;
}

/// A client of a gateway run as its own process (which `kill -9` ends).
struct Process {
    base: String,
    client: reqwest::Client,
    /// What it has logged so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// A sign-in form, fetched and posted: the gateway's answer.
    async fn post_sign_in(&self, user: &str, password: &str) -> reqwest::Result<reqwest::Response> {
        crate::support::try_post_login_at(&self.client, &self.base, user, password).await
    }

    /// The session cookie of a sign-in answered 303.
    async fn sign_in(&self, user: &str, password: &str) -> reqwest::Result<Option<String>> {
        let answer = self.post_sign_in(user, password).await?;
        Ok(set_cookie(&answer, "__Host-authgate").filter(|_| answer.status() == 303))
    }

    /// The session's CSRF token, from `/.gateway/whoami`.
    async fn csrf(&self, session: &str) -> reqwest::Result<String> {
        let whoami: serde_json::Value = self
            .client
            .get(format!("{}/.gateway/whoami", self.base))
            .header("cookie", format!("__Host-authgate={session}"))
            .send()
            .await?
            .json()
            .await?;
        Ok(whoami["csrf"].as_str().unwrap_or_default().to_owned())
    }

    /// A form posted within the session, with its CSRF token.
    async fn post(
        &self,
        session: &str,
        path: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        let csrf = self.csrf(session).await?;
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        self.client
            .post(format!("{}{path}", self.base))
            .header("cookie", format!("__Host-authgate={session}"))
            .form(&form)
            .send()
            .await
    }

    async fn sign_out(&self, session: &str) -> reqwest::Result<bool> {
        let answer = self.post(session, "/.gateway/logout", &[]).await?;
        Ok(answer.status() == 303)
    }

    async fn status(&self, session: &str) -> u16 {
        self.client
            .get(format!("{}/private/x", self.base))
            .header("cookie", format!("__Host-authgate={session}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// What the burst's answers promised.
#[derive(Default)]
struct Answered {
    signed_in: Vec<String>,
    signed_out: HashSet<String>,
    operations: usize,
}

/// Sign-ins, and sign-outs of two of every three sessions, from eight
/// clients at once, until `total` operations were sent or one fails to
/// get an answer (the process is gone).
async fn burst(gateway: Arc<Process>, answered: Arc<Mutex<Answered>>, total: usize) {
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let gateway = gateway.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let (user, password) = if c % 2 == 0 {
                    ("alice", ALICE_PASSWORD)
                } else {
                    ("bob", BOB_PASSWORD)
                };
                let mut mine: Vec<String> = Vec::new();
                loop {
                    let n = {
                        let mut a = answered.lock().unwrap();
                        if a.operations >= total {
                            return;
                        }
                        a.operations += 1;
                        a.operations
                    };
                    if n.is_multiple_of(3) && !mine.is_empty() {
                        let session = mine.remove(0);
                        match gateway.sign_out(&session).await {
                            Ok(true) => {
                                answered.lock().unwrap().signed_out.insert(session);
                            }
                            Ok(false) => panic!("a sign-out was refused"),
                            Err(_) => return,
                        }
                    } else {
                        match gateway.sign_in(user, password).await {
                            Ok(Some(session)) => {
                                answered.lock().unwrap().signed_in.push(session.clone());
                                mine.push(session);
                            }
                            Ok(None) => panic!("a sign-in was refused"),
                            Err(_) => return,
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
}

fn start_process(config: &std::path::Path) -> (crate::support::Running, Process) {
    let (child, mut lines) = crate::support::spawn_run(&["-c"], config);
    let listen = crate::cli::listen_address(&mut lines);
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = log.clone();
    std::thread::spawn(move || lines.for_each(|line| kept.lock().unwrap().push(line)));
    let cert = std::fs::read_to_string(config.with_file_name("gw.crt")).unwrap();
    let client = crate::support::https_client_builder(&cert)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let process = Process {
        base: format!("https://{listen}"),
        client,
        log,
    };
    (child, process)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_kill_9_in_a_burst_of_sign_ins_and_sign_outs() {
    let upstream = crate::support::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_config(dir.path(), &upstream.url(), "");
    // Room for every session of the burst (past max_per_user the least
    // recently used would end, by design).
    crate::store::with_session_section(&config, "\n[session]\nmax_per_user = 5000\n");
    let (mut child, first) = start_process(&config);
    let first = Arc::new(first);
    let answered = Arc::new(Mutex::new(Answered::default()));
    const TOTAL: usize = 1000;
    let load = tokio::spawn(burst(first.clone(), answered.clone(), TOTAL));
    // Killed (SIGKILL, no chance to flush or close anything) about halfway.
    within(Duration::from_secs(60), || async {
        answered.lock().unwrap().operations >= TOTAL / 2
    })
    .await;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    load.await.unwrap();
    let at_kill = {
        let a = answered.lock().unwrap();
        (a.operations, a.signed_in.len(), a.signed_out.len())
    };
    // Started again on the same state file: the rest of the burst.
    let (_child, second) = start_process(&config);
    let second = Arc::new(second);
    burst(second.clone(), answered.clone(), TOTAL).await;
    let answered = Arc::into_inner(answered).unwrap().into_inner().unwrap();
    println!(
        "killed after {} operations ({} sign-ins, {} sign-outs answered); {} sign-ins and {} sign-outs answered in all",
        at_kill.0,
        at_kill.1,
        at_kill.2,
        answered.signed_in.len(),
        answered.signed_out.len()
    );
    assert!(at_kill.1 > 100 && at_kill.2 > 50, "{at_kill:?}");
    for session in &answered.signed_in {
        let want = if answered.signed_out.contains(session) {
            401
        } else {
            200
        };
        assert_eq!(second.status(session).await, want);
    }
}

/// A small tmpfs of its own, unmounted when dropped. Mounting needs root
/// (CI runs as root): without it the test fails and says so.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            mounted.status.success(),
            "the disk-full test mounts a small tmpfs, which needs root: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk refuses another byte.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path().join("filler")).unwrap();
        for chunk in [64 * 1024, 1024, 1] {
            let bytes = vec![0u8; chunk];
            while filler.write_all(&bytes).is_ok() {}
        }
        let error = filler.write_all(b"x").unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_clear_errors_and_tears_no_file() {
    let disk = SmallDisk::mount("4m");
    let upstream = crate::support::Upstream::start().await;
    let config = crate::support::write_config(disk.path(), &upstream.url(), "");
    let (child, gateway) = start_process(&config);
    let alice = gateway
        .sign_in("alice", ALICE_PASSWORD)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gateway.status(&alice).await, 200);
    let users_before = std::fs::read(config.with_file_name("users.toml")).unwrap();

    disk.fill();
    // A sign-in that cannot be written: refused, and no cookie for it.
    let refused = gateway.post_sign_in("bob", BOB_PASSWORD).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(set_cookie(&refused, "__Host-authgate").is_none());
    // A password change that cannot be saved: said so, the file as it was.
    let changed = gateway
        .post(
            &alice,
            "/.gateway/password",
            &[("current", ALICE_PASSWORD), ("new", "a brand new password")],
        )
        .await
        .unwrap();
    let status = changed.status();
    let page = changed.text().await.unwrap();
    assert!(status.is_server_error(), "{status}");
    assert!(
        page.contains("could not be saved. Nothing was changed."),
        "{page}"
    );
    // Why, for the administrator: in the log, for each refusal.
    within(Duration::from_secs(2), || async {
        let log = gateway.log.lock().unwrap();
        let said = |first: &str, second: &str| {
            log.iter()
                .any(|l| l.contains("ERROR") && l.contains(first) && l.contains(second))
        };
        said("CANNOT WRITE THE STATE FILE", "database or disk is full")
            && said("users.toml cannot be written", "No space left on device")
    })
    .await;
    // The command line too.
    let added = crate::support::output_with_stdin(
        {
            let mut command = crate::support::authgate();
            command
                .args(["user", "add", "dave", "--role", "user", "-c"])
                .arg(&config);
            command
        },
        "dave's long password\n",
    );
    assert!(!added.status.success());
    let said = String::from_utf8_lossy(&added.stderr);
    assert!(said.contains("No space left on device"), "{said}");
    assert_eq!(
        std::fs::read(config.with_file_name("users.toml")).unwrap(),
        users_before,
        "the users file is as it was"
    );
    // The session that was, still is; the old password still signs in
    // once there is room for the session.
    assert_eq!(gateway.status(&alice).await, 200);

    disk.free();
    let bob = gateway.sign_in("bob", BOB_PASSWORD).await.unwrap().unwrap();
    assert_eq!(gateway.status(&bob).await, 200);
    let checked: String = rusqlite::Connection::open(config.with_file_name("authgate-state.db"))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(checked, "ok");
    let leftovers: Vec<_> = std::fs::read_dir(disk.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.contains(".tmp") || name.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-written files left: {leftovers:?}"
    );
    drop(child);
}
