//! Every page the gateway serves, in one room with one stylesheet:
//! sign-in and its second step ([`sign_in`]), the account and admin pages
//! ([`account`], [`admin`]) and error pages ([`error`]). Self-contained
//! HTML (no scripts, no external assets), readable on a phone. Templates
//! are `maud`'s: every value put in a page is escaped unless it is
//! explicitly [`PreEscaped`] (the QR code's SVG, made here).
//!
//! Pages are rendered to a [`Page`] (status and HTML); `response` turns it
//! into an HTTP response with the gateway's own headers.

pub mod account;
pub mod admin;
pub mod error;
pub mod sign_in;

use http::StatusCode;
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// A rendered page and the status it is sent with.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub html: String,
    /// It loads the passkey script ([`PASSKEY_SCRIPT_TAG`]): its
    /// `Content-Security-Policy` lets that run.
    pub script: bool,
}

/// Who a page is shown to, for the header every page of a signed-in
/// person carries.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub name: &'a str,
    /// Holds the admin role: the header links the admin page.
    pub admin: bool,
}

const STYLE: &str = "*{box-sizing:border-box}[hidden]{display:none!important}\
body{font-family:system-ui,-apple-system,sans-serif;background:#f4f5f7;color:#1d2330;margin:0;line-height:1.4}\
header{display:flex;flex-wrap:wrap;gap:.3rem 1rem;justify-content:space-between;align-items:center;padding:.55rem 1rem;background:#fff;border-bottom:1px solid #e2e5ea;font-size:.9rem}\
header nav a{margin-left:.9rem}header nav a:first-child{margin-left:0}\
main{max-width:24rem;margin:6vh auto;padding:2rem 1.5rem;background:#fff;border-radius:10px;box-shadow:0 1px 4px #0002}\
main.wide{max-width:60rem;margin:2rem auto}\
h1{font-size:1.35rem;margin:0 0 1.2rem}h2{font-size:1.1rem;margin:1.8rem 0 .6rem}\
label{display:block;font-size:.9rem;margin:.9rem 0 .3rem}\
input[type=text],input[type=password]{width:100%;padding:.65rem;font-size:1rem;border:1px solid #c5cad3;border-radius:6px}\
button{margin-top:1.3rem;width:100%;padding:.7rem;font-size:1rem;border:0;border-radius:6px;background:#2453d4;color:#fff;cursor:pointer}\
button.small{width:auto;margin:.15rem .3rem .15rem 0;padding:.3rem .6rem;font-size:.85rem}\
a.button{display:block;box-sizing:border-box;margin-top:1rem;width:100%;padding:.7rem;font-size:1rem;border-radius:6px;background:#2453d4;color:#fff;text-align:center;text-decoration:none}\
a{color:#2453d4}code{overflow-wrap:anywhere}\
.error{background:#fdecec;color:#8a1c1c;padding:.6rem .8rem;border-radius:6px;font-size:.95rem}\
.note{color:#5b6472;font-size:.9rem}.ok{background:#e8f6ec;color:#1c5e2e;padding:.6rem .8rem;border-radius:6px}\
.status{color:#6b7280;font-size:.9rem}\
.scroll{overflow-x:auto;margin:0 -.25rem}\
table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:.4rem;border-bottom:1px solid #e2e5ea;vertical-align:top}\
td form,form.inline{display:inline}td.actions{white-space:nowrap}\
td input[type=text]{width:auto;min-width:8rem;padding:.3rem;font-size:.85rem}\
time{text-decoration:underline dotted #9aa1ad}\
@media (max-width:640px){main,main.wide{margin:0;border-radius:0;box-shadow:none;padding:1.2rem 1rem}\
td.actions{white-space:normal}th,td{padding:.35rem .3rem}table.stack tr:first-child{display:none}table.stack tr{display:block;padding:.5rem 0;border-bottom:1px solid #e2e5ea}table.stack td{display:block;border:0;padding:.15rem 0}table.stack td:first-child{font-weight:600;font-size:1rem}table.stack td[data-label]::before{content:attr(data-label) \": \";color:#5b6472}table.stack td form.inline,table.stack td form{display:inline}}";

/// The whole document: `title`, the header for `viewer`, and `content`
/// in the card (`wide` for tables).
pub fn document(title: &str, viewer: Option<Viewer<'_>>, wide: bool, content: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                @if let Some(viewer) = viewer {
                    header {
                        span { "Signed in as " strong { (viewer.name) } }
                        nav {
                            a href="/.gateway/account" { "Account" }
                            @if viewer.admin {
                                a href="/.gateway/admin/" { "Admin" }
                            }
                            a href="/.gateway/logout" { "Sign out" }
                        }
                    }
                }
                main class=[wide.then_some("wide")] { (content) }
            }
        }
    }
    .into_string()
}

/// A page of `content` with `status`.
pub fn page(status: StatusCode, title: &str, viewer: Option<Viewer<'_>>, content: Markup) -> Page {
    Page {
        status,
        html: document(title, viewer, false, content),
        script: false,
    }
}

/// A success or error message (`ok`), announced to screen readers.
fn message(ok: bool, text: &str) -> Markup {
    html! { p class=(if ok { "ok" } else { "error" }) role="alert" { (text) } }
}

/// A POST form to `action` carrying the CSRF token, with `fields` inside.
fn form(action: &str, csrf: &str, fields: Markup) -> Markup {
    html! {
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            (fields)
        }
    }
}

