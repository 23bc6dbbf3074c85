//! The real binary: `check`, `run` (refusal, signals, logs) and `demo`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{
    authgate, sigterm, spawn_lines, spawn_run, wait_for_exit, wait_for_line, write_config, Running,
    Upstream,
};

#[test]
fn check_passes_a_good_config_and_reports_every_problem_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "http://127.0.0.1:1", "");
    let output = authgate()
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\nshutdown_grace = \"soon\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\nconnect_timeout = \"1y\"\n",
    )
    .unwrap();
    let output = authgate().args(["check", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = bad.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:5:18: invalid duration")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:8:19: invalid duration")),
        "{stderr}"
    );

    // `run` refuses with the same messages.
    let output = authgate().arg("-c").arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let run_stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        run_stderr.contains(&format!("{file}:5:18: invalid duration")),
        "{run_stderr}"
    );

    // $AUTHGATE_CONFIG is the fallback for -c.
    let output = authgate()
        .arg("check")
        .env("AUTHGATE_CONFIG", &good)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// GETs `/hello` through the gateway at `listen` `times` times; each must
/// answer 200.
async fn get_hello(client: &reqwest::Client, listen: &str, times: usize) {
    for _ in 0..times {
        let response = client
            .get(format!("https://{listen}/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

/// Waits for the binary's "serving" line; returns its listen address.
pub fn listen_address(lines: &mut impl Iterator<Item = String>) -> String {
    let serving = wait_for_line(lines, "authgate is serving");
    serving
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .expect("the listen address in the line")
        .to_owned()
}

/// Given one CPU (a sidecar's usual quota; `bench/run.sh` pins the proxy
/// so), the gateway runs tokio's single-threaded scheduler, and serves
/// from it: no worker threads handing tasks to each other. Given more,
/// the work-stealing one.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_cpu_the_gateway_serves_from_one_thread() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url(), "");
    let cert = std::fs::read_to_string(dir.path().join("gw.crt")).unwrap();
    let mut pinned = std::process::Command::new("taskset");
    pinned
        .args(["-c", "0", env!("CARGO_BIN_EXE_authgate"), "run", "-c"])
        .arg(&config)
        .env_remove("AUTHGATE_CONFIG")
        .env_remove("AUTHGATE_LOG");
    let (child, mut lines) = crate::support::spawn_lines(pinned);
    let runtime = wait_for_line(&mut lines, "async runtime");
    assert!(
        runtime.contains(r#"cpus=1 scheduler="current_thread""#),
        "{runtime}"
    );
    let listen = listen_address(&mut lines);
    let client = crate::support::https_client_builder(&cert).build().unwrap();
    get_hello(&client, &listen, 20).await;
    drop(child);

    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        let (_child, mut lines) = spawn_run(&["run", "-c"], &config);
        let runtime = wait_for_line(&mut lines, "async runtime");
        assert!(runtime.contains(r#"scheduler="multi_thread""#), "{runtime}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_human_lines_by_default() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url(), "");
    let cert = std::fs::read_to_string(dir.path().join("gw.crt")).unwrap();
    let (mut child, mut lines) = spawn_run(&["-c"], &config);
    let listen = listen_address(&mut lines);
    let client = crate::support::https_client_builder(&cert).build().unwrap();
    let response = client
        .get(format!("https://{listen}/a/../hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let line = wait_for_line(&mut lines, "authgate::access");
    assert!(
        !line.starts_with('{') && !line.contains('\u{1b}'),
        "plain text when not on a terminal: {line}"
    );

    // A username made to look like a log line of its own stays in its field.
    let forged = "a\nINFO authgate::security: event=login_ok user=alice ip=1.2.3.4";
    let failed =
        crate::support::post_login_at(&client, &format!("https://{listen}"), forged, "x").await;
    assert_eq!(failed.status(), 401);
    let failure = wait_for_line(&mut lines, "login_failed");
    assert!(
        // (Usernames are logged canonical: lower case.)
        failure
            .contains(r#"user="a\ninfo authgate::security: event=login_ok user=alice ip=1.2.3.4""#),
        "the forged text stays quoted on the failure's own line: {failure}"
    );
    for field in [
        "method=GET",
        "path=/hello",
        "status=200",
        "user=\"-\"",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "no {field} in {line}");
    }
    sigterm(&child.0);
    assert!(wait_for_exit(&mut child).await.success());
}

/// The access line is written apart from tracing's machinery (for speed);
/// `AUTHGATE_LOG` still switches it off like any other target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authgate_log_can_switch_the_access_line_off() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url(), "");
    let cert = std::fs::read_to_string(dir.path().join("gw.crt")).unwrap();
    let mut command = authgate();
    command
        .env("AUTHGATE_LOG", "info,authgate::access=off")
        .args(["run", "-c"])
        .arg(&config);
    let (mut child, mut lines) = spawn_lines(command);
    let listen = listen_address(&mut lines);
    let client = crate::support::https_client_builder(&cert).build().unwrap();
    get_hello(&client, &listen, 3).await;
    let failed =
        crate::support::post_login_at(&client, &format!("https://{listen}"), "x", "y").await;
    assert_eq!(failed.status(), 401);
    sigterm(&child.0);
    assert!(wait_for_exit(&mut child).await.success());
    // Everything, flushed at exit: the security event, no access line.
    let rest: Vec<String> = lines.collect();
    assert!(rest.iter().any(|l| l.contains("login_failed")), "{rest:#?}");
    assert!(
        !rest.iter().any(|l| l.contains("authgate::access")),
        "{rest:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_one_json_line_per_request_and_exits_0_on_sigterm() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url(), "");
    let cert = std::fs::read_to_string(dir.path().join("gw.crt")).unwrap();
    let (mut child, mut lines) = spawn_run(&["run", "--log-format", "json", "-c"], &config);
    let serving = wait_for_line(&mut lines, "authgate is serving");
    let serving: serde_json::Value = serde_json::from_str(&serving).unwrap();
    let listen = serving["listen"].as_str().unwrap().to_owned();

    let client = crate::support::https_client_builder(&cert).build().unwrap();
    let response = client
        .get(format!("https://{listen}/x/../hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let line = wait_for_line(&mut lines, "\"status\":");
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/hello");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["user"], "-");
    assert!(entry["duration_ms"].as_f64().is_some(), "{line}");

    sigterm(&child.0);
    let status = wait_for_exit(&mut child).await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_its_app_behind_the_gateway_with_alice_and_bob() {
    let mut child = Running(
        authgate()
            .args(["demo", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let line = wait_for_line(&mut lines, "open https://");
    let url = line
        .split("open ")
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('/')
        .to_owned();
    let password_of = |line: String| {
        line.split(" / ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let alice = password_of(wait_for_line(&mut lines, "alice / "));
    let bob = password_of(wait_for_line(&mut lines, "bob   / "));
    let config_line = wait_for_line(&mut lines, "config: ");
    let config = std::path::PathBuf::from(config_line.split("config: ").nth(1).unwrap().trim());
    demo_secrets_are_private(&config, child.0.id());

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let public = client.get(format!("{url}/public/")).send().await.unwrap();
    assert_eq!(public.status(), 200);
    assert!(public
        .text()
        .await
        .unwrap()
        .contains("Demo app behind authgate"));
    let anonymous = client
        .get(format!("{url}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 302);

    let sign_in = |name: &'static str, password: String| {
        let client = client.clone();
        let url = url.clone();
        async move { crate::support::sign_in_at(&client, &url, name, &password).await }
    };
    let alice = sign_in("alice", alice).await;
    let bob = sign_in("bob", bob).await;
    let get = |session: &str, path: &str| {
        client
            .get(format!("{url}{path}"))
            .header("cookie", format!("__Host-authgate={session}"))
            .send()
    };
    let admin = get(&alice, "/admin/").await.unwrap();
    assert_eq!(admin.status(), 200);
    assert!(admin
        .text()
        .await
        .unwrap()
        .contains("<strong>alice</strong>"));
    assert_eq!(get(&bob, "/").await.unwrap().status(), 200);
    assert_eq!(get(&bob, "/admin/").await.unwrap().status(), 403);
    // Nobody has a second factor (both signed in with a password alone),
    // and alice may set one up.
    let totp = get(&alice, "/.gateway/totp").await.unwrap();
    assert_eq!(totp.status(), 200);
    assert!(totp
        .text()
        .await
        .unwrap()
        .contains("Set up a second factor"));
    sigterm(&child.0);
}

/// The demo's folder has a name no one can guess ahead and is the
/// user's alone; its key and users file are private too.
fn demo_secrets_are_private(config: &std::path::Path, pid: u32) {
    use std::os::unix::fs::PermissionsExt;
    let dir = config.parent().unwrap();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("authgate-demo-"), "{name}");
    assert_ne!(name, format!("authgate-demo-{pid}"), "not named by the PID");
    assert!(
        name.len() >= "authgate-demo-".len() + 6,
        "a random part: {name}"
    );
    let mode = |path: std::path::PathBuf| {
        std::fs::symlink_metadata(&path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(dir.to_owned()), 0o700);
    assert_eq!(mode(dir.join("demo.key")), 0o600);
    assert_eq!(mode(dir.join("users.toml")), 0o600);
}

#[test]
fn hash_password_reads_stdin_and_prints_an_argon2id_hash() {
    use std::io::Write;
    let mut child = authgate()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let password = "  spaces kept, ünïcödé too  ";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    let hash = hash.trim();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let users = format!("[users.x]\npassword = \"{hash}\"\n");
    authgate::users::Users::parse(&users, std::path::Path::new("users.toml")).unwrap();
    use argon2::PasswordVerifier;
    let parsed = argon2::PasswordHash::new(hash).unwrap();
    assert!(argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok());

    let empty = authgate()
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("empty"));
}

#[test]
fn policy_commands_need_only_the_policy_and_check_reports_the_files_apart() {
    // The shipped config and a users file, but no certificate yet.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, include_str!("../../gateway.toml")).unwrap();
    std::fs::write(
        dir.path().join("users.toml"),
        crate::support::default_users(),
    )
    .unwrap();
    let explain = authgate()
        .args(["explain", "-c"])
        .arg(&config)
        .args(["--user", "bob", "GET", "/admin/users"])
        .output()
        .unwrap();
    assert!(
        explain.status.success(),
        "{}",
        String::from_utf8_lossy(&explain.stderr)
    );
    assert!(String::from_utf8_lossy(&explain.stdout).contains("decision:  deny"));

    let check = authgate()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        !check.status.success(),
        "missing TLS files are still a problem"
    );
    let cert_line = include_str!("../../gateway.toml")
        .lines()
        .position(|l| l.starts_with("cert = "))
        .unwrap()
        + 1;
    let cert_place = format!("gateway.toml:{cert_line}:8:");
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(said.contains(&cert_place), "the cert line: {said}");
    assert!(said.contains("the policy is fine"), "{said}");
    assert!(said.contains("7 of 7 tests passed"), "{said}");

    // A failing test is still reported beside them.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen(
            "path = \"/admin/users\"\nexpect = \"deny\"",
            "path = \"/admin/users\"\nexpect = \"allow\"",
            1,
        ),
    )
    .unwrap();
    let check = authgate()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(said.contains("test failed"), "{said}");
    assert!(said.contains(&cert_place), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_setup_that_checks_and_serves_and_overwrites_nothing() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let upstream = crate::support::Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = dir.path().join("authgate");
    let mut child = authgate()
        .arg("init")
        .arg(&setup)
        .args([
            "--upstream",
            &upstream.url(),
            "--admin",
            "root",
            "--host",
            "gw.example",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"root-password-of-init\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mode = |p: &str| {
        std::fs::metadata(setup.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("certs/gateway.key"), 0o600);
    assert_eq!(mode("users.toml"), 0o600);
    assert_eq!(mode("state"), 0o700);
    let config = setup.join("gateway.toml");
    let check = authgate()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A second init into the same place changes nothing.
    let before = std::fs::read(&config).unwrap();
    let again = authgate()
        .arg("init")
        .arg(&setup)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert_eq!(std::fs::read(&config).unwrap(), before);

    // It serves (on a free port for the test), and root signs in.
    let text = crate::support::set_key(
        &std::fs::read_to_string(&config).unwrap(),
        "listen",
        "\"127.0.0.1:0\"",
    );
    std::fs::write(&config, text).unwrap();
    let (mut running, mut lines) = spawn_run(&["run", "-c"], &config);
    let serving = wait_for_line(&mut lines, "authgate is serving");
    let listen = serving
        .split("listen=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_owned();
    let cert = std::fs::read_to_string(setup.join("certs/gateway.crt")).unwrap();
    let client = crate::support::https_client_builder(&cert)
        .resolve("gw.example", listen.parse().unwrap())
        .build()
        .unwrap();
    let port = listen.rsplit(':').next().unwrap();
    let base = format!("https://gw.example:{port}");
    let session = crate::support::sign_in_at(&client, &base, "root", "root-password-of-init").await;
    let admin = client
        .get(format!("{base}/.gateway/admin/"))
        .header("cookie", format!("__Host-authgate={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    assert!(setup.join("state/authgate-state.db").exists());
    sigterm(&running.0);
    assert!(wait_for_exit(&mut running).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_replays_a_log_the_gateway_wrote_and_names_what_a_rule_edit_changes() {
    use crate::support::{ALICE_PASSWORD, BOB_PASSWORD};
    for format in ["human", "json"] {
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &upstream.url(), "");
        let cert = std::fs::read_to_string(dir.path().join("gw.crt")).unwrap();
        let (mut child, mut lines) = spawn_run(&["run", "--log-format", format, "-c"], &config);
        let serving = wait_for_line(&mut lines, "authgate is serving");
        let listen = match format {
            "json" => serde_json::from_str::<serde_json::Value>(&serving).unwrap()["listen"]
                .as_str()
                .unwrap()
                .to_owned(),
            _ => serving
                .split("listen=")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap()
                .to_owned(),
        };
        let client = crate::support::https_client_builder(&cert).build().unwrap();
        let base = format!("https://{listen}");
        let sign_in = |user: &'static str, password: &'static str| {
            let client = client.clone();
            let base = base.clone();
            async move { crate::support::sign_in_at(&client, &base, user, password).await }
        };
        let bob = sign_in("bob", BOB_PASSWORD).await;
        let alice = sign_in("alice", ALICE_PASSWORD).await;
        for (session, path, times) in [
            (&bob, "/staff/x", 3),
            (&bob, "/private/x", 2),
            (&alice, "/staff/x", 1),
            (&alice, "/private/y", 1),
        ] {
            for _ in 0..times {
                client
                    .get(format!("{base}{path}"))
                    .header("cookie", format!("__Host-authgate={session}"))
                    .send()
                    .await
                    .unwrap();
            }
        }
        client.get(format!("{base}/public/x")).send().await.unwrap();
        sigterm(&child.0);
        // Everything until the process closes stderr: the log is written in
        // batches, so its lines need not come in order.
        let mut log = String::new();
        for line in lines.by_ref() {
            log.push_str(&line);
            log.push('\n');
        }
        assert!(wait_for_exit(&mut child).await.success());
        let log_file = dir.path().join("access.log");
        std::fs::write(&log_file, &log).unwrap();

        // The edit: staff for users, private for admins only.
        let text = std::fs::read_to_string(&config).unwrap();
        let edited = text
            .replacen(
                "path = \"/staff/**\"\nroles = [\"admin\"]",
                "path = \"/staff/**\"\nroles = [\"user\"]",
                1,
            )
            .replacen(
                "path = \"/private/**\"\naccess = \"authenticated\"",
                "path = \"/private/**\"\nroles = [\"admin\"]",
                1,
            );
        assert_ne!(edited, text);
        std::fs::write(&config, edited).unwrap();
        let out = authgate()
            .args(["check", "-c"])
            .arg(&config)
            .arg("--replay")
            .arg(&log_file)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.contains("5 would be decided differently"),
            "{format}:\n{said}\n---\n{log}"
        );
        assert!(said.contains("roles = [\"user\"]"), "{said}");
        assert!(
            said.contains("  deny -> allow: 3 request(s) (bob 3), e.g. GET /staff/x"),
            "{said}"
        );
        assert!(
            said.contains("  allow -> deny: 2 request(s) (bob 2), e.g. GET /private/x"),
            "{said}"
        );
        assert!(
            !said.contains("alice"),
            "alice's requests are decided alike: {said}"
        );
    }
}

#[tokio::test]
async fn secret_files_readable_by_others_are_named_at_start_on_reload_and_by_check() {
    use std::os::unix::fs::PermissionsExt;
    let log = crate::logs::captured();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:1", "");
    let key = dir.path().join("gw.key");
    let chmod =
        |mode| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    chmod(0o644);
    let check = || crate::support::check(&config);
    let (ok, said) = check();
    assert!(ok, "a warning, not a refusal: {said}");
    let warning = format!("the TLS key {} is readable by every user", key.display());
    assert!(said.contains(&warning), "{said}");
    assert!(
        said.contains(&format!("chmod 600 {}", key.display())),
        "{said}"
    );
    chmod(0o640);
    let (ok, said) = check();
    assert!(ok && !said.contains("readable by every user"), "{said}");

    // A running gateway says it at start and at each reload.
    chmod(0o644);
    let times = || {
        String::from_utf8_lossy(&log.lock().unwrap())
            .matches(&warning)
            .count()
    };
    let gateway = authgate::Gateway::start(authgate::Config::load(&config).unwrap())
        .await
        .unwrap();
    let at_start = times();
    assert_eq!(at_start, 1, "said at start");
    gateway.reload().await;
    assert_eq!(times(), at_start + 1, "said on reload");
    chmod(0o600);
    gateway.reload().await;
    assert_eq!(times(), at_start + 1, "not said once fixed");
    gateway.shutdown().await;
}

/// The gateway process's argon2 threads (named `authgate-argon2-N`, which
/// the kernel cuts to 15 characters).
fn hashing_threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "authgate-argon2")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_threads_are_the_configured_number_not_one_per_two_cores() {
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (login, want) in [("", 2.min(cores)), ("hashing_threads = 1", 1)] {
        let config = write_config(dir.path(), "http://127.0.0.1:1", "");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text = text.replace("[users]", &format!("[login]\n{login}\n\n[users]"));
        std::fs::write(&config, text).unwrap();
        let (child, mut lines) = spawn_run(&["run", "-c"], &config);
        listen_address(&mut lines);
        assert_eq!(hashing_threads_of(child.0.id()), want, "{login:?}");
    }
    // On one core: one thread, whatever is asked.
    let config = write_config(dir.path(), "http://127.0.0.1:1", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[users]", "[login]\nhashing_threads = 8\n\n[users]");
    std::fs::write(&config, text).unwrap();
    let mut pinned = std::process::Command::new("taskset");
    pinned
        .args(["-c", "0", env!("CARGO_BIN_EXE_authgate"), "run", "-c"])
        .arg(&config)
        .env_remove("AUTHGATE_CONFIG")
        .env_remove("AUTHGATE_LOG");
    let (child, mut lines) = crate::support::spawn_lines(pinned);
    listen_address(&mut lines);
    assert_eq!(hashing_threads_of(child.0.id()), 1);
}

#[test]
fn init_names_its_certificate_for_the_host_for_a_year_and_can_give_the_files_away() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let setup = dir.path().join("site");
    let mut init = authgate();
    init.args(["init", "--host", "gw.example", "--owner", "10001:10001"])
        .arg(&setup);
    let out = crate::support::output_with_stdin(init, "the first admin's password\n");
    let said = String::from_utf8_lossy(&out.stderr);
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        // Only root may give files away: a clear refusal.
        assert!(!out.status.success());
        assert!(said.contains("--owner needs root"), "{said}");
        return;
    }
    assert!(out.status.success(), "{said}");
    for name in [
        "gateway.toml",
        "users.toml",
        "certs/gateway.crt",
        "certs/gateway.key",
        "state",
    ] {
        let meta = std::fs::metadata(setup.join(name)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (10001, 10001), "{name}");
    }
    let pem = std::fs::read(setup.join("certs/gateway.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap();
    assert_eq!(cn, "gw.example");
    let validity = cert.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
    assert!((364..=366).contains(&days), "valid {days} days");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(validity.not_before.timestamp() <= now);
    assert!(validity.not_before.timestamp() > now - 2 * 86_400);
}

#[test]
fn the_command_line_says_how_to_start_refuses_a_meaningless_config_and_short_passwords() {
    // No config here: how to start, not only what is missing.
    let empty = tempfile::tempdir().unwrap();
    let out = authgate()
        .current_dir(empty.path())
        .env_remove("AUTHGATE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    for hint in ["authgate demo", "authgate init", "-c PATH"] {
        assert!(said.contains(hint), "{hint}: {said}");
    }
    // -c where no config is read.
    for args in [
        &["hash-password"][..],
        &["keygen", "k.pem"],
        &["init", "x"],
        &["demo"],
    ] {
        let out = authgate()
            .current_dir(empty.path())
            .args(args)
            .args(["-c", "gateway.toml"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("means nothing"),
            "{args:?}"
        );
    }
    assert!(!empty.path().join("k.pem").exists() && !empty.path().join("x").exists());
    // hash-password has the same 12-character minimum as `user add`.
    let mut hash = authgate();
    hash.arg("hash-password");
    let out = crate::support::output_with_stdin(hash, "short\n");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("12 characters"));
}

#[test]
fn check_runs_the_tests_without_a_state_folder_names_a_damaged_state_file_and_explain_needs_none() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:1", "");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("[users]", "[store]\npath = \"state/authgate-state.db\"\n\n[users]")
        + "\n[[test]]\nanonymous = true\nmethod = \"GET\"\npath = \"/private/x\"\nexpect = \"allow\"\n";
    std::fs::write(&config, text).unwrap();
    let check = || crate::support::check(&config);
    // No state folder: named, and the failing [[test]] is reported too.
    let (ok, said) = check();
    assert!(!ok);
    assert!(said.contains("state file's folder"), "{said}");
    assert!(said.contains("expected allow"), "the tests ran: {said}");
    let out = authgate()
        .args(["explain", "-c"])
        .arg(&config)
        .args(["--anonymous", "GET", "/private/x"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("decision:  login"));
    // A damaged state file: said as `run` says it.
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/authgate-state.db"),
        "not a database, not at all, no",
    )
    .unwrap();
    let (ok, said) = check();
    assert!(!ok);
    assert!(said.contains("is damaged"), "{said}");
    assert!(said.contains("Move it aside"), "{said}");
}
