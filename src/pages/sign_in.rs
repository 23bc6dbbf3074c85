//! The pages of signing in and out: the sign-in form, the code step, a
//! second factor's enrollment, the fresh sign-in a route may ask for, the
//! password change and sign-out.

use http::StatusCode;
use maud::{html, Markup, PreEscaped};

use super::{form, message, page, Page, Viewer};

/// The code field of the second step, enrollment and re-authentication.
fn code_input() -> Markup {
    html! {
        label for="code" { "Code from your authenticator app" }
        input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code"
            autocapitalize="none" spellcheck="false" required autofocus;
    }
}

fn password_input(autofocus: bool) -> Markup {
    html! {
        label for="password" { "Password" }
        input type="password" id="password" name="password" autocomplete="current-password" required autofocus[autofocus];
    }
}

fn error_of(error: Option<&str>) -> Markup {
    html! { @if let Some(e) = error { (message(false, e)) } }
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
    ways: Ways<'_>,
) -> Page {
    let next_query: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let content = html! {
        // The organisation's words: plain text, escaped, no assets.
        @if let Some(title) = &words.title {
            p.note { strong { (title) } }
        }
        h1 { "Sign in" }
        @if let Some(notice) = &words.notice {
            p.note {
                @for (i, line) in notice.split('\n').enumerate() {
                    @if i > 0 { br; }
                    (line)
                }
            }
        }
        (error_of(error))
        // One button per identity provider: a plain link, so that a
        // click is a top-level navigation the provider can answer.
        @for provider in ways.providers {
            p {
                a.button href=(format!("/.gateway/oidc/{}/start?next={next_query}", provider.name)) {
                    (provider.title)
                }
            }
        }
        @if ways.local {
            @if !ways.providers.is_empty() {
                p.note { "Or with a username and password:" }
            }
            (form("/.gateway/login", csrf, html! {
                input type="hidden" name="next" value=(next);
                label for="username" { "Username" }
                input type="text" id="username" name="username" autocomplete="username webauthn"
                    autocapitalize="none" spellcheck="false" required autofocus;
                (password_input(false))
                button type="submit" { "Sign in" }
            }))
            // Shown by the script where the browser has passkeys.
            p {
                button.secondary type="button" id="passkey-sign-in" hidden
                    data-csrf=(csrf) data-next=(next) data-autofill {
                    "Sign in with a passkey"
                }
            }
            (super::passkey_script())
        }
    };
    let title = match &words.title {
        Some(t) => format!("Sign in · {t}"),
        None => "Sign in".to_owned(),
    };
    Page {
        script: ways.local,
        ..page(status, &title, None, content)
    }
}

/// For a person a provider vouched for, on the password and second-factor
/// pages: those live at the provider.
pub fn kept_by_provider(viewer: Viewer<'_>, provider: &str) -> Page {
    let content = html! {
        h1 { "Kept by your sign-in service" }
        @if provider == crate::config::Ldap::NAME {
            p { "Your password is the company directory's (" strong { (provider) } "): change it there, not here." }
        } @else {
            p { "You signed in through " strong { (provider) } ": your password and second factor are kept there, not here." }
        }
        p { a href="/.gateway/account" { "Back to your account" } }
    };
    page(
        StatusCode::FORBIDDEN,
        "Kept by your sign-in service",
        Some(viewer),
        content,
    )
}

/// The ways to sign in the page offers.
#[derive(Clone, Copy)]
pub struct Ways<'a> {
    /// The username and password form (`[login] local`).
    pub local: bool,
    /// A button for each.
    pub providers: &'a [std::sync::Arc<crate::config::OidcProvider>],
}

impl Ways<'_> {
    pub fn of(config: &crate::config::Config) -> Ways<'_> {
        Ways {
            local: config.login.local,
            providers: &config.oidc,
        }
    }
}

/// A sign-in through an identity provider that did not come through: what
/// failed, in words (the provider's own words escaped), and a way back.
pub fn provider_failed(
    status: StatusCode,
    provider: &str,
    what: &str,
    detail: Option<&str>,
) -> Page {
    let content = html! {
        h1 { "Sign-in failed" }
        p.error role="alert" { (what) }
        @if let Some(detail) = detail {
            p.note { (provider) " said: " code { (detail) } }
        }
        p { a href="/.gateway/login" { "Back to the sign-in page" } }
    };
    page(status, "Sign-in failed", None, content)
}

