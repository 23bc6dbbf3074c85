//! The state file's own tests: upgrades, what comes back after a restart,
//! damaged and locked files.

use super::commands::list_file;
use super::*;
use crate::session::{key_of, Lookup};
use crate::store::memory::plain;

const MINUTE: u64 = 60_000;
const BASE: u64 = 1_000_000;

pub(super) fn map() -> Arc<SessionMap> {
    Arc::new(SessionMap::new(
        Duration::from_secs(60),
        Duration::from_secs(600),
    ))
}

pub(super) fn open(path: &Path, map: &Arc<SessionMap>, now: u64) -> (Local, Loaded) {
    Local::open(
        path,
        Duration::from_secs(1),
        map,
        |row| &*row.user != "gone",
        now,
    )
    .unwrap()
}

#[tokio::test]
async fn a_format_1_file_is_upgraded_and_its_sessions_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let id = crate::session::new_id();
    let key = key_of(&id).unwrap();
    {
        // What the first-wave gateway wrote.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE sessions (key BLOB PRIMARY KEY NOT NULL, user TEXT NOT NULL,
             created_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL, ip TEXT NOT NULL,
             user_agent TEXT NOT NULL, password_fingerprint INTEGER NOT NULL) WITHOUT ROWID;
             PRAGMA user_version = 1;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO sessions VALUES (?1, 'alice', ?2, ?2, '127.0.0.1', 'ua', 7)",
            params![&key[..], BASE as i64],
        )
        .unwrap();
    }
    let map = map();
    let (local, loaded) = open(&path, &map, BASE + 1_000);
    assert_eq!(loaded.live, 1);
    let Lookup::Live(live) = map.lookup(&key, BASE + 1_000, false) else {
        panic!("the old session did not come back");
    };
    // Signed in when it began, without a second factor.
    assert_eq!((live.auth_ms, live.mfa), (BASE, false));
    // A fresh sign-in is written in the new format and read back.
    let row = map.reauthenticate(&key, BASE + 2_000, true).unwrap();
    local.insert(row).await.unwrap();
    local.close().await.unwrap();
    drop(local);
    let again = super::tests::map();
    let (_local, _) = open(&path, &again, BASE + 3_000);
    let Lookup::Live(live) = again.lookup(&key, BASE + 3_000, false) else {
        panic!("gone after the upgrade");
    };
    assert_eq!((live.auth_ms, live.mfa), (BASE + 2_000, true));
}

#[tokio::test]
async fn committed_sessions_come_back_and_expired_or_unwanted_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let ids = {
        let first = map();
        let (local, loaded) = open(&path, &first, 0);
        assert_eq!(loaded, Loaded::default());
        let mut ids = Vec::new();
        for (user, at) in [("alice", 0), ("bob", 50_000), ("gone", 50_000)] {
            let (id, row) = first.create(plain(&user.into(), 1, "ua"), BASE + at);
            local.insert(row).await.unwrap();
            ids.push(id);
        }
        // Used a moment ago, but begun longer ago than the absolute timeout.
        let (_, mut old) = first.create(plain(&"carol".into(), 1, "ua"), 0);
        old.created_ms = BASE + MINUTE + 1 - 600_000;
        old.last_seen_ms = BASE + MINUTE;
        local.insert(old).await.unwrap();
        local.close().await.unwrap();
        ids
    };
    let second = map();
    let (_local, loaded) = open(&path, &second, BASE + MINUTE + 1);
    assert_eq!(
        loaded,
        Loaded {
            live: 1,
            expired: 2,
            revoked: 1
        }
    );
    assert!(matches!(
        second.lookup(&key_of(&ids[1]).unwrap(), BASE + MINUTE + 1, true),
        Lookup::Live(_)
    ));
    // The dropped ones are gone from the file too.
    assert_eq!(list_file(&path, None).unwrap().len(), 1);
}

#[tokio::test]
async fn a_graceful_close_writes_the_last_touches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let first = map();
    let (local, _) = open(&path, &first, 0);
    let (id, row) = first.create(plain(&"alice".into(), 1, "ua"), 0);
    local.insert(row).await.unwrap();
    first.lookup(&key_of(&id).unwrap(), 55_000, true);
    local.close().await.unwrap();
    // Without the touch the session would be idle at 70 s.
    let second = map();
    let (_local, loaded) = open(&path, &second, 70_000);
    assert_eq!(loaded.live, 1);
    assert_eq!(list_file(&path, None).unwrap()[0].last_seen_ms, 55_000);
}

#[test]
fn a_damaged_file_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let error = Local::open(&path, Duration::from_secs(1), &map(), |_| true, 0)
        .err()
        .expect("a damaged file is refused");
    assert!(matches!(error, StoreError::Damaged { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("Move it aside"), "{message}");
}

#[tokio::test]
async fn a_locked_file_refuses_new_sessions_instead_of_pretending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let running = map();
    let (local, _) = Local::open(&path, Duration::from_millis(100), &running, |_| true, 0).unwrap();
    let (_, alice) = running.create(plain(&"alice".into(), 1, "ua"), 0);
    local.insert(alice.clone()).await.unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (_, bob) = running.create(plain(&"bob".into(), 1, "ua"), 0);
    assert_eq!(local.insert(bob).await, Err(Unavailable));
    // A revocation that could not be written is retried until it is.
    assert_eq!(local.delete(vec![alice.key], None).await, Err(Unavailable));
    other.execute_batch("ROLLBACK").unwrap();
    let (_, carol) = running.create(plain(&"carol".into(), 1, "ua"), 0);
    local.insert(carol).await.unwrap();
    let users: Vec<_> = list_file(&path, None)
        .unwrap()
        .into_iter()
        .map(|s| s.user)
        .collect();
    assert_eq!(users, [Arc::from("carol")]);
}
