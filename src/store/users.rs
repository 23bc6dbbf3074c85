//! Where the users in force come from and where changes to them go: the
//! users file (read at start, watched, rewritten safely), or Redis when
//! replicas share a store (the file then only seeds an empty Redis, and
//! every replica polls for changes).

use std::sync::{Arc, Weak};

use super::redis::{Redis, POLL_USERS_EVERY};
use super::{stopped_answering, StoreError};
use crate::users::file::{Change, UserFileError, UsersFile};
use crate::users::watch::{self, Seen};
use crate::users::Users;

enum Backend {
    /// The users file, when one is configured (else the config's users
    /// stand, and no change can be saved).
    File(Option<UsersFile>),
    /// Redis, with the users file that seeded it.
    Redis {
        redis: Arc<Redis>,
        seed: Option<UsersFile>,
    },
}

/// What the running gateway hears from the user store.
pub trait UsersListener: Send + Sync + 'static {
    /// The users in force now.
    fn users(&self) -> Arc<Users>;
    /// Puts `users` in force; `actor` made the change.
    fn replace(&self, users: Users, actor: &str);
    /// The users file could not be read or has problems (already logged).
    fn file_problem(&self);
    /// The shared store's health, at each poll.
    fn store_health(&self, up: bool, round_trips: u64);
}

pub struct UserStore {
    backend: Backend,
}

impl UserStore {
    pub(super) fn new(file: Option<UsersFile>, shared: Option<Arc<Redis>>) -> UserStore {
        UserStore {
            backend: match shared {
                Some(redis) => Backend::Redis { redis, seed: file },
                None => Backend::File(file),
            },
        }
    }

    /// The users file alone, for the command line.
    pub fn file(file: UsersFile) -> UserStore {
        UserStore::new(Some(file), None)
    }

    /// The users `config`'s store keeps, for the command line; an empty
    /// shared store gets the config's users first (then `true`).
    pub async fn connect(config: &crate::Config) -> Result<(UserStore, bool), StoreError> {
        let shared = Redis::of_config(config, Default::default()).await?;
        let file = config.users_file.clone().map(UsersFile::new);
        let store = UserStore::new(file, shared.map(Arc::new));
        let seeded = store.seeded_with(&config.users).await?;
        Ok((store, seeded))
    }

    /// The users to start with, given the users file's: those, or with a
    /// shared store the ones it holds (the file's seed an empty one,
    /// unless a running replica puts back the newer users it holds).
    pub async fn load(&self, from_file: Users) -> Result<Users, StoreError> {
        let Backend::Redis { redis, .. } = &self.backend else {
            return Ok(from_file);
        };
        if self.seeded_with(&from_file).await? {
            tracing::warn!(
                users = from_file.len(),
                "Redis had no users and no running replica put any back: it was given the users of the users file"
            );
        }
        redis.users().await.map_err(stopped_answering)
    }