/// The sign-out page: a button that posts the session's token.
pub fn logout(signed_in: Option<(Viewer<'_>, &str)>) -> Page {
    let content = match signed_in {
        Some((viewer, csrf)) => html! {
            h1 { "Sign out" }
            p { "Signed in as " strong { (viewer.name) } "." }
            (form("/.gateway/logout", csrf, html! { button type="submit" { "Sign out" } }))
        },
        None => html! {
            h1 { "Signed out" }
            p.note { "You are not signed in." }
            p { a href="/.gateway/login" { "Sign in" } }
        },
    };
    page(
        StatusCode::OK,
        "Sign out",
        signed_in.map(|(v, _)| v),
        content,
    )
}

/// The password-change form. `outcome` is (success?, text).
pub fn password(
    status: StatusCode,
    viewer: Viewer<'_>,
    csrf: &str,
    outcome: Option<(bool, &str)>,
) -> Page {
    let content = html! {
        h1 { "Change password" }
        p.note { "Signed in as " strong { (viewer.name) } "." }
        @if let Some((ok, text)) = outcome { (message(ok, text)) }
        (form("/.gateway/password", csrf, html! {
            label for="current" { "Current password" }
            input type="password" id="current" name="current" autocomplete="current-password" required;
            label for="new" { "New password (at least 12 characters)" }
            input type="password" id="new" name="new" autocomplete="new-password" minlength="12" required;
            button type="submit" { "Change password" }
        }))
    };
    page(status, "Change password", Some(viewer), content)
}

/// The second step of a sign-in: the code (or a recovery code).
pub fn login_code(status: StatusCode, csrf: &str, error: Option<&str>) -> Page {
    let content = html! {
        h1 { "Second step" }
        (error_of(error))
        (form("/.gateway/login/code", csrf, html! {
            (code_input())
            p.note { "No phone? Enter one of your recovery codes instead." }
            button type="submit" { "Sign in" }
        }))
    };
    page(status, "Sign in", None, content)
}

/// The passkey step of a sign-in; `has_totp`: a code is the alternative.
pub fn login_passkey(csrf: &str, has_totp: bool) -> Page {
    let content = html! {
        h1 { "Second step" }
        p { "Use your passkey: your browser will ask for it." }
        p {
            button type="button" id="passkey-sign-in" hidden data-csrf=(csrf) {
                "Use a passkey"
            }
        }
        @if has_totp {
            p { a href="/.gateway/login/code" { "Use a code from your app instead" } }
        }
        (super::passkey_script())
    };
    Page {
        script: true,
        ..page(StatusCode::OK, "Sign in", None, content)
    }
}

/// Enrollment, first step: the password again. `viewer` is `None` while
/// the sign-in that must enroll is pending.
pub fn totp_password(
    status: StatusCode,
    user: &str,
    viewer: Option<Viewer<'_>>,
    csrf: &str,
    next: &str,
    error: Option<&str>,
) -> Page {
    let content = html! {
        h1 { "Set up a second factor" }
        (error_of(error))
        p {
            "Signed in as " strong { (user) } ". "
            "Enter your password to begin; then scan a code with an authenticator app."
        }
        (form("/.gateway/totp", csrf, html! {
            input type="hidden" name="step" value="password";
            input type="hidden" name="next" value=(next);
            (password_input(true))
            button type="submit" { "Continue" }
        }))
    };
    page(status, "Second factor", viewer, content)
}

/// Enrollment, second step: the secret as a QR code and as text, and a
/// code to prove the app has it. `qr_svg` is markup made by the gateway.
pub fn totp_scan(
    status: StatusCode,
    viewer: Option<Viewer<'_>>,
    qr_svg: &str,
    secret: &str,
    csrf: &str,
    next: &str,
    error: Option<&str>,
) -> Page {
    // The secret in groups of four, as apps show it.
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let content = html! {
        h1 { "Scan this code" }
        (error_of(error))
        p {
            "Scan it with an authenticator app (any that speaks TOTP), or type the key below into it. "
            "Then enter the 6-digit code the app shows."
        }
        div.qr aria-label="QR code of the key" { (PreEscaped(qr_svg)) }
        p.note { "Key: " code { (grouped.join(" ")) } }
        (form("/.gateway/totp", csrf, html! {
            input type="hidden" name="step" value="confirm";
            input type="hidden" name="next" value=(next);
            (code_input())
            button type="submit" { "Turn it on" }
        }))
    };
    page(status, "Second factor", viewer, content)
}

/// Enrollment done: the recovery codes, shown this once.
pub fn totp_recovery(viewer: Option<Viewer<'_>>, codes: &[String], next: &str) -> Page {
    let content = html! {
        h1 { "Second factor on" }
        (message(true, "From now on, signing in asks for a code from your app."))
        p {
            "Keep these recovery codes somewhere safe: each works once, in place of a code, "
            "if the phone is lost. They are not shown again."
        }
        ul { @for c in codes { li { code { (c) } } } }
        p { a href=(next) { "Continue" } }
    };
    page(StatusCode::OK, "Second factor", viewer, content)
}

/// For a user who has a second factor already.
pub fn totp_enrolled(viewer: Viewer<'_>, recovery_left: usize) -> Page {
    let content = html! {
        h1 { "Second factor" }
        p {
            "The account " strong { (viewer.name) } " signs in with a code from an authenticator app. "
            (recovery_left) " recovery code(s) left."
        }
        p.note {
            "Lost the phone? Sign in with a recovery code, and ask an admin to reset the second "
            "factor so that you can set it up again."
        }
        p { a href="/" { "Continue" } }
    };
    page(StatusCode::OK, "Second factor", Some(viewer), content)
}

/// A fresh sign-in within a session: the password, and the code if the
/// user has a second factor.
pub fn reauth(
    status: StatusCode,
    viewer: Viewer<'_>,
    csrf: &str,
    next: &str,
    with_code: bool,
    with_passkey: bool,
    error: Option<&str>,
) -> Page {
    let content = html! {
        h1 { "Confirm it is you" }
        (error_of(error))
        p { "This page asks for a recent sign-in. Signed in as " strong { (viewer.name) } "." }
        // A passkey is the password and the second factor at once.
        @if with_passkey {
            p {
                button type="button" id="passkey-sign-in" hidden data-csrf=(csrf) data-next=(next)
                    data-options="/.gateway/reauth/passkey/options" data-finish="/.gateway/reauth/passkey" {
                    "Use a passkey"
                }
            }
            (super::passkey_script())
            p.note { "Or with your password" @if with_code { " and a code" } ":" }
        }
        (form("/.gateway/reauth", csrf, html! {
            input type="hidden" name="next" value=(next);
            (password_input(true))
            @if with_code { (code_input()) }
            button type="submit" { "Continue" }
        }))
    };
    Page {
        script: with_passkey,
        ..page(status, "Sign in again", Some(viewer), content)
    }
}
