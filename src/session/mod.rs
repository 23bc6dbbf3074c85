//! Server-side sessions (SPEC §5).
//!
//! The cookie carries a 256-bit random ID; the store keeps each session under
//! the SHA-256 of that ID, so nothing in it is a usable cookie value. Every
//! lookup checks the idle and absolute deadlines and moves the idle one on.
//! A sweeper removes expired sessions in the background and stops when the
//! store is dropped.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dashmap::DashMap;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// Length of an ID in the cookie: 32 bytes in unpadded base64url.
pub const ID_LEN: usize = 43;

/// The store's key for a session: SHA-256 of its ID.
pub type Key = [u8; 32];

/// Milliseconds since the Unix epoch: the store's clock. Every method takes
/// `now` explicitly, so tests drive time without sleeping.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new session ID from the OS CSPRNG.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key of a cookie value, or `None` when the value cannot be an ID we
/// issued (wrong length or alphabet): such values are never looked up.
pub fn key_of(id: &str) -> Option<Key> {
    if id.len() != ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some(Sha256::digest(id.as_bytes()).into())
}

/// Who a session belongs to and from where it began. Shared between the
/// sessions of one user on one browser, so a million sessions do not hold
/// a million copies of the same strings.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    /// Canonical username.
    pub user: Arc<str>,
    pub user_agent: Box<str>,
}

/// One live session. Kept small on purpose (see the session-store benchmark).
#[derive(Debug)]
pub struct Session {
    pub profile: Arc<Profile>,
    pub created_ms: u64,
    last_seen_ms: AtomicU64,
    pub ip: IpAddr,
    /// The user's password fingerprint when the session began.
    pub password_fingerprint: u32,
}

impl Session {
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Live(LiveSession),
    /// No such session (never was, ended, or swept).
    Unknown,
    /// It was there but a deadline had passed; it is gone now.
    Expired(Expiry),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Absolute,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Idle => "idle timeout",
            Expiry::Absolute => "absolute timeout",
        }
    }
}

/// A copy of what the caller needs from a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub key: Key,
    pub user: Arc<str>,
    pub password_fingerprint: u32,
    pub created_ms: u64,
    /// The last request before this one (or this one, if it moved the timer).
    pub last_seen_ms: u64,
}

/// A session as the admin API lists it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub key: Key,
    pub user: Arc<str>,
    pub created_ms: u64,
    pub last_seen_ms: u64,
    pub ip: IpAddr,
    pub user_agent: Box<str>,
}

/// Longest user agent kept with a session; the rest is cut off.
const MAX_USER_AGENT: usize = 256;

pub struct SessionStore {
    sessions: DashMap<Key, Session>,
    /// Interned profiles, so equal ones share one allocation.
    profiles: DashMap<Arc<Profile>, ()>,
    idle_ms: u64,
    absolute_ms: u64,
}

impl SessionStore {
    pub fn new(idle: Duration, absolute: Duration) -> Arc<SessionStore> {
        Arc::new(SessionStore {
            sessions: DashMap::new(),
            profiles: DashMap::new(),
            idle_ms: idle.as_millis() as u64,
            absolute_ms: absolute.as_millis() as u64,
        })
    }

