//! The in-memory session map: the serving path of every backend. The
//! `memory` backend is this map alone; the `local` backend keeps its record
//! on disk and this map in front of it, so a request never waits for a disk.
//!
//! Every lookup checks the idle and absolute deadlines and moves the idle
//! one on; ending and sweeping hand back the keys they removed, so that a
//! backend with a record can remove them there too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::session::{
    handle, key_of, new_id, Expiry, Key, LiveSession, Lookup, NewSession, SessionInfo, Vouched,
};

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
    /// The `last_seen_ms` the record last received: a session whose two
    /// values differ has a touch to write.
    saved_ms: AtomicU64,
    pub ip: IpAddr,
    /// The user's password fingerprint when the session began.
    pub password_fingerprint: u32,
    /// When the password (and code) was last entered: at sign-in, and at
    /// every fresh sign-in a route's `max_auth_age` asked for.
    auth_ms: AtomicU64,
    /// The sign-in (or a later one) passed the second factor.
    mfa: AtomicBool,
    /// An identity provider vouched for the user.
    pub vouched: Option<Arc<Vouched>>,
}

impl Session {
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    /// The session under `key` as a backend's record holds it.
    fn row(&self, key: &Key) -> Row {
        Row {
            key: *key,
            user: self.profile.user.clone(),
            created_ms: self.created_ms,
            last_seen_ms: self.last_seen_ms(),
            ip: self.ip,
            user_agent: self.profile.user_agent.clone(),
            password_fingerprint: self.password_fingerprint,
            auth_ms: self.auth_ms.load(Ordering::Relaxed),
            mfa: self.mfa.load(Ordering::Relaxed),
            vouched: self.vouched.clone(),
        }
    }
}

/// A session as a backend's record holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: Key,
    pub user: Arc<str>,
    pub created_ms: u64,
    pub last_seen_ms: u64,
    pub ip: IpAddr,
    pub user_agent: Box<str>,
    pub password_fingerprint: u32,
    pub auth_ms: u64,
    pub mfa: bool,
    pub vouched: Option<Arc<Vouched>>,
}

/// A session without a second factor or a provider's word, from
/// 127.0.0.1, for the store's tests.
#[cfg(test)]
pub(crate) fn plain<'a>(
    user: &'a Arc<str>,
    password_fingerprint: u32,
    user_agent: &'a str,
) -> NewSession<'a> {
    NewSession {
        user,
        password_fingerprint,
        ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        user_agent,
        mfa: false,
        vouched: None,
        proved_ms: None,
    }
}

/// Longest user agent kept with a session; the rest is cut off.
const MAX_USER_AGENT: usize = 256;

pub struct SessionMap {
    sessions: DashMap<Key, Session>,
    /// Interned profiles, so equal ones share one allocation.
    profiles: DashMap<Arc<Profile>, ()>,
    idle_ms: u64,
    absolute_ms: u64,
    /// Why sessions ended, and how the record behind the map fares.
    stats: Arc<super::stats::Stats>,
}

fn cut_user_agent(user_agent: &str) -> &str {
    let mut cut = user_agent.len().min(MAX_USER_AGENT);
    while !user_agent.is_char_boundary(cut) {
        cut -= 1;
    }
    &user_agent[..cut]
}

impl SessionMap {
    pub fn new(idle: Duration, absolute: Duration) -> SessionMap {
        SessionMap {
            sessions: DashMap::new(),
            profiles: DashMap::new(),
            idle_ms: idle.as_millis() as u64,
            absolute_ms: absolute.as_millis() as u64,
            stats: Arc::default(),
        }
    }

    /// Reports to `stats` rather than to counters of its own.
    pub fn with_stats(mut self, stats: Arc<super::stats::Stats>) -> SessionMap {
        self.stats = stats;
        self
    }

    pub fn stats(&self) -> &Arc<super::stats::Stats> {
        &self.stats
    }

    pub fn idle_ms(&self) -> u64 {
        self.idle_ms
    }

    pub fn absolute_ms(&self) -> u64 {
        self.absolute_ms
    }

    fn intern(&self, profile: Profile) -> Arc<Profile> {
        if let Some(existing) = self.profiles.get(&profile) {
            return existing.key().clone();
        }
        self.profiles
            .entry(Arc::new(profile))
            .or_insert(())
            .key()
            .clone()
    }

