//! API tokens as the store keeps them: under the SHA-256 of the token
//! (the token itself is never kept), with the account, name, roles and
//! dates. The same store as the sessions: the state file (`local`), Redis
//! for replicas, or this process (`memory`).
//!
//! Every process holds all tokens in memory, so a request's lookup is one
//! hash-map read, whatever the backend. Every change bumps a counter
//! beside the tokens; each process reads that counter every
//! [`POLL_EVERY`] and reloads the tokens when it moved, so a token made
//! or revoked anywhere (another replica, the command line) counts
//! everywhere within a second. When each token was last used is noted in
//! memory and written out now and then ([`FLUSH_USED_EVERY`]); it is a
//! hint for people, never a reason to refuse.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::redis::Redis;
use super::{StoreError, Unavailable};
use crate::session::Key;

/// How often each process looks for token changes made elsewhere.
pub const POLL_EVERY: Duration = Duration::from_millis(400);
/// How often last-use times are written to the store.
pub const FLUSH_USED_EVERY: Duration = Duration::from_secs(30);

/// One token as kept (its hash is the key it is kept under).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The account's canonical name.
    pub user: String,
    /// The name its owner gave it ("ci"); unique per account.
    pub name: String,
    /// The roles it may use, a subset of the account's; `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// The account's password fingerprint when it was made (for
    /// `[tokens] end_on_password_change`).
    pub password_fingerprint: u32,
}

/// A token in force: its record, its name as a header value (made once,
/// not at each request) and its last use as noted here (ms; 0: none).
#[derive(Debug)]
pub struct TokenEntry {
    pub record: TokenRecord,
    pub name: http::HeaderValue,
    used_ms: AtomicU64,
}

impl TokenEntry {
    fn new(record: TokenRecord, used_ms: u64) -> TokenEntry {
        TokenEntry {
            name: http::HeaderValue::from_str(&record.name)
                .unwrap_or(http::HeaderValue::from_static("-")),
            record,
            used_ms: AtomicU64::new(used_ms),
        }
    }

    fn used(&self) -> u64 {
        self.used_ms.load(Ordering::Relaxed)
    }
}

/// A token as listed: its record, its handle and when it was last used.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub hash: Key,
    pub record: TokenRecord,
    pub last_used_ms: Option<u64>,
}

enum Backend {
    Memory,
    /// The state file; one connection of this process's own for tokens
    /// (writes are rare; the sessions' writer thread is not involved).
    Local {
        path: PathBuf,
        conn: Arc<Mutex<rusqlite::Connection>>,
    },
    Redis(Arc<Redis>),
}

pub struct Tokens {
    in_force: ArcSwap<HashMap<Key, Arc<TokenEntry>>>,
    /// The change counter of the tokens in force.
    seen: std::sync::atomic::AtomicU64,
    backend: Backend,
}

impl Tokens {
    /// The tokens of the store `[store]` names (with Redis, `shared`),
    /// read in.
    pub(super) async fn of_store(
        store: &crate::config::Store,
        shared: Option<Arc<Redis>>,
    ) -> Result<Tokens, StoreError> {
        use crate::config::StoreBackend;
        let tokens = match (&store.backend, shared) {
            (StoreBackend::Memory, _) => return Ok(Tokens::with(Backend::Memory)),
            (StoreBackend::Local { path }, _) => {
                let conn = super::local::connect(path, store.lock_wait, true)?;
                Tokens::with(Backend::Local {
                    path: path.clone(),
                    conn: Arc::new(Mutex::new(conn)),
                })
            }
            (StoreBackend::Redis(_), Some(redis)) => Tokens::with(Backend::Redis(redis)),
            (StoreBackend::Redis(_), None) => {
                return Err(StoreError::Redis("it is not connected".into()))
            }
        };
        tokens
            .reload()
            .await
            .map_err(|Unavailable| StoreError::Unusable {
                path: PathBuf::from("tokens"),
                cause: "the tokens could not be read".into(),
            })?;
        Ok(tokens)
    }

    /// The tokens `config`'s store keeps, for the command line (which
    /// cannot reach a `memory` store's).
    pub async fn connect(config: &crate::Config) -> Result<Tokens, StoreError> {
        if matches!(config.store.backend, crate::config::StoreBackend::Memory) {
            return Err(StoreError::NotAFile("memory"));
        }
        let shared = Redis::of_config(config, Default::default())
            .await?
            .map(Arc::new);
        Tokens::of_store(&config.store, shared).await
    }

    fn with(backend: Backend) -> Tokens {
        Tokens {
            in_force: ArcSwap::from_pointee(HashMap::new()),
            seen: Default::default(),
            backend,
        }
    }

    /// The token whose SHA-256 is `hash`, if one is in force (expired or
    /// not: the caller judges).
    pub fn get(&self, hash: &Key) -> Option<Arc<TokenEntry>> {
        self.in_force.load().get(hash).cloned()
    }

    /// Notes a use of `token` at `now` (ms): at most once a minute.
    pub fn note_use(&self, token: &TokenEntry, now: u64) {
        if now.saturating_sub(token.used()) >= 60_000 {
            token.used_ms.store(now, Ordering::Relaxed);
        }
    }

