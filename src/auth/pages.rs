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
) -> http::Response<Body> {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape_html(e))
    });
    let content = format!(
        "<h1>Sign in</h1>{error}\
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
    own_response(
        status,
        "text/html; charset=utf-8",
        document("Sign in", &content),
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
