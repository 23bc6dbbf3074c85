//! Sign-in through a real, certified OpenID Provider: `oidc-provider` from
//! the npm registry (`tests/oidc-provider/`, its lockfile in the repo), two
//! of them at once beside local users, driven as a browser drives them:
//! the sign-in page's buttons, the provider's own login form, redirects,
//! cookies. The refusal cases are in `oidc.rs`, against tokens the test
//! signs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use super::support::*;

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider")
}

/// `npm ci` once per test process when the provider's modules are missing
/// (a fresh clone); a missing Node.js or npm is a clear failure, never a skip.
fn modules_installed() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut done = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *done || provider_dir().join("node_modules/oidc-provider").exists() {
        *done = true;
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(provider_dir())
        .status()
        .unwrap_or_else(|e| {
            panic!("these tests run a real OpenID provider on Node.js; npm cannot be run ({e}). Install Node.js and npm (bash .ci/run does)")
        });
    assert!(status.success(), "`npm ci` in tests/oidc-provider failed");
    *done = true;
}

/// One `oidc-provider` process; stopped when dropped.
pub struct RealProvider {
    child: Child,
    pub issuer: String,
    pub cert_pem: String,
    _dir: tempfile::TempDir,
}

impl Drop for RealProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RealProvider {
    /// A provider whose one client is the gateway at `gateway` as `name`,
    /// trusting `gateway_cert` (for back-channel logout).
    /// `client`: more of the client's registration (it wins; `null`
    /// removes a key).
    fn start(
        name: &str,
        gateway: &str,
        gateway_cert: &str,
        groups: serde_json::Value,
        client: serde_json::Value,
    ) -> RealProvider {
        modules_installed();
        let dir = tempfile::tempdir().unwrap();
        let cert = authgate::tls::self_signed();
        let settings = json!({
            "cert": cert.cert_pem,
            "key": cert.key_pem,
            "clients": [{
                "client_id": format!("authgate-{name}"),
                "client_secret": format!("secret-{name}"),
                "redirect_uris": [format!("https://{gateway}/.gateway/oidc/{name}/callback")],
                "post_logout_redirect_uris": [format!("https://{gateway}/.gateway/login")],
                "backchannel_logout_uri": format!("https://{gateway}/.gateway/oidc/{name}/backchannel-logout"),
            }],
            "groups": groups,
        });
        let mut settings = settings;
        if let (Some(registered), Some(more)) =
            (settings["clients"][0].as_object_mut(), client.as_object())
        {
            for (k, v) in more {
                registered.insert(k.clone(), v.clone());
            }
        }
        RealProvider::launch(settings, cert, dir, gateway_cert)
    }

    /// A provider for an API's callers: one client `client_id` (secret
    /// `secret-CLIENT_ID`) that may only use the client-credentials grant,
    /// and JWT access tokens for `audience` with scopes `scope`.
    pub fn for_services(client_id: &str, audience: &str, scope: &str) -> RealProvider {
        modules_installed();
        let dir = tempfile::tempdir().unwrap();
        let cert = authgate::tls::self_signed();
        let settings = json!({
            "cert": cert.cert_pem,
            "key": cert.key_pem,
            "clients": [{
                "client_id": client_id,
                "client_secret": format!("secret-{client_id}"),
                "grant_types": ["client_credentials"],
                "response_types": [],
                "redirect_uris": [],
                "scope": scope,
                "backchannel_logout_session_required": null,
            }],
            "groups": {},
            "resource": { "audience": audience, "scope": scope },
        });
        RealProvider::launch(settings, cert, dir, "")
    }

