//! A real browser for the tests: Debian's `chromium`, headless, driven
//! through `chromedriver` (W3C WebDriver over HTTP on a free loopback
//! port; `.ci/run` installs both when missing). The gateway is reached as
//! `https://localhost:PORT` (WebAuthn needs a domain, not an address), its
//! test certificate trusted by its key's hash, so that the page is a
//! secure context without certificate errors. Without the browser the
//! tests fail, never skip.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How W3C WebDriver names an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

/// The base64 SHA-256 of a PEM certificate's public key, as Chrome's
/// `--ignore-certificate-errors-spki-list` takes it.
fn spki_hash(cert_pem: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
        .expect("a PEM certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("an X.509 certificate");
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(cert.public_key().raw))
}

impl Browser {
    /// A headless chromium that trusts `cert_pem` and sends every host
    /// name to 127.0.0.1.
    pub async fn start(cert_pem: &str) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: the real-browser tests need Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`; .ci/run does)"
            );
        }
        let port = crate::support::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                    "--host-resolver-rules=MAP * 127.0.0.1",
                    format!("--ignore-certificate-errors-spki-list={}", spki_hash(cert_pem)),
                ],
            },
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_owned();
        // The profile is the browser's until it ends.
        std::mem::forget(profile);
        Browser {
            driver,
            base,
            session,
            http,
        }
    }

    /// One WebDriver command of this session: its `value`.
    pub async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let answer: Value = self
            .http
            .request(method, url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!("WebDriver {path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    pub async fn go(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    pub async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", json!({}))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// The element the CSS selector finds first.
    pub async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    /// Types `text` into the element `css` finds.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await;
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        self.run("return document.body.innerText", json!([]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits up to 10 s for the page's URL to satisfy `wanted`.
    pub async fn wait_for_url(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if wanted(&url) {
                return url;
            }
            assert!(Instant::now() < deadline, "still at {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The sign-in page, the session cookie and the proxied app in a real
/// browser: the pages work without any script of the test's, and the
/// page is a secure context a passkey could be made in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_through_the_real_sign_in_page_in_chromium() {
    let started = Instant::now();
    let gw = crate::support::Setup::new().start().await;
    let browser = Browser::start(&gw.cert_pem).await;
    let site = format!("https://localhost:{}", gw.addr().port());
    browser.go(&format!("{site}/private/page")).await;
    let at = browser
        .wait_for_url(|u| u.contains("/.gateway/login"))
        .await;
    assert!(at.contains("next=/private/page"), "{at}");
    let secure = browser
        .run(
            "return [window.isSecureContext, typeof PublicKeyCredential]",
            json!([]),
        )
        .await;
    assert_eq!(
        secure,
        json!([true, "function"]),
        "WebAuthn is offered here"
    );
    browser.type_into("input[name=username]", "alice").await;
    browser
        .type_into("input[name=password]", crate::support::ALICE_PASSWORD)
        .await;
    browser.click("button[type=submit]").await;
    browser.wait_for_url(|u| u.ends_with("/private/page")).await;
    assert!(browser.text().await.contains("hello from upstream"));
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["x-auth-user"], "alice");
    // The session cookie is HttpOnly: no script of the page can read it.
    let cookies = browser.run("return document.cookie", json!([])).await;
    assert!(
        !cookies.as_str().unwrap().contains("__Host-authgate="),
        "{cookies}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a real-browser test stays under a minute"
    );
}

impl Browser {
    /// The value of the session cookie the browser holds (WebDriver sees
    /// HttpOnly cookies; page scripts do not).
    pub async fn session_cookie(&self) -> String {
        let cookie = self
            .command(reqwest::Method::GET, "/cookie/__Host-authgate", json!({}))
            .await;
        cookie["value"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits up to 10 s for the page's text to contain `wanted`.
    pub async fn wait_for_text(&self, wanted: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text().await;
            if text.contains(wanted) {
                return text;
            }
            assert!(Instant::now() < deadline, "no {wanted:?} in {text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Gives the browser the W3C WebAuthn virtual authenticator: a
    /// platform passkey provider that keeps discoverable credentials and
    /// verifies its user.
    pub async fn add_virtual_authenticator(&self) {
        self.command(
            reqwest::Method::POST,
            "/webauthn/authenticator",
            json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
            }),
        )
        .await;
    }
}

/// Issue 28 in a real browser: a password sign-in, a passkey enrolled on
/// the account page by the gateway's own script, a sign-out, a sign-in
/// with the passkey alone, and a route that wants a second factor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_is_enrolled_and_then_signs_in_alone_in_chromium() {
    let started = Instant::now();
    let gw = crate::support::Setup::new()
        .rules("[[rule]]\npath = \"/ops/**\"\naccess = \"authenticated\"\nmfa = true\n\n[[rule]]\npath = \"/**\"\naccess = \"authenticated\"\n")
        .start()
        .await;
    let browser = Browser::start(&gw.cert_pem).await;
    browser.add_virtual_authenticator().await;
    let site = format!("https://localhost:{}", gw.addr().port());
    browser.go(&format!("{site}/.gateway/login")).await;
    browser.type_into("input[name=username]", "bob").await;
    browser
        .type_into("input[name=password]", crate::support::BOB_PASSWORD)
        .await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for_url(|u| !u.contains("/.gateway/login"))
        .await;

    browser.go(&format!("{site}/.gateway/account")).await;
    browser.type_into("#passkey-name", "my laptop").await;
    browser
        .type_into("#passkey-password", crate::support::BOB_PASSWORD)
        .await;
    browser.click("#passkey-add button[type=submit]").await;
    let page = browser.wait_for_text("my laptop").await;
    assert!(page.contains("never"), "{page}");
    let file = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(file.contains("[[users.bob.passkeys]]"), "{file}");

    // Signed out (the sign-out form's post, sent from the account page
    // without leaving it: the sign-in page a sign-out leads to offers the
    // passkey at once to this authenticator, which never waits for a
    // person), the old session is gone on the server.
    let before = browser.session_cookie().await;
    let status = browser
        .run(
            "const csrf = document.querySelector('[name=csrf]').value; return fetch('/.gateway/logout', {method: 'POST', body: new URLSearchParams({csrf}), credentials: 'same-origin', redirect: 'manual'}).then(r => r.type)",
            json!([]),
        )
        .await;
    assert_eq!(status, "opaqueredirect", "the sign-out's 303");
    assert_eq!(gw.get_as(&before, "/.gateway/whoami").await.status(), 401);
    // The mfa route sends the browser to the sign-in page, whose script
    // offers the passkey through the browser's autofill (conditional
    // mediation; the virtual authenticator, unlike a person, picks it at
    // once): the passkey alone signs bob in, and it is his second factor.
    browser.go(&format!("{site}/ops/board")).await;
    browser.wait_for_url(|u| u.ends_with("/ops/board")).await;
    browser.wait_for_text("hello from upstream").await;
    assert_eq!(gw.upstream.last().headers["x-auth-user"], "bob");
    assert_ne!(browser.session_cookie().await, before, "a new session");
    let file = std::fs::read_to_string(gw.users_file()).unwrap();
    assert!(file.contains("used = "), "{file}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a real-browser test stays under a minute"
    );
}
