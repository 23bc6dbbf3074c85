//! Where everything the gateway keeps lives: the one seam between the
//! gateway and its backends (`[store]` in `gateway.toml`). Nothing outside
//! this folder knows SQLite or Redis exists. [`Store`] holds one type per
//! kind of thing kept, each with its backend inside:
//! - [`Sessions`]: the sessions;
//! - [`users::UserStore`]: the users in force (the users file, or Redis);
//! - [`counters::Counters`]: the sign-in throttle's counters;
//! - [`records::Records`]: sign-ins in progress (pending second factors,
//!   secrets being enrolled, each account's last code step);
//! - [`tokens::Tokens`]: API tokens, by their hash.
//!
//! Every session backend serves from the in-memory map ([`memory`]); what
//! differs is the record behind it:
//! - `memory`: none. Sessions end with the process (tests, `demo`).
//! - `local` (the default): a SQLite file ([`local`]); sessions survive
//!   restarts and crashes, and every answer that ends or begins a session
//!   is sent only once the change is on disk.
//!
//! The calls are async and can fail with [`Unavailable`], which is not "no
//! such session": a network backend may be out of reach, and a file may
//! refuse writes. Callers answer 503 then and leave the cookie alone.

pub mod counters;
pub mod local;
pub mod memory;
pub mod records;
pub mod redis;
pub mod stats;
pub mod throttle;
pub mod tokens;
pub mod users;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::config::{Session as SessionConfig, Store as StoreConfig, StoreBackend};
use crate::session::{key_of, Key, LiveSession, Lookup, NewSession, SessionInfo};
use crate::users::Users;
use memory::SessionMap;

/// The store cannot answer or cannot make a change durable right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session store is unavailable")]
pub struct Unavailable;

/// Why a store cannot be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state file {} is damaged ({cause}). Move it aside (with any -wal and -shm file beside it) and start again: the sessions in it are lost and everyone signs in again; users are not lost, they live in the users file", .path.display())]
    Damaged { path: PathBuf, cause: String },
    #[error("cannot use the state file {}: {cause}", .path.display())]
    Unusable { path: PathBuf, cause: String },
    #[error("there is no state file at {}: no sessions have been kept there (has the gateway run with this config?)", .0.display())]
    Missing(PathBuf),
    #[error("the {0} store keeps its sessions inside the running gateway; use the admin API (/.gateway/admin/api/sessions) instead")]
    NotAFile(&'static str),
    #[error("cannot use Redis as the store: {0}")]
    Redis(String),
}

/// Everything kept, each behind its own type.
pub struct Store {
    pub sessions: Arc<Sessions>,
    pub users: users::UserStore,
    pub counters: counters::Counters,
    pub records: records::Records,
    pub tokens: Arc<tokens::Tokens>,
}

impl Store {
    /// Opens what `config` names. The sessions a durable store holds are
    /// loaded, except those expired meanwhile or whose user the users in
    /// force no longer let in; with Redis, the users come from it (the
    /// users file's seed an empty one). Returns the users in force.
    pub async fn open(
        config: &crate::Config,
        from_file: Users,
        stats: Arc<stats::Stats>,
    ) -> Result<(Store, Users), StoreError> {
        let shared = redis::Redis::of_config(config, stats.clone())
            .await?
            .map(Arc::new);
        let users = users::UserStore::new(
            config
                .users_file
                .clone()
                .map(crate::users::file::UsersFile::new),
            shared.clone(),
        );
        let in_force = users.load(from_file).await?;
        let sessions = Sessions::open(
            &config.store,
            &config.session,
            &in_force,
            stats,
            shared.clone(),
        )
        .await?;
        let limits = counters::Limits {
            max_failures: config.login.max_failures,
            window: config.login.failure_window,
        };
        let tokens = tokens::Tokens::of_store(&config.store, shared.clone()).await?;
        let store = Store {
            sessions,
            users,
            counters: counters::Counters::new(limits, shared.clone()),
            records: records::Records::new(shared),
            tokens: Arc::new(tokens),
        };
        Ok((store, in_force))
    }

