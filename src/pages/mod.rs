//! The sign-in and sign-out pages: self-contained HTML (no scripts, no
//! external assets), readable on a phone, every reflected value escaped.

use http::StatusCode;

use crate::response::{escape_html, own_response, Body};

const STYLE: &str = "*{box-sizing:border-box}body{font-family:system-ui,-apple-system,sans-serif;background:#f4f5f7;color:#1d2330;margin:0}\
main{max-width:24rem;margin:8vh auto;padding:2rem 1.5rem;background:#fff;border-radius:10px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.35rem;margin:0 0 1.2rem}label{display:block;font-size:.9rem;margin:.9rem 0 .3rem}\
input[type=text],input[type=password]{width:100%;padding:.65rem;font-size:1rem;border:1px solid #c5cad3;border-radius:6px}\
button{margin-top:1.3rem;width:100%;padding:.7rem;font-size:1rem;border:0;border-radius:6px;background:#2453d4;color:#fff;cursor:pointer}\
.error{background:#fdecec;color:#8a1c1c;padding:.6rem .8rem;border-radius:6px;font-size:.95rem}\
.note{color:#5b6472;font-size:.9rem}.ok{background:#e8f6ec;color:#1c5e2e;padding:.6rem .8rem;border-radius:6px}";

pub(crate) fn document(title: &str, content: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\"><title>{title}</title><style>{STYLE}</style></head>\
<body><main>{content}</main></body></html>\n",
        title = escape_html(title),
    )
}

/// The sign-in form. `error` is the one generic message after a failure.
/// The username typed is not echoed back, so that the answer to a failed
/// sign-in is the same bytes whichever way it failed.
pub fn login(
    status: StatusCode,
    csrf: &str,
    next: &str,
    error: Option<&str>,
    words: &crate::config::LoginWords,
) -> http::Response<Body> {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape_html(e))
    });
    // The organisation's words: plain text, escaped, no assets.
    let title = words.title.as_deref().map_or(String::new(), |t| {
        format!("<p class=\"note\"><strong>{}</strong></p>", escape_html(t))
    });
    let notice = words.notice.as_deref().map_or(String::new(), |n| {
        format!(
            "<p class=\"note\">{}</p>",
            escape_html(n).replace('\n', "<br>")
        )
    });
    let content = format!(
        "{title}<h1>Sign in</h1>{notice}{error}\
<form method=\"post\" action=\"/.gateway/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"next\" value=\"{next}\">\
<label for=\"username\">Username</label>\
<input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus>\
<label for=\"password\">Password</label>\
<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Sign in</button></form>",
        csrf = escape_html(csrf),
        next = escape_html(next),
    );
    let page_title = match &words.title {
        Some(t) => format!("Sign in · {t}"),
        None => "Sign in".to_owned(),
    };
    own_response(
        status,
        "text/html; charset=utf-8",
        document(&page_title, &content),
    )
}

/// The sign-out page: a button that posts the session's token.
pub fn logout(user: Option<(&str, &str)>) -> http::Response<Body> {
    let content = match user {
        Some((name, csrf)) => format!(
            "<h1>Sign out</h1><p>Signed in as <strong>{name}</strong>.</p>\
<form method=\"post\" action=\"/.gateway/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\">Sign out</button></form>",
            name = escape_html(name),
            csrf = escape_html(csrf),
        ),
        None => "<h1>Signed out</h1><p class=\"note\">You are not signed in.</p>\
<p><a href=\"/.gateway/login\">Sign in</a></p>"
            .to_owned(),
    };
    own_response(
        StatusCode::OK,
        "text/html; charset=utf-8",
        document("Sign out", &content),
    )
}

/// The password-change form. `message` is (success?, text).
pub fn password(
    status: StatusCode,
    user: &str,
    csrf: &str,
    message: Option<(bool, &str)>,
) -> http::Response<Body> {
    let message = message.map_or(String::new(), |(ok, text)| {
        let class = if ok { "ok" } else { "error" };
        format!(
            "<p class=\"{class}\" role=\"alert\">{}</p>",
            escape_html(text)
        )
    });
    let content = format!(
        "<h1>Change password</h1><p class=\"note\">Signed in as <strong>{user}</strong>.</p>{message}\
<form method=\"post\" action=\"/.gateway/password\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label for=\"current\">Current password</label>\
<input type=\"password\" id=\"current\" name=\"current\" autocomplete=\"current-password\" required>\
<label for=\"new\">New password (at least 12 characters)</label>\
<input type=\"password\" id=\"new\" name=\"new\" autocomplete=\"new-password\" minlength=\"12\" required>\
<button type=\"submit\">Change password</button></form>",
        user = escape_html(user),
        csrf = escape_html(csrf),
    );
    own_response(
        status,
        "text/html; charset=utf-8",
        document("Change password", &content),
    )
}

fn message_html(message: Option<(bool, &str)>) -> String {
    message.map_or(String::new(), |(ok, text)| {
        let class = if ok { "ok" } else { "error" };
        format!(
            "<p class=\"{class}\" role=\"alert\">{}</p>",
            escape_html(text)
        )
    })
}

