//! What a connection is doing, so that one that does nothing is closed
//! and its place under `max_connections` goes to someone else; and the
//! lingering close that lets an early answer reach its client.
//!
//! A connection is closed (gracefully: HTTP/1.1 finishes the response in
//! progress, HTTP/2 sends GOAWAY and lets open streams end) when
//! - no request has come within `header_timeout` of the handshake;
//! - an HTTP/1.1 request head has been arriving for longer than
//!   `header_timeout` (a slow-loris client);
//! - no request has been in flight for `idle_timeout` (keep-alive).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Kept (for HTTP/1.1) when the gateway answered before the client had sent
/// its whole request: the rest is read and thrown away for at most this
/// long and this much, so the client is not cut off (a reset would destroy
/// the answer in its receive buffer) before it has read the answer.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
pub const LINGER_BYTES: u64 = 8 << 20;

const NONE: u64 = u64::MAX;

/// Counters a connection's requests update and its watchdog reads.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    in_flight: AtomicU32,
    requests: AtomicU64,
    /// Milliseconds since `base` of the last request's start or end.
    last_active_ms: AtomicU64,
    /// Milliseconds since `base` when the HTTP/1.1 head now arriving began.
    head_started_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            base: Instant::now(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(NONE),
        }
    }
}

/// A request in progress; its end (or cancellation) is noted on drop.
pub struct Busy<'a> {
    activity: &'a Activity,
    /// The request's number on the connection, from 0.
    pub index: u64,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why the watchdog closed a connection, for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    NoFirstRequest,
    SlowHead,
    KeptAlive,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_active_ms.store(self.now_ms(), Ordering::Release);
    }

    /// A request begins: the connection is not idle until it ends.
    pub fn begin(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let index = self.requests.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy {
            activity: self,
            index,
        }
    }

    /// An HTTP/1.1 request head started (`true`) or finished arriving.
    pub fn head_arriving(&self, arriving: bool) {
        let now = if arriving { self.now_ms() } else { NONE };
        if arriving {
            let _ = self.head_started_ms.compare_exchange(
                NONE,
                now,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        } else {
            self.head_started_ms.store(NONE, Ordering::Release);
        }
    }

    /// When the connection counts as idle, and why; `None` while busy.
    fn deadline(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<(u64, Idle)> {
        let header = header_timeout.as_millis() as u64;
        let head = self.head_started_ms.load(Ordering::Acquire);
        if head != NONE {
            return Some((head.saturating_add(header), Idle::SlowHead));
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.requests.load(Ordering::Acquire) == 0 {
            return Some((header, Idle::NoFirstRequest));
        }
        let last = self.last_active_ms.load(Ordering::Acquire);
        Some((
            last.saturating_add(idle_timeout.as_millis() as u64),
            Idle::KeptAlive,
        ))
    }

    /// Resolves when the connection has been idle past its limits.
    pub async fn idle(&self, header_timeout: Duration, idle_timeout: Duration) -> Idle {
        loop {
            let now = self.now_ms();
            let wake = match self.deadline(header_timeout, idle_timeout) {
                Some((deadline, why)) if deadline <= now => return why,
                Some((deadline, _)) => deadline,
                // Busy: look again in a while (a request's end moves the deadline on).
                None => now + idle_timeout.min(header_timeout).as_millis() as u64,
            };
            tokio::time::sleep_until(self.base + Duration::from_millis(wake)).await;
        }
    }
}

/// The lingering close: the answer is complete, so say so (TLS
/// close_notify, then FIN), then read and discard what the client is still
/// sending, within [`LINGER_TIME`] and [`LINGER_BYTES`], before closing.
pub async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let _ = io.shutdown().await;
        let mut scratch = vec![0u8; 16 * 1024];
        let mut discarded = 0u64;
        while discarded < LINGER_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n as u64,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: Duration = Duration::from_millis(500);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_idle_after_the_header_timeout() {
        let activity = Activity::default();
        let started = Instant::now();
        assert_eq!(activity.idle(HEAD, IDLE).await, Idle::NoFirstRequest);
        assert_eq!(started.elapsed(), HEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_are_never_idle_and_the_idle_time_counts_from_their_end() {
        let activity = Activity::default();
        let busy = activity.begin();
        let watch = activity.idle(HEAD, IDLE);
        tokio::pin!(watch);
        // A slow upstream: ten minutes in flight.
        assert!(tokio::time::timeout(Duration::from_secs(600), &mut watch)
            .await
            .is_err());
        drop(busy);
        let ended = Instant::now();
        assert_eq!(watch.await, Idle::KeptAlive);
        let idle = ended.elapsed();
        assert!(idle >= IDLE && idle <= IDLE + HEAD, "{idle:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_takes_too_long_is_cut_off() {
        let activity = Activity::default();
        drop(activity.begin());
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.head_arriving(true);
        let started = Instant::now();
        assert_eq!(activity.idle(HEAD, IDLE).await, Idle::SlowHead);
        assert_eq!(started.elapsed(), HEAD);
        activity.head_arriving(false);
        assert_eq!(activity.deadline(HEAD, IDLE).unwrap().1, Idle::KeptAlive);
    }
}
