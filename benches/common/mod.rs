//! What the sign-in benches share: the process's CPU time, a response's
//! cookie, and a password sign-in.

use std::time::{Duration, Instant};

/// Process CPU time (user + system) so far.
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
