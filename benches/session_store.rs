//! Session-store benchmark: memory per live session and lookup time at
//! 10^3, 10^5 and 10^6 live sessions. Run with
//! `cargo bench --bench session_store`.
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

use authgate::session::{key_of, Lookup};
use authgate::store::memory::SessionMap;

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
        let (id, _) = store.create(&users[i % users.len()], 1, ip, USER_AGENT, now);
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--size") {
        measure(args[i + 1].parse().expect("--size N"));
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
}
