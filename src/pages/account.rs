//! `/.gateway/account`: a signed-in user's own sessions and links.

use http::StatusCode;
use maud::html;

use super::{browser, button, moment, Page, Viewer};
use crate::session::{self, SessionInfo};
use crate::store::tokens::TokenInfo;
use crate::users::passkey::UserPasskey;

/// The account page of `viewer`, whose session is `current`, listing
/// `own` sessions newest first; `provider`: the `[[oidc]]` they signed in
/// through; `passkeys`: theirs, or `None` when a sign-in service keeps
/// their second factor; `tokens`: their API tokens, `None` for a
/// provider's person.
#[allow(clippy::too_many_arguments)]
pub fn page(
    viewer: Viewer<'_>,
    provider: Option<&str>,
    current: &session::Key,
    own: &[SessionInfo],
    csrf: &str,
    now_ms: u64,
    passkeys: Option<&[UserPasskey]>,
    tokens: Option<&[TokenInfo]>,
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
        @if let Some(tokens) = tokens {
            (token_section(tokens, csrf, now_ms))
        }
    };
    Page {
        status: StatusCode::OK,
        html: super::document("Your account", Some(viewer), true, content),
        script: passkeys.is_some(),
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

/// The API tokens part of the account page: the user's tokens (name,
/// roles, created, expires, last used, revoke) and the form that makes one.
fn token_section(tokens: &[TokenInfo], csrf: &str, now_ms: u64) -> maud::Markup {
    let to = "/.gateway/account";
    html! {
        h2 { "API tokens" }
        p.note { "For scripts and services: send one as " code { "Authorization: Bearer agt_..." } " where the rules take tokens. It is shown once, when made." }
        @if !tokens.is_empty() {
            div.scroll {
                table #tokens {
                    tr { th { "Name" } th { "Roles" } th { "Created" } th { "Expires" } th { "Last used" } th {} }
                    @for t in tokens {
                        tr {
                            td { (t.record.name) }
                            td { (t.record.roles.as_ref().map_or("all yours".to_owned(), |r| r.join(", "))) }
                            td { (moment(t.record.created_ms, now_ms)) }
                            td { (crate::units::rfc3339(t.record.expires_ms)) }
                            td {
                                @match t.last_used_ms {
                                    Some(used) => (moment(used, now_ms)),
                                    None => "never",
                                }
                            }
                            td { (button(to, csrf, "token_revoke", &t.record.name, "Revoke")) }
                        }
                    }
                }
            }
        }
        form method="post" action=(to) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="action" value="token_create";
            label for="token-name" { "Name (letters, digits, . _ -)" }
            input type="text" id="token-name" name="name" maxlength="64" required placeholder="ci";
            label for="token-expires" { "Expires in (days; blank: 90)" }
            input type="number" id="token-expires" name="expires" min="1";
            label for="token-roles" { "Only these of your roles (blank: all)" }
            input type="text" id="token-roles" name="roles";
            button type="submit" { "Make a token" }
        }
    }
}

/// The page that shows a new token, this once.
pub fn token_made(viewer: Viewer<'_>, name: &str, token: &str) -> Page {
    let content = html! {
        h1 { "Your new API token" }
        p { "The token " strong { (name) } " is below. Copy it now: it is not shown again, and only its hash is kept." }
        pre #token { (token) }
        p { a href="/.gateway/account" { "Back to your account" } }
    };
    super::page(StatusCode::OK, "API token", Some(viewer), content)
}
