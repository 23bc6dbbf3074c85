//! Live config reload (issue 13): SIGHUP and a changed file (a ConfigMap's
//! `..data` swap included) put a valid config in force for new requests;
//! a broken one changes nothing, is logged as `check` words it and counted;
//! restart-only settings are named; no request fails across 50 reloads.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::reload::Reloaded;

use crate::support::{
    authgate, kube_publish, spawn_run, wait_for_line, Setup, TestGateway, BOB_PASSWORD,
};

/// The test's config file with `from` replaced by `to` (which must be there).
fn edit(gw: &TestGateway, from: &str, to: &str) {
    edit_file(&gw.config_file(), from, to);
}

async fn metric(gw: &TestGateway, line: &str) -> String {
    let ops = gw
        .gateway()
        .ops_addr()
        .expect("the test has an ops listener");
    let text = reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
        .to_owned()
}

/// Polls `path` as `session` until it answers `status`, for up to 5 s.
async fn until_status(gw: &TestGateway, session: &str, path: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = gw.get_as(session, path).await.status().as_u16();
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const STAFF_FOR_ADMINS: &str = "path = \"/staff/**\"\nroles = [\"admin\"]";
const STAFF_FOR_USERS: &str = "path = \"/staff/**\"\nroles = [\"user\"]";

#[tokio::test]
async fn a_changed_file_is_put_in_force_for_the_next_request() {
    let gw = Setup::new()
        .server("ops_listen = \"127.0.0.1:0\"")
        .start()
        .await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(gw.get_as(&bob, "/staff/x").await.status(), 403);

    edit(&gw, STAFF_FOR_ADMINS, STAFF_FOR_USERS);
    until_status(&gw, &bob, "/staff/x", 200).await;
    // bob's session lived through it.
    assert_eq!(gw.get_as(&bob, "/private/x").await.status(), 200);
    assert_eq!(
        metric(&gw, "authgate_config_reloads_total{result=\"ok\"}").await,
        "authgate_config_reloads_total{result=\"ok\"} 1"
    );
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_seen() {
    let gw = Setup::new().start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let dir = gw.config_file().parent().unwrap().to_owned();
    let text = std::fs::read_to_string(gw.config_file()).unwrap();
    kube_publish(&dir, "..2026_11_29_v1", &[("gateway.toml", &text)]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gw.get_as(&bob, "/staff/x").await.status(), 403);

    let changed = text.replacen(STAFF_FOR_ADMINS, STAFF_FOR_USERS, 1);
    kube_publish(&dir, "..2026_11_29_v2", &[("gateway.toml", &changed)]);
    std::fs::remove_dir_all(dir.join("..2026_11_29_v1")).unwrap();
    until_status(&gw, &bob, "/staff/x", 200).await;
}

#[tokio::test]
async fn a_broken_config_changes_nothing_and_is_reported_as_check_reports_it() {
    let log = crate::logs::captured();
    let gw = Setup::new()
        .server("ops_listen = \"127.0.0.1:0\"")
        .start()
        .await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    // Two problems at once: an unknown key and a rule with a bad access.
    edit(
        &gw,
        STAFF_FOR_ADMINS,
        "path = \"/staff/**\"\nroles = [\"user\"]\nsurprise = 1",
    );
    edit(&gw, "access = \"authenticated\"", "access = \"sometimes\"");
    let Reloaded::Refused { problems } = gw.gateway().reload().await else {
        panic!("a broken config was put in force");
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    // The same lines `authgate check` prints.
    let check = authgate()
        .args(["check", "-c"])
        .arg(gw.config_file())
        .output()
        .unwrap();
    assert!(!check.status.success());
    let printed = String::from_utf8_lossy(&check.stderr);
    for problem in &problems {
        assert!(problem.contains("gateway.toml:"), "{problem}");
        assert!(
            printed.contains(problem.as_str()),
            "{problem} not in\n{printed}"
        );
    }
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    for problem in &problems {
        let json = serde_json::to_string(problem).unwrap();
        assert!(
            logged.contains(json.trim_matches('"')),
            "{problem} not logged"
        );
    }
    // The running rules stay: bob still may not, and /private still is not public.
    assert_eq!(gw.get_as(&bob, "/staff/x").await.status(), 403);
    assert_eq!(gw.get_as(&bob, "/private/x").await.status(), 200);
    assert_eq!(
        gw.client()
            .get(gw.url("/private/x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        metric(&gw, "authgate_config_reloads_total{result=\"error\"}").await,
        "authgate_config_reloads_total{result=\"error\"} 1"
    );
}

#[tokio::test]
async fn a_failing_policy_test_refuses_the_reload() {
    let gw = Setup::new().start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    edit(&gw, STAFF_FOR_ADMINS, STAFF_FOR_USERS);
    let text = std::fs::read_to_string(gw.config_file()).unwrap();
    std::fs::write(
        gw.config_file(),
        format!("{text}\n[[test]]\nuser = \"bob\"\nmethod = \"GET\"\npath = \"/staff/x\"\nexpect = \"deny\"\n"),
    )
    .unwrap();
    let Reloaded::Refused { problems } = gw.gateway().reload().await else {
        panic!("a config whose test fails was put in force");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("/staff/x"), "{problems:?}");
    assert_eq!(gw.get_as(&bob, "/staff/x").await.status(), 403);
}

#[tokio::test]
async fn restart_only_settings_are_named_and_the_rest_is_applied() {
    let log = crate::logs::captured();
    let gw = Setup::new()
        .upstream("timeout = \"30s\"")
        .session("idle_timeout = \"30m\"")
        .start()
        .await;
    let alice = gw.sign_in("alice", crate::support::ALICE_PASSWORD).await;
    // Another listen address (never bound: it needs a restart).
    edit(&gw, "listen = \"127.0.0.1:0\"", "listen = \"[::1]:0\"");
    edit(&gw, "idle_timeout = \"30m\"", "idle_timeout = \"20m\"");
    // Another app, and a smaller body limit.
    let second = crate::support::Upstream::start().await;
    edit(&gw, &gw.upstream.url(), &second.url());
    edit(&gw, "[server]\n", "[server]\nmax_body_size = \"1KiB\"\n");
    let text = std::fs::read_to_string(gw.config_file()).unwrap();
    std::fs::write(
        gw.config_file(),
        format!("{text}\n[identity]\nuser_header = \"X-Who\"\n"),
    )
    .unwrap();
    let reloaded = gw.gateway().reload().await;
    assert_eq!(
        reloaded,
        Reloaded::Applied {
            needs_restart: vec!["server.listen", "session.idle_timeout"]
        }
    );
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        logged.contains("server.listen changed, which needs a restart"),
        "not logged"
    );
    // Still served where it was; the new app gets the request, with the
    // new identity header; the new limit holds.
    let before = gw.upstream.requests().len();
    let response = gw.get_as(&alice, "/private/x").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        gw.upstream.requests().len(),
        before,
        "the old app was asked"
    );
    let seen = second.last();
    assert_eq!(seen.headers["x-who"], "alice");
    assert!(!seen.headers.contains_key("x-auth-user"));
    let too_big = gw
        .client()
        .post(gw.url("/public/upload"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
}

#[tokio::test]
async fn requests_in_flight_finish_under_the_config_they_started_with() {
    let gw = Setup::new().upstream("timeout = \"10s\"").start().await;
    let client = gw.client();
    let slow = {
        let client = client.clone();
        let url = gw.url("/slow?ms=1200");
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    edit(&gw, "timeout = \"10s\"", "timeout = \"400ms\"");
    assert!(matches!(
        gw.gateway().reload().await,
        Reloaded::Applied { .. }
    ));
    // Started before: the old 10 s; started after: the new 400 ms.
    let after = client.get(gw.url("/slow?ms=1200")).send().await.unwrap();
    assert_eq!(after.status(), 504);
    let before = slow.await.unwrap();
    assert_eq!(before.status(), 200);
    assert_eq!(before.text().await.unwrap(), "slow answer");
}

#[tokio::test]
async fn fifty_reloads_under_load_fail_no_request() {
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", crate::support::ALICE_PASSWORD).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..8 {
        // HTTP/1.1 and HTTP/2 connections, signed in and anonymous.
        let client = if i % 2 == 0 {
            gw.client()
        } else {
            gw.h1_client()
        };
        let (url, cookie) = if i % 4 < 2 {
            (gw.url("/private/load"), Some(alice.clone()))
        } else {
            (gw.url("/public/load"), None)
        };
        let (stop, sent) = (stop.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut request = client.get(&url);
                if let Some(cookie) = &cookie {
                    request = request.header("cookie", format!("__Host-authgate={cookie}"));
                }
                sent.fetch_add(1, Ordering::Relaxed);
                match request.send().await {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(body) if body == "hello from upstream" => {}
                        other => failures.push(format!("body: {other:?}")),
                    },
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("error {e}")),
                }
            }
            failures
        }));
    }
    // Two configs that differ in a rule, the identity headers and a limit.
    let a = std::fs::read_to_string(gw.config_file()).unwrap();
    let b = format!(
        "{}\n[identity]\nuser_header = \"X-Who\"\n",
        a.replacen(STAFF_FOR_ADMINS, STAFF_FOR_USERS, 1).replacen(
            "[server]\n",
            "[server]\nmax_body_size = \"2MiB\"\n",
            1
        )
    );
    let mut applied = 0;
    for round in 0..50 {
        std::fs::write(gw.config_file(), if round % 2 == 0 { &b } else { &a }).unwrap();
        if let Reloaded::Applied { needs_restart } = gw.gateway().reload().await {
            assert!(needs_restart.is_empty(), "{needs_restart:?}");
            applied += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "reload under load: {applied} reloads, {sent} requests, {} failed",
        failures.len()
    );
    assert_eq!(applied, 50);
    assert!(sent > 200, "only {sent} requests went during the reloads");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_running_binary() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_config(dir.path(), "http://127.0.0.1:9", "");
    let (mut child, mut lines) = spawn_run(&["run", "-c"], &config);
    wait_for_line(&mut lines, "authgate is serving");
    edit_file(&config, "roles = [\"admin\"]", "roles = [\"user\"]");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_line(&mut lines, "SIGHUP: reloading the config");
    wait_for_line(&mut lines, "config reloaded");
    // Still running: SIGHUP does not stop it.
    assert!(child.0.try_wait().unwrap().is_none());
    crate::support::sigterm(&child.0);
    assert!(crate::support::wait_for_exit(&mut child).await.success());
}

fn edit_file(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} is not in the config");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_two_parts_is_applied_once_and_whole() {
    let gw = Setup::new()
        .server("ops_listen = \"127.0.0.1:0\"")
        .start()
        .await;
    // The watcher looks right away at start, then every second.
    let started = Instant::now();
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let path = gw.config_file();
    let text = std::fs::read_to_string(&path).unwrap();
    // A new first rule, public on another host only; cut before its host
    // line it is public everywhere.
    let first_rule = text.find("[[rule]]").expect("the config has rules");
    let whole = format!(
        "{}[[rule]]\npath = \"/private/**\"\naccess = \"public\"\nhost = \"elsewhere.example\"\n\n{}",
        &text[..first_rule],
        text[first_rule..].replace(STAFF_FOR_ADMINS, STAFF_FOR_USERS)
    );
    let cut = whole.find("host = \"elsewhere.example\"").unwrap();
    // Around the watcher's look at about 2 s: the first part before it,
    // the rest 300 ms later.
    tokio::time::sleep_until((started + Duration::from_millis(1800)).into()).await;
    std::fs::write(&path, &whole[..cut]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&whole.as_bytes()[cut..])
        .unwrap();
    until_status(&gw, &bob, "/staff/x", 200).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        metric(&gw, "authgate_config_reloads_total{result=\"ok\"}").await,
        "authgate_config_reloads_total{result=\"ok\"} 1",
        "one reload"
    );
    assert_eq!(
        metric(&gw, "authgate_config_reloads_total{result=\"error\"}").await,
        "authgate_config_reloads_total{result=\"error\"} 0"
    );
    let anonymous = gw.client().get(gw.url("/private/x")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "the cut rule is not in force");
}

