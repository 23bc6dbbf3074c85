//! `authgate demo`: a small upstream app that shows what it receives, and a
//! gateway in front of it with a certificate made on the spot. The config is
//! written as TOML text and loaded the normal way, so the demo runs exactly
//! the code a real deployment does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::response::{full, Body};

/// Serves the demo app on `listener` until the task is dropped.
pub async fn serve_app(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|req| async move { Ok::<_, Infallible>(app_page(&req)) });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// A page listing the method, path and every header the app received.
fn app_page(request: &Request<Incoming>) -> Response<Body> {
    let user = request
        .headers()
        .get("x-auth-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("nobody (public page)");
    let roles = request
        .headers()
        .get("x-auth-roles")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    let admin = roles.split(',').any(|r| r == "admin");
    let body = maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Demo app" }
                style {
                    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330}table{border-collapse:collapse}"
                    "th,td{text-align:left;padding:.3rem .8rem;border-bottom:1px solid #ddd;font-family:monospace}"
                }
            }
            body {
                h1 { "Demo app behind authgate" }
                p { "Signed-in user: " strong { (user) } " (roles: " (roles) ")" }
                p { code { (request.method()) " " (request.uri()) } }
                p {
                    a href="/public/" { "/public/" } " (anyone) · "
                    a href="/" { "/" } " (signed-in users) · "
                    a href="/admin/" { "/admin/" } " (role admin) · "
                    a href="/.gateway/whoami" { "whoami" } " · "
                    a href="/.gateway/account" { "your account" } " · "
                    a href="/.gateway/logout" { "sign out" }
                    @if admin {
                        " · " a href="/.gateway/admin/" { strong { "admin page" } } " (users and sessions)"
                    }
                }
                h2 { "Headers the app received" }
                table {
                    @for (name, value) in request.headers() {
                        tr { th { (name) } td { (String::from_utf8_lossy(value.as_bytes())) } }
                    }
                }
            }
        }
    }
    .into_string();
    let mut response = Response::new(full(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// What `write_config` made.
pub struct Demo {
    pub config: PathBuf,
    pub alice_password: String,
    pub bob_password: String,
}

/// A new folder for the demo's files, under the system's temporary folder,
/// with a random name and only this user allowed in (0700); removed when
/// the returned value is dropped.
pub fn private_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("authgate-demo-")
        .permissions(private_mode(0o700))
        .tempdir()
}

#[cfg(unix)]
fn private_mode(mode: u32) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(mode)
}

#[cfg(not(unix))]
fn private_mode(_mode: u32) -> std::fs::Permissions {
    std::fs::metadata(std::env::temp_dir())
        .expect("the temporary folder exists")
        .permissions()
}

/// Writes a file only this user can read (0600), replacing any old one.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    crate::users::file::create_private(path)?.write_all(contents.as_bytes())
}

/// Writes a fresh certificate and key, a users file with alice and bob
/// (random passwords) and a gateway config into `dir`: a gateway on
/// `listen` in front of the app at `app`.
pub fn write_config(dir: &Path, listen: SocketAddr, app: SocketAddr) -> std::io::Result<Demo> {
    std::fs::create_dir_all(dir)?;
    let cert = crate::tls::self_signed();
    std::fs::write(dir.join("demo.crt"), cert.cert_pem)?;
    write_private(&dir.join("demo.key"), &cert.key_pem)?;
    let alice_password = crate::users::password::random_password();
    let bob_password = crate::users::password::random_password();
    let users = format!(
        "# Written by `authgate demo`.\n[users.alice]\npassword = \"{}\"\nroles = [\"admin\", \"user\"]\n\n[users.bob]\npassword = \"{}\"\nroles = [\"user\"]\n",
        crate::users::password::hash_password(&alice_password),
        crate::users::password::hash_password(&bob_password),
    );
    write_private(&dir.join("users.toml"), &users)?;
    let text = format!(
        r#"# Written by `authgate demo`.
[server]
listen = "{listen}"
cert = "demo.crt"
key = "demo.key"
shutdown_grace = "2s"
drain_delay = "0s"

[upstream]
url = "http://{app}"

[session]
idle_timeout = "30m"
absolute_timeout = "8h"

# The demo's folder goes when it stops, so its sessions live in memory.
[store]
backend = "memory"

[users]
file = "users.toml"

[[rule]]
path = "/public/**"
access = "public"

[[rule]]
path = "/admin/**"
roles = ["admin"]

[[rule]]
path = "/**"
access = "authenticated"
"#
    );
    let config = dir.join("gateway.toml");
    std::fs::write(&config, text)?;
    Ok(Demo {
        config,
        alice_password,
        bob_password,
    })
}
