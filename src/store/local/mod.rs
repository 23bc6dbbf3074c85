//! The `local` backend's record: one SQLite file (WAL, `synchronous =
//! FULL`) that sessions are loaded from at start and written to by one
//! writer thread.
//!
//! Requests never wait for it except where an answer promises durability
//! (a sign-in's 303, a logout, a revocation): those send their change with
//! an acknowledgement and wait for the commit that carries it. Everything
//! queued meanwhile shares that commit, so a burst of sign-ins costs one
//! `fsync`, not one each. `last_seen` moves are written in a batch every
//! [`TOUCH_EVERY`]; after a crash a session may come back a few seconds
//! staler than it was, so it ends a little early, never late.
//!
//! The command line ([`commands`]) writes the same file from another
//! process. It deletes the rows and appends their keys to the `revoked`
//! table, which the writer reads every [`POLL_EVERY`] to end those sessions
//! in memory as well.

pub mod commands;
pub mod tokens;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::memory::{Row, SessionMap};
use super::{StoreError, Unavailable};
use crate::session::{handle, Key, Vouched};

/// How often `last_seen` moves are written.
pub const TOUCH_EVERY: Duration = Duration::from_secs(5);
/// How often the writer looks for revocations made by the command line.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// Most changes in one commit.
const MAX_BATCH: usize = 4096;
/// How long a revocation stays in the `revoked` table for running
/// gateways to see.
const KEEP_REVOCATIONS_MS: u64 = 10 * 60 * 1000;
/// The file format this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    key BLOB PRIMARY KEY NOT NULL,
    user TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    password_fingerprint INTEGER NOT NULL,
    auth_ms INTEGER NOT NULL DEFAULT 0,
    mfa INTEGER NOT NULL DEFAULT 0,
    vouched TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user);
CREATE TABLE IF NOT EXISTS revoked (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key BLOB NOT NULL,
    at_ms INTEGER NOT NULL
);
";

type Ack = Option<oneshot::Sender<Result<(), Unavailable>>>;

enum Op {
    Insert(Row, Ack),
    /// Removes these sessions, and with `user` every session of that user.
    Delete {
        keys: Vec<Key>,
        user: Option<Arc<str>>,
        ack: Ack,
    },
    /// Writes the pending `last_seen` moves now and answers; the writer
    /// stops after it.
    Close(Ack),
}

/// A deletion that has not reached the file yet; retried until it does,
/// so that a session ended in memory cannot come back at the next start.
struct Deletion {
    keys: Vec<Key>,
    user: Option<Arc<str>>,
}

pub struct Local {
    path: PathBuf,
    writer: Sender<Op>,
}

/// The file beside the state file `state` that keeps the secret `name`.
pub fn secret_path(state: &Path, name: &str) -> PathBuf {
    let mut file = state.file_name().unwrap_or_default().to_os_string();
    file.push(format!(".{name}-key"));
    state.with_file_name(file)
}

/// Reads the 32-byte secret `name` kept beside `state`, first making it
/// (random, mode 0600, written whole or not at all) when there is none.
pub fn secret_beside(state: &Path, name: &str) -> Result<[u8; 32], StoreError> {
    let path = secret_path(state, name);
    let unusable = |cause: String| StoreError::Unusable {
        path: path.clone(),
        cause,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            return <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                unusable(format!(
                    "it holds {} bytes, not 32; remove it and start again (the forms open in browsers then need a reload)",
                    bytes.len()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unusable(e.to_string())),
    }
    let secret: [u8; 32] = rand::random();
    // Another process may have made one meanwhile: the first one stays.
    match crate::files::write_private(&path, &secret, crate::files::Existing::Keep) {
        Ok(true) => Ok(secret),
        Ok(false) => secret_beside(state, name),
        Err(e) => Err(unusable(e.to_string())),
    }
}

/// What a start found in the file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub live: usize,
    /// Past their idle or absolute deadline while the gateway was down.
    pub expired: usize,
    /// Their user is gone, locked, or has another password now.
    pub revoked: usize,
}