    /// Gives an empty shared store `users`: true if it was empty.
    async fn seeded_with(&self, users: &Users) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Redis { redis, .. } => redis
                .seed_unless_a_replica_does(users)
                .await
                .map_err(stopped_answering),
            Backend::File(_) => Ok(false),
        }
    }

    /// The users held now (read again from the file or Redis).
    pub async fn users(&self) -> Result<Users, UserFileError> {
        match &self.backend {
            Backend::Redis { redis, .. } => redis
                .users()
                .await
                .map_err(|_| UserFileError::StoreUnavailable),
            Backend::File(Some(file)) => Ok(file.load()?.1),
            Backend::File(None) => Err(UserFileError::NotConfigured),
        }
    }

    /// Why changes cannot be saved, when they cannot: the users file is
    /// read-only (a shared store always takes them).
    pub fn managed_elsewhere(&self) -> Option<String> {
        match &self.backend {
            Backend::File(Some(file)) => file.writable().err().map(|e| e.to_string()),
            Backend::File(None) | Backend::Redis { .. } => None,
        }
    }

    /// Saves `change` by `actor` (the file is written off the async
    /// threads) and returns the users that result.
    pub async fn apply(&self, change: Change, actor: &str) -> Result<Users, UserFileError> {
        match &self.backend {
            Backend::Redis { redis, .. } => {
                redis.apply(&change).await?;
                redis
                    .users()
                    .await
                    .map_err(|_| UserFileError::StoreUnavailable)
            }
            Backend::File(file) => {
                let file = file.clone().ok_or(UserFileError::NotConfigured)?;
                let actor = actor.to_owned();
                tokio::task::spawn_blocking(move || file.apply(&change, &actor))
                    .await
                    .map_err(|e| UserFileError::Invalid(format!("the writer failed: {e}")))?
            }
        }
    }

    /// Where a change went, for the command line.
    pub fn where_changes_go(&self) -> String {
        match &self.backend {
            Backend::Redis { .. } => "in Redis; every gateway applies it within a second".into(),
            Backend::File(Some(file)) => format!("({})", file.path().display()),
            Backend::File(None) => String::new(),
        }
    }

    /// Watches for changes made elsewhere (an edit of the users file, the
    /// CLI, another replica) and hands them to `listener` until it is
    /// dropped.
    pub fn watch(&self, listener: Weak<dyn UsersListener>) {
        match &self.backend {
            Backend::File(None) => {}
            Backend::File(Some(file)) => watch::spawn(file.clone(), move |path, seen| {
                let Some(listener) = listener.upgrade() else {
                    return false;
                };
                match seen {
                    Seen::Changed { users, actor } => listener.replace(users, &actor),
                    Seen::Unreadable(e) => {
                        listener.file_problem();
                        tracing::error!(file = %path.display(), error = %e, "CANNOT READ THE USERS FILE: changes to it (locks, password changes, removals) do not apply until it can be read; the last good users stay in force. Check its owner and mode");
                    }
                    Seen::Invalid(problems) => {
                        listener.file_problem();
                        tracing::error!(file = %path.display(), problems = %problems, "the users file has problems; the last good one stays in force");
                    }
                }
                true
            }),
            Backend::Redis { redis, seed } => {
                if let Some(file) = seed {
                    warn_of_file_edits(file, listener.clone());
                }
                poll(redis.clone(), listener);
            }
        }
    }
}

/// Users live in Redis; the file only seeded it. The watcher that applies
/// the file otherwise says an edit does nothing.
fn warn_of_file_edits(file: &UsersFile, listener: Weak<dyn UsersListener>) {
    if let Ok(text) = std::fs::read_to_string(file.path()) {
        file.put_in_force(&text);
    }
    watch::spawn(file.clone(), move |path, seen| {
        if matches!(seen, Seen::Changed { .. } | Seen::Invalid(_)) {
            tracing::warn!(file = %path.display(), "the users file changed, but with [store] backend = \"redis\" users live in Redis and the file only seeded it: this edit changes nothing. Use `authgate user ...`, the admin page or its API");
        }
        listener.strong_count() > 0
    });
}

/// Polls Redis for changes by other replicas, and puts this replica's
/// users back when Redis comes back empty.
fn poll(redis: Arc<Redis>, listener: Weak<dyn UsersListener>) {
    tokio::spawn(async move {
        let mut seen = redis.poll().await.ok().map(|(changes, _)| changes);
        let mut tick = tokio::time::interval(POLL_USERS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(listener) = listener.upgrade() else {
                break;
            };
            listener.store_health(redis.is_up(), redis.round_trips());
            let Ok((now, seeded)) = redis.poll().await else {
                continue;
            };
            if !seeded {
                // Redis came back empty. This replica's users came from
                // Redis and are newer than the file: put them back (one
                // replica wins), and never take the empty set for the truth.
                let users = listener.users();
                if let Ok(true) = redis.seed(&users).await {
                    tracing::error!(
                        users = users.len(),
                        last_change_seen = seen.unwrap_or(0),
                        "REDIS CAME BACK EMPTY (a FLUSHALL, or a restart without persistence): it was given back this replica's users, not the users file's, so that password changes, locks and removals made since stay in force. Check Redis's persistence"
                    );
                }
                continue;
            }
            if seen != Some(now) {
                if let Ok(users) = redis.users().await {
                    listener.replace(users, "another replica");
                    seen = Some(now);
                }
            }
        }
    });
}
