//! What the store reports to `/metrics`: how long its operations take and
//! how many fail (by backend), and why sessions ended.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Upper bounds (seconds) of the store operation histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Logout,
    Idle,
    Absolute,
    /// An admin, the command line or "end all" ended it.
    Revoked,
    /// Its user was locked, removed or given a new password.
    UserChange,
}

const REASONS: [(Ended, &str); 5] = [
    (Ended::Logout, "logout"),
    (Ended::Idle, "idle"),
    (Ended::Absolute, "absolute"),
    (Ended::Revoked, "revoked"),
    (Ended::UserChange, "user_change"),
];

#[derive(Default)]
pub struct Stats {
    backend: OnceLock<&'static str>,
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
    errors: AtomicU64,
    ended: [AtomicU64; REASONS.len()],
}

impl Stats {
    /// Names the backend in the metrics' labels (once, when the store opens).
    pub fn set_backend(&self, backend: &'static str) {
        let _ = self.backend.set(backend);
    }

    /// One operation that went to the record (a SQLite commit waited for,
    /// a Redis call): how long, and whether it failed.
    pub fn record(&self, elapsed: Duration, ok: bool) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn ended(&self, why: Ended, sessions: usize) {
        if sessions == 0 {
            return;
        }
        let i = REASONS
            .iter()
            .position(|(r, _)| *r == why)
            .expect("every reason is listed");
        self.ended[i].fetch_add(sessions as u64, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let backend = self.backend.get().copied().unwrap_or("none");
        out.push_str("# HELP authgate_sessions_ended_total Sessions ended, by reason (as this gateway saw them).\n");
        out.push_str("# TYPE authgate_sessions_ended_total counter\n");
        for ((_, reason), counter) in REASONS.iter().zip(&self.ended) {
            let _ = writeln!(
                out,
                "authgate_sessions_ended_total{{reason=\"{reason}\"}} {}",
                load(counter)
            );
        }
        out.push_str("# HELP authgate_store_operation_duration_seconds Time of operations that go to the session record (a state-file commit waited for, a Redis call).\n");
        out.push_str("# TYPE authgate_store_operation_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (bound, counter) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += load(counter);
            let _ = writeln!(
                out,
                "authgate_store_operation_duration_seconds_bucket{{backend=\"{backend}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&self.count);
        let _ = writeln!(
            out,
            "authgate_store_operation_duration_seconds_bucket{{backend=\"{backend}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "authgate_store_operation_duration_seconds_sum{{backend=\"{backend}\"}} {}",
            load(&self.sum_micros) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "authgate_store_operation_duration_seconds_count{{backend=\"{backend}\"}} {count}"
        );
        out.push_str("# HELP authgate_store_errors_total Store operations that failed (the record could not be written, Redis did not answer).\n");
        out.push_str("# TYPE authgate_store_errors_total counter\n");
        let _ = writeln!(
            out,
            "authgate_store_errors_total{{backend=\"{backend}\"}} {}",
            load(&self.errors)
        );
    }
}
