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

/// A request body that fails with [`BodyTimedOut`] when no piece of it
/// arrives for `limit`.
pub struct TimedBody {
    inner: Incoming,
    limit: Duration,
    /// Armed when a read has to wait, disarmed when a piece comes.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    pub fn new(inner: Incoming, limit: Duration) -> TimedBody {
        TimedBody {
            inner,
            limit,
            waiting: None,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.waiting = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (or one of its causes) is a [`BodyTimedOut`].
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The request type every handler after the accept loop sees.
pub type GatewayRequest = http::Request<TimedBody>;