    /// Starts the background sweep (in the current tokio runtime). It ends
    /// by itself once the last `Arc` of the store is dropped.
    pub fn start_sweeper(self: &Arc<Self>) {
        let every = Duration::from_millis((self.idle_ms / 2).clamp(50, 60_000));
        let store: Weak<SessionStore> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { break };
                let removed = store.sweep(now_ms());
                if removed > 0 {
                    tracing::debug!(removed, "expired sessions swept");
                }
            }
        });
    }

    fn intern(&self, user: &Arc<str>, user_agent: &str) -> Arc<Profile> {
        let mut cut = user_agent.len().min(MAX_USER_AGENT);
        while !user_agent.is_char_boundary(cut) {
            cut -= 1;
        }
        let profile = Arc::new(Profile {
            user: user.clone(),
            user_agent: user_agent[..cut].into(),
        });
        if let Some(existing) = self.profiles.get(&profile) {
            return existing.key().clone();
        }
        self.profiles.entry(profile).or_insert(()).key().clone()
    }

    /// Begins a session and returns its ID (the cookie value).
    pub fn create(
        &self,
        user: &Arc<str>,
        password_fingerprint: u32,
        ip: IpAddr,
        user_agent: &str,
        now: u64,
    ) -> String {
        let profile = self.intern(user, user_agent);
        loop {
            let id = new_id();
            let key = key_of(&id).expect("a new ID has the right form");
            // A collision of 256-bit random values does not happen; if it
            // did, the existing session must not be handed to someone else.
            if let dashmap::Entry::Vacant(slot) = self.sessions.entry(key) {
                slot.insert(Session {
                    profile,
                    created_ms: now,
                    last_seen_ms: AtomicU64::new(now),
                    ip,
                    password_fingerprint,
                });
                return id;
            }
        }
    }

    /// Finds the session for a cookie value, checking both deadlines;
    /// `touch` moves the idle deadline on (whoami looks without touching).
    pub fn lookup(&self, id: &str, now: u64, touch: bool) -> Lookup {
        match key_of(id) {
            Some(key) => self.lookup_key(&key, now, touch),
            None => Lookup::Unknown,
        }
    }

    pub fn lookup_key(&self, key: &Key, now: u64, touch: bool) -> Lookup {
        let expired = {
            let Some(session) = self.sessions.get(key) else {
                return Lookup::Unknown;
            };
            match self.expiry(&session, now) {
                None => {
                    let last_seen = if touch {
                        session
                            .last_seen_ms
                            .fetch_max(now, Ordering::Relaxed)
                            .max(now)
                    } else {
                        session.last_seen_ms()
                    };
                    return Lookup::Live(LiveSession {
                        key: *key,
                        user: session.profile.user.clone(),
                        password_fingerprint: session.password_fingerprint,
                        created_ms: session.created_ms,
                        last_seen_ms: last_seen,
                    });
                }
                Some(expiry) => expiry,
            }
        };
        self.sessions.remove(key);
        Lookup::Expired(expired)
    }

    fn expiry(&self, session: &Session, now: u64) -> Option<Expiry> {
        if now.saturating_sub(session.created_ms) >= self.absolute_ms {
            Some(Expiry::Absolute)
        } else if now.saturating_sub(session.last_seen_ms()) >= self.idle_ms {
            Some(Expiry::Idle)
        } else {
            None
        }
    }

    /// When a live session will end: (absolute, idle) deadlines in ms.
    pub fn deadlines(&self, session: &LiveSession) -> (u64, u64) {
        let absolute = session.created_ms + self.absolute_ms;
        let idle = (session.last_seen_ms + self.idle_ms).min(absolute);
        (absolute, idle)
    }

    /// Ends one session; true if it existed.
    pub fn end(&self, key: &Key) -> bool {
        self.sessions.remove(key).is_some()
    }

    /// Ends every session of a user (canonical name); returns how many.
    pub fn end_all_for_user(&self, user: &str) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|_, s| &*s.profile.user != user);
        before.saturating_sub(self.sessions.len())
    }

    /// Removes expired sessions and profiles no session uses; returns how
    /// many sessions went.
    pub fn sweep(&self, now: u64) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|_, s| self.expiry(s, now).is_none());
        // The map's own Arc is the last one: no session uses the profile.
        self.profiles
            .retain(|profile, _| Arc::strong_count(profile) > 1);
        before.saturating_sub(self.sessions.len())
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The handle the admin API shows for a session: the first 64 bits of
    /// its key, in hex. It identifies a session without being a cookie.
    pub fn public_id(key: &Key) -> String {
        key[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Ends the session with this public handle; returns its user.
    pub fn end_by_public_id(&self, id: &str) -> Option<Arc<str>> {
        let key = self
            .sessions
            .iter()
            .find(|e| Self::public_id(e.key()) == id)
            .map(|e| *e.key())?;
        self.sessions
            .remove(&key)
            .map(|(_, s)| s.profile.user.clone())
    }

    /// Every live session, optionally of one user, for the admin view.
    pub fn list(&self, user: Option<&str>) -> Vec<SessionInfo> {
        self.sessions
            .iter()
            .filter(|e| user.is_none_or(|u| &*e.value().profile.user == u))
            .map(|e| {
                let s = e.value();
                SessionInfo {
                    key: *e.key(),
                    user: s.profile.user.clone(),
                    created_ms: s.created_ms,
                    last_seen_ms: s.last_seen_ms(),
                    ip: s.ip,
                    user_agent: s.profile.user_agent.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn store() -> Arc<SessionStore> {
        SessionStore::new(Duration::from_secs(60), Duration::from_secs(600))
    }

    #[test]
    fn ids_are_256_bit_base64url_and_stored_only_by_hash() {
        let store = store();
        let alice: Arc<str> = "alice".into();
        let id = store.create(&alice, 7, IP, "ua", 1_000);
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(URL_SAFE_NO_PAD.decode(&id).unwrap().len(), 32);
        let other = store.create(&alice, 7, IP, "ua", 1_000);
        assert_ne!(id, other);
        let key = key_of(&id).unwrap();
        assert!(store.sessions.contains_key(&key));
        assert!(store
            .sessions
            .iter()
            .all(|e| e.key().as_slice() != id.as_bytes()));
    }

    #[test]
    fn idle_deadline_moves_with_use_and_absolute_does_not() {
        let store = store();
        let id = store.create(&"bob".into(), 1, IP, "ua", 0);
        // Used every 50 s: idle (60 s) never passes ...
        for t in (50_000..600_000).step_by(50_000) {
            assert!(
                matches!(store.lookup(&id, t, true), Lookup::Live(_)),
                "at {t}"
            );
        }
        // ... but the absolute deadline (600 s) does.
        assert_eq!(
            store.lookup(&id, 600_000, true),
            Lookup::Expired(Expiry::Absolute)
        );
        assert_eq!(store.lookup(&id, 600_001, true), Lookup::Unknown);

        let idle = store.create(&"bob".into(), 1, IP, "ua", 0);
        assert!(matches!(
            store.lookup(&idle, 59_999, false),
            Lookup::Live(_)
        ));
        // Looking without touching did not move the deadline.
        assert_eq!(
            store.lookup(&idle, 60_000, true),
            Lookup::Expired(Expiry::Idle)
        );
    }

    #[test]
    fn invented_or_malformed_ids_find_nothing() {
        let store = store();
        store.create(&"bob".into(), 1, IP, "ua", 0);
        for id in [
            "",
            "x",
            &"A".repeat(ID_LEN),
            &"A".repeat(ID_LEN + 1),
            &"+".repeat(ID_LEN),
        ] {
            assert_eq!(store.lookup(id, 1, true), Lookup::Unknown, "{id:?}");
        }
    }

    #[test]
    fn sweep_removes_expired_sessions_and_unused_profiles() {
        let store = store();
        for i in 0..1000 {
            store.create(&"carol".into(), 1, IP, &format!("agent {}", i % 10), 0);
        }
        let keep = store.create(&"dave".into(), 1, IP, "agent", 50_000);
        assert_eq!(store.profiles.len(), 11);
        assert_eq!(store.sweep(60_000), 1000);
        assert_eq!(store.len(), 1);
        assert_eq!(store.profiles.len(), 1);
        assert!(matches!(store.lookup(&keep, 60_000, true), Lookup::Live(_)));
    }

    #[test]
    fn ending_sessions_one_or_all_of_a_user() {
        let store = store();
        let a1 = store.create(&"alice".into(), 1, IP, "ua", 0);
        let a2 = store.create(&"alice".into(), 1, IP, "ua", 0);
        let b = store.create(&"bob".into(), 1, IP, "ua", 0);
        assert!(store.end(&key_of(&a1).unwrap()));
        assert!(!store.end(&key_of(&a1).unwrap()));
        store.create(&"alice".into(), 1, IP, "ua", 0);
        assert_eq!(store.end_all_for_user("alice"), 2);
        assert_eq!(store.lookup(&a2, 1, true), Lookup::Unknown);
        assert!(matches!(store.lookup(&b, 1, true), Lookup::Live(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_empties_the_store_and_stops_with_it() {
        let store = SessionStore::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..500 {
            store.create(&"eve".into(), 1, IP, "ua", now_ms());
        }
        store.start_sweeper();
        assert_eq!(store.len(), 500);
        let weak = Arc::downgrade(&store);
        // The sweeper reads the wall clock; wait for real until it passes.
        std::thread::sleep(Duration::from_millis(120));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(store.len(), 0);
        drop(store);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(weak.upgrade().is_none(), "the sweeper let go of the store");
    }
}
