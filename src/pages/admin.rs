//! `/.gateway/admin/`: users, sessions and recent security events, with a
//! button for every change (each a CSRF-protected form).

use http::StatusCode;
use maud::html;

use super::{browser, button, form, moment, Page, Viewer};
use crate::session::{self, SessionInfo};
use crate::users::Users;

/// One administrative event as the page lists it.
pub struct Event<'a> {
    pub at_ms: u64,
    pub event: &'a str,
    pub actor: &'a str,
    pub user: &'a str,
    pub detail: &'a str,
}

/// One per-client summary of failed sign-ins.
pub struct SignIns {
    pub last_ms: u64,
    pub text: String,
}

/// What the admin page shows.
pub struct Admin<'a> {
    pub users: &'a Users,
    pub sessions: Vec<SessionInfo>,
    pub events: Vec<Event<'a>>,
    pub sign_ins: Vec<SignIns>,
    /// Why users cannot be changed here, when they cannot.
    pub managed_elsewhere: Option<String>,
}

pub fn page(viewer: Viewer<'_>, admin: Admin<'_>, csrf: &str, now_ms: u64) -> Page {
    let to = "/.gateway/admin/";
    let mut users: Vec<_> = admin.users.iter().collect();
    users.sort_by(|a, b| a.key.cmp(&b.key));
    let mut sessions = admin.sessions;
    sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen_ms));
    let content = html! {
        h1 { "Users and sessions" }
        @if let Some(why) = &admin.managed_elsewhere {
            p.error role="status" {
                "Users are managed elsewhere: " (why) ". Sessions can still be ended here."
            }
        }
        // On a phone each user is a block of labelled lines, buttons included.
        div.scroll {
            table.stack {
                tr { th { "User" } th { "Roles" } th { "State" } th { "Second factor" } th { "Sessions" } th {} }
                @for user in &users {
                    tr {
                        td { (user.name) }
                        td data-label="Roles" {
                            (form(to, csrf, html! {
                                input type="hidden" name="action" value="roles";
                                input type="hidden" name="target" value=(user.name);
                                input type="text" name="roles" value=(user.roles.join(", "))
                                    aria-label=(format!("roles of {}", user.name)) size="14";
                                button.small type="submit" { "Set roles" }
                            }))
                        }
                        td data-label="State" {
                            @if user.locked { "locked" } @else { "active" }
                            @if let Some(provider) = &user.provider { " (" (provider) " user)" }
                        }
                        td data-label="Second factor" {
                            @if user.totp.is_some() {
                                "TOTP, " (user.recovery_codes.len()) " recovery code(s) left "
                                (button(to, csrf, "totp_reset", &user.name, "Reset"))
                            } @else if user.passkeys.is_empty() { "none" }
                            @if !user.passkeys.is_empty() {
                                br;
                                (user.passkeys.len()) " passkey(s) "
                                (button(to, csrf, "passkeys_reset", &user.name, "Remove all"))
                            }
                        }
                        td data-label="Sessions" { (sessions.iter().filter(|s| s.user == user.key).count()) }
                        td.actions {
                            @if user.locked {
                                (button(to, csrf, "unlock", &user.name, "Unlock"))
                            } @else {
                                (button(to, csrf, "lock", &user.name, "Lock"))
                            }
                            (button(to, csrf, "revoke", &user.name, "End all sessions"))
                            (button(to, csrf, "reset_password", &user.name, "Reset password"))
                            (button(to, csrf, "delete", &user.name, "Delete"))
                        }
                    }
                }
            }
        }
        h2 { "Add a user" }
        (form(to, csrf, html! {
            input type="hidden" name="action" value="add";
            label for="new-name" { "Name" }
            input type="text" id="new-name" name="name" required;
            label for="new-roles" { "Roles (comma-separated)" }
            input type="text" id="new-roles" name="roles" value="user";
            label for="new-password" { "Password (empty: one is made and shown once)" }
            input type="password" id="new-password" name="password" autocomplete="new-password";
            button.small type="submit" { "Add" }
        }))
        h2 { "Live sessions" }
        div.scroll {
            table {
                tr { th { "User" } th { "IP" } th { "Browser" } th { "Last seen" } th {} }
                @for s in &sessions {
                    tr {
                        @match &s.vouched {
                            Some(v) => td { (v.user.name) " (" (v.provider()) ")" },
                            None => td { (admin.users.get_by_key(&s.user).map_or(&*s.user, |u| &*u.name)) },
                        }
                        td { (s.ip) }
                        td title=(s.user_agent) { (browser(&s.user_agent)) }
                        td { (moment(s.last_seen_ms, now_ms)) }
                        td.actions {
                            (button(to, csrf, "end_session", &session::handle(&s.key), "End"))
                            // A provider's user has no row above: lock them out from here.
                            @if let Some(v) = &s.vouched {
                                (button(to, csrf, "lock_provider_user", &format!("{}/{}", v.provider(), v.user.name), "Lock out"))
                            }
                        }
                    }
                }
                @if sessions.is_empty() { tr { td colspan="5" { "none" } } }
            }
        }
        h2 { "Recent security events" }
        div.scroll {
            table {
                tr { th { "When" } th { "Event" } th { "By" } th { "User" } th {} }
                @for e in &admin.events {
                    tr {
                        td { (moment(e.at_ms, now_ms)) }
                        td { (e.event) }
                        td { (e.actor) }
                        td { (e.user) }
                        td { (e.detail) }
                    }
                }
                @if admin.events.is_empty() { tr { td colspan="5" { "none yet" } } }
            }
        }
        h2 { "Failed sign-ins" }
        div.scroll {
            table {
                tr { th { "Last" } th { "Summary" } }
                @for s in &admin.sign_ins {
                    tr { td { (moment(s.last_ms, now_ms)) } td { (s.text) } }
                }
                @if admin.sign_ins.is_empty() { tr { td colspan="2" { "none" } } }
            }
        }
    };
    Page {
        status: StatusCode::OK,
        html: super::document("Admin", Some(viewer), true, content),
        script: false,
    }
}