    /// Drops this process's sign-in counters and records past their time.
    pub fn sweep(&self, now: u64) {
        self.counters.sweep(now);
        self.records.sweep(now);
    }
}

enum Backend {
    Memory,
    Local(local::Local),
    Redis(Arc<redis::Redis>),
}

pub struct Sessions {
    map: Arc<SessionMap>,
    backend: Backend,
}

impl Sessions {
    /// Opens the configured store. The sessions a durable one holds are
    /// loaded, except those expired meanwhile or whose user `users` no
    /// longer lets in (removed, locked, another password).
    pub async fn open(
        store: &StoreConfig,
        session: &SessionConfig,
        users: &Users,
        stats: Arc<stats::Stats>,
        shared: Option<Arc<redis::Redis>>,
    ) -> Result<Arc<Sessions>, StoreError> {
        stats.set_backend(match &store.backend {
            StoreBackend::Memory => "memory",
            StoreBackend::Local { .. } => "local",
            StoreBackend::Redis(_) => "redis",
        });
        let map = Arc::new(
            SessionMap::new(session.idle_timeout, session.absolute_timeout)
                .with_stats(stats.clone()),
        );
        let backend = match &store.backend {
            StoreBackend::Memory => Backend::Memory,
            StoreBackend::Local { path } => {
                let started = std::time::Instant::now();
                let keep = |row: &memory::Row| match (&row.vouched, users.get_by_key(&row.user)) {
                    // A provider's user whose name a local user took meanwhile.
                    (Some(_), found) => found.is_none(),
                    (None, found) => found.is_some_and(|u| {
                        !u.locked && u.password_fingerprint == row.password_fingerprint
                    }),
                };
                let (local, loaded) = local::Local::open(
                    path,
                    store.lock_wait,
                    &map,
                    keep,
                    crate::session::now_ms(),
                )?;
                tracing::info!(
                    file = %path.display(),
                    sessions = loaded.live,
                    expired = loaded.expired,
                    revoked = loaded.revoked,
                    ms = started.elapsed().as_millis() as u64,
                    "sessions loaded from the state file"
                );
                Backend::Local(local)
            }
            StoreBackend::Redis(_) => {
                Backend::Redis(shared.expect("the store opens Redis before the sessions"))
            }
        };
        Ok(Arc::new(Sessions { map, backend }))
    }