#[tokio::test]
async fn hashing_threads_need_a_restart_and_max_per_user_applies_at_the_next_sign_in() {
    let gw = Setup::new()
        .session("max_per_user = 100")
        .login("hashing_threads = 2")
        .start()
        .await;
    let first = gw.sign_in("bob", BOB_PASSWORD).await;
    let second = gw.sign_in("bob", BOB_PASSWORD).await;
    edit(&gw, "max_per_user = 100", "max_per_user = 1");
    edit(&gw, "hashing_threads = 2", "hashing_threads = 1");
    assert_eq!(
        gw.gateway().reload().await,
        Reloaded::Applied {
            needs_restart: vec!["login.hashing_threads"]
        }
    );
    // The reloaded limit: the next sign-in leaves bob one session.
    let third = gw.sign_in("bob", BOB_PASSWORD).await;
    for (i, (session, status)) in [(&first, 401), (&second, 401), (&third, 200)]
        .into_iter()
        .enumerate()
    {
        let got = gw.get_as(session, "/private/x").await.status();
        assert_eq!(got, status, "sign-in {}", i + 1);
    }
}

/// Issue 25: what a sign-in or an admin page reads of the config comes from
/// the snapshot the request runs under, so a reload applies it to the next
/// request (it once lived in copies a reload had to refresh one by one).
#[tokio::test]
async fn sign_in_and_admin_settings_follow_a_reload() {
    let gw = Setup::new()
        .login("max_failures = 5")
        .login("title = \"Before\"")
        .start()
        .await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(gw.get_as(&bob, "/.gateway/admin/").await.status(), 403);

    edit(&gw, "max_failures = 5", "max_failures = 1");
    edit(
        &gw,
        "title = \"Before\"",
        "title = \"After\"\nrequire_totp = [\"user\"]",
    );
    let mut text = std::fs::read_to_string(gw.config_file()).unwrap();
    text.push_str("\n[admin]\nrole = \"user\"\n");
    std::fs::write(gw.config_file(), text).unwrap();
    assert!(matches!(
        gw.gateway().reload().await,
        Reloaded::Applied { .. }
    ));

    // [admin] role: bob's role is the admin role now.
    assert_eq!(gw.get_as(&bob, "/.gateway/admin/").await.status(), 200);
    // [login] title: the sign-in page says the new one.
    let client = gw.client();
    let page = client
        .get(gw.url("/.gateway/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<strong>After</strong>"), "{page}");
    // [login] max_failures: one wrong password uses up the account.
    let token = gw.login_form(&client).await;
    let wrong = [("username", "nobody"), ("password", "wrong-password-1")];
    assert_eq!(gw.post_login(&client, &token, &wrong).await.status(), 401);
    assert_eq!(gw.post_login(&client, &token, &wrong).await.status(), 429);
    // [login] require_totp: bob's right password leads to enrollment.
    let token = gw.login_form(&client).await;
    let right = [("username", "bob"), ("password", BOB_PASSWORD)];
    let enroll = gw.post_login(&client, &token, &right).await;
    assert_eq!(enroll.status(), 303);
    let location = enroll.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/.gateway/totp"), "{location}");
}
