//! Error pages, and the admin page's answers to a change.

use http::StatusCode;
use maud::html;

use super::{message, Page, Viewer};

/// A small page saying what went wrong (`message`), with the status code.
pub fn page(status: StatusCode, title: &str, text: &str) -> Page {
    let content = html! {
        h1 { (title) }
        p { (text) }
        p.status { (status.as_u16()) }
    };
    super::page(status, title, None, content)
}

/// A change that was refused, with the way back.
pub fn not_changed(status: StatusCode, viewer: Viewer<'_>, why: &str, back: &str) -> Page {
    let content = html! {
        h1 { "Not changed" }
        (message(false, why))
        p { a href=(back) { "Back" } }
    };
    super::page(status, "Not changed", Some(viewer), content)
}

/// A password made for `user`, shown to the admin this once.
pub fn shown_once(viewer: Viewer<'_>, user: &str, password: &str, what: &str) -> Page {
    let content = html! {
        h1 { (what) }
        (message(true, &format!("{user}: {what}.")))
        p { "The new password, shown this once (give it to them; they can change it at /.gateway/password):" }
        p { code { (password) } }
        p { a href="/.gateway/admin/" { "Back" } }
    };
    super::page(StatusCode::OK, "Done", Some(viewer), content)
}
