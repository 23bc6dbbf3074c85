//! `/.gateway/account`: a signed-in user's own sessions and links.

use http::StatusCode;
use maud::html;

use super::{browser, button, moment, Page, Viewer};
use crate::session::{self, SessionInfo};
use crate::users::passkey::UserPasskey;

/// The account page of `viewer`, whose session is `current`, listing
/// `own` sessions newest first; `provider`: the `[[oidc]]` they signed in
/// through; `passkeys`: theirs, or `None` when a sign-in service keeps
/// their second factor.
pub fn page(
    viewer: Viewer<'_>,
    provider: Option<&str>,
    current: &session::Key,
    own: &[SessionInfo],
    csrf: &str,
    now_ms: u64,
    passkeys: Option<&[UserPasskey]>,
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
        @if let Some(passkeys) = passkeys {
            (passkey_section(passkeys, csrf, now_ms))
        }
    };
    Page {
        status: StatusCode::OK,
        html: super::document("Your account", Some(viewer), true, content),
    }
}

/// The list of passkeys (name, added, last used, remove) and the form
/// that adds one (with the password again).
fn passkey_section(passkeys: &[UserPasskey], csrf: &str, now_ms: u64) -> maud::Markup {
    html! {
        h2 { "Passkeys" }
        p.note { "A passkey signs you in with your device's lock (a fingerprint, a face, a PIN) and cannot be phished. It is also your second factor." }
        @if !passkeys.is_empty() {
            div.scroll {
                table #passkeys {
                    tr { th { "Name" } th { "Added" } th { "Last used" } th {} }
                    @for p in passkeys {
                        tr {
                            td { (p.record.name) }
                            td { (moment(p.record.added * 1000, now_ms)) }
                            td {
                                @match p.record.used {
                                    Some(used) => (moment(used * 1000, now_ms)),
                                    None => "never",
                                }
                            }
                            td { (button("/.gateway/passkeys", csrf, "remove", &p.record.id, "Remove")) }
                        }
                    }
                }
            }
        }
        form #passkey-add method="post" action="/.gateway/passkeys" {
            input type="hidden" name="csrf" value=(csrf);
            label for="passkey-name" { "Name it" }
            input type="text" id="passkey-name" name="name" maxlength="64" placeholder="laptop";
            label for="passkey-password" { "Your password" }
            input type="password" id="passkey-password" name="password" autocomplete="current-password" required;
            button type="submit" { "Add a passkey" }
        }
        (super::passkey_script())
    }
}
