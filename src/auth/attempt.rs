//! One sign-in attempt held against the throttle's allowances, wherever the
//! counters live: this process's throttle, or Redis when replicas share
//! them (so that N replicas do not give an attacker N times the guesses).

use std::net::IpAddr;
use std::sync::Arc;

use super::throttle::{shared_counters, Reservation, Throttle, Throttled};
use crate::store::redis::Redis;
use crate::store::Unavailable;

/// Why no attempt was granted.
pub(super) enum Refused {
    Throttled(Throttled),
    Unavailable,
}

#[must_use = "settle the attempt with failed() or succeeded()"]
pub(super) enum Attempt<'a> {
    Local(Reservation<'a>),
    Shared(Shared),
}

/// Counters taken in Redis; given back if dropped unsettled.
pub(super) struct Shared {
    redis: Arc<Redis>,
    counters: Vec<String>,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was wrong: the attempt stays counted.
    pub(super) fn failed(self) {
        match self {
            Attempt::Local(r) => r.failed(),
            Attempt::Shared(mut s) => s.settled = true,
        }
    }

    /// The password was right but the sign-in is not over (a code comes
    /// next): the attempt is given back and the count stays, so that only
    /// a whole sign-in starts it again. A right password must not buy
    /// fresh guesses at the code.
    pub(super) fn given_back(self) {
        // Dropping an unsettled attempt gives it back.
        drop(self);
    }

    /// The password was right: the account's count starts again, and the
    /// attempt is not held against the client.
    pub(super) fn succeeded(self) {
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

/// Takes an attempt for `account` from `ip`.
pub(super) async fn reserve<'a>(
    throttle: &'a Throttle,
    shared: Option<&Arc<Redis>>,
    account: &str,
    ip: IpAddr,
) -> Result<Attempt<'a>, Refused> {
    let Some(redis) = shared else {
        return throttle
            .reserve(account, ip, crate::session::now_ms())
            .map(Attempt::Local)
            .map_err(Refused::Throttled);
    };
    let counters = shared_counters(account, ip, throttle.max_failures());
    match redis.reserve(&counters, throttle.window()).await {
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
