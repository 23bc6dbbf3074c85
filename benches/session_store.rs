//! Session-store benchmark: memory per live session and lookup time at
//! 10^3, 10^5 and 10^6 live sessions; then the durable `local` store
//! against `memory`: how long a new session takes to be kept (what a
//! sign-in waits for), and how long a start takes to load a state file of
//! 10^6 sessions. Run with `cargo bench --bench session_store`.
//!
//! Each size runs in a fresh child process, so that memory freed by one size
//! cannot hide what the next one takes. Memory is resident-set growth while
//! the sessions are made (the store, its profiles and the allocator's
//! overhead); lookups are single-threaded, each one a full check as a
//! request makes it: SHA-256 of the cookie value, the map lookup, both
//! deadlines, and moving the idle deadline on.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::config::{Session as SessionConfig, Store, StoreBackend};
use authgate::session::{key_of, now_ms, Lookup, NewSession};
use authgate::store::memory::SessionMap;
use authgate::store::Sessions;
use authgate::users::Users;
use futures_util::StreamExt;

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const LOOKUPS: usize = 1_000_000;
/// A real browser's user agent: the strings a store holds in practice.
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn measure(size: usize) {
    let store = SessionMap::new(Duration::from_secs(1800), Duration::from_secs(8 * 3600));
    let users: Vec<Arc<str>> = (0..1000).map(|i| format!("user{i}").into()).collect();
    let sample_every = (size / 10_000).max(1);
    let mut sample = Vec::with_capacity(size / sample_every + 1);
    let now = authgate::session::now_ms();
    let before = rss_bytes();
    for i in 0..size {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32));
        let (id, _) = store.create(
            NewSession {
                user: &users[i % users.len()],
                password_fingerprint: 1,
                ip,
                user_agent: USER_AGENT,
                mfa: false,
                vouched: None,
                proved_ms: None,
            },
            now,
        );
        if i % sample_every == 0 {
            sample.push(id);
        }
    }
    let grown = rss_bytes().saturating_sub(before);

    let started = Instant::now();
    let mut live = 0usize;
    for i in 0..LOOKUPS {
        if let Lookup::Live(_) = store.lookup(
            &key_of(&sample[i % sample.len()]).unwrap(),
            now + i as u64 / 1000,
            true,
        ) {
            live += 1;
        }
    }
    let per_lookup = started.elapsed().as_nanos() as f64 / LOOKUPS as f64;
    assert_eq!(live, LOOKUPS);
    println!(
        "{size:>9} sessions   {:>8.1} MiB   {:>6.0} B/session   lookup {per_lookup:>6.0} ns",
        grown as f64 / 1048576.0,
        grown as f64 / size as f64,
    );
}

/// A stand-in password hash: loading checks each session's fingerprint
/// against its user's, not the password.
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0Wd3o6T3ooE7kQ2oxLMhxfC8EBDqBb7DTKcWrMCsHrg";
const USERS: usize = 1000;
const LOADED: usize = 1_000_000;
const CREATES: usize = 500;

fn stores(dir: &std::path::Path) -> (Store, Store, SessionConfig, Users) {
    let local = Store {
        backend: StoreBackend::Local {
            path: dir.join("state.db"),
        },
        lock_wait: Duration::from_secs(5),
    };
    let memory = Store {
        backend: StoreBackend::Memory,
        lock_wait: Duration::from_secs(5),
    };
    let session = SessionConfig {
        cookie_name: "__Host-authgate".into(),
        cookie_domain: None,
        idle_timeout: Duration::from_secs(1800),
        absolute_timeout: Duration::from_secs(8 * 3600),
        max_per_user: 100,
    };
    let text: String = (0..USERS)
        .map(|i| format!("[users.user{i}]\npassword = \"{HASH}\"\nroles = [\"user\"]\n"))
        .collect();
    let users = Users::parse(&text, std::path::Path::new("users.toml")).unwrap();
    (local, memory, session, users)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0
}

async fn durable() {
    // Under target/, not /tmp: /tmp is often a tmpfs, where fsync is free.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (local, memory, session, users) = stores(dir.path());
    let fingerprint = authgate::users::password_fingerprint(HASH);
    let user_keys: Vec<Arc<str>> = (0..USERS).map(|i| format!("user{i}").into()).collect();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // One sign-in at a time: each waits for its own commit (an fsync).
    let on_disk = Sessions::open(&local, &session, &users, Default::default(), None)
        .await
        .unwrap();
    let in_memory = Sessions::open(&memory, &session, &users, Default::default(), None)
        .await
        .unwrap();
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for i in 0..CREATES {
        for (which, store) in [&on_disk, &in_memory].into_iter().enumerate() {
            let started = Instant::now();
            store
                .create(
                    NewSession {
                        user: &user_keys[i % USERS],
                        password_fingerprint: fingerprint,
                        ip,
                        user_agent: USER_AGENT,
                        mfa: false,
                        vouched: None,
                        proved_ms: None,
                    },
                    now_ms(),
                )
                .await
                .unwrap();
            times[which].push(started.elapsed());
        }
    }
    for t in &mut times {
        t.sort();
    }
    println!(
        "new session kept, one at a time ({CREATES} each): local p50 {:.3} ms p99 {:.3} ms; memory p50 {:.3} ms p99 {:.3} ms; p50 difference {:.3} ms",
        percentile(&times[0], 0.5),
        percentile(&times[0], 0.99),
        percentile(&times[1], 0.5),
        percentile(&times[1], 0.99),
        percentile(&times[0], 0.5) - percentile(&times[1], 0.5),
    );

    // 10^6 sessions made at once share commits; then a start loads them.
    let started = Instant::now();
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for i in CREATES..LOADED {
        let store = on_disk.clone();
        let user = user_keys[i % USERS].clone();
        pending.push(async move {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32));
            store
                .create(
                    NewSession {
                        user: &user,
                        password_fingerprint: fingerprint,
                        ip,
                        user_agent: USER_AGENT,
                        mfa: false,
                        vouched: None,
                        proved_ms: None,
                    },
                    now_ms(),
                )
                .await
                .unwrap();
        });
        if pending.len() >= 20_000 {
            pending.next().await;
        }
    }
    while pending.next().await.is_some() {}
    let made = started.elapsed();
    on_disk.close().await;
    drop(on_disk);
    let size = std::fs::metadata(dir.path().join("state.db"))
        .unwrap()
        .len()
        + std::fs::metadata(dir.path().join("state.db-wal")).map_or(0, |m| m.len());
    let started = Instant::now();
    let loaded = Sessions::open(&local, &session, &users, Default::default(), None)
        .await
        .unwrap();
    let load = started.elapsed();
    assert_eq!(loaded.len(), LOADED);
    println!(
        "{LOADED} sessions: made and kept in {:.1} s (concurrent, group commits); state file {:.0} MiB; loaded at start in {:.2} s",
        made.as_secs_f64(),
        size as f64 / 1048576.0,
        load.as_secs_f64(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--size") {
        measure(args[i + 1].parse().expect("--size N"));
        return;
    }
    if args.iter().any(|a| a == "--durable") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(durable());
        return;
    }
    println!("session store: memory and lookup time by live sessions ({LOOKUPS} lookups each)");
    let me = std::env::current_exe().expect("the bench binary");
    for size in SIZES {
        let status = Command::new(&me)
            .args(["--size", &size.to_string()])
            .status()
            .expect("the bench runs itself per size");
        assert!(status.success());
    }
    println!("local (SQLite) store against memory:");
    let status = Command::new(&me)
        .arg("--durable")
        .status()
        .expect("the bench runs itself");
    assert!(status.success());
}