    /// Reads the tokens and the change counter again from the store and
    /// puts them in force.
    pub async fn reload(&self) -> Result<(), Unavailable> {
        let (changes, rows) = self.read_all().await?;
        let old = self.in_force.load();
        let map = rows
            .into_iter()
            .map(|info| {
                // Uses noted here and not yet written out carry over.
                let used = old.get(&info.hash).map_or(0, |e| e.used());
                (info.hash, Arc::new(TokenEntry::new(info.record, used)))
            })
            .collect();
        self.in_force.store(Arc::new(map));
        self.seen
            .store(changes, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Every token kept (of `user`, canonical, when given), with when it
    /// was last used.
    pub async fn list(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, Unavailable> {
        let (_, mut rows) = self.read_all().await?;
        rows.retain(|t| user.is_none_or(|u| t.record.user == u));
        let in_force = self.in_force.load();
        for row in &mut rows {
            let noted = in_force.get(&row.hash).map_or(0, |e| e.used());
            if noted > 0 {
                row.last_used_ms = Some(row.last_used_ms.unwrap_or(0).max(noted));
            }
        }
        rows.sort_by(|a, b| {
            (&a.record.user, &a.record.name).cmp(&(&b.record.user, &b.record.name))
        });
        Ok(rows)
    }

    /// Keeps a new token (durably, before it is shown) and puts it in force.
    pub async fn create(&self, hash: Key, record: TokenRecord) -> Result<(), Unavailable> {
        let text = serde_json::to_string(&record).expect("a token record serializes");
        match &self.backend {
            Backend::Memory => {
                let mut map = HashMap::clone(&self.in_force.load());
                map.insert(hash, Arc::new(TokenEntry::new(record, 0)));
                self.in_force.store(Arc::new(map));
                return Ok(());
            }
            Backend::Local { conn, .. } => {
                let user = record.user.clone();
                self.blocking(conn, move |c| {
                    super::local::tokens::put(c, &hash, &user, &text)
                })
                .await?
            }
            Backend::Redis(redis) => redis.token_put(&hash, &text).await?,
        }
        self.reload().await
    }

    /// Removes the tokens with these hashes; how many there were.
    pub async fn revoke(&self, hashes: Vec<Key>) -> Result<usize, Unavailable> {
        if hashes.is_empty() {
            return Ok(0);
        }
        let removed = match &self.backend {
            Backend::Memory => {
                let mut map = HashMap::clone(&self.in_force.load());
                let before = map.len();
                for hash in &hashes {
                    map.remove(hash);
                }
                let removed = before - map.len();
                self.in_force.store(Arc::new(map));
                return Ok(removed);
            }
            Backend::Local { conn, .. } => {
                self.blocking(conn, move |c| super::local::tokens::delete(c, &hashes))
                    .await?
            }
            Backend::Redis(redis) => redis.token_delete(&hashes).await?,
        };
        self.reload().await?;
        Ok(removed)
    }

    /// Starts the background work: the watch for changes made elsewhere
    /// and the writing out of last uses. It ends once the store is dropped.
    pub fn start(self: &Arc<Self>) {
        if matches!(self.backend, Backend::Memory) {
            return;
        }
        let tokens: Weak<Tokens> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_flush = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(tokens) = tokens.upgrade() else {
                    break;
                };
                let seen = tokens.seen.load(std::sync::atomic::Ordering::Relaxed);
                match tokens.changes().await {
                    Ok(now) if now != seen => {
                        if let Err(Unavailable) = tokens.reload().await {
                            tracing::warn!(
                                "the tokens could not be read again; the ones in force stay"
                            );
                        }
                    }
                    _ => {}
                }
                if last_flush.elapsed() >= FLUSH_USED_EVERY {
                    last_flush = tokio::time::Instant::now();
                    let _ = tokens.flush_used().await;
                }
            }
        });
    }

    /// Writes the noted last uses out.
    pub async fn flush_used(&self) -> Result<(), Unavailable> {
        let used: Vec<(Key, u64)> = self
            .in_force
            .load()
            .iter()
            .filter(|(_, e)| e.used() > 0)
            .map(|(hash, e)| (*hash, e.used()))
            .collect();
        if used.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Memory => Ok(()),
            Backend::Local { conn, .. } => {
                self.blocking(conn, move |c| super::local::tokens::touch(c, &used))
                    .await
            }
            Backend::Redis(redis) => redis.tokens_touch(&used).await,
        }
    }

    async fn changes(&self) -> Result<u64, Unavailable> {
        match &self.backend {
            Backend::Memory => Ok(0),
            Backend::Local { conn, .. } => self.blocking(conn, super::local::tokens::changes).await,
            Backend::Redis(redis) => redis.tokens_changes().await,
        }
    }

    async fn read_all(&self) -> Result<(u64, Vec<TokenInfo>), Unavailable> {
        let (changes, rows) = match &self.backend {
            Backend::Memory => {
                let map = self.in_force.load();
                let rows = map
                    .iter()
                    .map(|(hash, entry)| TokenInfo {
                        hash: *hash,
                        record: entry.record.clone(),
                        last_used_ms: None,
                    })
                    .collect();
                return Ok((0, rows));
            }
            Backend::Local { conn, .. } => self.blocking(conn, super::local::tokens::all).await?,
            Backend::Redis(redis) => redis.tokens_all().await?,
        };
        let rows = rows
            .into_iter()
            .filter_map(|(hash, text, last_used_ms)| {
                let record = serde_json::from_str(&text)
                    .inspect_err(|e| tracing::error!(error = %e, "a token record that does not read; left out"))
                    .ok()?;
                Some(TokenInfo {
                    hash,
                    record,
                    last_used_ms,
                })
            })
            .collect();
        Ok((changes, rows))
    }

    /// Runs `work` on the state file's connection, off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        conn: &Arc<Mutex<rusqlite::Connection>>,
        work: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Unavailable> {
        let conn = conn.clone();
        let result = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            work(&conn)
        })
        .await
        .map_err(|_| Unavailable)?;
        result.map_err(|e| {
            if let Backend::Local { path, .. } = &self.backend {
                tracing::error!(file = %path.display(), error = %e, "the state file refused a token change");
            }
            Unavailable
        })
    }
}
