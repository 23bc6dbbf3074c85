//! The metrics people alert on (issue 13): sessions, sign-ins by result,
//! sessions ended by reason, store operations, certificate expiry, version.

use std::time::Duration;

use reqwest::Method;

use crate::admin::{api, csrf_of};
use crate::support::{Setup, TestGateway, ALICE_PASSWORD, BOB_PASSWORD};

pub async fn scrape(gw: &TestGateway) -> String {
    let ops = gw.gateway().ops_addr().expect("an ops listener");
    reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample named exactly `name` (labels included).
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

#[tokio::test]
async fn sign_ins_sessions_and_their_ends_are_counted() {
    let gw = Setup::new()
        .server("ops_listen = \"127.0.0.1:0\"")
        .login("max_failures = 2")
        .session("idle_timeout = \"1s\"")
        .start()
        .await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let text = scrape(&gw).await;
    assert_eq!(sample(&text, "authgate_sessions"), 2.0);
    assert_eq!(sample(&text, "authgate_logins_total{result=\"ok\"}"), 2.0);

    // carol is locked (with alice's password); mallory does not exist.
    assert_eq!(gw.try_sign_in("carol", ALICE_PASSWORD).await.status(), 401);
    assert_eq!(gw.try_sign_in("mallory", "guess-guess").await.status(), 401);
    assert_eq!(gw.try_sign_in("mallory", "guess-again").await.status(), 401);
    assert_eq!(gw.try_sign_in("mallory", "and-again!").await.status(), 429);
    let text = scrape(&gw).await;
    for (result, count) in [
        ("bad_credentials", 2.0),
        ("locked", 1.0),
        ("throttled", 1.0),
    ] {
        let name = format!("authgate_logins_total{{result=\"{result}\"}}");
        assert_eq!(sample(&text, &name), count, "{name}");
    }

    // Ends: bob signs out, an admin ends bob's next one, one of bob's runs
    // idle, and alice is locked with two of hers live.
    let csrf = csrf_of(&gw, &bob).await;
    let out = gw
        .client()
        .post(gw.url("/.gateway/logout"))
        .header("cookie", format!("__Host-authgate={bob}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let victim = gw.sign_in("bob", BOB_PASSWORD).await;
    let csrf = csrf_of(&gw, &alice).await;
    let listed: serde_json::Value = api(&gw, Method::GET, "/sessions?user=bob", Some(&alice), None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let handle = listed["sessions"][0]["id"].as_str().unwrap().to_owned();
    let ended = api(
        &gw,
        Method::DELETE,
        &format!("/sessions/{handle}"),
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(ended.status(), 204);
    assert_eq!(gw.get_as(&victim, "/private/x").await.status(), 401);
    let idle = gw.sign_in("bob", BOB_PASSWORD).await;
    let spare = gw.sign_in("alice", ALICE_PASSWORD).await;
    // Kept busy so that only `idle` runs out.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(450)).await;
        gw.get_as(&alice, "/private/x").await;
        gw.get_as(&spare, "/private/x").await;
    }
    assert_eq!(gw.get_as(&idle, "/private/x").await.status(), 401);
    let locked = api(
        &gw,
        Method::POST,
        "/users/alice/lock",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert!(locked.status().is_success(), "{}", locked.status());

    let text = scrape(&gw).await;
    for (reason, count) in [
        ("logout", 1.0),
        ("revoked", 1.0),
        ("idle", 1.0),
        ("user_change", 2.0),
        ("absolute", 0.0),
    ] {
        let name = format!("authgate_sessions_ended_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &name), count, "{name}");
    }
    assert_eq!(sample(&text, "authgate_sessions"), 0.0);
}

#[tokio::test]
async fn store_operations_certificate_expiry_and_version_are_exported() {
    let gw = Setup::new()
        .server("ops_listen = \"127.0.0.1:0\"")
        .start()
        .await;
    let before = scrape(&gw).await;
    let count = "authgate_store_operation_duration_seconds_count{backend=\"local\"}";
    let first = sample(&before, count);
    gw.sign_in("bob", BOB_PASSWORD).await;
    let after = scrape(&gw).await;
    // The sign-in waited for its commit.
    assert!(sample(&after, count) > first, "{after}");
    assert_eq!(
        sample(&after, "authgate_store_errors_total{backend=\"local\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &after,
            "authgate_store_operation_duration_seconds_bucket{backend=\"local\",le=\"+Inf\"}"
        ),
        sample(&after, count)
    );

    let (_, pem) = x509_parser::pem::parse_x509_pem(gw.cert_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    assert_eq!(
        sample(&after, "authgate_certificate_expiry_timestamp_seconds"),
        cert.validity().not_after.timestamp() as f64
    );
    assert_eq!(
        sample(
            &after,
            &format!(
                "authgate_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
}

/// `authgate_tasks` (what the soak watches for leaks): it counts open
/// connections, and comes back down when they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_count_follows_open_connections() {
    use tokio::io::AsyncWriteExt;
    let gw = Setup::new()
        .server("ops_listen = \"127.0.0.1:0\"")
        .start()
        .await;
    let before = sample(&scrape(&gw).await, "authgate_tasks");
    let mut open = Vec::new();
    for _ in 0..10 {
        let mut tls = gw.tls().await;
        tls.write_all(b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        open.push(tls);
    }
    crate::admin::within(Duration::from_secs(5), || async {
        sample(&scrape(&gw).await, "authgate_tasks") >= before + 10.0
    })
    .await;
    let during = sample(&scrape(&gw).await, "authgate_tasks");
    drop(open);
    // The ten connections' tasks end; pooled upstream connections may stay.
    crate::admin::within(Duration::from_secs(5), || async {
        sample(&scrape(&gw).await, "authgate_tasks") <= during - 10.0
    })
    .await;
}