    /// Begins a session; returns its ID (the cookie value) and what a
    /// record must keep of it.
    pub fn create(&self, new: NewSession<'_>, now: u64) -> (String, Row) {
        let NewSession {
            user,
            password_fingerprint,
            ip,
            user_agent,
            mfa,
            vouched,
            proved_ms,
        } = new;
        let auth_ms = proved_ms.map_or(now, |at| at.min(now));
        let profile = self.intern(Profile {
            user: user.clone(),
            user_agent: cut_user_agent(user_agent).into(),
        });
        loop {
            let id = new_id();
            let key = key_of(&id).expect("a new ID has the right form");
            // A collision of 256-bit random values does not happen; if it
            // did, the existing session must not be handed to someone else.
            if let dashmap::Entry::Vacant(slot) = self.sessions.entry(key) {
                let row = Row {
                    key,
                    user: user.clone(),
                    created_ms: now,
                    last_seen_ms: now,
                    ip,
                    user_agent: profile.user_agent.clone(),
                    password_fingerprint,
                    auth_ms,
                    mfa,
                    vouched: vouched.clone(),
                };
                slot.insert(Session {
                    profile,
                    created_ms: now,
                    last_seen_ms: AtomicU64::new(now),
                    saved_ms: AtomicU64::new(now),
                    ip,
                    password_fingerprint,
                    auth_ms: AtomicU64::new(auth_ms),
                    mfa: AtomicBool::new(mfa),
                    vouched,
                });
                return (id, row);
            }
        }
    }

    /// Puts back sessions read from a record. `profiles` shares profiles
    /// between the rows of one load, which is faster than interning each.
    pub fn restore(&self, row: Row, profiles: &mut HashMap<(Arc<str>, Box<str>), Arc<Profile>>) {
        let profile = profiles
            .entry((row.user.clone(), row.user_agent.clone()))
            .or_insert_with(|| {
                self.intern(Profile {
                    user: row.user,
                    user_agent: row.user_agent,
                })
            })
            .clone();
        self.sessions.insert(
            row.key,
            Session {
                profile,
                created_ms: row.created_ms,
                last_seen_ms: AtomicU64::new(row.last_seen_ms),
                saved_ms: AtomicU64::new(row.last_seen_ms),
                ip: row.ip,
                password_fingerprint: row.password_fingerprint,
                auth_ms: AtomicU64::new(row.auth_ms),
                mfa: AtomicBool::new(row.mfa),
                vouched: row.vouched,
            },
        );
    }