    fn launch(
        settings: serde_json::Value,
        cert: authgate::tls::SelfSigned,
        dir: tempfile::TempDir,
        gateway_cert: &str,
    ) -> RealProvider {
        std::fs::write(dir.path().join("settings.json"), settings.to_string()).unwrap();
        std::fs::write(dir.path().join("gateway.pem"), gateway_cert).unwrap();
        let mut child = Command::new("node")
            .arg(provider_dir().join("provider.mjs"))
            .arg(dir.path().join("settings.json"))
            .env("NODE_EXTRA_CA_CERTS", dir.path().join("gateway.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("node cannot be run ({e}); install Node.js (bash .ci/run does)")
            });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let issuer = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening ") {
                        break url.to_owned();
                    }
                }
                _ => panic!("the OpenID provider stopped before it listened"),
            }
        };
        // Keep reading its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        RealProvider {
            child,
            issuer,
            cert_pem: cert.cert_pem,
            _dir: dir,
        }
    }

    /// Its `[[oidc]]` entry, the CA (and secret) files written into `dir`;
    /// `client_key`: the client signs in with that key (`private_key_jwt`)
    /// rather than a secret.
    fn entry(&self, dir: &Path, name: &str, client_key: Option<&Path>, extra: &str) -> String {
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, &self.cert_pem).unwrap();
        let credential = match client_key {
            Some(key) => format!(
                "client_auth = \"private_key_jwt\"\nclient_key = \"{}\"",
                key.display()
            ),
            None => {
                let secret = dir.join(format!("{name}-secret"));
                std::fs::write(&secret, format!("secret-{name}\n")).unwrap();
                format!("client_secret_file = \"{}\"", secret.display())
            }
        };
        format!(
            "[[oidc]]\nname = \"{name}\"\ntitle = \"Sign in with {name}\"\nissuer = \"{}\"\nclient_id = \"authgate-{name}\"\n{credential}\nca = \"{}\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\nroles_claim = \"groups\"\n{extra}\n",
            self.issuer,
            ca.display()
        )
    }
}

