//! API tokens in the state file: the `tokens` table (the record as JSON
//! under the token's hash) and the `token_changes` counter that every
//! change bumps in the same transaction, which running gateways poll.

use rusqlite::{params, Connection, TransactionBehavior};

use crate::session::Key;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    hash BLOB PRIMARY KEY NOT NULL,
    user TEXT NOT NULL,
    record TEXT NOT NULL,
    last_used_ms INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS token_changes (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL
);
INSERT OR IGNORE INTO token_changes (id, count) VALUES (1, 0);
";

/// A token row: its hash, its record (JSON) and when it was last used.
pub type Stored = (Key, String, Option<u64>);

fn bump(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE token_changes SET count = count + 1 WHERE id = 1",
        [],
    )?;
    Ok(())
}

pub fn changes(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT count FROM token_changes WHERE id = 1", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as u64)
}

/// The change counter and every token, read in one transaction.
pub fn all(conn: &Connection) -> rusqlite::Result<(u64, Vec<Stored>)> {
    let tx = conn.unchecked_transaction()?;
    let count = changes(&tx)?;
    let mut select = tx.prepare("SELECT hash, record, last_used_ms FROM tokens")?;
    let rows = select
        .query_map([], |r| {
            let hash: Vec<u8> = r.get(0)?;
            let used: Option<i64> = r.get(2)?;
            Ok((hash, r.get::<_, String>(1)?, used.map(|u| u as u64)))
        })?
        .filter_map(|row| match row {
            Ok((hash, record, used)) => Some(Ok((hash.try_into().ok()?, record, used))),
            Err(e) => Some(Err(e)),
        })
        .collect::<rusqlite::Result<Vec<Stored>>>()?;
    drop(select);
    tx.finish()?;
    Ok((count, rows))
}

pub fn put(conn: &Connection, hash: &Key, user: &str, record: &str) -> rusqlite::Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO tokens (hash, user, record) VALUES (?1, ?2, ?3)",
        params![&hash[..], user, record],
    )?;
    bump(&tx)?;
    tx.commit()
}

/// Removes these tokens; how many there were.
pub fn delete(conn: &Connection, hashes: &[Key]) -> rusqlite::Result<usize> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let mut removed = 0;
    for hash in hashes {
        removed += tx.execute("DELETE FROM tokens WHERE hash = ?1", params![&hash[..]])?;
    }
    bump(&tx)?;
    tx.commit()?;
    Ok(removed)
}

/// Writes last-use times (never moving one back).
pub fn touch(conn: &Connection, used: &[(Key, u64)]) -> rusqlite::Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    for (hash, at) in used {
        tx.execute(
            "UPDATE tokens SET last_used_ms = MAX(COALESCE(last_used_ms, 0), ?2) WHERE hash = ?1",
            params![&hash[..], *at as i64],
        )?;
    }
    tx.commit()
}