    /// Finds a session, checking both deadlines; `touch` moves the idle
    /// deadline on (whoami looks without touching). An expired session is
    /// removed on the way.
    pub fn lookup(&self, key: &Key, now: u64, touch: bool) -> Lookup {
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
                        generation: 0,
                        created_ms: session.created_ms,
                        last_seen_ms: last_seen,
                        auth_ms: session.auth_ms.load(Ordering::Relaxed),
                        mfa: session.mfa.load(Ordering::Relaxed),
                        vouched: session.vouched.clone(),
                    });
                }
                Some(expiry) => expiry,
            }
        };
        self.sessions.remove(key);
        Lookup::Expired(expired)
    }

    fn expiry(&self, session: &Session, now: u64) -> Option<Expiry> {
        expiry(
            session.created_ms,
            session.last_seen_ms(),
            now,
            self.idle_ms,
            self.absolute_ms,
        )
    }

    /// When a live session will end: (absolute, idle) deadlines in ms.
    pub fn deadlines(&self, session: &LiveSession) -> (u64, u64) {
        let absolute = session.created_ms + self.absolute_ms;
        let idle = (session.last_seen_ms + self.idle_ms).min(absolute);
        (absolute, idle)
    }

    /// A fresh sign-in within a live session: the password (and, with
    /// `mfa`, a code) was entered again at `now`. Returns the row the record
    /// must now hold; `None` if the session is gone.
    pub fn reauthenticate(&self, key: &Key, now: u64, mfa: bool) -> Option<Row> {
        let session = self.sessions.get(key)?;
        session.auth_ms.fetch_max(now, Ordering::Relaxed);
        if mfa {
            session.mfa.store(true, Ordering::Relaxed);
        }
        Some(session.row(key))
    }

    /// Puts `vouched` (`None`: ends them) in every session of `user`
    /// that `provider` vouched for; the rows changed, or the keys ended.
    pub fn replace_vouched(
        &self,
        user: &str,
        provider: &str,
        vouched: Option<&Arc<Vouched>>,
    ) -> (Vec<Row>, Vec<Key>) {
        let of_provider = |s: &Session| {
            &*s.profile.user == user && s.vouched.as_ref().is_some_and(|v| v.provider() == provider)
        };
        let Some(vouched) = vouched else {
            let mut ended = Vec::new();
            self.sessions.retain(|key, s| {
                let keep = !of_provider(s);
                if !keep {
                    ended.push(*key);
                }
                keep
            });
            return (Vec::new(), ended);
        };
        let mut changed = Vec::new();
        for mut entry in self.sessions.iter_mut() {
            if !of_provider(entry.value()) {
                continue;
            }
            entry.vouched = Some(vouched.clone());
            changed.push(entry.value().row(entry.key()));
        }
        (changed, Vec::new())
    }

    /// Ends one session; true if it existed.
    pub fn end(&self, key: &Key) -> bool {
        self.sessions.remove(key).is_some()
    }

    /// Ends every session of a user (canonical name); returns their keys.
    pub fn end_all_for_user(&self, user: &str) -> Vec<Key> {
        let mut ended = Vec::new();
        self.sessions.retain(|key, s| {
            let keep = &*s.profile.user != user;
            if !keep {
                ended.push(*key);
            }
            keep
        });
        ended
    }

    /// Removes expired sessions and profiles no session uses; returns the
    /// keys of the sessions that went.
    pub fn sweep(&self, now: u64) -> Vec<Key> {
        let mut swept = Vec::new();
        let (mut idle, mut absolute) = (0, 0);
        self.sessions.retain(|key, s| match self.expiry(s, now) {
            None => true,
            Some(why) => {
                match why {
                    Expiry::Idle => idle += 1,
                    Expiry::Absolute => absolute += 1,
                }
                swept.push(*key);
                false
            }
        });
        self.stats.ended(super::stats::Ended::Idle, idle);
        self.stats.ended(super::stats::Ended::Absolute, absolute);
        // The map's own Arc is the last one: no session uses the profile.
        self.profiles
            .retain(|profile, _| Arc::strong_count(profile) > 1);
        swept
    }

    /// Every session whose `last_seen` moved since the record last got it,
    /// with its new value; they count as saved from here on.
    pub fn unsaved_touches(&self) -> Vec<(Key, u64)> {
        let mut touched = Vec::new();
        for entry in self.sessions.iter() {
            let last_seen = entry.last_seen_ms();
            if entry.saved_ms.swap(last_seen, Ordering::Relaxed) != last_seen {
                touched.push((*entry.key(), last_seen));
            }
        }
        touched
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The key of the session with this handle.
    pub fn find_handle(&self, wanted: &str) -> Option<(Key, Arc<str>)> {
        self.sessions
            .iter()
            .find(|e| handle(e.key()) == wanted)
            .map(|e| (*e.key(), e.profile.user.clone()))
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
                    vouched: s.vouched.clone(),
                }
            })
            .collect()
    }

    #[cfg(test)]
    fn contains(&self, key: &Key) -> bool {
        self.sessions.contains_key(key)
    }
}