/// A browser that trusts the gateway and both providers.
fn browser(gw: &TestGateway, providers: &[&RealProvider]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(gw.cert_pem.as_bytes()).unwrap())
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::limited(10))
        .timeout(Duration::from_secs(20));
    for p in providers {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(p.cert_pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// The first `<form ... action="...">` of a page, resolved against its URL,
/// and its hidden fields.
fn form_of(page: &str, at: &reqwest::Url) -> (reqwest::Url, Vec<(String, String)>) {
    let action = page
        .split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no form on the page:\n{page}"));
    let mut hidden = Vec::new();
    for input in page.split("<input").skip(1) {
        let attr = |name: &str| {
            input
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(str::to_owned)
        };
        if attr("type").as_deref() == Some("hidden") {
            if let (Some(name), Some(value)) = (attr("name"), attr("value")) {
                hidden.push((name, value));
            }
        }
    }
    (at.join(&action.replace("&amp;", "&")).unwrap(), hidden)
}

/// From the gateway's sign-in page: the button for `name`, the provider's
/// login form as `login`; the page the browser lands on at the end.
async fn sign_in_through(
    gw: &TestGateway,
    browser: &reqwest::Client,
    name: &str,
    login: &str,
    next: &str,
) -> reqwest::Response {
    let page = browser
        .get(gw.url(&format!("/.gateway/login?next={next}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let button = page
        .split(&format!("href=\"/.gateway/oidc/{name}/start"))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no button for {name}:\n{page}"));
    let at_provider = browser
        .get(gw.url(&format!(
            "/.gateway/oidc/{name}/start{}",
            button.replace("&amp;", "&")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(at_provider.status(), 200, "the provider's login page");
    let url = at_provider.url().clone();
    let page = at_provider.text().await.unwrap();
    assert!(
        page.contains("name=\"login\""),
        "the provider's login form:\n{page}"
    );
    let (action, mut fields) = form_of(&page, &url);
    fields.push(("login".into(), login.into()));
    fields.push(("password".into(), "any password".into()));
    browser.post(action).form(&fields).send().await.unwrap()
}

const RULES: &str = r#"
[[rule]]
path = "/ops/**"
roles = ["admin"]

[[rule]]
path = "/only-b/**"
access = "authenticated"
providers = ["b"]

[[rule]]
path = "/private/**"
access = "authenticated"

[[rule]]
path = "/**"
access = "public"
"#;

struct World {
    gw: TestGateway,
    a: RealProvider,
    b: RealProvider,
}

/// A gateway with two real providers, `a` and `b`, beside its local users.
async fn world() -> World {
    let port = free_port();
    let gateway = format!("127.0.0.1:{port}");
    let cert = authgate::tls::self_signed();
    let groups = json!({"olga": ["ops", "staff"], "piet": ["staff"]});
    let dir = tempfile::tempdir().unwrap();
    // `a` knows the gateway by a client secret, `b` by its public key
    // (private_key_jwt).
    let key = dir.path().join("b-client-key.pem");
    authgate::assertion::generate(&key).unwrap();
    let jwk = authgate::assertion::JwtKey::load(&key)
        .unwrap()
        .jwk()
        .clone();
    let a = RealProvider::start("a", &gateway, &cert.cert_pem, groups.clone(), json!({}));
    let b = RealProvider::start(
        "b",
        &gateway,
        &cert.cert_pem,
        groups,
        json!({
            "client_secret": null,
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [jwk]},
        }),
    );
    let map = "[oidc.role_map]\nops = [\"admin\"]\nstaff = [\"user\"]\n[oidc.headers]\nX-Auth-Email = \"email\"";
    let entries = format!(
        "{}\n{}",
        a.entry(dir.path(), "a", None, map),
        b.entry(dir.path(), "b", Some(&key), map)
    );
    let gw = Setup::new()
        .listen(&gateway)
        .certificate(cert)
        .rules(&format!("{RULES}\n{entries}"))
        .start()
        .await;
    std::mem::forget(dir);
    World { gw, a, b }
}

#[tokio::test]
async fn two_real_providers_and_local_users_sign_in_side_by_side() {
    let World { gw, a, b } = world().await;
    // Through `a` as olga: mapped roles, the email header, the page she wanted.
    let olga = browser(&gw, &[&a, &b]);
    let landed = sign_in_through(&gw, &olga, "a", "olga", "/ops/board").await;
    assert_eq!(landed.status(), 200);
    assert_eq!(landed.url().path(), "/ops/board");
    assert_eq!(landed.text().await.unwrap(), "hello from upstream");
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["x-auth-user"], "olga");
    assert_eq!(seen.headers["x-auth-roles"], "admin,user");
    assert_eq!(seen.headers["x-auth-email"], "olga@example.com");
    // Through `b` as piet, in another browser: staff only.
    let piet = browser(&gw, &[&a, &b]);
    let landed = sign_in_through(&gw, &piet, "b", "piet", "/private/x").await;
    assert_eq!(landed.url().path(), "/private/x");
    assert_eq!(
        piet.get(gw.url("/ops/board"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        piet.get(gw.url("/only-b/x")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        olga.get(gw.url("/only-b/x")).send().await.unwrap().status(),
        403
    );
    // A local user beside them, on the same page.
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(gw.get_as(&alice, "/ops/board").await.status(), 200);
    assert_eq!(gw.get_as(&alice, "/only-b/x").await.status(), 403);
}

#[tokio::test]
async fn signing_out_at_the_provider_ends_the_gateway_session_by_back_channel() {
    let World { gw, a, b } = world().await;
    let olga = browser(&gw, &[&a, &b]);
    assert_eq!(
        sign_in_through(&gw, &olga, "a", "olga", "/private/x")
            .await
            .status(),
        200
    );
    let piet = browser(&gw, &[&a, &b]);
    assert_eq!(
        sign_in_through(&gw, &piet, "a", "piet", "/private/x")
            .await
            .status(),
        200
    );
    // Olga signs out at the provider itself (another tab, another app).
    let confirm = olga
        .get(format!("{}/session/end", a.issuer))
        .send()
        .await
        .unwrap();
    let url = confirm.url().clone();
    let page = confirm.text().await.unwrap();
    let (action, mut fields) = form_of(&page, &url);
    fields.push(("logout".into(), "yes".into()));
    let done = olga.post(action).form(&fields).send().await.unwrap();
    assert!(done.status().is_success(), "{}", done.status());
    let started = Instant::now();
    loop {
        let status = olga
            .get(gw.url("/private/x"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the gateway session outlived the provider's by a second"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Piet, signed in through the same provider, is untouched.
    assert_eq!(
        piet.get(gw.url("/private/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn signing_out_at_the_gateway_signs_out_at_the_provider() {
    let World { gw, a, b } = world().await;
    let piet = browser(&gw, &[&a, &b]);
    assert_eq!(
        sign_in_through(&gw, &piet, "b", "piet", "/private/x")
            .await
            .status(),
        200
    );
    let whoami: serde_json::Value = piet
        .get(gw.url("/.gateway/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let out = piet
        .post(gw.url("/.gateway/logout"))
        .form(&[("csrf", whoami["csrf"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    // The provider asks to confirm; yes leads back to the gateway's sign-in page.
    assert!(out.url().as_str().starts_with(&b.issuer), "{}", out.url());
    let url = out.url().clone();
    let page = out.text().await.unwrap();
    let (action, mut fields) = form_of(&page, &url);
    fields.push(("logout".into(), "yes".into()));
    let back = piet.post(action).form(&fields).send().await.unwrap();
    assert_eq!(back.url().path(), "/.gateway/login");
    assert_eq!(
        piet.get(gw.url("/private/x"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // The provider's own session is gone too: its button asks for a login again.
    let again = piet
        .get(gw.url("/.gateway/oidc/b/start"))
        .send()
        .await
        .unwrap();
    assert!(again.text().await.unwrap().contains("name=\"login\""));
}
