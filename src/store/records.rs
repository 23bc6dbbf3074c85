//! Short-lived records of a sign-in in progress: pending sign-ins, secrets
//! being enrolled (each under a kind and the SHA-256 key of its cookie or
//! session, with a lifetime), and the step of each account's last
//! accepted code. In this process, or in Redis when replicas share a store
//! (so that the code step may reach any replica, and a code used on one
//! is refused on the others).

use std::sync::Arc;

use dashmap::DashMap;

use super::redis::Redis;
use super::Unavailable;
use crate::session::Key;

enum Backend {
    Memory {
        /// By kind and key: the value and when it ends (ms).
        temporary: DashMap<(&'static str, Key), (String, u64)>,
        /// The step of the last code accepted, per account.
        last_steps: DashMap<Arc<str>, u64>,
    },
    Redis(Arc<Redis>),
}

pub struct Records {
    backend: Backend,
}

impl Records {
    pub(super) fn new(shared: Option<Arc<Redis>>) -> Records {
        Records {
            backend: match shared {
                Some(redis) => Backend::Redis(redis),
                None => Backend::Memory {
                    temporary: DashMap::new(),
                    last_steps: DashMap::new(),
                },
            },
        }
    }

    /// Keeps `value` as the `kind` record of `key` for `ttl_ms`.
    pub async fn put(
        &self,
        kind: &'static str,
        key: &Key,
        value: String,
        ttl_ms: u64,
    ) -> Result<(), Unavailable> {
        match &self.backend {
            Backend::Redis(redis) => {
                redis
                    .put_temporary(kind, &crate::hex(key), &value, ttl_ms)
                    .await
            }
            Backend::Memory { temporary, .. } => {
                let until = crate::session::now_ms() + ttl_ms;
                temporary.insert((kind, *key), (value, until));
                Ok(())
            }
        }
    }

    /// Keeps an empty `kind` record of `key` for `ttl_ms` unless one is
    /// there: true for the one caller that made it (a token's `jti` seen
    /// for the first time).
    pub async fn claim(
        &self,
        kind: &'static str,
        key: &Key,
        ttl_ms: u64,
    ) -> Result<bool, Unavailable> {
        match &self.backend {
            Backend::Redis(redis) => redis.claim_temporary(kind, &crate::hex(key), ttl_ms).await,
            Backend::Memory { temporary, .. } => {
                let now = crate::session::now_ms();
                let mut claimed = false;
                temporary
                    .entry((kind, *key))
                    .and_modify(|(_, until)| {
                        if *until <= now {
                            *until = now + ttl_ms;
                            claimed = true;
                        }
                    })
                    .or_insert_with(|| {
                        claimed = true;
                        (String::new(), now + ttl_ms)
                    });
                Ok(claimed)
            }
        }
    }

    /// The `kind` record of `key`, if it is there and its time has not ended.
    pub async fn get(&self, kind: &'static str, key: &Key) -> Result<Option<String>, Unavailable> {
        match &self.backend {
            Backend::Redis(redis) => redis.get_temporary(kind, &crate::hex(key)).await,
            Backend::Memory { temporary, .. } => {
                let now = crate::session::now_ms();
                Ok(temporary
                    .get(&(kind, *key))
                    .filter(|e| e.1 > now)
                    .map(|e| e.0.clone()))
            }
        }
    }

    /// Removes the `kind` record of `key` and hands its value to the one
    /// caller that did (`None` for every other, and for one whose time
    /// had ended).
    pub async fn take(&self, kind: &'static str, key: &Key) -> Result<Option<String>, Unavailable> {
        match &self.backend {
            Backend::Redis(redis) => redis.take_temporary(kind, &crate::hex(key)).await,
            Backend::Memory { temporary, .. } => {
                let now = crate::session::now_ms();
                Ok(temporary
                    .remove(&(kind, *key))
                    .filter(|(_, (_, until))| *until > now)
                    .map(|(_, (value, _))| value))
            }
        }
    }

    /// The step of the account's last accepted code.
    pub async fn last_step(&self, user: &Arc<str>) -> Result<Option<u64>, Unavailable> {
        match &self.backend {
            Backend::Redis(redis) => redis.last_step(user).await,
            Backend::Memory { last_steps, .. } => Ok(last_steps.get(user).map(|s| *s)),
        }
    }

    /// Records `step` as the account's last accepted one, unless a later
    /// or equal one got there first (the same code sent twice at once):
    /// true if this call accepted it. A shared store keeps it `keep_ms`.
    pub async fn advance_step(
        &self,
        user: &Arc<str>,
        step: u64,
        keep_ms: u64,
    ) -> Result<bool, Unavailable> {
        let last_steps = match &self.backend {
            Backend::Redis(redis) => return redis.advance_step(user, step, keep_ms).await,
            Backend::Memory { last_steps, .. } => last_steps,
        };
        let mut accepted = false;
        last_steps
            .entry(user.clone())
            .and_modify(|last| {
                if step > *last {
                    *last = step;
                    accepted = true;
                }
            })
            .or_insert_with(|| {
                accepted = true;
                step
            });
        Ok(accepted)
    }

    /// Drops this process's records past their time.
    pub fn sweep(&self, now: u64) {
        if let Backend::Memory { temporary, .. } = &self.backend {
            temporary.retain(|_, (_, until)| *until > now);
        }
    }
}
