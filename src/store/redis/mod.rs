//! The `redis` backend: sessions, users and sign-in counters shared by every
//! replica through one Redis (6+) or Valkey.
//!
//! Layout, all under `key_prefix` (default `authgate:`):
//! - `session:{hex SHA-256 of the ID}`: a hash (user, fp, gen, ip, ua,
//!   created, last_seen) that Redis expires at the earlier of its idle and
//!   absolute deadlines; times come from Redis `TIME`, never from a
//!   replica's clock;
//! - `sessions-of:{user}`: the set of a user's session hashes' suffixes;
//! - `user:{user}`: a hash (name, password, roles, locked, gen), no TTL;
//!   `users`: the set of names; `changes`: a counter bumped by every user
//!   change, which replicas poll every [`POLL_USERS_EVERY`];
//! - `throttle:{a|c}:{hex}`: failed sign-ins per account or client, for
//!   the sign-in window.
//!
//! Ending one session deletes it. A lock, password change or "end all"
//! bumps the user's `gen`: every session begun before it carries the old
//! value and dies at its next lookup on any replica.
//!
//! This file keeps the connection, its scripts and its health; by what
//! they keep: `sessions.rs`, `users.rs`, `counters.rs` (sign-in counters)
//! and `records.rs` (secrets, short-lived records, code steps).
//!
//! A replica keeps what it found for a session for at most [`CACHE_AGE`]
//! (and never past the session's deadline), so most requests make no round
//! trip; nothing is ever answered from memory after that, so an outage
//! fails closed. Every call gives up after the configured timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{StoreError, Unavailable};
use crate::hex;
use crate::session::{handle, Expiry, Key, LiveSession, Lookup, NewSession, SessionInfo, Vouched};
use crate::users::file::{Change, UserFileError};
use crate::users::{canonical, Entry, TotpSecret, Users};

mod counters;
mod records;
mod sessions;
mod tokens;
mod users;

/// Longest a replica answers from what it last found for a session.
pub const CACHE_AGE: Duration = Duration::from_millis(800);
/// How often a replica looks for user changes made elsewhere.
pub const POLL_USERS_EVERY: Duration = Duration::from_millis(500);
/// How long a starting replica that finds Redis without users waits for a
/// running one to put back the users it holds, before the users file
/// seeds it: a Redis that came back empty must not bring back passwords
/// and locks the file still has from before changes made since.
pub const SEED_GRACE: Duration = Duration::from_millis(1500);
/// How long a replica that seeds an empty Redis holds the others off; a
/// replica that dies while seeding lets another take over after it.
pub const SEEDING_LOCK: Duration = Duration::from_secs(10);

/// Milliseconds of Redis `TIME`, inside a script.
const NOW: &str = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)";

const CREATE: &str = "
-- KEYS: session, sessions-of, user; ARGV: user, fp, ip, ua, idle, absolute, suffix, mfa, vouched ('' for none), proved ms ('' for now)
-- The generation is Redis's, not the replica's copy, which may be a
-- moment old: a session must not be born already revoked.
NOW
local gen = redis.call('HGET', KEYS[3], 'gen') or '0'
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'fp', ARGV[2], 'gen', gen, 'ip', ARGV[3], 'ua', ARGV[4], 'created', now, 'last_seen', now, 'auth', now, 'mfa', ARGV[8])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'auth', math.min(tonumber(ARGV[10]), now)) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'vouched', ARGV[9]) end
redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[5]), tonumber(ARGV[6])))
redis.call('SADD', KEYS[2], ARGV[7])
return now
";

const LOOKUP: &str = "
-- KEYS: session; ARGV: idle, absolute, touch (0/1), touch_every
local v = redis.call('HMGET', KEYS[1], 'user', 'fp', 'gen', 'created', 'last_seen', 'auth', 'mfa', 'vouched')
if not v[1] then return false end
NOW
local idle, absolute = tonumber(ARGV[1]), tonumber(ARGV[2])
local created, last = tonumber(v[4]), tonumber(v[5])
if now - created >= absolute then redis.call('DEL', KEYS[1]) return {'absolute'} end
if now - last >= idle then redis.call('DEL', KEYS[1]) return {'idle'} end
if ARGV[3] == '1' and now - last >= tonumber(ARGV[4]) then
  last = now
  redis.call('HSET', KEYS[1], 'last_seen', now)
  redis.call('PEXPIRE', KEYS[1], math.min(idle, created + absolute - now))
end
return {'live', v[1], v[2], v[3], tostring(created), tostring(last), tostring(now), v[6] or tostring(created), v[7] or '0', v[8] or ''}
";

const END: &str = "
-- KEYS: session; ARGV: prefix, suffix
local user = redis.call('HGET', KEYS[1], 'user')
if not user then return false end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[1] .. 'sessions-of:' .. user, ARGV[2])
return user
";

const REAUTH: &str = "
-- KEYS: session; ARGV: mfa (0/1)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
NOW
redis.call('HSET', KEYS[1], 'auth', now)
if ARGV[1] == '1' then redis.call('HSET', KEYS[1], 'mfa', '1') end
return 1
";