pub(super) fn unusable(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Damaged {
            path: path.to_owned(),
            cause: e.to_string(),
        },
        _ => StoreError::Unusable {
            path: path.to_owned(),
            cause: e.to_string(),
        },
    }
}

/// Opens (or makes, private to its owner) the state file with the pragmas
/// every user of it needs; `lock_wait` is how long a write waits for
/// another process's lock.
pub(super) fn connect(
    path: &Path,
    lock_wait: Duration,
    create: bool,
) -> Result<Connection, StoreError> {
    if create {
        match crate::users::file::create_private(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StoreError::Unusable {
                    path: path.to_owned(),
                    cause: e.to_string(),
                })
            }
        }
    } else if !path.exists() {
        return Err(StoreError::Missing(path.to_owned()));
    }
    let fail = |e| unusable(path, e);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(lock_wait).map_err(fail)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unusable {
            path: path.to_owned(),
            cause: format!("SQLite will not keep a write-ahead log there (journal mode {mode})"),
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(fail)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(fail)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Unusable {
            path: path.to_owned(),
            cause: format!("it was written by a newer authgate (format {version}, this one knows {SCHEMA_VERSION})"),
        });
    }
    if version == 1 {
        // Format 2 adds when the password was last entered and whether the
        // second factor was passed; older sessions count as signed in at
        // their start, without one.
        conn.execute_batch(
            "ALTER TABLE sessions ADD COLUMN auth_ms INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE sessions ADD COLUMN mfa INTEGER NOT NULL DEFAULT 0;
             UPDATE sessions SET auth_ms = created_ms;",
        )
        .map_err(fail)?;
    }
    if (1..=2).contains(&version) {
        // Format 3 keeps what an identity provider said of its users.
        conn.execute_batch("ALTER TABLE sessions ADD COLUMN vouched TEXT;")
            .map_err(fail)?;
    }
    conn.execute_batch(SCHEMA).map_err(fail)?;
    // API tokens (tables of their own: a file of an older build gains
    // them; an older build never reads them).
    conn.execute_batch(tokens::SCHEMA).map_err(fail)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(fail)?;
    Ok(conn)
}

pub(super) fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let key: Vec<u8> = r.get(0)?;
    let ip: String = r.get(4)?;
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            format!("a session row has a bad {what}").into(),
        )
    };
    Ok(Row {
        key: key.try_into().map_err(|_| bad("key"))?,
        user: r.get::<_, String>(1)?.into(),
        created_ms: r.get::<_, i64>(2)? as u64,
        last_seen_ms: r.get::<_, i64>(3)? as u64,
        ip: ip.parse::<IpAddr>().map_err(|_| bad("IP address"))?,
        user_agent: r.get::<_, String>(5)?.into(),
        password_fingerprint: r.get::<_, i64>(6)? as u32,
        auth_ms: r.get::<_, i64>(7)? as u64,
        mfa: r.get::<_, i64>(8)? != 0,
        vouched: match r.get::<_, Option<String>>(9)? {
            None => None,
            Some(text) => Some(Arc::new(
                Vouched::from_record(&text).ok_or_else(|| bad("provider identity"))?,
            )),
        },
    })
}

pub(super) const SELECT_ROWS: &str = "SELECT key, user, created_ms, last_seen_ms, ip, user_agent, password_fingerprint, auth_ms, mfa, vouched FROM sessions";

