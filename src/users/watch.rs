//! Noticing changes to the users file: polled every [`POLL_EVERY`], so a
//! change made by the CLI, by hand or by another replica applies within
//! about a second, on any file system (bind mounts and config maps
//! included, where change notification is unreliable). What it finds goes
//! to a callback: new users, or a file that cannot be read or does not
//! validate (the caller keeps the last good users then).

use std::path::Path;
use std::time::Duration;

use super::file::{sha256_hex, UsersFile};
use super::Users;

pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// What the watcher saw.
pub enum Seen {
    /// The file changed and validates; `actor` made the change, as far as
    /// the writer's note tells (else "file edit").
    Changed { users: Users, actor: String },
    /// The file cannot be read (reported once until it can be again).
    Unreadable(std::io::Error),
    /// The file changed and has problems.
    Invalid(String),
}

/// Watches `file`, handing what it sees to `on_seen` until that returns false.
pub fn spawn(file: UsersFile, mut on_seen: impl FnMut(&Path, Seen) -> bool + Send + 'static) {
    tokio::spawn(async move {
        // Nothing is taken as known at first: the file may have changed
        // between the config's load and this task's start, and the first
        // look hands over what is there (the same users change nothing).
        // A read error or an invalid text is reported once, until it changes.
        let mut unreadable = false;
        let mut invalid: Option<String> = None;
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let seen = match tokio::fs::read_to_string(file.path()).await {
                Err(_) if unreadable => continue,
                Err(e) => {
                    unreadable = true;
                    Seen::Unreadable(e)
                }
                // The users in force came from this text (read here, or
                // written by this process): nothing to do.
                Ok(text) if file.is_in_force(&text) => {
                    unreadable = false;
                    continue;
                }
                Ok(text) if invalid.as_deref() == Some(text.as_str()) => continue,
                Ok(text) => {
                    unreadable = false;
                    match Users::parse(&text, file.path()) {
                        Ok(users) => {
                            invalid = None;
                            let hash = sha256_hex(&text);
                            let actor = match file.last_change() {
                                Some(change) if change.sha256 == hash => change.actor,
                                _ => "file edit".to_owned(),
                            };
                            file.put_in_force(&text);
                            Seen::Changed { users, actor }
                        }
                        Err(e) => {
                            invalid = Some(text);
                            Seen::Invalid(e.to_string())
                        }
                    }
                }
            };
            if !on_seen(file.path(), seen) {
                break;
            }
        }
    });
}
