//! Kept-alive HTTP/1.1 connections to a plain-HTTP upstream, on hyper's
//! connection API directly.
//!
//! One pool per upstream, so there is no key to hash per request; a
//! connection goes back to the pool when its response body has been read
//! to the end (or was empty), and is taken again newest first. What it
//! replaces for `http://` upstreams, hyper-util's general pooled client,
//! was 11 % of a proxied request's instructions (callgrind), mostly its
//! keyed pool and connector machinery. `https://` upstreams keep that
//! client: they need ALPN and may speak HTTP/2.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::response::{Body, BoxError};

/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept at most; more are closed as they come back.
const MAX_IDLE: usize = 512;

pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host:port` to connect to.
    address: String,
    /// The `Host` a request without one is sent with, as hyper-util's
    /// client did: the upstream's authority.
    host: http::HeaderValue,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Pool {
    pub fn new(authority: &Authority, connect_timeout: Duration) -> Pool {
        let port = authority.port_u16().unwrap_or(80);
        Pool {
            inner: Arc::new(Inner {
                address: format!("{}:{port}", authority.host()),
                host: http::HeaderValue::from_str(authority.as_str())
                    .expect("an authority is a valid header value"),
                connect_timeout,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sends `request` on an idle connection, or on a new one. A request
    /// that a reused connection gave back unsent (it was closed just then)
    /// goes once more, on a new connection.
    pub async fn send(&self, mut request: Request<Body>) -> Result<Response<Returning>, BoxError> {
        // On the wire in origin form (`/path?query`), as a client sends it
        // to a server that is not a proxy.
        if let Some(path_and_query) = request.uri().path_and_query() {
            *request.uri_mut() = http::Uri::from(path_and_query.clone());
        }
        if !request.headers().contains_key(http::header::HOST) {
            request
                .headers_mut()
                .insert(http::header::HOST, self.inner.host.clone());
        }
        let mut reused = self.inner.checkout();
        loop {
            let (mut sender, was_idle) = match reused.take() {
                Some(sender) => (sender, true),
                None => (self.inner.connect().await?, false),
            };
            if sender.ready().await.is_err() {
                if was_idle {
                    continue;
                }
                return Err("the upstream closed a new connection".into());
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // A 101 hands the connection to the tunnel for good.
                    let back = (response.status() != http::StatusCode::SWITCHING_PROTOCOLS)
                        .then(|| (self.inner.clone(), sender));
                    return Ok(response.map(|body| Returning { body, back }));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if was_idle => request = unsent,
                    _ => return Err(error.into_error().into()),
                },
            }
        }
    }
}

impl Inner {
    /// The newest idle connection still open, if any.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Idle { sender, since }) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, BoxError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| format!("connecting to {} timed out", self.address))??;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// An upstream response body that puts its connection back in the pool
/// once it has been read to the end.
pub struct Returning {
    body: Incoming,
    back: Option<(Arc<Inner>, SendRequest<Body>)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((pool, sender)) = self.back.take() {
            pool.give_back(sender);
        }
    }
}

impl hyper::body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.give_back(),
            // A broken body leaves the connection broken too.
            Some(Err(_)) => self.back = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // Never polled because there was nothing to read (a 204, a HEAD,
        // an empty body): the connection is as good as new. Dropped
        // halfway, it is not: hyper closes it, and it is not given back.
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}
