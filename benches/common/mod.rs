//! What the benches share: the process's CPU time, a response's cookie,
//! a password sign-in, and an upstream that answers "ok".

use std::time::{Duration, Instant};

/// Process CPU time (user + system) so far.
#[allow(dead_code)]
pub fn cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let of = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    of(usage.ru_utime) + of(usage.ru_stime)
}

/// The value `response` sets the cookie `name` to.
pub fn cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (k, rest) = v.split_once('=')?;
            (k == name).then(|| rest.split(';').next().unwrap_or("").to_owned())
        })
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

/// The `csrf` hidden field of a page.
fn csrf_in(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// Fetches the sign-in form, then posts `user`'s `password` with it:
/// when the POST was sent (the form's fetch is not part of the sign-in's
/// time) and the answer.
pub async fn post_sign_in(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> (Instant, reqwest::Response) {
    let page = client
        .get(format!("{base}/.gateway/login"))
        .send()
        .await
        .unwrap();
    let token = cookie(&page, "__Host-authgate-login");
    let csrf = csrf_in(&page.text().await.unwrap());
    let started = Instant::now();
    let answer = client
        .post(format!("{base}/.gateway/login"))
        .header("cookie", format!("__Host-authgate-login={token}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", user),
            ("password", password),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    (started, answer)
}

/// An upstream on loopback that answers every request `ok`; its URL.
#[allow(dead_code)]
pub async fn upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}
