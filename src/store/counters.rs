//! The sign-in counters: one attempt held against the throttle's
//! allowances, wherever the counters live: this process's [`Throttle`],
//! or Redis when replicas share them (so that N replicas do not give an
//! attacker N times the guesses).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::redis::Redis;
use super::throttle::{shared_counters, Reservation, Throttle, Throttled};
use super::Unavailable;

/// Most failure windows kept per map (accounts, clients).
const THROTTLE_CAPACITY: usize = 100_000;

/// The limits an attempt is counted under: `[login] max_failures` and
/// `failure_window` of the config the request runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_failures: u32,
    pub window: Duration,
}

/// Why no attempt was granted.
pub enum Refused {
    Throttled(Throttled),
    Unavailable,
}

enum Backend {
    /// This process's windows (with the limits last used, for its sweep).
    Memory(Throttle),
    Redis(Arc<Redis>),
}

/// Where sign-in attempts are counted.
pub struct Counters {
    backend: Backend,
}

#[must_use = "settle the attempt with failed() or succeeded()"]
pub enum Attempt<'a> {
    Local(Reservation<'a>),
    Shared(Shared),
}

/// Counters taken in Redis; given back if dropped unsettled.
pub struct Shared {
    redis: Arc<Redis>,
    counters: Vec<String>,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was wrong: the attempt stays counted.
    pub fn failed(self) {
        match self {
            Attempt::Local(r) => r.failed(),
            Attempt::Shared(mut s) => s.settled = true,
        }
    }

    /// The password was right but the sign-in is not over (a code comes
    /// next): the attempt is given back and the count stays, so that only
    /// a whole sign-in starts it again. A right password must not buy
    /// fresh guesses at the code.
    pub fn given_back(self) {
        // Dropping an unsettled attempt gives it back.
        drop(self);
    }

    /// The password was right: the account's count starts again, and the
    /// attempt is not held against the client.
    pub fn succeeded(self) {
        match self {
            Attempt::Local(r) => r.succeeded(),
            Attempt::Shared(mut s) => {
                s.settled = true;
                let redis = s.redis.clone();
                let mut counters = std::mem::take(&mut s.counters);
                tokio::spawn(async move {
                    let account = counters.remove(0);
                    let _ = redis.clear(&account).await;
                    let _ = redis.refund(&counters).await;
                });
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.settled || self.counters.is_empty() {
            return;
        }
        let redis = self.redis.clone();
        let counters = std::mem::take(&mut self.counters);
        tokio::spawn(async move {
            let _ = redis.refund(&counters).await;
        });
    }
}

impl Counters {
    pub(super) fn new(limits: Limits, shared: Option<Arc<Redis>>) -> Counters {
        let backend = match shared {
            Some(redis) => Backend::Redis(redis),
            None => Backend::Memory(Throttle::new(
                limits.max_failures,
                limits.window,
                THROTTLE_CAPACITY,
            )),
        };
        Counters { backend }
    }

    /// Takes an attempt for `account` from `ip` under `limits`.
    pub async fn reserve(
        &self,
        limits: Limits,
        account: &str,
        ip: IpAddr,
    ) -> Result<Attempt<'_>, Refused> {
        let redis = match &self.backend {
            Backend::Redis(redis) => redis,
            Backend::Memory(throttle) => {
                if throttle.max_failures() != limits.max_failures
                    || throttle.window() != limits.window
                {
                    // A reload changed them: windows already open keep their start.
                    throttle.set_limits(limits.max_failures, limits.window);
                }
                return throttle
                    .reserve(account, ip, crate::session::now_ms())
                    .map(Attempt::Local)
                    .map_err(Refused::Throttled);
            }
        };
        let counters = shared_counters(account, ip, limits.max_failures);
        match redis.reserve(&counters, limits.window).await {
            Ok(None) => Ok(Attempt::Shared(Shared {
                redis: redis.clone(),
                counters: counters.into_iter().map(|(key, _)| key).collect(),
                settled: false,
            })),
            Ok(Some(ms)) => Err(Refused::Throttled(Throttled {
                retry_after_secs: ms.div_ceil(1000).max(1),
            })),
            Err(Unavailable) => Err(Refused::Unavailable),
        }
    }

    /// Drops this process's windows that have ended.
    pub fn sweep(&self, now: u64) {
        if let Backend::Memory(throttle) = &self.backend {
            throttle.sweep(now);
        }
    }
}
