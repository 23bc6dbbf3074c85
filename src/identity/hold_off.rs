//! After a remote service (an identity provider, a directory) failed, the
//! sign-ins that need it are answered "unavailable" at once for a short
//! while, rather than each waiting out a timeout of its own.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct HoldOff {
    span: Duration,
    failed_at: Mutex<Option<Instant>>,
}

impl HoldOff {
    pub const fn new(span: Duration) -> HoldOff {
        HoldOff {
            span,
            failed_at: Mutex::new(None),
        }
    }

    /// Within `span` of the last failure.
    pub fn active(&self) -> bool {
        self.failed_at
            .lock()
            .expect("not poisoned")
            .is_some_and(|at| at.elapsed() < self.span)
    }

    pub fn failed(&self) {
        *self.failed_at.lock().expect("not poisoned") = Some(Instant::now());
    }

    pub fn succeeded(&self) {
        *self.failed_at.lock().expect("not poisoned") = None;
    }
}