/// Which deadline, if any, has passed at `now` for a session made at
/// `created` and last used at `last_seen`.
pub fn expiry(
    created: u64,
    last_seen: u64,
    now: u64,
    idle_ms: u64,
    absolute_ms: u64,
) -> Option<Expiry> {
    if now.saturating_sub(created) >= absolute_ms {
        Some(Expiry::Absolute)
    } else if now.saturating_sub(last_seen) >= idle_ms {
        Some(Expiry::Idle)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::ID_LEN;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn map() -> SessionMap {
        SessionMap::new(Duration::from_secs(60), Duration::from_secs(600))
    }

    fn create(map: &SessionMap, user: &str, ua: &str, now: u64) -> String {
        map.create(plain(&user.into(), 1, ua), now).0
    }

    fn lookup(map: &SessionMap, id: &str, now: u64, touch: bool) -> Lookup {
        map.lookup(&key_of(id).unwrap(), now, touch)
    }

    #[test]
    fn ids_are_256_bit_base64url_and_stored_only_by_hash() {
        let map = map();
        let (id, row) = map.create(plain(&"alice".into(), 7, "ua"), 1_000);
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(URL_SAFE_NO_PAD.decode(&id).unwrap().len(), 32);
        let other = create(&map, "alice", "ua", 1_000);
        assert_ne!(id, other);
        let key = key_of(&id).unwrap();
        assert_eq!(row.key, key);
        assert!(map.contains(&key));
        assert!(map
            .sessions
            .iter()
            .all(|e| e.key().as_slice() != id.as_bytes()));
    }

    #[test]
    fn idle_deadline_moves_with_use_and_absolute_does_not() {
        let map = map();
        let id = create(&map, "bob", "ua", 0);
        // Used every 50 s: idle (60 s) never passes ...
        for t in (50_000..600_000).step_by(50_000) {
            assert!(
                matches!(lookup(&map, &id, t, true), Lookup::Live(_)),
                "at {t}"
            );
        }
        // ... but the absolute deadline (600 s) does.
        assert_eq!(
            lookup(&map, &id, 600_000, true),
            Lookup::Expired(Expiry::Absolute)
        );
        assert_eq!(lookup(&map, &id, 600_001, true), Lookup::Unknown);

        let idle = create(&map, "bob", "ua", 0);
        assert!(matches!(
            lookup(&map, &idle, 59_999, false),
            Lookup::Live(_)
        ));
        // Looking without touching did not move the deadline.
        assert_eq!(
            lookup(&map, &idle, 60_000, true),
            Lookup::Expired(Expiry::Idle)
        );
    }

    #[test]
    fn sweep_removes_expired_sessions_and_unused_profiles() {
        let map = map();
        for i in 0..1000 {
            create(&map, "carol", &format!("agent {}", i % 10), 0);
        }
        let keep = create(&map, "dave", "agent", 50_000);
        assert_eq!(map.profiles.len(), 11);
        assert_eq!(map.sweep(60_000).len(), 1000);
        assert_eq!(map.len(), 1);
        assert_eq!(map.profiles.len(), 1);
        assert!(matches!(lookup(&map, &keep, 60_000, true), Lookup::Live(_)));
    }

    #[test]
    fn ending_sessions_one_or_all_of_a_user() {
        let map = map();
        let a1 = create(&map, "alice", "ua", 0);
        let a2 = create(&map, "alice", "ua", 0);
        let b = create(&map, "bob", "ua", 0);
        assert!(map.end(&key_of(&a1).unwrap()));
        assert!(!map.end(&key_of(&a1).unwrap()));
        create(&map, "alice", "ua", 0);
        assert_eq!(map.end_all_for_user("alice").len(), 2);
        assert_eq!(lookup(&map, &a2, 1, true), Lookup::Unknown);
        assert!(matches!(lookup(&map, &b, 1, true), Lookup::Live(_)));
    }

    #[test]
    fn touches_are_handed_out_once_each() {
        let map = map();
        let a = create(&map, "alice", "ua", 0);
        let b = create(&map, "bob", "ua", 0);
        assert!(map.unsaved_touches().is_empty(), "new sessions are saved");
        lookup(&map, &a, 5_000, true);
        lookup(&map, &b, 6_000, false);
        assert_eq!(map.unsaved_touches(), [(key_of(&a).unwrap(), 5_000)]);
        assert!(map.unsaved_touches().is_empty());
    }

    #[test]
    fn restored_sessions_share_profiles_and_keep_their_times() {
        let map = map();
        let mut profiles = HashMap::new();
        for i in 0..10u8 {
            map.restore(
                Row {
                    key: [i; 32],
                    user: "erin".into(),
                    created_ms: 1_000,
                    last_seen_ms: 2_000,
                    ip: IP,
                    user_agent: "ua".into(),
                    password_fingerprint: 9,
                    auth_ms: 1_000,
                    mfa: false,
                    vouched: None,
                },
                &mut profiles,
            );
        }
        assert_eq!(map.len(), 10);
        assert_eq!(map.profiles.len(), 1);
        let Lookup::Live(live) = map.lookup(&[3; 32], 2_500, false) else {
            panic!("restored session is live");
        };
        assert_eq!((live.created_ms, live.last_seen_ms), (1_000, 2_000));
        assert_eq!(
            map.lookup(&[4; 32], 62_000, true),
            Lookup::Expired(Expiry::Idle)
        );
    }
}
