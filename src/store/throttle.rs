//! Brute-force throttling (SPEC §3).
//!
//! Attempts are counted per account (canonical username, existing or not,
//! so that a throttled answer says nothing about existence) and per client
//! address (the client as [`crate::forwarded`] finds it): an IPv4
//! address; an IPv6 client by its /64 (one host has a whole /64 to cycle
//! through) and also by its /48 with 16x that allowance (one site's
//! allocation). A fixed window starts at the first attempt; once a key has
//! its allowance in the window, every attempt is refused until the window
//! ends, the right password included.
//!
//! An attempt is *reserved* before the password is hashed, atomically
//! against the allowance, and given back if the password was right or the
//! attempt never got verified. So however many guesses arrive at once, at
//! most the allowance of them is ever verified per window.
//!
//! The maps are bounded: keys have a fixed size (usernames are hashed), and
//! a full map drops ended windows first, then windows that are not blocking
//! anyone; a window that is blocking is never dropped to make room, so
//! flooding the map with fresh keys cannot unblock an account under attack.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    /// Failures plus attempts being verified right now.
    attempts: u32,
}

/// An account as the throttle keys it: 128 bits of the SHA-256 of the
/// canonical name, so a megabyte of username costs 16 bytes here.
type AccountKey = [u8; 16];

/// A client as the throttle keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4([u8; 4]),
    V6Net64([u8; 8]),
    V6Net48([u8; 6]),
}

/// Per-client allowance, as a multiple of the per-account one.
pub const CLIENT_FACTOR: u32 = 4;
/// Per-/48 allowance, as a multiple of the per-client one.
pub const NET48_FACTOR: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_secs: u64,
}

pub struct Throttle {
    accounts: DashMap<AccountKey, Window>,
    clients: DashMap<ClientKey, Window>,
    /// Both change on a config reload; windows already open keep their start.
    max_failures: AtomicU32,
    window_ms: AtomicU64,
    capacity: usize,
}

fn account_key(account: &str) -> AccountKey {
    let digest = Sha256::digest(account.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// The keys a client is counted under: one for IPv4, two for IPv6.
fn client_keys(ip: IpAddr) -> [Option<ClientKey>; 2] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => [Some(ClientKey::V4(v4.octets())), None],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut net64 = [0u8; 8];
            net64.copy_from_slice(&o[..8]);
            let mut net48 = [0u8; 6];
            net48.copy_from_slice(&o[..6]);
            [
                Some(ClientKey::V6Net64(net64)),
                Some(ClientKey::V6Net48(net48)),
            ]
        }
    }
}

/// The counters a shared store (Redis) keeps for an attempt: `a:` for the
/// account, `c:` for each client key, with their allowances; the account's
/// comes first. Same keys and allowances as the in-memory throttle.
pub fn shared_counters(account: &str, ip: IpAddr, max_failures: u32) -> Vec<(String, u32)> {
    let hex = crate::hex;
    let client = max_failures.saturating_mul(CLIENT_FACTOR);
    let mut counters = vec![(format!("a:{}", hex(&account_key(account))), max_failures)];
    for key in client_keys(ip).into_iter().flatten() {
        counters.push(match key {
            ClientKey::V4(o) => (format!("c:4:{}", hex(&o)), client),
            ClientKey::V6Net64(o) => (format!("c:64:{}", hex(&o)), client),
            ClientKey::V6Net48(o) => (
                format!("c:48:{}", hex(&o)),
                client.saturating_mul(NET48_FACTOR),
            ),
        });
    }
    counters
}

/// One attempt held against the allowances until it is settled. Dropped
/// unsettled (the request was cancelled, the hashing queue was full), it
/// is given back: nothing was learnt from it.
#[must_use = "settle the attempt with failed() or succeeded()"]
pub struct Reservation<'a> {
    throttle: &'a Throttle,
    account: (AccountKey, u64),
    clients: [Option<(ClientKey, u64)>; 2],
    settled: bool,
}

impl Reservation<'_> {
    /// The password was wrong: the attempt stays counted.
    pub fn failed(mut self) {
        self.settled = true;
    }

    /// The password was right: the account's count starts again (not the
    /// client's: one good password must not reset a spray across other
    /// accounts), and this attempt is not held against the client.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.throttle.accounts.remove(&self.account.0);
        for (key, start) in self.clients.into_iter().flatten() {
            refund(&self.throttle.clients, &key, start);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        refund(&self.throttle.accounts, &self.account.0, self.account.1);
        for (key, start) in self.clients.into_iter().flatten() {
            refund(&self.throttle.clients, &key, start);
        }
    }
}

/// Gives one attempt back to the window that took it (not to a later one).
fn refund<K: Hash + Eq>(map: &DashMap<K, Window>, key: &K, start_ms: u64) {
    if let Some(mut window) = map.get_mut(key) {
        if window.start_ms == start_ms {
            window.attempts = window.attempts.saturating_sub(1);
        }
    }
}

impl Throttle {
    pub fn max_failures(&self) -> u32 {
        self.max_failures.load(Ordering::Relaxed)
    }