const ADVANCE_STEP: &str = "
-- KEYS: the account's last step; ARGV: step, keep (ms)
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

const CHANGE_USER: &str = "
-- KEYS: user, users, changes, sessions-of; ARGV: op, key, name, password, roles, prefix
local op = ARGV[1]
local exists = redis.call('EXISTS', KEYS[1]) == 1
if op == 'add' then
  if exists then return 'duplicate' end
  redis.call('HSET', KEYS[1], 'name', ARGV[3], 'password', ARGV[4], 'roles', ARGV[5], 'locked', '0', 'gen', '0')
  redis.call('SADD', KEYS[2], ARGV[2])
elseif not exists then
  return 'unknown'
elseif op == 'password' then
  redis.call('HSET', KEYS[1], 'password', ARGV[4])
elseif op == 'roles' then
  redis.call('HSET', KEYS[1], 'roles', ARGV[5])
elseif op == 'lock' then
  redis.call('HSET', KEYS[1], 'locked', '1')
elseif op == 'unlock' then
  redis.call('HSET', KEYS[1], 'locked', '0')
elseif op == 'delete' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
elseif op == 'totp' then
  redis.call('HSET', KEYS[1], 'totp', ARGV[4], 'recovery', ARGV[5])
elseif op == 'totp_reset' then
  redis.call('HDEL', KEYS[1], 'totp', 'recovery')
elseif op == 'recovery_use' then
  local codes = redis.call('HGET', KEYS[1], 'recovery') or ''
  local kept, found = {}, false
  for code in string.gmatch(codes, '[^,]+') do
    if code == ARGV[4] and not found then found = true else table.insert(kept, code) end
  end
  if not found then return 'unknown_code' end
  redis.call('HSET', KEYS[1], 'recovery', table.concat(kept, ','))
elseif op == 'passkey_add' or op == 'passkey_remove' or op == 'passkey_use' then
  -- ARGV[4]: the credential ID; ARGV[5]: the record, or the use.
  local list = cjson.decode(redis.call('HGET', KEYS[1], 'passkeys') or '[]')
  local at = nil
  for i, p in ipairs(list) do if p.id == ARGV[4] then at = i end end
  if op == 'passkey_add' then
    if at then return 'passkey_twice' end
    if #list >= PASSKEYS_MAX then return 'too_many' end
    table.insert(list, cjson.decode(ARGV[5]))
  elseif not at then
    return 'unknown_passkey'
  elseif op == 'passkey_remove' then
    table.remove(list, at)
  else
    local use = cjson.decode(ARGV[5])
    if list[at].credential ~= use.before then return 'passkey_changed' end
    list[at].credential = use.after
    list[at].used = use.used
  end
  if #list == 0 then
    redis.call('HDEL', KEYS[1], 'passkeys')
  else
    redis.call('HSET', KEYS[1], 'passkeys', cjson.encode(list))
  end
elseif op == 'passkeys_reset' then
  redis.call('HDEL', KEYS[1], 'passkeys')
end
local ended = 0
if op == 'password' or op == 'lock' or op == 'delete' or op == 'end_sessions' or op == 'passkeys_reset' then
  if op ~= 'delete' then redis.call('HINCRBY', KEYS[1], 'gen', 1) end
  for _, suffix in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    ended = ended + redis.call('DEL', ARGV[6] .. 'session:' .. suffix)
  end
  redis.call('DEL', KEYS[4])
end
redis.call('INCR', KEYS[3])
return 'ok ' .. ended
";

const REPLACE_VOUCHED: &str = "
-- KEYS: sessions-of; ARGV: prefix, the start of the provider's vouched text, vouched ('': end them)
local n = 0
for _, suffix in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. 'session:' .. suffix
  local v = redis.call('HGET', key, 'vouched')
  if not v then
    if redis.call('EXISTS', key) == 0 then redis.call('SREM', KEYS[1], suffix) end
  elseif string.sub(v, 1, string.len(ARGV[2])) == ARGV[2] then
    n = n + 1
    if ARGV[3] == '' then
      redis.call('DEL', key)
      redis.call('SREM', KEYS[1], suffix)
    else
      redis.call('HSET', key, 'vouched', ARGV[3])
    end
  end
end
return n
";

const RESERVE: &str = "
-- KEYS: counters; ARGV: window, then one allowance per key
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then ttl = tonumber(ARGV[1]) end
    return ttl
  end
end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
end
return 0
";

const REFUND: &str = "
for _, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n > 0 then redis.call('DECR', key) end
end
return 0
";

/// What a replica found for a session, and until when it may use it.
struct Cached {
    live: LiveSession,
    until: Instant,
}

pub struct Redis {
    con: ConnectionManager,
    prefix: String,
    timeout: Duration,
    idle_ms: u64,
    absolute_ms: u64,
    /// `last_seen` is written at most this often per session.
    touch_every_ms: u64,
    cache: DashMap<Key, Cached>,
    up: AtomicBool,
    round_trips: AtomicU64,
    stats: Arc<super::stats::Stats>,
    scripts: Scripts,
}

