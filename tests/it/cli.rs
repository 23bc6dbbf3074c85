//! The real binary: `check`, `run` (refusal, signals, logs) and `demo`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{write_config, Upstream};

fn authgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authgate"));
    command
        .env_remove("AUTHGATE_CONFIG")
        .env_remove("AUTHGATE_LOG");
    command
}

#[test]
fn check_passes_a_good_config_and_reports_every_problem_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "http://127.0.0.1:3000", "");
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
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\nshutdown_grace = \"soon\"\n[upstream]\nurl = \"http://127.0.0.1:3000\"\nconnect_timeout = \"1y\"\n",
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

/// Reads stderr lines until one contains `needle`; returns it.
fn wait_for_line(lines: &mut impl Iterator<Item = String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in lines.by_ref() {
        if line.contains(needle) {
            return line;
        }
        assert!(Instant::now() < deadline, "no line with {needle:?}");
    }
    panic!("output ended before a line with {needle:?}");
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_one_json_line_per_request_and_exits_0_on_sigterm() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url(), "");
    let cert = std::fs::read_to_string(dir.path().join("gw.crt")).unwrap();
    let mut child = Running(
        authgate()
            .args(["run", "--log-format", "json", "-c"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = rx.into_iter();
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_its_app_behind_the_gateway() {
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
    let url = line.split("open ").nth(1).unwrap().trim().to_owned();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let page = client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("Demo app behind authgate"));
    let denied = client.get(format!("{url}admin/")).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    sigterm(&child.0);
}