    /// A 256-bit secret called `name` that outlives the process as long as
    /// the sessions do: a file of its own beside the state file (mode
    /// 0600, made on first use; never inside the state file, whose reader
    /// must not learn it), one value in Redis that every replica shares,
    /// or a fresh one for the memory store.
    pub async fn secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        match &self.backend {
            Backend::Memory => Ok(rand::random()),
            Backend::Local(local) => local::secret_beside(local.path(), name),
            Backend::Redis(redis) => redis
                .secret(name)
                .await
                .map_err(|_| StoreError::Redis("it stopped answering".into())),
        }
    }

    /// Starts the background sweep of expired sessions (in the current
    /// tokio runtime). It ends by itself once the store is dropped.
    pub fn start_sweeper(self: &Arc<Self>) {
        let every = Duration::from_millis((self.map.idle_ms() / 2).clamp(50, 60_000));
        let store: Weak<Sessions> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { break };
                if let Backend::Redis(redis) = &store.backend {
                    redis.sweep_cache();
                }
                let swept = store.map.sweep(crate::session::now_ms());
                if !swept.is_empty() {
                    tracing::debug!(removed = swept.len(), "expired sessions swept");
                    store.forget_later(swept, None);
                }
            }
        });
    }

    fn forget_later(&self, keys: Vec<Key>, user: Option<Arc<str>>) {
        match &self.backend {
            Backend::Memory | Backend::Redis(_) => {}
            Backend::Local(local) => local.delete_later(keys, user),
        }
    }

    /// Begins a session and returns its ID (the cookie value) once the
    /// store has it for good.
    /// With Redis the session takes the user's generation from Redis, not
    /// from this replica's copy of the user (see `store::redis`).
    pub async fn create(&self, new: NewSession<'_>, now: u64) -> Result<String, Unavailable> {
        if let Backend::Redis(redis) = &self.backend {
            let id = crate::session::new_id();
            let key = key_of(&id).expect("a new ID has the right form");
            redis.create(&key, &new).await?;
            return Ok(id);
        }
        let (id, row) = self.map.create(new, now);
        match &self.backend {
            Backend::Memory | Backend::Redis(_) => Ok(id),
            Backend::Local(local) => {
                let key = row.key;
                let started = std::time::Instant::now();
                let inserted = local.insert(row).await;
                self.stats().record(started.elapsed(), inserted.is_ok());
                match inserted {
                    Ok(()) => Ok(id),
                    Err(e) => {
                        self.map.end(&key);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Finds the session for a cookie value, checking both deadlines;
    /// `touch` moves the idle deadline on.
    pub async fn lookup(&self, id: &str, now: u64, touch: bool) -> Result<Lookup, Unavailable> {
        let Some(key) = key_of(id) else {
            return Ok(Lookup::Unknown);
        };
        self.lookup_key(&key, now, touch).await
    }

    /// As [`Self::lookup`], by the store's key.
    pub async fn lookup_key(
        &self,
        key: &Key,
        now: u64,
        touch: bool,
    ) -> Result<Lookup, Unavailable> {
        let key = *key;
        let found = match &self.backend {
            Backend::Redis(redis) => redis.lookup(&key, touch).await?,
            _ => {
                let found = self.map.lookup(&key, now, touch);
                if let Lookup::Expired(_) = found {
                    self.forget_later(vec![key], None);
                }
                found
            }
        };
        if let Lookup::Expired(why) = found {
            let why = match why {
                crate::session::Expiry::Idle => stats::Ended::Idle,
                crate::session::Expiry::Absolute => stats::Ended::Absolute,
            };
            self.stats().ended(why, 1);
        }
        Ok(found)
    }

    /// Records a fresh sign-in within a live session (the password, and
    /// with `mfa` a code, entered again now); false if it is gone. Durable
    /// before it returns, like a sign-in.
    pub async fn reauthenticate(
        &self,
        key: &Key,
        mfa: bool,
        now: u64,
    ) -> Result<bool, Unavailable> {
        if let Backend::Redis(redis) = &self.backend {
            return redis.reauthenticate(key, mfa).await;
        }
        let Some(row) = self.map.reauthenticate(key, now, mfa) else {
            return Ok(false);
        };
        if let Backend::Local(local) = &self.backend {
            let started = std::time::Instant::now();
            let written = local.insert(row).await;
            self.stats().record(started.elapsed(), written.is_ok());
            written?;
        }
        Ok(true)
    }

    /// When a live session will end: (absolute, idle) deadlines in ms.
    pub fn deadlines(&self, session: &LiveSession) -> (u64, u64) {
        self.map.deadlines(session)
    }

    /// Waits until the record no longer holds these sessions.
    async fn forget(&self, keys: Vec<Key>, user: Option<Arc<str>>) -> Result<(), Unavailable> {
        match &self.backend {
            Backend::Memory | Backend::Redis(_) => Ok(()),
            Backend::Local(local) => {
                let started = std::time::Instant::now();
                let deleted = local.delete(keys, user).await;
                self.stats().record(started.elapsed(), deleted.is_ok());
                deleted
            }
        }
    }

    /// Operation times and errors, and why sessions ended.
    pub fn stats(&self) -> &Arc<stats::Stats> {
        self.map.stats()
    }

    /// Live sessions, where this process can count them (not in Redis).
    pub fn live(&self) -> Option<usize> {
        match &self.backend {
            Backend::Redis(_) => None,
            _ => Some(self.map.len()),
        }
    }

    /// Ends one session (sign-out, an admin's revocation); true if it
    /// existed. It ends in memory at once; `Ok` means it is gone for good.
    pub async fn end(&self, key: &Key) -> Result<bool, Unavailable> {
        if let Backend::Redis(redis) = &self.backend {
            return Ok(redis.end(key).await?.is_some());
        }
        if !self.map.end(key) {
            return Ok(false);
        }
        self.forget(vec![*key], None).await?;
        Ok(true)
    }

    /// Ends every session of a user (canonical name); returns how many
    /// ended once that is durable.
    pub async fn end_all_for_user(&self, user: &Arc<str>) -> Result<usize, Unavailable> {
        if let Backend::Redis(redis) = &self.backend {
            return redis.end_all_for_user(user).await;
        }
        let ended = self.map.end_all_for_user(user);
        let count = ended.len();
        self.forget(ended, Some(user.clone())).await?;
        Ok(count)
    }

    /// What `provider` now says of `user`: `Some` replaces its word in
    /// every session of the user it vouched for (new roles, headers),
    /// `None` ends those sessions. Returns how many, once durable.
    pub async fn replace_vouched(
        &self,
        user: &Arc<str>,
        provider: &str,
        vouched: Option<&Arc<crate::session::Vouched>>,
    ) -> Result<usize, Unavailable> {
        if let Backend::Redis(redis) = &self.backend {
            return redis.replace_vouched(user, provider, vouched).await;
        }
        let (changed, ended) = self.map.replace_vouched(user, provider, vouched);
        let count = changed.len() + ended.len();
        if let Backend::Local(local) = &self.backend {
            for row in changed {
                let started = std::time::Instant::now();
                let written = local.insert(row).await;
                self.stats().record(started.elapsed(), written.is_ok());
                written?;
            }
        }
        if !ended.is_empty() {
            self.forget(ended, Some(user.clone())).await?;
        }
        Ok(count)
    }

    /// Ends every session of a user whose change is already on record
    /// elsewhere (the users file says they are locked, removed or have a
    /// new password, and a restart checks that): no waiting for the store.
    pub fn end_all_for_user_now(&self, user: &Arc<str>) -> usize {
        if let Backend::Redis(redis) = &self.backend {
            // The change that brought this on bumped the user's generation
            // in Redis: what is left is this replica's memory of them.
            let count = redis.forget_user(user);
            self.stats().ended(stats::Ended::UserChange, count);
            return count;
        }
        let ended = self.map.end_all_for_user(user);
        let count = ended.len();
        self.stats().ended(stats::Ended::UserChange, count);
        self.forget_later(ended, Some(user.clone()));
        count
    }

    /// Ends the session with this handle (see [`crate::session::handle`]);
    /// returns its user.
    pub async fn end_by_handle(&self, wanted: &str) -> Result<Option<Arc<str>>, Unavailable> {
        if let Backend::Redis(redis) = &self.backend {
            let Some(key) = redis.find_handle(wanted).await? else {
                return Ok(None);
            };
            let ended = redis.end(&key).await?;
            self.stats()
                .ended(stats::Ended::Revoked, usize::from(ended.is_some()));
            return Ok(ended);
        }
        let Some((key, user)) = self.map.find_handle(wanted) else {
            return Ok(None);
        };
        let ended = self.end(&key).await?;
        self.stats()
            .ended(stats::Ended::Revoked, usize::from(ended));
        Ok(ended.then_some(user))
    }

    /// Ends a session that failed its check against the user record (same
    /// reasons as [`Self::end_all_for_user_now`]).
    pub fn end_now(&self, key: &Key) {
        if let Backend::Redis(redis) = &self.backend {
            // Its generation or fingerprint no longer matches: every
            // replica refuses it; Redis lets it expire.
            redis.forget_key(key);
            return;
        }
        if self.map.end(key) {
            self.forget_later(vec![*key], None);
        }
    }

    /// Ends the least recently used sessions of `user` past the `most`
    /// newest (`[session] max_per_user`); returns how many ended.
    pub async fn keep_at_most(&self, user: &Arc<str>, most: usize) -> Result<usize, Unavailable> {
        let mut sessions = self.list(Some(user)).await?;
        if sessions.len() <= most {
            return Ok(0);
        }
        sessions.sort_by_key(|s| (s.last_seen_ms, s.created_ms));
        let over = sessions.len() - most;
        let mut ended = 0;
        for session in &sessions[..over] {
            if self.end(&session.key).await? {
                ended += 1;
            }
        }
        self.stats().ended(stats::Ended::Revoked, ended);
        Ok(ended)
    }

    /// Every live session, optionally of one user (canonical name).
    pub async fn list(&self, user: Option<&str>) -> Result<Vec<SessionInfo>, Unavailable> {
        match &self.backend {
            Backend::Redis(redis) => redis.list(user).await,
            _ => Ok(self.map.list(user)),
        }
    }

    /// Sessions this process holds (the memory and local stores; the
    /// Redis store's are in Redis).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Writes what is not yet written (the last `last_seen` moves) and
    /// closes the record; for a graceful stop.
    pub async fn close(&self) {
        if let Backend::Local(local) = &self.backend {
            if local.close().await.is_err() {
                tracing::error!(file = %local.path().display(), "the last session activity could not be written; sessions may end a little early after the restart");
            }
        }
    }
}

/// The state file a config's store keeps, for the command line.
fn state_file(store: &StoreConfig) -> Result<&std::path::Path, StoreError> {
    match &store.backend {
        StoreBackend::Local { path } => Ok(path),
        StoreBackend::Memory => Err(StoreError::NotAFile("memory")),
        StoreBackend::Redis(_) => Err(StoreError::NotAFile("redis")),
    }
}

/// `authgate sessions list`: the sessions on record.
pub fn list_on_record(
    store: &StoreConfig,
    user: Option<&str>,
) -> Result<Vec<SessionInfo>, StoreError> {
    local::commands::list_file(state_file(store)?, user)
}

pub use local::commands::Revoke;

/// The sessions a config's store keeps, as the command line reaches them
/// beside running gateways: the state file, or Redis.
pub enum OnRecord {
    File(PathBuf),
    Redis(Box<redis::Redis>),
}

impl OnRecord {
    pub async fn open(config: &crate::Config) -> Result<OnRecord, StoreError> {
        match redis::Redis::of_config(config, Default::default()).await? {
            Some(redis) => Ok(OnRecord::Redis(Box::new(redis))),
            None => Ok(OnRecord::File(state_file(&config.store)?.to_owned())),
        }
    }

    /// Every session, optionally of one user (canonical name).
    pub async fn list(&self, user: Option<&str>) -> Result<Vec<SessionInfo>, StoreError> {
        match self {
            OnRecord::File(path) => local::commands::list_file(path, user),
            OnRecord::Redis(redis) => redis.list(user).await.map_err(stopped_answering),
        }
    }

    /// Ends what `what` names; returns how many sessions ended.
    pub async fn revoke(&self, what: &Revoke) -> Result<usize, StoreError> {
        let redis = match self {
            OnRecord::File(path) => {
                return local::commands::revoke_in_file(path, what, crate::session::now_ms())
            }
            OnRecord::Redis(redis) => redis,
        };
        let ended = match what {
            Revoke::User(user) => redis.end_all_for_user(user).await,
            Revoke::All => {
                let mut ended = 0;
                for s in redis.list(None).await.map_err(stopped_answering)? {
                    ended += usize::from(
                        redis
                            .end(&s.key)
                            .await
                            .map_err(stopped_answering)?
                            .is_some(),
                    );
                }
                Ok(ended)
            }
            Revoke::Handle(handle) => match redis.find_handle(handle).await {
                Ok(Some(key)) => redis.end(&key).await.map(|e| usize::from(e.is_some())),
                Ok(None) => Ok(0),
                Err(e) => Err(e),
            },
        };
        ended.map_err(stopped_answering)
    }

    /// When running gateways act on a revocation.
    pub fn in_force(&self) -> &'static str {
        match self {
            OnRecord::File(_) => "a running gateway ends them within a second",
            OnRecord::Redis(_) => "every gateway ends them within a second",
        }
    }
}

/// A shared store that stopped answering, as an error of the command line
/// or of a start.
fn stopped_answering(_: Unavailable) -> StoreError {
    StoreError::Redis("it stopped answering".into())
}
