//! The command line's way into the state file (`authgate sessions`): it
//! works beside a running gateway, which learns of revocations from the
//! `revoked` table within [`super::POLL_EVERY`].

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, TransactionBehavior};

use super::{connect, read_row, unusable, SELECT_ROWS};
use crate::session::{handle, Key, SessionInfo};
use crate::store::memory::Row;
use crate::store::StoreError;

/// What `authgate sessions revoke` ends.
#[derive(Debug, Clone)]
pub enum Revoke {
    /// Every session of this user (canonical name).
    User(String),
    All,
    /// The session with this handle.
    Handle(String),
}

/// Every session in the file at `path`, optionally of one user, for the
/// command line (a running gateway may hold newer `last_seen` values).
pub fn list_file(path: &Path, user: Option<&str>) -> Result<Vec<SessionInfo>, StoreError> {
    let conn = connect(path, Duration::from_secs(5), false)?;
    let fail = |e| unusable(path, e);
    let mut select = conn
        .prepare(&format!(
            "{SELECT_ROWS} WHERE ?1 IS NULL OR user = ?1 ORDER BY user, created_ms"
        ))
        .map_err(fail)?;
    let rows = select
        .query_map([user], read_row)
        .map_err(fail)?
        .collect::<rusqlite::Result<Vec<Row>>>()
        .map_err(fail)?;
    Ok(rows
        .into_iter()
        .map(|row| SessionInfo {
            key: row.key,
            user: row.user,
            created_ms: row.created_ms,
            last_seen_ms: row.last_seen_ms,
            ip: row.ip,
            user_agent: row.user_agent,
            vouched: row.vouched,
        })
        .collect())
}

/// Ends sessions in the file at `path`, and tells running gateways to end
/// them too (within [`POLL_EVERY`]); returns how many ended.
pub fn revoke_in_file(path: &Path, what: &Revoke, now: u64) -> Result<usize, StoreError> {
    let mut conn = connect(path, Duration::from_secs(5), false)?;
    let fail = |e| unusable(path, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let keys: Vec<Key> = {
        let mut select = tx
            .prepare("SELECT key FROM sessions WHERE ?1 = 'all' OR (?1 = 'user' AND user = ?2)")
            .map_err(fail)?;
        let (kind, arg) = match what {
            Revoke::User(user) => ("user", user.as_str()),
            Revoke::All | Revoke::Handle(_) => ("all", ""),
        };
        let all = select
            .query_map(params![kind, arg], |r| r.get::<_, Vec<u8>>(0))
            .map_err(fail)?
            .collect::<rusqlite::Result<Vec<Vec<u8>>>>()
            .map_err(fail)?;
        all.into_iter()
            .filter_map(|k| Key::try_from(k).ok())
            .filter(|k| match what {
                Revoke::Handle(h) => handle(k) == h.to_ascii_lowercase(),
                _ => true,
            })
            .collect()
    };
    {
        let mut delete = tx
            .prepare("DELETE FROM sessions WHERE key = ?1")
            .map_err(fail)?;
        let mut note = tx
            .prepare("INSERT INTO revoked (key, at_ms) VALUES (?1, ?2)")
            .map_err(fail)?;
        for key in &keys {
            delete.execute([&key[..]]).map_err(fail)?;
            note.execute(params![&key[..], now as i64]).map_err(fail)?;
        }
    }
    tx.commit().map_err(fail)?;
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::tests::{map, open};
    use super::super::POLL_EVERY;
    use super::*;
    use crate::session::key_of;
    use crate::store::memory::plain;

    #[tokio::test]
    async fn revocations_from_another_process_reach_the_running_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let running = map();
        let (local, _) = open(&path, &running, 0);
        let mut ids = Vec::new();
        for user in ["alice", "alice", "bob"] {
            let (id, row) = running.create(plain(&user.into(), 1, "ua"), 0);
            local.insert(row).await.unwrap();
            ids.push(key_of(&id).unwrap());
        }
        assert_eq!(
            revoke_in_file(&path, &Revoke::User("alice".into()), 1).unwrap(),
            2
        );
        assert_eq!(
            revoke_in_file(&path, &Revoke::Handle(handle(&ids[2]).to_uppercase()), 1).unwrap(),
            1
        );
        let deadline = Instant::now() + POLL_EVERY * 4;
        while !running.is_empty() {
            assert!(Instant::now() < deadline, "the writer did not apply them");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(list_file(&path, None).unwrap().is_empty());
    }
}
