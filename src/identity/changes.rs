//! Changes to the users in force: from a file edit, the admin page, the
//! command line or a shared store, each difference logged as a security event and
//! the sessions it must end ended; and saving a change.

use std::sync::Arc;

use super::{forms, Auth};
use crate::users::file::{Change, UserFileError};
use crate::users::{User, Users};

impl Auth {
    /// Puts `new` in force: logs every difference as a security event by
    /// `actor` (an admin, the user, the CLI, a file edit) and ends the
    /// sessions of users who were removed, locked, or whose password changed.
    pub fn replace_users(&self, new: Users, actor: &str) {
        let old = self.users.load_full();
        let end = |user: &Arc<str>| self.store.sessions.end_all_for_user_now(user);
        for before in old.iter() {
            let key = &before.key;
            match new.get_by_key(key) {
                None => {
                    let ended = end(key);
                    crate::security_event!(warn, event = "user_removed", actor, user = %before.name, sessions_ended = ended, "user removed");
                    self.audit.remember(
                        "user_removed",
                        actor,
                        &before.name,
                        format!("{ended} session(s) ended"),
                    );
                }
                Some(after) => {
                    if after.locked && !before.locked {
                        let ended = end(key);
                        crate::security_event!(warn, event = "user_locked", actor, user = %after.name, sessions_ended = ended, "user locked");
                        self.audit.remember(
                            "user_locked",
                            actor,
                            &after.name,
                            format!("{ended} session(s) ended"),
                        );
                    }
                    if !after.locked && before.locked {
                        crate::security_event!(warn, event = "user_unlocked", actor, user = %after.name, "user unlocked");
                        self.audit
                            .remember("user_unlocked", actor, &after.name, String::new());
                    }
                    if after.password_fingerprint != before.password_fingerprint {
                        let ended = end(key);
                        crate::security_event!(warn, event = "password_changed", actor, user = %after.name, sessions_ended = ended, "password changed");
                        self.audit.remember(
                            "password_changed",
                            actor,
                            &after.name,
                            format!("{ended} session(s) ended"),
                        );
                    }
                    match (&before.totp, &after.totp) {
                        (None, Some(_)) => {
                            crate::security_event!(warn, event = "totp_enrolled", actor, user = %after.name, "second factor enrolled");
                            self.audit
                                .remember("totp_enrolled", actor, &after.name, String::new());
                        }
                        (Some(_), None) => {
                            crate::security_event!(warn, event = "totp_reset", actor, user = %after.name, "second factor removed");
                            self.audit
                                .remember("totp_reset", actor, &after.name, String::new());
                        }
                        (Some(old), Some(new)) if old != new => {
                            crate::security_event!(warn, event = "totp_enrolled", actor, user = %after.name, "second factor enrolled again");
                        }
                        _ => {
                            if after.recovery_codes.len() < before.recovery_codes.len() {
                                crate::security_event!(warn, event = "recovery_code_used", actor, user = %after.name, left = after.recovery_codes.len(), "a recovery code was used");
                            }
                        }
                    }
                    self.passkey_changes(before, after, actor);
                    if after.roles != before.roles {
                        crate::security_event!(warn, event = "roles_changed", actor, user = %after.name, from = %before.roles.join(","), to = %after.roles.join(","), "roles changed");
                        self.audit.remember(
                            "roles_changed",
                            actor,
                            &after.name,
                            format!(
                                "[{}] -> [{}]",
                                before.roles.join(", "),
                                after.roles.join(", ")
                            ),
                        );
                    }
                }
            }
        }
        for after in new.iter() {
            if old.get_by_key(&after.key).is_none() && after.locked {
                // A provider's user locked out (or a user added locked).
                let ended = end(&after.key);
                crate::security_event!(warn, event = "user_locked", actor, user = %after.name, provider = after.provider.as_deref().unwrap_or("local"), sessions_ended = ended, "user locked");
                self.audit.remember(
                    "user_locked",
                    actor,
                    &after.name,
                    format!("{ended} session(s) ended"),
                );
            } else if old.get_by_key(&after.key).is_none() {
                crate::security_event!(warn, event = "user_added", actor, user = %after.name, roles = %after.roles.join(","), "user added");
                self.audit.remember(
                    "user_added",
                    actor,
                    &after.name,
                    format!("roles [{}]", after.roles.join(", ")),
                );
            }
        }
        self.verifier
            .match_strongest(new.iter().map(|u| &*u.password_hash));
        self.users.store(Arc::new(new));
    }

