//! The request body as the pipeline reads it: hyper's body with a limit on
//! how long the client may leave it waiting between two pieces.
//!
//! `header_timeout` covers the head and `idle_timeout` a connection with
//! nothing in flight; without this a client sending one byte every few
//! seconds holds a connection (and a place under `max_connections`) for
//! as long as it likes. Like nginx's `client_body_timeout`, the limit is
//! per wait, not for the whole body, so a large upload on a slow line is
//! fine as long as it keeps moving.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use crate::response::BoxError;

/// The client left the body waiting longer than `[server] body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing of the request body for longer than body_timeout")]
pub struct BodyTimedOut;

/// What an HTTP/2 body answered early is still read (and thrown away) up
/// to: see [`TimedBody`]'s `Drop`.
const DRAIN_AT_MOST: u64 = 64 << 20;
/// ... and for at most this long.
const DRAIN_FOR_AT_MOST: Duration = Duration::from_secs(30);

/// A request body that fails with [`BodyTimedOut`] when no piece of it
/// arrives for `limit`.
pub struct TimedBody {
    /// Taken by the drain when the body is dropped unread.
    inner: Option<Incoming>,
    /// The wait's timer: made the first time a read has to wait, then
    /// reset (not made again) at each later wait of the same body.
    timer: Option<Pin<Box<Sleep>>>,
    /// A read is waiting and `timer` runs for it; a piece disarms it.
    armed: bool,
    /// `body_timeout` in milliseconds: kept small, as every request future
    /// carries it (and HTTP/2 moves those futures around whole).
    limit_ms: u32,
    /// HTTP/2: an unread rest is drained, not reset (see `Drop`).
    drain: bool,
}

impl TimedBody {
    /// `drain`: the body of an HTTP/2 request, whose unread rest is
    /// drained rather than reset when the gateway answers early.
    pub fn new(inner: Incoming, limit: Duration, drain: bool) -> TimedBody {
        TimedBody {
            inner: Some(inner),
            timer: None,
            armed: false,
            limit_ms: u32::try_from(limit.as_millis()).unwrap_or(u32::MAX),
            drain,
        }
    }

    fn limit(&self) -> Duration {
        Duration::from_millis(u64::from(self.limit_ms))
    }
}

impl Drop for TimedBody {
    /// An HTTP/2 request answered before its body was read (a 413, a 431,
    /// a refusal): the response goes out first, but a stream reset while
    /// the client is still uploading makes some clients drop the response
    /// unread (curl 7.88 exits 92, "stream closed", and never shows the
    /// 413). So the rest of the body is read and thrown away, as nginx
    /// does, within [`DRAIN_AT_MOST`] bytes, [`DRAIN_FOR_AT_MOST`] and the
    /// body timeout per wait; past those the stream is reset (NO_ERROR
    /// after a complete response, RFC 9113 §8.1). HTTP/1.1 needs none of
    /// this: its error answers close the connection, lingering.
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else {
            return;
        };
        if !self.drain || inner.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let limit = self.limit();
        runtime.spawn(async move {
            use http_body_util::BodyExt;
            let mut drained: u64 = 0;
            let _ = tokio::time::timeout(DRAIN_FOR_AT_MOST, async {
                while drained < DRAIN_AT_MOST {
                    match tokio::time::timeout(limit, inner.frame()).await {
                        Ok(Some(Ok(frame))) => {
                            drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                        }
                        _ => break,
                    }
                }
            })
            .await;
        });
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let limit = self.limit();
                let this = &mut *self;
                let timer = match (&mut this.timer, this.armed) {
                    (Some(timer), true) => timer,
                    (Some(timer), false) => {
                        timer.as_mut().reset(tokio::time::Instant::now() + limit);
                        timer
                    }
                    (timer @ None, _) => timer.insert(Box::pin(tokio::time::sleep(limit))),
                };
                this.armed = true;
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// The request type every handler after the accept loop sees.
pub type GatewayRequest = http::Request<TimedBody>;
