//! Noticing changes to the users file: polled every [`POLL_EVERY`], so a
//! change made by the CLI, by hand or by another replica applies within
//! about a second, on any file system (bind mounts and config maps
//! included, where change notification is unreliable). A file that does
//! not parse is reported and ignored; the last good one stays in force.

use std::sync::Weak;
use std::time::Duration;

use super::file::{sha256_hex, UsersFile};
use super::Users;
use crate::auth::Auth;

pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// Watches `file` until `auth` is dropped.
pub fn spawn(auth: Weak<Auth>, file: UsersFile) {
    tokio::spawn(async move {
        let mut last_text = tokio::fs::read_to_string(file.path()).await.ok();
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(auth) = auth.upgrade() else { break };
            let text = match tokio::fs::read_to_string(file.path()).await {
                Ok(text) => text,
                Err(e) => {
                    if last_text.is_some() {
                        tracing::error!(file = %file.path().display(), error = %e, "cannot read the users file; the last good one stays in force");
                        last_text = None;
                    }
                    continue;
                }
            };
            if last_text.as_deref() == Some(text.as_str()) {
                continue;
            }
            match Users::parse(&text, file.path()) {
                Ok(users) => {
                    let hash = sha256_hex(&text);
                    let actor = match file.last_change() {
                        Some(change) if change.sha256 == hash => change.actor,
                        _ => "file edit".to_owned(),
                    };
                    auth.replace_users(users, &actor);
                }
                Err(e) => {
                    tracing::error!(file = %file.path().display(), problems = %e, "the users file has problems; the last good one stays in force");
                }
            }
            last_text = Some(text);
        }
    });
}
