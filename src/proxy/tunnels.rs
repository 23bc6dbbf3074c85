//! Open WebSockets: each is a task registered here under the session that
//! opened it, so that the session's end can find and close it, and a
//! graceful stop can close what is left at the end of its grace period.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use dashmap::DashMap;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::session::Key;

/// What a tunnel was allowed as: the session and the request the policy
/// judged, judged again while it is open.
#[derive(Debug, Clone)]
pub struct Owner {
    pub session: Key,
    pub method: http::Method,
    pub host: Option<String>,
    pub path: String,
}

struct Open {
    /// `None` for a public route's socket: no session to end it.
    owner: Option<Owner>,
    close: Arc<Notify>,
    /// When the client last sent data (ms since the epoch).
    client_active_ms: Arc<AtomicU64>,
    /// When the session was last touched on the tunnel's behalf.
    touched_ms: AtomicU64,
}

#[derive(Default)]
pub struct Tunnels {
    open: DashMap<u64, Open>,
    next: AtomicU64,
    emptied: Notify,
}

/// A tunnel's verdict from the watch.
pub enum Verdict {
    Keep,
    /// Keep, and the session was touched for the client's activity.
    Touched,
    Close,
}

impl Tunnels {
    /// Joins the client's and the upstream's upgraded connections and
    /// copies bytes both ways until either side closes or the tunnel is
    /// told to close.
    pub fn spawn(self: &Arc<Self>, owner: Option<Owner>, client: OnUpgrade, upstream: OnUpgrade) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let now = crate::session::now_ms();
        let client_active_ms = Arc::new(AtomicU64::new(now));
        self.open.insert(
            id,
            Open {
                owner,
                close: close.clone(),
                client_active_ms: client_active_ms.clone(),
                touched_ms: AtomicU64::new(now),
            },
        );
        let tunnels = Arc::downgrade(self);
        tokio::spawn(async move {
            let joined = async {
                let (client, upstream) = match tokio::try_join!(client, upstream) {
                    Ok(both) => both,
                    Err(e) => {
                        tracing::debug!(error = %e, "a WebSocket upgrade did not complete");
                        return;
                    }
                };
                let mut client = Activity {
                    inner: TokioIo::new(client),
                    active_ms: client_active_ms,
                };
                let mut upstream = TokioIo::new(upstream);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(error = %e, "a WebSocket ended with an error");
                }
            };
            tokio::select! {
                _ = joined => {}
                _ = close.notified() => {}
            }
            if let Some(tunnels) = tunnels.upgrade() {
                tunnels.open.remove(&id);
                if tunnels.open.is_empty() {
                    tunnels.emptied.notify_waiters();
                }
            }
        });
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Each open tunnel with an owner, its client's last activity and when
    /// its session was last touched for it.
    pub fn owned(&self) -> Vec<(u64, Owner, u64, u64)> {
        self.open
            .iter()
            .filter_map(|e| {
                let owner = e.owner.clone()?;
                Some((
                    *e.key(),
                    owner,
                    e.client_active_ms.load(Ordering::Relaxed),
                    e.touched_ms.load(Ordering::Relaxed),
                ))
            })
            .collect()
    }

    /// Applies the watch's verdict on one tunnel.
    pub fn settle(&self, id: u64, verdict: Verdict) {
        let Some(open) = self.open.get(&id) else {
            return;
        };
        match verdict {
            Verdict::Keep => {}
            Verdict::Touched => open
                .touched_ms
                .store(crate::session::now_ms(), Ordering::Relaxed),
            Verdict::Close => open.close.notify_one(),
        }
    }

    /// Closes every tunnel (the end of a graceful stop's grace period).
    pub fn close_all(&self) {
        for open in self.open.iter() {
            open.close.notify_one();
        }
    }

    /// Resolves once no tunnel is open.
    pub async fn all_closed(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.open.is_empty() {
                return;
            }
            emptied.await;
        }
    }
}

/// The client's side of a tunnel, noting when it sends data: that counts
/// as activity for the session's idle timeout.
struct Activity<IO> {
    inner: IO,
    active_ms: Arc<AtomicU64>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Activity<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.active_ms
                .store(crate::session::now_ms(), Ordering::Relaxed);
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Activity<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
