//! What Redis keeps of sessions: begun, looked up (through this
//! replica's short cache), re-authenticated, ended, listed.

use super::*;

impl Redis {
    /// Records a new session under the user's current generation.
    pub async fn create(&self, key: &Key, new: &NewSession<'_>) -> Result<(), Unavailable> {
        let suffix = hex(key);
        let user: &str = new.user;
        let vouched = new.vouched.as_ref().map(|v| v.to_record());
        let mut invocation = self.scripts.create.prepare_invoke();
        invocation
            .key(self.key("session", &suffix))
            .key(self.key("sessions-of", user))
            .key(self.key("user", user))
            .arg(user)
            .arg(new.password_fingerprint)
            .arg(new.ip.to_string())
            .arg(new.user_agent)
            .arg(self.idle_ms)
            .arg(self.absolute_ms)
            .arg(&suffix)
            .arg(if new.mfa { "1" } else { "0" })
            .arg(vouched.as_deref().unwrap_or(""))
            .arg(new.proved_ms.map_or(String::new(), |at| at.to_string()));
        let _now: i64 = self.run(&invocation).await?;
        Ok(())
    }

    /// A fresh sign-in within a live session (see
    /// [`crate::store::memory::SessionMap::reauthenticate`]); false if it is gone.
    /// See [`crate::store::Sessions::replace_vouched`]. Other replicas
    /// see it once their copy is older than [`super::CACHE_AGE`].
    pub async fn replace_vouched(
        &self,
        user: &str,
        provider: &str,
        vouched: Option<&Arc<Vouched>>,
    ) -> Result<usize, Unavailable> {
        self.forget_user(user);
        let mut invocation = self.scripts.replace_vouched.prepare_invoke();
        invocation
            .key(self.key("sessions-of", user))
            .arg(&self.prefix)
            .arg(format!(
                "{{\"provider\":{}",
                serde_json::Value::from(provider)
            ))
            .arg(vouched.map_or(String::new(), |v| v.to_record()));
        let count: i64 = self.run(&invocation).await?;
        Ok(count.max(0) as usize)
    }

    pub async fn reauthenticate(&self, key: &Key, mfa: bool) -> Result<bool, Unavailable> {
        self.cache.remove(key);
        let mut invocation = self.scripts.reauth.prepare_invoke();
        invocation
            .key(self.key("session", &hex(key)))
            .arg(if mfa { "1" } else { "0" });
        let found: i64 = self.run(&invocation).await?;
        Ok(found == 1)
    }

    pub async fn lookup(&self, key: &Key, touch: bool) -> Result<Lookup, Unavailable> {
        if let Some(cached) = self.cache.get(key) {
            if cached.until > Instant::now() {
                return Ok(Lookup::Live(cached.live.clone()));
            }
        }
        let mut invocation = self.scripts.lookup.prepare_invoke();
        invocation
            .key(self.key("session", &hex(key)))
            .arg(self.idle_ms)
            .arg(self.absolute_ms)
            .arg(if touch { "1" } else { "0" })
            .arg(self.touch_every_ms);
        let found: Option<Vec<String>> = self.run(&invocation).await?;
        let Some(found) = found else {
            self.cache.remove(key);
            return Ok(Lookup::Unknown);
        };
        match found.first().map(String::as_str) {
            Some("live") if found.len() == 10 => {
                let number = |i: usize| found[i].parse::<u64>().unwrap_or(0);
                let (created, last_seen, now) = (number(4), number(5), number(6));
                let live = LiveSession {
                    key: *key,
                    user: found[1].as_str().into(),
                    password_fingerprint: number(2) as u32,
                    generation: number(3),
                    created_ms: created,
                    last_seen_ms: last_seen,
                    auth_ms: number(7),
                    mfa: found[8] == "1",
                    vouched: match found[9].as_str() {
                        "" => None,
                        text => Some(Arc::new(Vouched::from_record(text).ok_or(Unavailable)?)),
                    },
                };
                let deadline = (last_seen + self.idle_ms).min(created + self.absolute_ms);
                let left = Duration::from_millis(deadline.saturating_sub(now));
                self.cache.insert(
                    *key,
                    Cached {
                        live: live.clone(),
                        until: Instant::now() + left.min(CACHE_AGE),
                    },
                );
                Ok(Lookup::Live(live))
            }
            Some("idle") => {
                self.cache.remove(key);
                Ok(Lookup::Expired(Expiry::Idle))
            }
            Some("absolute") => {
                self.cache.remove(key);
                Ok(Lookup::Expired(Expiry::Absolute))
            }
            _ => Err(Unavailable),
        }
    }

