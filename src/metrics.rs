//! What the gateway counts (requests, denials, sign-ins, the store,
//! reloads) and whether it is ready: shared by every room that records,
//! below all of them; `ops` renders it for the ops listener.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::policy::DenyReason;

/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Clone, Copy)]
pub enum UpstreamFailure {
    Unavailable,
    Timeout,
}

/// How a sign-in attempt ended, for `authgate_logins_total`.
#[derive(Debug, Clone, Copy)]
pub enum Login {
    Ok = 0,
    BadCredentials = 1,
    Throttled = 2,
    /// The right password for a locked account (the page says no more
    /// than for a wrong one).
    Locked = 3,
}

/// How a request's API token was judged, for `authgate_token_requests_total`.
#[derive(Debug, Clone, Copy)]
pub enum TokenResult {
    Accepted = 0,
    /// Unknown, expired, revoked, or its account may not use it.
    Refused = 1,
    /// Its client sent too many wrong tokens.
    Throttled = 2,
}

/// Values read when `/metrics` is asked, not counted as they happen.
#[derive(Debug, Default)]
pub struct Gauges {
    pub sessions: Option<usize>,
    pub certificate_expiry: Option<i64>,
    /// Tasks alive in the gateway's runtime: one per connection, open
    /// WebSocket and background job; a count that only grows is a leak.
    pub tasks: Option<usize>,
}

/// Lock-free counters, updated on every request.
#[derive(Default)]
pub struct Metrics {
    /// Responses by status class, 1xx to 5xx.
    responses: [AtomicU64; 5],
    upstream_unavailable: AtomicU64,
    upstream_timeout: AtomicU64,
    denied_no_rule: AtomicU64,
    denied_by_rule: AtomicU64,
    denied_missing_role: AtomicU64,
    denied_other_provider: AtomicU64,
    denied_token: AtomicU64,
    duration_buckets: [AtomicU64; BUCKETS.len()],
    duration_sum_micros: AtomicU64,
    duration_count: AtomicU64,
    /// Times the users file could not be read or did not validate; the
    /// last good users stayed in force each time.
    users_file_problems: AtomicU64,
    /// Connections closed at once because their client had
    /// `max_connections_per_client` open.
    client_cap_closed: AtomicU64,
    /// 1 while the session store answers (always, for a local one).
    store_down: std::sync::atomic::AtomicBool,
    /// Calls made to a shared store.
    store_round_trips: AtomicU64,
    websockets_open: AtomicU64,
    /// Sign-ins by result: ok, bad credentials, throttled, locked.
    logins: [AtomicU64; 4],
    tokens: [AtomicU64; 3],
    /// The session store's operations, and why sessions ended.
    pub store: std::sync::Arc<crate::store::stats::Stats>,
    /// `[ldap]`: whether it answers, and the work asked of it.
    pub directory: std::sync::Arc<DirectoryStats>,
    /// Config reloads put in force, and refused.
    reloads_ok: AtomicU64,
    reloads_refused: AtomicU64,
}

impl Metrics {
    pub fn set_store_up(&self, up: bool) {
        self.store_down.store(!up, Ordering::Relaxed);
    }

    pub fn store_up(&self) -> bool {
        !self.store_down.load(Ordering::Relaxed)
    }

    pub fn set_websockets_open(&self, open: u64) {
        self.websockets_open.store(open, Ordering::Relaxed);
    }

    pub fn set_store_round_trips(&self, calls: u64) {
        self.store_round_trips.store(calls, Ordering::Relaxed);
    }

