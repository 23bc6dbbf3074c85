//! What rendering a page costs (issue 25): the maud templates of the
//! sign-in, account and admin pages, and for the sign-in page the
//! `format!` + hand-escaping it replaced, measured in the same run. Run
//! with `cargo bench --bench pages`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use authgate::pages;
use authgate::session::SessionInfo;
use http::StatusCode;

/// Nanoseconds per call of `f`, the best of five runs of `n` calls.
fn time(n: u32, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..n {
                f();
            }
            started.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The sign-in page as it was written before templates (its markup, with
/// the stylesheet of the time, by `format!` and a hand-called escape).
fn login_by_format(csrf: &str, next: &str) -> String {
    const STYLE: &str = "*{box-sizing:border-box}body{font-family:system-ui,-apple-system,sans-serif;background:#f4f5f7;color:#1d2330;margin:0}\
main{max-width:24rem;margin:8vh auto;padding:2rem 1.5rem;background:#fff;border-radius:10px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.35rem;margin:0 0 1.2rem}label{display:block;font-size:.9rem;margin:.9rem 0 .3rem}\
input[type=text],input[type=password]{width:100%;padding:.65rem;font-size:1rem;border:1px solid #c5cad3;border-radius:6px}\
button{margin-top:1.3rem;width:100%;padding:.7rem;font-size:1rem;border:0;border-radius:6px;background:#2453d4;color:#fff;cursor:pointer}\
.error{background:#fdecec;color:#8a1c1c;padding:.6rem .8rem;border-radius:6px;font-size:.95rem}\
.note{color:#5b6472;font-size:.9rem}.ok{background:#e8f6ec;color:#1c5e2e;padding:.6rem .8rem;border-radius:6px}";
    let content = format!(
        "<h1>Sign in</h1>\
<form method=\"post\" action=\"/.gateway/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"next\" value=\"{next}\">\
<label for=\"username\">Username</label>\
<input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus>\
<label for=\"password\">Password</label>\
<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Sign in</button></form>",
        csrf = escape(csrf),
        next = escape(next),
    );
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\"><title>{title}</title><style>{STYLE}</style></head>\
<body><main>{content}</main></body></html>\n",
        title = escape("Sign in"),
    )
}

fn session(i: u32, user: &str) -> SessionInfo {
    SessionInfo {
        key: [i as u8; 32],
        user: Arc::from(user),
        created_ms: 1_800_000_000_000 - u64::from(i) * 60_000,
        last_seen_ms: 1_800_000_000_000 - u64::from(i) * 1_000,
        ip: std::net::IpAddr::from([10, 0, 0, (i % 250) as u8]),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36".into(),
        vouched: None,
    }
}

fn main() {
    let csrf = "k3J9a8b7c6d5e4f3g2h1i0j9k8l7m6n5o4p3q2r1s0t";
    let next = "/app/reports?year=2026&q=<x>";
    let words = authgate::config::LoginWords::default();
    let now = 1_800_000_000_000;

    let old = time(20_000, || {
        black_box(login_by_format(black_box(csrf), black_box(next)));
    });
    let new = time(20_000, || {
        black_box(pages::sign_in::login(
            StatusCode::OK,
            black_box(csrf),
            black_box(next),
            None,
            &words,
            pages::sign_in::Ways {
                local: true,
                providers: &[],
            },
        ));
    });
    println!("sign-in page, format!:        {old:8.0} ns");
    println!(
        "sign-in page, maud:           {new:8.0} ns  ({:.2}x)",
        new / old
    );

    let viewer = pages::Viewer {
        name: "alice",
        admin: true,
    };
    let own: Vec<SessionInfo> = (0..5).map(|i| session(i, "alice")).collect();
    let account = time(5_000, || {
        black_box(pages::account::page(
            viewer,
            None,
            &own[0].key,
            &own,
            csrf,
            now,
            Some(&[]),
            Some(&[]),
        ));
    });
    println!("account page, 5 sessions:     {account:8.0} ns");

    let mut text = String::from("[users]\n");
    let hash = authgate::users::password::hash_password("bench-password-123");
    for i in 0..100 {
        text.push_str(&format!(
            "[users.user{i}]\npassword = \"{hash}\"\nroles = [\"user\"]\n"
        ));
    }
    let users = authgate::users::Users::parse(&text, std::path::Path::new("users.toml")).unwrap();
    let admin = time(200, || {
        let sessions = (0..200)
            .map(|i| session(i, &format!("user{}", i % 100)))
            .collect();
        black_box(pages::admin::page(
            viewer,
            pages::admin::Admin {
                users: &users,
                sessions,
                events: Vec::new(),
                sign_ins: Vec::new(),
                managed_elsewhere: None,
            },
            csrf,
            now,
        ));
    });
    println!(
        "admin page, 100 users, 200 sessions: {:.0} µs",
        admin / 1000.0
    );
}