    /// Ends one session; its user if it existed.
    pub async fn end(&self, key: &Key) -> Result<Option<Arc<str>>, Unavailable> {
        self.cache.remove(key);
        let suffix = hex(key);
        let mut invocation = self.scripts.end.prepare_invoke();
        invocation
            .key(self.key("session", &suffix))
            .arg(&self.prefix)
            .arg(&suffix);
        let user: Option<String> = self.run(&invocation).await?;
        Ok(user.map(Into::into))
    }

    /// Drops what this replica remembers of one session.
    pub fn forget_key(&self, key: &Key) {
        self.cache.remove(key);
    }

    /// Drops what this replica remembers of a user's sessions.
    pub fn forget_user(&self, user: &str) -> usize {
        let before = self.cache.len();
        self.cache.retain(|_, c| &*c.live.user != user);
        before - self.cache.len()
    }

    /// Drops remembered sessions past their age.
    pub fn sweep_cache(&self) {
        let now = Instant::now();
        self.cache.retain(|_, c| c.until > now);
    }

    /// Every session in Redis, optionally of one user.
    pub async fn list(&self, user: Option<&str>) -> Result<Vec<SessionInfo>, Unavailable> {
        let suffixes: Vec<String> = match user {
            Some(user) => {
                self.call(redis::cmd("SMEMBERS").arg(self.key("sessions-of", user)))
                    .await?
            }
            None => {
                let mut all = Vec::new();
                let mut cursor: u64 = 0;
                let pattern = self.key("session", "*");
                loop {
                    let (next, keys): (u64, Vec<String>) = self
                        .call(
                            redis::cmd("SCAN")
                                .arg(cursor)
                                .arg("MATCH")
                                .arg(&pattern)
                                .arg("COUNT")
                                .arg(1000),
                        )
                        .await?;
                    all.extend(
                        keys.into_iter()
                            .filter_map(|k| k.rsplit(':').next().map(str::to_owned)),
                    );
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                all
            }
        };
        let mut sessions = Vec::with_capacity(suffixes.len());
        for chunk in suffixes.chunks(500) {
            let mut pipe = redis::pipe();
            for suffix in chunk {
                pipe.cmd("HMGET").arg(self.key("session", suffix)).arg(&[
                    "user",
                    "created",
                    "last_seen",
                    "ip",
                    "ua",
                    "vouched",
                ]);
            }
            let rows: Vec<Vec<Option<String>>> = self.call_all(&pipe).await?;
            for (suffix, row) in chunk.iter().zip(rows) {
                let (
                    Some(key),
                    [Some(user), Some(created), Some(last_seen), Some(ip), Some(ua), vouched],
                ) = (key_from_hex(suffix), row.as_slice())
                else {
                    continue;
                };
                sessions.push(SessionInfo {
                    key,
                    user: user.as_str().into(),
                    created_ms: created.parse().unwrap_or(0),
                    last_seen_ms: last_seen.parse().unwrap_or(0),
                    ip: ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                    user_agent: ua.as_str().into(),
                    vouched: vouched
                        .as_deref()
                        .and_then(Vouched::from_record)
                        .map(Arc::new),
                });
            }
        }
        Ok(sessions)
    }

    /// The session with this handle (the first 16 hex digits of its key).
    pub async fn find_handle(&self, wanted: &str) -> Result<Option<Key>, Unavailable> {
        if wanted.len() != 16 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let wanted = wanted.to_ascii_lowercase();
        let sessions = self.list(None).await?;
        Ok(sessions
            .into_iter()
            .map(|s| s.key)
            .find(|k| handle(k) == wanted))
    }
}