impl Local {
    /// Opens the file at `path` (made if missing), puts every session in
    /// it that `keep` accepts into `map`, removes the rest from the file,
    /// and starts the writer.
    pub fn open(
        path: &Path,
        lock_wait: Duration,
        map: &Arc<SessionMap>,
        keep: impl Fn(&Row) -> bool,
        now: u64,
    ) -> Result<(Local, Loaded), StoreError> {
        let conn = connect(path, lock_wait, true)?;
        let fail = |e| unusable(path, e);
        let mut loaded = Loaded::default();
        let mut dropped: Vec<Key> = Vec::new();
        {
            let mut select = conn.prepare(SELECT_ROWS).map_err(fail)?;
            let mut rows = select.query([]).map_err(fail)?;
            let mut profiles = HashMap::new();
            while let Some(r) = rows.next().map_err(fail)? {
                let row = read_row(r).map_err(|e| StoreError::Damaged {
                    path: path.to_owned(),
                    cause: e.to_string(),
                })?;
                let expired = super::memory::expiry(
                    row.created_ms,
                    row.last_seen_ms,
                    now,
                    map.idle_ms(),
                    map.absolute_ms(),
                )
                .is_some();
                if expired {
                    loaded.expired += 1;
                    dropped.push(row.key);
                } else if !keep(&row) {
                    loaded.revoked += 1;
                    dropped.push(row.key);
                } else {
                    loaded.live += 1;
                    map.restore(row, &mut profiles);
                }
            }
        }
        let mut conn = conn;
        if !dropped.is_empty() {
            commit(
                &mut conn,
                &[],
                &[Deletion {
                    keys: dropped,
                    user: None,
                }],
                &[],
            )
            .map_err(fail)?;
        }
        let seen: i64 = conn
            .query_row("SELECT coalesce(max(seq), 0) FROM revoked", [], |r| {
                r.get(0)
            })
            .map_err(fail)?;
        let (writer, queue) = crossbeam_channel::unbounded();
        let map = Arc::downgrade(map);
        let file = path.to_owned();
        std::thread::Builder::new()
            .name("authgate-store".into())
            .spawn(move || write_loop(conn, &file, queue, map, seen))
            .map_err(|e| StoreError::Unusable {
                path: path.to_owned(),
                cause: format!("cannot start its writer: {e}"),
            })?;
        Ok((
            Local {
                path: path.to_owned(),
                writer,
            },
            loaded,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send(&self, op: impl FnOnce(Ack) -> Op) -> Result<(), Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(op(Some(tx))).map_err(|_| Unavailable)?;
        rx.await.map_err(|_| Unavailable)?
    }

    /// Records a new session; returns once it is committed.
    pub async fn insert(&self, row: Row) -> Result<(), Unavailable> {
        self.send(|ack| Op::Insert(row, ack)).await
    }

    /// Removes sessions (and all of `user`'s); returns once committed.
    pub async fn delete(&self, keys: Vec<Key>, user: Option<Arc<str>>) -> Result<(), Unavailable> {
        self.send(|ack| Op::Delete { keys, user, ack }).await
    }

    /// Removes sessions without waiting: for expiries, and for revocations
    /// whose cause is recorded elsewhere (the users file).
    pub fn delete_later(&self, keys: Vec<Key>, user: Option<Arc<str>>) {
        let _ = self.writer.send(Op::Delete {
            keys,
            user,
            ack: None,
        });
    }

    /// Writes the last `last_seen` moves and stops the writer.
    pub async fn close(&self) -> Result<(), Unavailable> {
        self.send(Op::Close).await
    }
}

/// One transaction: the retried deletions, then `ops` in order, then the
/// `last_seen` moves.
fn commit(
    conn: &mut Connection,
    ops: &[Op],
    retried: &[Deletion],
    touches: &[(Key, u64)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut delete = tx.prepare_cached("DELETE FROM sessions WHERE key = ?1")?;
        let mut delete_user = tx.prepare_cached("DELETE FROM sessions WHERE user = ?1")?;
        let mut remove = |keys: &[Key], user: &Option<Arc<str>>| -> rusqlite::Result<()> {
            for key in keys {
                delete.execute([&key[..]])?;
            }
            if let Some(user) = user {
                delete_user.execute([&**user])?;
            }
            Ok(())
        };
        for d in retried {
            remove(&d.keys, &d.user)?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO sessions (key, user, created_ms, last_seen_ms, ip, user_agent, password_fingerprint, auth_ms, mfa, vouched) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for op in ops {
            match op {
                Op::Insert(row, _) => {
                    insert.execute(params![
                        &row.key[..],
                        &*row.user,
                        row.created_ms as i64,
                        row.last_seen_ms as i64,
                        row.ip.to_string(),
                        &*row.user_agent,
                        i64::from(row.password_fingerprint),
                        row.auth_ms as i64,
                        i64::from(row.mfa),
                        row.vouched.as_ref().map(|v| v.to_record()),
                    ])?;
                }
                Op::Delete { keys, user, .. } => remove(keys, user)?,
                Op::Close(_) => {}
            }
        }
        let mut touch = tx.prepare_cached(
            "UPDATE sessions SET last_seen_ms = max(last_seen_ms, ?2) WHERE key = ?1",
        )?;
        for (key, last_seen) in touches {
            touch.execute(params![&key[..], *last_seen as i64])?;
        }
    }
    tx.commit()
}

fn write_loop(
    mut conn: Connection,
    path: &Path,
    queue: Receiver<Op>,
    map: Weak<SessionMap>,
    mut revoked_seen: i64,
) {
    let mut retry: Vec<Deletion> = Vec::new();
    let mut last_touch = Instant::now();
    let mut last_poll = Instant::now();
    let mut last_prune = Instant::now();
    let mut failing = false;
    loop {
        let mut batch = Vec::new();
        let wait = POLL_EVERY.saturating_sub(last_poll.elapsed());
        let mut stopping = match queue.recv_timeout(wait) {
            Ok(op) => {
                batch.push(op);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        stopping |= batch.iter().any(|op| matches!(op, Op::Close(_)));
        let touches = match map.upgrade() {
            Some(map) if stopping || last_touch.elapsed() >= TOUCH_EVERY => {
                last_touch = Instant::now();
                map.unsaved_touches()
            }
            _ => Vec::new(),
        };
        if !batch.is_empty() || !touches.is_empty() || !retry.is_empty() {
            let result = commit(&mut conn, &batch, &retry, &touches);
            match &result {
                Ok(()) => {
                    if failing {
                        tracing::info!(file = %path.display(), "the state file takes writes again");
                    }
                    failing = false;
                    retry.clear();
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(file = %path.display(), error = %e, "CANNOT WRITE THE STATE FILE: sign-ins and sign-outs are refused (503) until it can be written; check the disk and that no other process holds it locked");
                    }
                    failing = true;
                }
            }
            for op in batch {
                match op {
                    Op::Insert(_, ack) | Op::Close(ack) => answer(ack, &result),
                    Op::Delete { keys, user, ack } => {
                        answer(ack, &result);
                        if result.is_err() {
                            retry.push(Deletion { keys, user });
                        }
                    }
                }
            }
        }
        if stopping {
            break;
        }
        if last_poll.elapsed() >= POLL_EVERY {
            last_poll = Instant::now();
            let Some(map) = map.upgrade() else { break };
            match revoked_since(&conn, revoked_seen) {
                Ok(revoked) => {
                    for (seq, key) in revoked {
                        revoked_seen = seq;
                        if map.end(&key) {
                            map.stats().ended(crate::store::stats::Ended::Revoked, 1);
                            crate::security_event!(warn, event = "session_revoked", actor = "cli", session = %handle(&key), "session ended from the command line");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read revocations from the state file");
                }
            }
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = Instant::now();
                let before = crate::session::now_ms().saturating_sub(KEEP_REVOCATIONS_MS);
                let _ = conn.execute("DELETE FROM revoked WHERE at_ms < ?1", [before as i64]);
            }
        }
    }
}

fn answer(ack: Ack, result: &rusqlite::Result<()>) {
    if let Some(ack) = ack {
        let _ = ack.send(result.as_ref().map(|_| ()).map_err(|_| Unavailable));
    }
}

fn revoked_since(conn: &Connection, seen: i64) -> rusqlite::Result<Vec<(i64, Key)>> {
    let mut select =
        conn.prepare_cached("SELECT seq, key FROM revoked WHERE seq > ?1 ORDER BY seq")?;
    let rows = select.query_map([seen], |r| {
        let seq: i64 = r.get(0)?;
        let key: Vec<u8> = r.get(1)?;
        Ok((seq, key.try_into().unwrap_or([0; 32])))
    })?;
    rows.collect()
}

#[cfg(test)]
pub(super) mod tests;
