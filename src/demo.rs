//! `authgate demo`: a small upstream app that shows what it receives, and a
//! gateway in front of it with a certificate made on the spot. The config is
//! written as TOML text and loaded the normal way, so the demo runs exactly
//! the code a real deployment does.

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::response::{escape_html, full, Body};

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
    let mut rows = String::new();
    for (name, value) in request.headers() {
        let _ = write!(
            rows,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape_html(name.as_str()),
            escape_html(&String::from_utf8_lossy(value.as_bytes()))
        );
    }
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Demo app</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330}}table{{border-collapse:collapse}}\
th,td{{text-align:left;padding:.3rem .8rem;border-bottom:1px solid #ddd;font-family:monospace}}</style></head>\
<body><h1>Demo app behind authgate</h1><p>Signed-in user: <strong>{user}</strong></p>\
<p><code>{method} {uri}</code></p>\
<p>Try <a href=\"/\">/</a>, <a href=\"/public/\">/public/</a>, <a href=\"/admin/\">/admin/</a> (denied), \
<a href=\"/a/../public/x\">/a/../public/x</a>.</p>\
<h2>Headers the app received</h2><table>{rows}</table></body></html>",
        user = escape_html(user),
        method = escape_html(request.method().as_str()),
        uri = escape_html(&request.uri().to_string()),
    );
    let mut response = Response::new(full(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// Writes a fresh certificate and key into `dir` and returns the config text
/// of a gateway on `listen` in front of the app at `app`.
pub fn write_config(dir: &Path, listen: SocketAddr, app: SocketAddr) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let cert = crate::tls::self_signed();
    std::fs::write(dir.join("demo.crt"), cert.cert_pem)?;
    std::fs::write(dir.join("demo.key"), cert.key_pem)?;
    let text = format!(
        r#"# Written by `authgate demo`.
[server]
listen = "{listen}"
cert = "demo.crt"
key = "demo.key"
shutdown_grace = "2s"

[upstream]
url = "http://{app}"

[[rule]]
path = "/admin/**"
access = "deny"

[[rule]]
path = "/**"
access = "public"
"#
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}
