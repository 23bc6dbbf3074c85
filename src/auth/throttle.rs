//! Brute-force throttling (SPEC §3, issue: login).
//!
//! Failures are counted per account (canonical username, existing or not, so
//! that a throttled answer says nothing about existence) and per client
//! address (the real peer, never a header; IPv6 by /64, since one host has
//! a whole /64 to cycle through). A fixed window starts at the first
//! failure; once a key has its allowance of failures in the window, every
//! attempt is refused until the window ends, the right password included.
//! Both maps are bounded: expired windows are dropped first, then arbitrary
//! ones, so cycling names or addresses cannot grow memory without limit.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: u64,
    failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Throttled { retry_after_secs: u64 },
}

pub struct Throttle {
    accounts: DashMap<Arc<str>, Window>,
    clients: DashMap<IpAddr, Window>,
    max_failures: u32,
    window_ms: u64,
    capacity: usize,
}

/// Per-client allowance, as a multiple of the per-account one.
const CLIENT_FACTOR: u32 = 4;

/// The address a client is counted under.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
        v4 => v4,
    }
}

impl Throttle {
    pub fn new(max_failures: u32, window: std::time::Duration, capacity: usize) -> Throttle {
        Throttle {
            accounts: DashMap::new(),
            clients: DashMap::new(),
            max_failures,
            window_ms: window.as_millis() as u64,
            capacity,
        }
    }

    /// Whether an attempt for `account` from `ip` may be verified at all.
    pub fn check(&self, account: &str, ip: IpAddr, now: u64) -> Verdict {
        let account_until = self
            .accounts
            .get(account)
            .and_then(|w| self.blocked_until(&w, self.max_failures, now));
        let client_until = self
            .clients
            .get(&client_key(ip))
            .and_then(|w| self.blocked_until(&w, self.max_failures * CLIENT_FACTOR, now));
        match account_until.max(client_until) {
            None => Verdict::Allowed,
            Some(until) => Verdict::Throttled {
                retry_after_secs: (until - now).div_ceil(1000).max(1),
            },
        }
    }

    fn blocked_until(&self, window: &Window, allowance: u32, now: u64) -> Option<u64> {
        let end = window.start_ms + self.window_ms;
        (now < end && window.failures >= allowance).then_some(end)
    }

    pub fn record_failure(&self, account: &str, ip: IpAddr, now: u64) {
        if !self.accounts.contains_key(account) {
            self.make_room(&self.accounts, now);
        }
        self.bump(
            self.accounts.entry(account.into()).or_insert(Window {
                start_ms: now,
                failures: 0,
            }),
            now,
        );
        let client = client_key(ip);
        if !self.clients.contains_key(&client) {
            self.make_room(&self.clients, now);
        }
        self.bump(
            self.clients.entry(client).or_insert(Window {
                start_ms: now,
                failures: 0,
            }),
            now,
        );
    }

    fn bump(
        &self,
        mut window: dashmap::mapref::one::RefMut<'_, impl std::hash::Hash + Eq, Window>,
        now: u64,
    ) {
        if now >= window.start_ms + self.window_ms {
            *window = Window {
                start_ms: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }

    /// A successful sign-in clears the account's count (not the client's:
    /// one good password must not reset a spray across other accounts).
    pub fn record_success(&self, account: &str) {
        self.accounts.remove(account);
    }

    fn make_room<K: std::hash::Hash + Eq + Clone>(&self, map: &DashMap<K, Window>, now: u64) {
        if map.len() < self.capacity {
            return;
        }
        map.retain(|_, w| now < w.start_ms + self.window_ms);
        let excess = (map.len() + 1).saturating_sub(self.capacity);
        if excess > 0 {
            let victims: Vec<K> = map.iter().take(excess).map(|e| e.key().clone()).collect();
            for key in victims {
                map.remove(&key);
            }
        }
    }

    /// Drops windows that have ended.
    pub fn sweep(&self, now: u64) {
        self.accounts
            .retain(|_, w| now < w.start_ms + self.window_ms);
        self.clients
            .retain(|_, w| now < w.start_ms + self.window_ms);
    }

    pub fn tracked(&self) -> (usize, usize) {
        (self.accounts.len(), self.clients.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn an_account_is_refused_after_its_allowance_until_the_window_ends() {
        let t = Throttle::new(3, Duration::from_secs(60), 100);
        for i in 0..3 {
            assert_eq!(t.check("bob", A, i), Verdict::Allowed);
            t.record_failure("bob", A, i);
        }
        assert_eq!(
            t.check("bob", A, 10_000),
            Verdict::Throttled {
                retry_after_secs: 50
            }
        );
        assert_eq!(
            t.check("alice", A, 10_000),
            Verdict::Allowed,
            "other accounts are not held"
        );
        assert_eq!(t.check("bob", A, 60_000), Verdict::Allowed);
        t.record_failure("bob", A, 60_000);
        assert_eq!(
            t.check("bob", A, 60_001),
            Verdict::Allowed,
            "a new window starts from zero"
        );
    }

    #[test]
    fn a_client_gets_four_times_the_allowance_across_accounts() {
        let t = Throttle::new(2, Duration::from_secs(60), 100);
        for i in 0..8 {
            assert_eq!(t.check(&format!("user{i}"), A, 0), Verdict::Allowed);
            t.record_failure(&format!("user{i}"), A, 0);
        }
        assert!(matches!(t.check("fresh", A, 0), Verdict::Throttled { .. }));
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(t.check("fresh", other, 0), Verdict::Allowed);
        // IPv6 addresses of one /64 count as one client.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        for i in 0..8 {
            t.record_failure(&format!("v6user{i}"), if i % 2 == 0 { v6a } else { v6b }, 0);
        }
        assert!(matches!(
            t.check("fresh", v6b, 0),
            Verdict::Throttled { .. }
        ));
    }

    #[test]
    fn success_clears_the_account_but_not_the_client() {
        let t = Throttle::new(2, Duration::from_secs(60), 100);
        t.record_failure("bob", A, 0);
        t.record_failure("bob", A, 0);
        t.record_success("bob");
        assert_eq!(t.check("bob", A, 1), Verdict::Allowed);
        assert_eq!(t.tracked().1, 1);
    }

    #[test]
    fn memory_stays_bounded_when_names_and_addresses_cycle() {
        let t = Throttle::new(5, Duration::from_secs(60), 1000);
        for i in 0..20_000u32 {
            let ip = IpAddr::V4(i.to_be_bytes().into());
            t.record_failure(&format!("name{i}"), ip, 0);
        }
        let (accounts, clients) = t.tracked();
        assert!(accounts <= 1000 && clients <= 1000, "{accounts} {clients}");
        t.sweep(60_000);
        assert_eq!(t.tracked(), (0, 0));
    }
}
