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
