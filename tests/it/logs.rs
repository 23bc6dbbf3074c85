//! SPEC §8: security events are logged, and no secret ever is.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use crate::support::{set_cookie, Setup, BOB_PASSWORD};

/// Everything any test in this process logs from the moment of the first call.
pub fn captured() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Capture(&'static Mutex<Vec<u8>>);
        impl Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || Capture(log))
            .try_init()
            .expect("the only subscriber of the test process");
        log
    })
}

#[tokio::test]
async fn security_events_are_logged_without_passwords_session_ids_or_cookies() {
    let log = captured();
    let gw = Setup::new().start().await;
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let wrong = "wrong-Passw0rd-that-must-not-show";
    let failed = gw
        .post_login(&client, &token, &[("username", "bob"), ("password", wrong)])
        .await;
    assert_eq!(failed.status(), 401);
    let ok = gw
        .post_login(
            &client,
            &token,
            &[("username", "bob"), ("password", BOB_PASSWORD)],
        )
        .await;
    let session = set_cookie(&ok, "__Host-authgate").unwrap();
    let whoami: serde_json::Value = gw
        .get_as(&session, "/.gateway/whoami")
        .await
        .json()
        .await
        .unwrap();
    let csrf = whoami["csrf"].as_str().unwrap().to_owned();
    assert_eq!(gw.get_as(&session, "/private/page").await.status(), 200);
    let logout = client
        .post(gw.url("/.gateway/logout"))
        .header(
            "cookie",
            format!("__Host-authgate={session}; other=cookie-value-xyz"),
        )
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    assert_eq!(gw.get_as(&session, "/private/page").await.status(), 401);

    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    for event in ["\"login_failed\"", "\"login_ok\"", "\"logout\""] {
        assert!(text.contains(event), "no {event} event logged");
    }
    assert!(text.contains("\"path\":\"/private/page\"") && text.contains("\"user\":\"bob\""));
    let key_hex: String = authgate::session::key_of(&session)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for secret in [
        wrong,
        BOB_PASSWORD,
        session.as_str(),
        token.as_str(),
        csrf.as_str(),
        key_hex.as_str(),
        "cookie-value-xyz",
    ] {
        assert!(!text.contains(secret), "a secret reached the log: {secret}");
    }
}

#[tokio::test]
async fn json_lines_keep_client_values_inside_their_fields() {
    let log = captured();
    let gw = Setup::new().start().await;
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let forged = "mallory\n{\"level\":\"INFO\",\"event\":\"login_ok\"}\r\u{1b}[2K";
    let failed = gw
        .post_login(&client, &token, &[("username", forged), ("password", "x")])
        .await;
    assert_eq!(failed.status(), 401);
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let mut found = false;
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not one JSON object ({e}): {line}"));
        let user = &event["fields"]["user"];
        if user.as_str().is_some_and(|u| u.starts_with("mallory")) {
            assert_eq!(user.as_str().unwrap(), forged.to_lowercase());
            found = true;
        }
    }
    assert!(found, "the failed sign-in was logged");
}

/// The log lines (JSON) that carry `"request_id":"ID"`.
fn lines_with_id(log: &str, id: &str) -> Vec<serde_json::Value> {
    let field = format!("\"request_id\":\"{id}\"");
    log.lines()
        .filter(|l| l.contains(&field))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn every_request_has_an_id_the_upstream_the_client_and_the_log_share() {
    let log = captured();
    let gw = Setup::new().start().await;
    let client = gw.client();
    // A client's own ID is not believed: it could forge log lines' links.
    let response = client
        .get(gw.url("/public/a"))
        .header("x-request-id", "forged-by-client")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(gw.upstream.last().headers["x-request-id"], id.as_str());
    let again = client.get(gw.url("/public/a")).send().await.unwrap();
    assert_ne!(again.headers()["x-request-id"], id.as_str());
    // The gateway's own answers carry one too.
    let denied = client.get(gw.url("/admin/x")).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    assert!(denied.headers().contains_key("x-request-id"));

    // A failed sign-in: its access line and its security event name the
    // ID the browser got.
    let token = gw.login_form(&client).await;
    let failed = gw
        .post_login(
            &client,
            &token,
            &[("username", "bob"), ("password", "nope-nope")],
        )
        .await;
    assert_eq!(failed.status(), 401);
    let failed_id = failed.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let lines = lines_with_id(&text, &failed_id);
    assert!(
        lines.iter().any(|l| l["fields"]["event"] == "login_failed"),
        "no login_failed event with the request's ID: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l["target"] == "authgate::access"),
        "no access line with the request's ID: {lines:?}"
    );
    assert_eq!(
        lines_with_id(&text, &id).len(),
        1,
        "one access line for {id}"
    );
}

#[tokio::test]
async fn a_trusted_proxys_request_id_is_kept() {
    let gw = Setup::new()
        .server("trusted_proxies = [\"127.0.0.1\"]")
        .start()
        .await;
    let response = gw
        .client()
        .get(gw.url("/public/a"))
        .header("x-request-id", "lb-7f3a.42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "lb-7f3a.42");
    assert_eq!(gw.upstream.last().headers["x-request-id"], "lb-7f3a.42");
    // One it cannot use safely in a log line is replaced.
    let response = gw
        .client()
        .get(gw.url("/public/a"))
        .header("x-request-id", "two words")
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-request-id"], "two words");
}