fn html(status: StatusCode, title: &str, content: &str) -> http::Response<Body> {
    own_response(status, "text/html; charset=utf-8", document(title, content))
}

const CODE_INPUT: &str = "<label for=\"code\">Code from your authenticator app</label>\
<input type=\"text\" id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus>";

/// The second step of a sign-in: the code (or a recovery code).
pub fn login_code(status: StatusCode, csrf: &str, error: Option<&str>) -> http::Response<Body> {
    let content = format!(
        "<h1>Second step</h1>{error}\
<form method=\"post\" action=\"/.gateway/login/code\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
{CODE_INPUT}<p class=\"note\">No phone? Enter one of your recovery codes instead.</p>\
<button type=\"submit\">Sign in</button></form>",
        error = message_html(error.map(|e| (false, e))),
        csrf = escape_html(csrf),
    );
    html(status, "Sign in", &content)
}

/// Enrollment, first step: the password again.
pub fn totp_password(
    status: StatusCode,
    user: &str,
    csrf: &str,
    next: &str,
    error: Option<&str>,
) -> http::Response<Body> {
    let content = format!(
        "<h1>Set up a second factor</h1>{error}<p>Signed in as <strong>{user}</strong>. \
Enter your password to begin; then scan a code with an authenticator app.</p>\
<form method=\"post\" action=\"/.gateway/totp\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"step\" value=\"password\"><input type=\"hidden\" name=\"next\" value=\"{next}\">\
<label for=\"password\">Password</label>\
<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required autofocus>\
<button type=\"submit\">Continue</button></form>",
        error = message_html(error.map(|e| (false, e))),
        user = escape_html(user),
        csrf = escape_html(csrf),
        next = escape_html(next),
    );
    html(status, "Second factor", &content)
}

/// Enrollment, second step: the secret as a QR code and as text, and a
/// code to prove the app has it.
pub fn totp_scan(
    status: StatusCode,
    qr_svg: &str,
    secret: &str,
    csrf: &str,
    next: &str,
    error: Option<&str>,
) -> http::Response<Body> {
    // The secret in groups of four, as apps show it.
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let content = format!(
        "<h1>Scan this code</h1>{error}<p>Scan it with an authenticator app (any that speaks TOTP), \
or type the key below into it. Then enter the 6-digit code the app shows.</p>\
<div class=\"qr\" aria-label=\"QR code of the key\">{qr_svg}</div>\
<p class=\"note\">Key: <code>{secret}</code></p>\
<form method=\"post\" action=\"/.gateway/totp\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"step\" value=\"confirm\"><input type=\"hidden\" name=\"next\" value=\"{next}\">\
{CODE_INPUT}<button type=\"submit\">Turn it on</button></form>",
        error = message_html(error.map(|e| (false, e))),
        secret = escape_html(&grouped.join(" ")),
        csrf = escape_html(csrf),
        next = escape_html(next),
    );
    html(status, "Second factor", &content)
}

/// Enrollment done: the recovery codes, shown this once.
pub fn totp_recovery(codes: &[String], next: &str) -> http::Response<Body> {
    let list: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", escape_html(c)))
        .collect();
    let content = format!(
        "<h1>Second factor on</h1><p class=\"ok\" role=\"alert\">From now on, signing in asks for a code from your app.</p>\
<p>Keep these recovery codes somewhere safe: each works once, in place of a code, if the phone is lost. \
They are not shown again.</p><ul>{list}</ul><p><a href=\"{next}\">Continue</a></p>",
        next = escape_html(next),
    );
    html(StatusCode::OK, "Second factor", &content)
}

/// For a user who has a second factor already.
pub fn totp_enrolled(user: &str, recovery_left: usize) -> http::Response<Body> {
    let content = format!(
        "<h1>Second factor</h1><p>The account <strong>{user}</strong> signs in with a code from an \
authenticator app. {recovery_left} recovery code(s) left.</p>\
<p class=\"note\">Lost the phone? Sign in with a recovery code, and ask an admin to reset the second factor \
so that you can set it up again.</p><p><a href=\"/\">Continue</a></p>",
        user = escape_html(user),
    );
    html(StatusCode::OK, "Second factor", &content)
}

/// A fresh sign-in within a session: the password, and the code if the
/// user has a second factor.
pub fn reauth(
    status: StatusCode,
    user: &str,
    csrf: &str,
    next: &str,
    with_code: bool,
    error: Option<&str>,
) -> http::Response<Body> {
    let code = if with_code { CODE_INPUT } else { "" };
    let content = format!(
        "<h1>Confirm it is you</h1>{error}<p>This page asks for a recent sign-in. \
Signed in as <strong>{user}</strong>.</p>\
<form method=\"post\" action=\"/.gateway/reauth\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"next\" value=\"{next}\">\
<label for=\"password\">Password</label>\
<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required autofocus>\
{code}<button type=\"submit\">Continue</button></form>",
        error = message_html(error.map(|e| (false, e))),
        user = escape_html(user),
        csrf = escape_html(csrf),
        next = escape_html(next),
    );
    html(status, "Sign in again", &content)
}