    /// Logs the passkeys added to and removed from an account. When
    /// someone other than the user takes them all away (an admin's reset),
    /// the user's sessions end, as for a lock.
    fn passkey_changes(&self, before: &User, after: &User, actor: &str) {
        let has = |user: &User, id: &str| user.passkeys.iter().any(|p| p.record.id == id);
        for added in after.passkeys.iter().filter(|p| !has(before, &p.record.id)) {
            crate::security_event!(warn, event = "passkey_added", actor, user = %after.name, passkey = %added.record.name, "passkey added");
            self.audit.remember(
                "passkey_added",
                actor,
                &after.name,
                added.record.name.clone(),
            );
        }
        let removed: Vec<_> = before
            .passkeys
            .iter()
            .filter(|p| !has(after, &p.record.id))
            .collect();
        let by_the_user = actor == format!("user {}", after.name);
        if !removed.is_empty() && after.passkeys.is_empty() && !by_the_user {
            let ended = self.store.sessions.end_all_for_user_now(&after.key);
            crate::security_event!(warn, event = "passkeys_reset", actor, user = %after.name, removed = removed.len(), sessions_ended = ended, "every passkey removed");
            self.audit.remember(
                "passkeys_reset",
                actor,
                &after.name,
                format!(
                    "{} passkey(s) removed, {ended} session(s) ended",
                    removed.len()
                ),
            );
            return;
        }
        for gone in removed {
            crate::security_event!(warn, event = "passkey_removed", actor, user = %after.name, passkey = %gone.record.name, "passkey removed");
            self.audit.remember(
                "passkey_removed",
                actor,
                &after.name,
                gone.record.name.clone(),
            );
        }
    }

    /// Why user changes cannot be saved here, when they cannot: the users
    /// file is read-only.
    pub fn users_managed_elsewhere(&self) -> Option<String> {
        self.store.users.managed_elsewhere()
    }

    /// Saves `change` (to the users file, off the async threads, or to the
    /// shared store) and puts the result in force at once.
    pub async fn change_users(&self, change: Change, actor: &str) -> Result<(), UserFileError> {
        // A provider's user is kept to be locked out (and a directory
        // user's second factor): unlocking one with nothing else kept
        // removes the entry.
        let change = match change {
            Change::Unlock(name)
                if self
                    .users()
                    .get(&name)
                    .is_some_and(|u| u.provider.is_some() && !u.has_second_factor()) =>
            {
                Change::Delete(name)
            }
            other => other,
        };
        let users = self.store.users.apply(change, actor).await?;
        self.replace_users(users, actor);
        Ok(())
    }

    /// Saves a change `user` makes to their own account (`what`: a
    /// password, a second factor). When it cannot be, the status and the
    /// words to answer with: the users are managed elsewhere, or `failed`.
    pub(crate) async fn save_own(
        &self,
        change: Change,
        user: &User,
        what: &str,
        failed: &'static str,
    ) -> Result<(), (http::StatusCode, &'static str)> {
        let Err(e) = self
            .change_users(change, &format!("user {}", user.name))
            .await
        else {
            return Ok(());
        };
        tracing::error!(user = %user.name, error = %e, "{what} could not be saved");
        Err(match e {
            UserFileError::ReadOnly { .. } => {
                (http::StatusCode::CONFLICT, forms::MANAGED_ELSEWHERE)
            }
            _ => (http::StatusCode::INTERNAL_SERVER_ERROR, failed),
        })
    }
}