    pub fn record_response(&self, status: StatusCode, elapsed: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.duration_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_upstream_failure(&self, failure: UpstreamFailure) {
        match failure {
            UpstreamFailure::Unavailable => &self.upstream_unavailable,
            UpstreamFailure::Timeout => &self.upstream_timeout,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_denial(&self, reason: DenyReason) {
        match reason {
            DenyReason::NoRule => &self.denied_no_rule,
            DenyReason::DenyRule => &self.denied_by_rule,
            DenyReason::MissingRole => &self.denied_missing_role,
            DenyReason::OtherProvider => &self.denied_other_provider,
            DenyReason::TokenNotAccepted => &self.denied_token,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_config_reload(&self, applied: bool) {
        if applied {
            &self.reloads_ok
        } else {
            &self.reloads_refused
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_login(&self, result: Login) {
        self.logins[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_token(&self, result: TokenResult) {
        self.tokens[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_client_cap(&self) {
        self.client_cap_closed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_users_file_problem(&self) {
        self.users_file_problems.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render(&self, gauges: &Gauges) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP authgate_build_info The running version.\n");
        out.push_str("# TYPE authgate_build_info gauge\n");
        let _ = writeln!(
            out,
            "authgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(sessions) = gauges.sessions {
            out.push_str("# HELP authgate_sessions Live sessions (not exported with a shared store, whose sessions are not this replica's to count).\n");
            out.push_str("# TYPE authgate_sessions gauge\n");
            let _ = writeln!(out, "authgate_sessions {sessions}");
        }
        out.push_str("# HELP authgate_logins_total Sign-in attempts by result.\n");
        out.push_str("# TYPE authgate_logins_total counter\n");
        for (result, counter) in ["ok", "bad_credentials", "throttled", "locked"]
            .iter()
            .zip(&self.logins)
        {
            let _ = writeln!(
                out,
                "authgate_logins_total{{result=\"{result}\"}} {}",
                load(counter)
            );
        }
        out.push_str("# HELP authgate_token_requests_total Requests that came with an API token, by how it was judged.\n");
        out.push_str("# TYPE authgate_token_requests_total counter\n");
        for (result, counter) in ["accepted", "refused", "throttled"]
            .iter()
            .zip(&self.tokens)
        {
            let _ = writeln!(
                out,
                "authgate_token_requests_total{{result=\"{result}\"}} {}",
                load(counter)
            );
        }
        if let Some(expiry) = gauges.certificate_expiry {
            out.push_str("# HELP authgate_certificate_expiry_timestamp_seconds When the certificate in force expires (its notAfter, Unix time).\n");
            out.push_str("# TYPE authgate_certificate_expiry_timestamp_seconds gauge\n");
            let _ = writeln!(
                out,
                "authgate_certificate_expiry_timestamp_seconds {expiry}"
            );
        }
        self.store.render(&mut out);
        out.push_str("# HELP authgate_requests_total Requests answered, by status class.\n");
        out.push_str("# TYPE authgate_requests_total counter\n");
        for (i, counter) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "authgate_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                load(counter)
            );
        }
        out.push_str(
            "# HELP authgate_upstream_errors_total Requests the upstream failed to answer.\n",
        );
        out.push_str("# TYPE authgate_upstream_errors_total counter\n");
        let _ = writeln!(
            out,
            "authgate_upstream_errors_total{{kind=\"unavailable\"}} {}",
            load(&self.upstream_unavailable)
        );
        let _ = writeln!(
            out,
            "authgate_upstream_errors_total{{kind=\"timeout\"}} {}",
            load(&self.upstream_timeout)
        );
        out.push_str("# HELP authgate_denied_total Requests the policy denied, by reason.\n");
        out.push_str("# TYPE authgate_denied_total counter\n");
        for (reason, counter) in [
            ("no_rule", &self.denied_no_rule),
            ("deny_rule", &self.denied_by_rule),
            ("missing_role", &self.denied_missing_role),
            ("other_provider", &self.denied_other_provider),
            ("token_not_accepted", &self.denied_token),
        ] {
            let _ = writeln!(
                out,
                "authgate_denied_total{{reason=\"{reason}\"}} {}",
                load(counter)
            );
        }
        out.push_str(
            "# HELP authgate_request_duration_seconds Time from request head to response head.\n",
        );
        out.push_str("# TYPE authgate_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (bound, counter) in BUCKETS.iter().zip(&self.duration_buckets) {
            cumulative += load(counter);
            let _ = writeln!(
                out,
                "authgate_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&self.duration_count);
        let _ = writeln!(
            out,
            "authgate_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "authgate_request_duration_seconds_sum {}",
            load(&self.duration_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "authgate_request_duration_seconds_count {count}");
        out.push_str("# HELP authgate_users_file_problems_total Reads of a changed users file that failed or did not validate (the last good users stayed in force).\n");
        out.push_str("# TYPE authgate_users_file_problems_total counter\n");
        let _ = writeln!(
            out,
            "authgate_users_file_problems_total {}",
            load(&self.users_file_problems)
        );
        out.push_str("# HELP authgate_connections_over_client_cap_total Connections closed at once because their client already had max_connections_per_client open.\n");
        out.push_str("# TYPE authgate_connections_over_client_cap_total counter\n");
        let _ = writeln!(
            out,
            "authgate_connections_over_client_cap_total {}",
            load(&self.client_cap_closed)
        );
        if let Some(tasks) = gauges.tasks {
            out.push_str("# HELP authgate_tasks Tasks alive in the gateway's async runtime (connections, open WebSockets, background jobs).\n");
            out.push_str("# TYPE authgate_tasks gauge\n");
            let _ = writeln!(out, "authgate_tasks {tasks}");
        }
        out.push_str("# HELP authgate_store_up 1 while the session store answers, 0 while it is unavailable.\n");
        out.push_str("# TYPE authgate_store_up gauge\n");
        let _ = writeln!(out, "authgate_store_up {}", u8::from(self.store_up()));
        let directory = &self.directory;
        out.push_str("# HELP authgate_directory_up 1 while [ldap] answers (or is not configured), 0 from a failed exchange to the next good one.\n");
        out.push_str("# TYPE authgate_directory_up gauge\n");
        let _ = writeln!(
            out,
            "authgate_directory_up {}",
            u8::from(!directory.down.load(Ordering::Relaxed))
        );
        for (name, help, value) in [
            (
                "failures",
                "Exchanges with the directory that failed (unreachable, slow, refused).",
                &directory.failures,
            ),
            (
                "connections_opened",
                "Connections opened to the directory (they are pooled).",
                &directory.connections_opened,
            ),
            (
                "searches",
                "Searches sent to the directory.",
                &directory.searches,
            ),
            (
                "binds",
                "Binds sent to the directory (password checks).",
                &directory.binds,
            ),
        ] {
            let _ = writeln!(out, "# HELP authgate_directory_{name}_total {help}");
            let _ = writeln!(out, "# TYPE authgate_directory_{name}_total counter");
            let _ = writeln!(out, "authgate_directory_{name}_total {}", load(value));
        }
        out.push_str("# HELP authgate_websockets_open WebSockets open through the gateway.\n");
        out.push_str("# TYPE authgate_websockets_open gauge\n");
        let _ = writeln!(
            out,
            "authgate_websockets_open {}",
            load(&self.websockets_open)
        );
        out.push_str(
            "# HELP authgate_store_round_trips_total Calls made to a shared session store.\n",
        );
        out.push_str("# TYPE authgate_store_round_trips_total counter\n");
        let _ = writeln!(
            out,
            "authgate_store_round_trips_total {}",
            load(&self.store_round_trips)
        );
        out.push_str("# HELP authgate_config_reloads_total Config reloads by result: ok (in force) or error (refused; the running config stayed).\n");
        out.push_str("# TYPE authgate_config_reloads_total counter\n");
        for (result, counter) in [("ok", &self.reloads_ok), ("error", &self.reloads_refused)] {
            let _ = writeln!(
                out,
                "authgate_config_reloads_total{{result=\"{result}\"}} {}",
                load(counter)
            );
        }
        out
    }
}

/// Whether the gateway takes traffic: a one-way latch from starting to
/// serving to draining.
#[derive(Default)]
pub struct Readiness(AtomicU8);

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    pub fn serving(&self) {
        let _ = self
            .0
            .compare_exchange(STARTING, SERVING, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == SERVING
    }
}

/// Directory health and work, for `/metrics`.
#[derive(Debug, Default)]
pub struct DirectoryStats {
    pub down: std::sync::atomic::AtomicBool,
    /// Exchanges that failed (down, slow, refused).
    pub failures: AtomicU64,
    /// Connections opened since start (pooled ones are reused).
    pub connections_opened: AtomicU64,
    pub searches: AtomicU64,
    pub binds: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let m = Metrics::default();
        m.record_response(StatusCode::OK, Duration::from_micros(500));
        m.record_response(StatusCode::BAD_GATEWAY, Duration::from_millis(30));
        m.record_response(StatusCode::OK, Duration::from_secs(60));
        let text = m.render(&Gauges::default());
        assert!(text.contains("authgate_requests_total{class=\"2xx\"} 2\n"));
        assert!(text.contains("authgate_requests_total{class=\"5xx\"} 1\n"));
        assert!(text.contains("authgate_request_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("authgate_request_duration_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("authgate_request_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("authgate_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("authgate_request_duration_seconds_count 3\n"));
    }

    #[test]
    fn readiness_latch() {
        let r = Readiness::default();
        assert!(!r.is_ready());
        r.serving();
        assert!(r.is_ready());
        r.draining();
        r.serving();
        assert!(!r.is_ready());
    }
}