    pub fn window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.window_ms())
    }

    fn window_ms(&self) -> u64 {
        self.window_ms.load(Ordering::Relaxed)
    }

    /// New limits from a reloaded config, for attempts from now on.
    pub fn set_limits(&self, max_failures: u32, window: std::time::Duration) {
        self.max_failures.store(max_failures, Ordering::Relaxed);
        self.window_ms
            .store(window.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn new(max_failures: u32, window: std::time::Duration, capacity: usize) -> Throttle {
        Throttle {
            accounts: DashMap::new(),
            clients: DashMap::new(),
            max_failures: AtomicU32::new(max_failures),
            window_ms: AtomicU64::new(window.as_millis() as u64),
            capacity: capacity.max(8),
        }
    }

    fn client_allowance(&self, key: &ClientKey) -> u32 {
        let client = self.max_failures().saturating_mul(CLIENT_FACTOR);
        match key {
            ClientKey::V6Net48(_) => client.saturating_mul(NET48_FACTOR),
            _ => client,
        }
    }

    /// Takes one attempt for `account` from `ip` out of every allowance it
    /// counts against, or none at all when any of them is used up.
    pub fn reserve(
        &self,
        account: &str,
        ip: IpAddr,
        now: u64,
    ) -> Result<Reservation<'_>, Throttled> {
        let account = account_key(account);
        let mut blocked_until = None;
        let account_start = self.take(&self.accounts, account, |_| self.max_failures(), now);
        let mut clients = [None, None];
        let mut account_start = match account_start {
            Ok(start) => Some(start),
            Err(until) => {
                blocked_until = Some(until);
                None
            }
        };
        for (slot, key) in clients.iter_mut().zip(client_keys(ip)) {
            let Some(key) = key else { continue };
            match self.take(&self.clients, key, |k| self.client_allowance(k), now) {
                Ok(start) => *slot = Some((key, start)),
                Err(until) => blocked_until = blocked_until.max(Some(until)),
            }
        }
        if let Some(until) = blocked_until {
            // Give back what was taken before the refusal.
            if let Some(start) = account_start.take() {
                refund(&self.accounts, &account, start);
            }
            for (key, start) in clients.into_iter().flatten() {
                refund(&self.clients, &key, start);
            }
            return Err(Throttled {
                retry_after_secs: until.saturating_sub(now).div_ceil(1000).max(1),
            });
        }
        Ok(Reservation {
            throttle: self,
            account: (account, account_start.expect("not blocked, so taken")),
            clients,
            settled: false,
        })
    }

    /// One attempt from `key`'s window: `Ok(window start)` or `Err(the
    /// time the window ends)` when its allowance is used up.
    fn take<K: Hash + Eq + Copy>(
        &self,
        map: &DashMap<K, Window>,
        key: K,
        allowance_of: impl Fn(&K) -> u32,
        now: u64,
    ) -> Result<u64, u64> {
        let allowance = allowance_of(&key);
        if !map.contains_key(&key) && map.len() >= self.capacity {
            self.make_room(map, now, &allowance_of);
            if map.len() >= self.capacity {
                // Every window left is blocking someone: refuse rather than
                // forget one. Filling the map so takes `capacity` times the
                // allowance of verified guesses within one window.
                return Err(now + self.window_ms());
            }
        }
        let mut window = map.entry(key).or_insert(Window {
            start_ms: now,
            attempts: 0,
        });
        if now >= window.start_ms + self.window_ms() {
            *window = Window {
                start_ms: now,
                attempts: 0,
            };
        }
        if window.attempts >= allowance {
            return Err(window.start_ms + self.window_ms());
        }
        window.attempts += 1;
        Ok(window.start_ms)
    }

    /// Drops ended windows, then windows that block nobody, down to 7/8 of
    /// the capacity (so a full map is not scanned for every new key).
    fn make_room<K: Hash + Eq + Clone>(
        &self,
        map: &DashMap<K, Window>,
        now: u64,
        allowance: impl Fn(&K) -> u32,
    ) {
        map.retain(|_, w| now < w.start_ms + self.window_ms());
        let target = self.capacity - self.capacity / 8;
        let excess = map.len().saturating_sub(target);
        if excess == 0 {
            return;
        }
        let victims: Vec<K> = map
            .iter()
            .filter(|e| e.value().attempts < allowance(e.key()))
            .take(excess)
            .map(|e| e.key().clone())
            .collect();
        for key in victims {
            map.remove_if(&key, |k, w| w.attempts < allowance(k));
        }
    }

    /// Drops windows that have ended.
    pub fn sweep(&self, now: u64) {
        self.accounts
            .retain(|_, w| now < w.start_ms + self.window_ms());
        self.clients
            .retain(|_, w| now < w.start_ms + self.window_ms());
    }

    /// Windows kept: (accounts, client keys).
    pub fn tracked(&self) -> (usize, usize) {
        (self.accounts.len(), self.clients.len())
    }

    /// Bytes the maps' tables hold now: every slot they have allocated,
    /// used or not, at its fixed size (keys own no heap memory).
    pub fn table_bytes(&self) -> usize {
        self.accounts.capacity() * std::mem::size_of::<(AccountKey, Window)>()
            + self.clients.capacity() * std::mem::size_of::<(ClientKey, Window)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    fn fail(t: &Throttle, account: &str, ip: IpAddr, now: u64) -> Result<(), Throttled> {
        t.reserve(account, ip, now).map(Reservation::failed)
    }

    #[test]
    fn an_account_is_refused_after_its_allowance_until_the_window_ends() {
        let t = Throttle::new(3, Duration::from_secs(60), 100);
        for i in 0..3 {
            assert_eq!(fail(&t, "bob", A, i), Ok(()));
        }
        assert_eq!(
            fail(&t, "bob", A, 10_000),
            Err(Throttled {
                retry_after_secs: 50
            })
        );
        assert_eq!(
            fail(&t, "alice", A, 10_000),
            Ok(()),
            "other accounts are not held"
        );
        assert_eq!(fail(&t, "bob", A, 60_000), Ok(()), "a new window");
        assert!(t.reserve("bob", A, 60_001).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_and_unsettled_ones_are_given_back() {
        let t = Throttle::new(3, Duration::from_secs(60), 100);
        let held: Vec<_> = (0..3).map(|_| t.reserve("bob", A, 0).unwrap()).collect();
        assert!(
            t.reserve("bob", A, 0).is_err(),
            "three guesses in flight use the allowance"
        );
        drop(held);
        let right = t.reserve("bob", A, 0).unwrap();
        let wrong = t.reserve("bob", A, 0).unwrap();
        right.succeeded();
        wrong.failed();
        // Success cleared the account's window; the failure after it is gone with it.
        for _ in 0..3 {
            fail(&t, "bob", A, 1).unwrap();
        }
        assert!(t.reserve("bob", A, 1).is_err());
    }

    #[test]
    fn a_client_gets_four_times_the_allowance_across_accounts() {
        let t = Throttle::new(2, Duration::from_secs(60), 100);
        for i in 0..8 {
            assert_eq!(fail(&t, &format!("user{i}"), A, 0), Ok(()));
        }
        assert!(fail(&t, "fresh", A, 0).is_err());
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(fail(&t, "fresh", other, 0), Ok(()));
        // IPv6 addresses of one /64 count as one client.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        for i in 0..8 {
            fail(
                &t,
                &format!("v6user{i}"),
                if i % 2 == 0 { v6a } else { v6b },
                0,
            )
            .unwrap();
        }
        assert!(fail(&t, "fresh2", v6b, 0).is_err());
        // A v4-mapped address is the v4 client.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(fail(&t, "fresh3", mapped, 0).is_err());
    }

    #[test]
    fn rotating_through_a_slash_48_buys_sixteen_clients_worth() {
        let t = Throttle::new(1, Duration::from_secs(60), 10_000);
        let mut verified = 0;
        // A fresh /64 for every guess, all inside 2001:db8:1::/48.
        for subnet in 0..1000u16 {
            let ip: IpAddr = format!("2001:db8:1:{subnet:x}::1").parse().unwrap();
            if fail(&t, &format!("user{subnet}"), ip, 0).is_ok() {
                verified += 1;
            }
        }
        assert_eq!(verified, CLIENT_FACTOR * NET48_FACTOR);
        let elsewhere: IpAddr = "2001:db8:2::1".parse().unwrap();
        assert!(fail(&t, "someone", elsewhere, 0).is_ok());
    }

    #[test]
    fn memory_stays_bounded_when_names_and_addresses_cycle() {
        let t = Throttle::new(5, Duration::from_secs(60), 1000);
        let long = "x".repeat(1 << 10);
        for i in 0..20_000u32 {
            let ip = IpAddr::V4(i.to_be_bytes().into());
            let _ = fail(&t, &format!("{long}{i}"), ip, 0);
        }
        let (accounts, clients) = t.tracked();
        assert!(accounts <= 1000 && clients <= 1000, "{accounts} {clients}");
        // 20 000 names of a KiB each went through; the tables hold slots
        // for about the capacity, 16-byte keys, whatever the names were.
        let bytes = t.table_bytes();
        assert!(bytes < 256 * 1024, "the tables hold {bytes} bytes");
        t.sweep(60_000);
        assert_eq!(t.tracked(), (0, 0));
    }

    #[test]
    fn flooding_the_map_never_unblocks_an_account_under_attack() {
        let t = Throttle::new(3, Duration::from_secs(60), 100);
        let attacker = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
        for _ in 0..3 {
            fail(&t, "victim", attacker, 0).unwrap();
        }
        assert!(t.reserve("victim", attacker, 0).is_err());
        // Fresh names from fresh addresses, far more than the map holds.
        for i in 0..5_000u32 {
            let ip = IpAddr::V4((i + 1).to_be_bytes().into());
            let _ = fail(&t, &format!("filler{i}"), ip, 1);
        }
        let from_elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
        assert!(
            t.reserve("victim", from_elsewhere, 2).is_err(),
            "the victim's window survived the flood"
        );
        assert!(t.tracked().0 <= 100);
    }
}