/// A one-button form that posts `action` about `target`, as the account
/// and admin tables use.
fn button(to: &str, csrf: &str, action: &str, target: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(to) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="action" value=(action);
            input type="hidden" name="target" value=(target);
            button.small type="submit" { (label) }
        }
    }
}

/// The passkey buttons' script, served at `/.gateway/passkey.js`.
pub const PASSKEY_SCRIPT: &str = include_str!("passkey.js");
/// How a page loads it; a page with this tag says so ([`Page::script`])
/// and gets a policy that lets it run (`script-src 'self'`), every other
/// page none.
pub const PASSKEY_SCRIPT_TAG: &str = r#"<script src="/.gateway/passkey.js" defer></script>"#;

/// The passkey script and the place its messages go.
fn passkey_script() -> Markup {
    html! {
        p #passkey-message role="alert" hidden {}
        (PreEscaped(PASSKEY_SCRIPT_TAG))
    }
}

/// A moment as a person reads it ("3 minutes ago"), with the exact time
/// (UTC) on hover.
pub fn moment(at_ms: u64, now_ms: u64) -> Markup {
    let exact = crate::units::rfc3339(at_ms);
    html! { time datetime=(exact) title=(format!("{exact} (UTC)")) { (ago(at_ms, now_ms)) } }
}

/// How long before `now_ms` `at_ms` was, in words.
pub fn ago(at_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(at_ms) / 1000;
    let (n, unit) = match secs {
        0..45 => return "just now".to_owned(),
        45..5_400 => (secs.div_ceil(60).max(1), "minute"),
        5_400..129_600 => ((secs + 1_800) / 3_600, "hour"),
        _ => ((secs + 43_200) / 86_400, "day"),
    };
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{plural} ago")
}

/// A browser as a person names it ("Chrome 156 on Linux"), from its
/// User-Agent; the text itself (cut short) when it names no browser this
/// knows.
pub fn browser(user_agent: &str) -> String {
    let version_after = |marker: &str| -> Option<String> {
        let rest = &user_agent[user_agent.find(marker)? + marker.len()..];
        let major: String = rest.chars().take_while(char::is_ascii_digit).collect();
        (!major.is_empty()).then_some(major)
    };
    let name = if let Some(v) = version_after("Edg/") {
        Some(format!("Edge {v}"))
    } else if let Some(v) = version_after("OPR/") {
        Some(format!("Opera {v}"))
    } else if let Some(v) = version_after("Firefox/") {
        Some(format!("Firefox {v}"))
    } else if let Some(v) = version_after("Chromium/") {
        Some(format!("Chromium {v}"))
    } else if let Some(v) = version_after("Chrome/").or_else(|| version_after("CriOS/")) {
        Some(format!("Chrome {v}"))
    } else if user_agent.contains("Safari/") {
        Some(version_after("Version/").map_or("Safari".to_owned(), |v| format!("Safari {v}")))
    } else {
        user_agent
            .strip_prefix("curl/")
            .map(|rest| format!("curl {}", rest.split_whitespace().next().unwrap_or("")))
    };
    let system = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("CrOS", "ChromeOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Macintosh", "macOS"),
        ("Linux", "Linux"),
    ]
    .into_iter()
    .find(|(marker, _)| user_agent.contains(marker))
    .map(|(_, system)| system);
    match (name, system) {
        (Some(name), Some(system)) => format!("{name} on {system}"),
        (Some(name), None) => name,
        (None, _) if user_agent.trim().is_empty() => "unknown".to_owned(),
        (None, _) => user_agent.chars().take(80).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_named_as_people_name_them() {
        let cases = [
            ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36", "Chrome 156 on Linux"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.2849.68", "Edge 130 on Windows"),
            ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "Firefox 133 on Linux"),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", "Safari 18 on iOS"),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", "Chrome 131 on Android"),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", "Safari 18 on macOS"),
            ("curl/7.88.1", "curl 7.88.1"),
            ("Laptop", "Laptop"),
            ("", "unknown"),
        ];
        for (ua, named) in cases {
            assert_eq!(browser(ua), named, "{ua}");
        }
    }

    #[test]
    fn moments_read_as_time_ago_with_the_exact_time_on_hover() {
        let now = 1_800_000_000_000;
        assert_eq!(ago(now - 10_000, now), "just now");
        assert_eq!(ago(now - 60_000, now), "1 minute ago");
        assert_eq!(ago(now - 180_000, now), "3 minutes ago");
        assert_eq!(ago(now - 2 * 3_600_000, now), "2 hours ago");
        assert_eq!(ago(now - 3 * 86_400_000, now), "3 days ago");
        let html = moment(now - 180_000, now).into_string();
        assert!(
            html.contains("title=\"2027-01-15T07:57:00Z (UTC)\""),
            "{html}"
        );
        assert!(html.contains(">3 minutes ago</time>"), "{html}");
    }

    #[test]
    fn what_a_page_shows_is_escaped() {
        let page = error::page(StatusCode::FORBIDDEN, "Forbidden", "<script>x</script>");
        assert!(!page.html.contains("<script>x"));
        assert!(page.html.contains("&lt;script&gt;x&lt;/script&gt;"));
        let agent = browser("<img src=x onerror=alert(1)>");
        let row = html! { td { (agent) } }.into_string();
        assert_eq!(row, "<td>&lt;img src=x onerror=alert(1)&gt;</td>");
    }
}