struct Scripts {
    create: Script,
    lookup: Script,
    end: Script,
    reauth: Script,
    advance_step: Script,
    change_user: Script,
    reserve: Script,
    refund: Script,
    replace_vouched: Script,
}

fn key_from_hex(text: &str) -> Option<Key> {
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

pub use crate::config::RedisSettings as Settings;

/// `maxmemory-policy` values under which Redis never evicts a key.
const SAFE_POLICIES: [&str; 1] = ["noeviction"];

impl Redis {
    /// Connects (within the timeout), and refuses a Redis that may evict
    /// session or user keys.
    /// The Redis `config`'s `[store]` names, if it names one.
    pub async fn of_config(
        config: &crate::Config,
        stats: Arc<super::stats::Stats>,
    ) -> Result<Option<Redis>, StoreError> {
        let crate::config::StoreBackend::Redis(settings) = &config.store.backend else {
            return Ok(None);
        };
        let session = &config.session;
        Redis::connect(
            settings,
            session.idle_timeout,
            session.absolute_timeout,
            stats,
        )
        .await
        .map(Some)
    }

    pub async fn connect(
        settings: &Settings,
        idle: Duration,
        absolute: Duration,
        stats: Arc<super::stats::Stats>,
    ) -> Result<Redis, StoreError> {
        let unusable = |cause: String| StoreError::Redis(cause);
        let mut info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())
            .map_err(|e| unusable(format!("bad url: {e}")))?;
        if let Some(password) = &settings.password {
            let with_password = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(with_password);
        }
        let client = redis::Client::open(info).map_err(|e| unusable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(100))))
            .set_response_timeout(Some(settings.timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(2);
        let con = tokio::time::timeout(
            settings.timeout * 8,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| unusable("no answer".into()))?
        .map_err(|e| unusable(e.to_string()))?;
        let idle_ms = idle.as_millis() as u64;
        let store = Redis {
            con,
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            idle_ms,
            absolute_ms: absolute.as_millis() as u64,
            touch_every_ms: (idle_ms / 30).min(60_000),
            cache: DashMap::new(),
            up: AtomicBool::new(true),
            round_trips: AtomicU64::new(0),
            stats,
            scripts: Scripts {
                create: Script::new(&CREATE.replace("NOW", NOW)),
                lookup: Script::new(&LOOKUP.replace("NOW", NOW)),
                end: Script::new(END),
                reauth: Script::new(&REAUTH.replace("NOW", NOW)),
                advance_step: Script::new(ADVANCE_STEP),
                change_user: Script::new(&CHANGE_USER.replace(
                    "PASSKEYS_MAX",
                    &crate::users::passkey::MAX_PER_USER.to_string(),
                )),
                reserve: Script::new(RESERVE),
                refund: Script::new(REFUND),
                replace_vouched: Script::new(REPLACE_VOUCHED),
            },
        };
        let policy: Result<Vec<String>, _> = store
            .call(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
            .await;
        match policy {
            Ok(pair) => {
                if let Some(policy) = pair.get(1) {
                    if !SAFE_POLICIES.contains(&policy.as_str()) {
                        return Err(unusable(format!(
                            "its maxmemory-policy is {policy}, under which Redis may evict sessions and users when it is full; set `maxmemory-policy noeviction`"
                        )));
                    }
                }
            }
            // Managed services often refuse CONFIG: nothing to read, go on.
            Err(_) => {
                tracing::warn!("cannot read Redis's maxmemory-policy (CONFIG GET refused); make sure it is noeviction")
            }
        }
        Ok(store)
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }

    /// Whether the last call reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Calls made to Redis so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    async fn call<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Unavailable> {
        let mut con = self.con.clone();
        let started = std::time::Instant::now();
        self.finish(
            tokio::time::timeout(self.timeout, cmd.query_async(&mut con)).await,
            started,
        )
    }

    /// Sends every command of `pipe` in one round trip.
    async fn call_all<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, Unavailable> {
        let mut con = self.con.clone();
        let started = std::time::Instant::now();
        self.finish(
            tokio::time::timeout(self.timeout, pipe.query_async(&mut con)).await,
            started,
        )
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        let mut con = self.con.clone();
        let started = std::time::Instant::now();
        self.finish(
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut con)).await,
            started,
        )
    }

    fn finish<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
        started: std::time::Instant,
    ) -> Result<T, Unavailable> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.stats
            .record(started.elapsed(), matches!(result, Ok(Ok(_))));
        match result {
            Ok(Ok(value)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("the session store (Redis) answers again");
                }
                Ok(value)
            }
            Ok(Err(e))
                if !e.is_io_error()
                    && !e.is_timeout()
                    && !e.is_connection_dropped()
                    && !e.is_connection_refusal() =>
            {
                tracing::error!(error = %e, "Redis refused a command");
                Err(Unavailable)
            }
            failure => {
                if self.up.swap(false, Ordering::Relaxed) {
                    let why = match failure {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {:?}", self.timeout),
                    };
                    tracing::error!(error = %why, "THE SESSION STORE (REDIS) IS UNAVAILABLE: sign-ins and routes that need a session answer 503 until it is back");
                }
                Err(Unavailable)
            }
        }
    }
}
