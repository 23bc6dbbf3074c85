//! `/.gateway/account`: a signed-in user's own sessions and links.

use http::StatusCode;
use maud::html;

use super::{browser, button, moment, Page, Viewer};
use crate::session::{self, SessionInfo};

/// The account page of `viewer`, whose session is `current`, listing
/// `own` sessions newest first; `provider`: the `[[oidc]]` they signed in
/// through.
pub fn page(
    viewer: Viewer<'_>,
    provider: Option<&str>,
    current: &session::Key,
    own: &[SessionInfo],
    csrf: &str,
    now_ms: u64,
) -> Page {
    let mut sessions: Vec<&SessionInfo> = own.iter().collect();
    sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen_ms));
    let to = "/.gateway/account";
    let content = html! {
        h1 { "Your account" }
        p { "Signed in as " strong { (viewer.name) } "." }
        @match provider {
            // The directory keeps their password; the gateway their second factor.
            Some(crate::config::Ldap::NAME) => p {
                "Your password is the company directory's: change it there. "
                a href="/.gateway/totp" { "Second factor" } " · "
                a href="/.gateway/logout" { "Sign out" }
            },
            // The provider keeps their password and second factor.
            Some(provider) => p {
                "You signed in through " strong { (provider) } ". "
                a href="/.gateway/logout" { "Sign out" }
            },
            None => p {
                a href="/.gateway/password" { "Change your password" } " · "
                a href="/.gateway/totp" { "Second factor" } " · "
                a href="/.gateway/logout" { "Sign out" }
            },
        }
        h2 { "Your sessions" }
        div.scroll {
            table {
                tr { th { "Browser" } th { "Address" } th { "Started" } th { "Last seen" } th {} }
                @for s in &sessions {
                    tr {
                        td title=(s.user_agent) { (browser(&s.user_agent)) }
                        td { (s.ip) }
                        td { (moment(s.created_ms, now_ms)) }
                        td { (moment(s.last_seen_ms, now_ms)) }
                        td {
                            @if &s.key == current {
                                strong { "this one" }
                            } @else {
                                (button(to, csrf, "end", &session::handle(&s.key), "End"))
                            }
                        }
                    }
                }
            }
        }
        @if sessions.len() > 1 {
            (button(to, csrf, "end_others", "", "Sign out everywhere else"))
        }
    };
    Page {
        status: StatusCode::OK,
        html: super::document("Your account", Some(viewer), true, content),
    }
}
