//! Listeners: the TLS accept loop with its connection cap, handshake timeout
//! and graceful shutdown, plus the optional plain-HTTP redirect and ops
//! listeners.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::connection::framing::{FramingGuard, FramingVerdict};
use crate::connection::idle::{Activity, Idle};
use crate::ops;
use crate::pipeline::{self, Connection};
use crate::response::{own_response, Body};
use crate::state::State;

/// A running gateway. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    addr: SocketAddr,
    redirect_addr: Option<SocketAddr>,
    ops_addr: Option<SocketAddr>,
    verify_addr: Option<SocketAddr>,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    finished: JoinHandle<()>,
}

impl Gateway {
    /// Binds every configured listener and starts serving.
    pub async fn start(config: Config) -> io::Result<Gateway> {
        let tls_listener = bind(config.server.listen, "listen").await?;
        let redirect_listener = match config.server.redirect_http {
            Some(addr) => Some(bind(addr, "redirect_http").await?),
            None => None,
        };
        let ops_listener = match config.server.ops_listen {
            Some(addr) => Some(bind(addr, "ops_listen").await?),
            None => None,
        };
        let verify_listener = match config.server.verify_listen {
            Some(addr) => Some(bind(addr, "verify_listen").await?),
            None => None,
        };
        let verify_addr = verify_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let addr = tls_listener.local_addr()?;
        let redirect_addr = redirect_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let ops_addr = ops_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;

        let state = Arc::new(State::new(config).await.map_err(io::Error::other)?);
        state.auth.start_background();
        state.certificate.watch();
        if let Some(signer) = &state.signer {
            signer.watch();
        }
        pipeline::watch_tunnels(&state);
        crate::reload::watch(&state);
        let (stop, stop_rx) = watch::channel(false);
        let (ops_stop, ops_stop_rx) = watch::channel(false);

        let redirect = redirect_listener.map(|listener| {
            let https_port = addr.port();
            tokio::spawn(serve_plain(
                listener,
                stop_rx.clone(),
                state.live().config.server.header_timeout,
                move |req, _| std::future::ready(redirect_to_https(&req, https_port)),
            ))
        });
        let ops = ops_listener.map(|listener| {
            let state = state.clone();
            tokio::spawn(serve_plain(
                listener,
                ops_stop_rx,
                Duration::from_secs(10),
                move |req, _| {
                    std::future::ready(ops::answer(req.method(), req.uri().path(), &state))
                },
            ))
        });
        let verify = verify_listener.map(|listener| {
            let state = state.clone();
            tokio::spawn(serve_plain(
                listener,
                stop_rx.clone(),
                state.live().config.server.header_timeout,
                move |req, peer: SocketAddr| {
                    let state = state.clone();
                    async move { verify_only(&state, req, peer).await }
                },
            ))
        });
        let main = tokio::spawn(accept_loop(tls_listener, state.clone(), stop_rx));
        let finished = tokio::spawn(async move {
            let _ = main.await;
            // The ops listener outlives the drain so that /readyz can say 503 meanwhile.
            let _ = ops_stop.send(true);
            for task in [redirect, ops, verify].into_iter().flatten() {
                let _ = task.await;
            }
        });
        state.readiness.serving();
        Ok(Gateway {
            addr,
            redirect_addr,
            ops_addr,
            verify_addr,
            state,
            stop,
            finished,
        })
    }

    /// The TLS listener's address (with the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
    }

    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    /// The forward-auth listener's address, if configured.
    pub fn verify_addr(&self) -> Option<SocketAddr> {
        self.verify_addr
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Reads the config file again and puts it in force for new requests
    /// if it validates and its tests pass (see [`crate::reload`]).
    pub async fn reload(&self) -> crate::reload::Reloaded {
        crate::reload::reload(&self.state).await
    }

    /// Turns `/readyz` to 503 and keeps serving for `drain_delay`, then
    /// stops accepting, lets in-flight requests finish within
    /// `shutdown_grace`, and closes what is left. Returns when all is done.
    pub async fn shutdown(self) {
        // Not ready from now on, but still serving for `drain_delay`: a
        // load balancer (Kubernetes removing the pod's endpoints) takes a
        // moment to stop sending new connections here.
        self.state.readiness.draining();
        let drain_delay = self.state.live().config.server.drain_delay;
        if !drain_delay.is_zero() {
            tracing::info!(
                drain_delay_ms = drain_delay.as_millis() as u64,
                "stopping: /readyz answers 503; new connections are still served for drain_delay"
            );
            tokio::time::sleep(drain_delay).await;
        }
        let grace_ends =
            tokio::time::Instant::now() + self.state.live().config.server.shutdown_grace;
        let _ = self.stop.send(true);
        let _ = self.finished.await;
        // WebSockets may run to the end of the grace period, then close.
        let tunnels = &self.state.tunnels;
        let _ = tokio::time::timeout_at(grace_ends, tunnels.all_closed()).await;
        tunnels.close_all();
        self.state.auth.store.sessions.close().await;
    }
}

async fn bind(addr: SocketAddr, key: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (server.{key}): {e}"),
        )
    })
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which is a stop too.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// How long a connection told to close gracefully for idleness may take
/// before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Open connections by client address, for `max_connections_per_client`:
/// one client (twenty slow uploads, say) cannot take every place under
/// `max_connections`.
#[derive(Default)]
struct PerClient {
    open: dashmap::DashMap<std::net::IpAddr, usize>,
}

/// One counted connection; uncounted when dropped.
struct ClientSlot {
    clients: Arc<PerClient>,
    ip: std::net::IpAddr,
}

impl PerClient {
    /// A slot for one more connection from `ip`, or `None` when it has `cap`.
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut open = self.open.entry(ip).or_insert(0);
        if *open >= cap {
            return None;
        }
        *open += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.clients.open.remove_if_mut(&self.ip, |_, open| {
            *open -= 1;
            *open == 0
        });
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let acceptor = TlsAcceptor::from(state.tls.clone());
    let permits = Arc::new(Semaphore::new(state.fixed.max_connections));
    let per_client = Arc::new(PerClient::default());
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(5);

    loop {
        let permit = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(5);
        // A trusted proxy speaks for many clients: its connections are
        // not counted as one client's.
        let ip = peer.ip().to_canonical();
        let slot = {
            let live = state.live();
            let server = &live.config.server;
            if server.trusted_proxies.trusts(ip) {
                None
            } else {
                match per_client.admit(ip, server.max_connections_per_client) {
                    Some(slot) => Some(slot),
                    None => {
                        tracing::debug!(%peer, "connection closed: the client has max_connections_per_client open");
                        state.metrics.record_client_cap();
                        continue;
                    }
                }
            }
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_tls(
            tcp,
            peer,
            acceptor.clone(),
            state.clone(),
            stop.clone(),
            (permit, slot),
        ));
    }

    drop(listener);
    state.readiness.draining();
    tracing::info!(
        connections = connections.len(),
        "shutting down: draining connections"
    );
    // Every connection saw the stop too and is closing gracefully.
    let grace = state.live().config.server.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown grace period over: closing the connections still open"
        );
    }
    connections.shutdown().await;
}

async fn serve_tls(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    _held: (OwnedSemaphorePermit, Option<ClientSlot>),
) {
    let _ = tcp.set_nodelay(true);
    // The connection keeps the limits and timeouts it started with; each
    // request on it takes the rules in force when it comes.
    let live = state.live();
    let server = &live.config.server;
    let tls = match tokio::time::timeout(server.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let max_head = server.max_header_size;
    let (header_timeout, idle_timeout) = (server.header_timeout, server.idle_timeout);
    let verdict = Arc::new(FramingVerdict::default());
    let activity = Arc::new(Activity::default());
    // A v4 client on a dual-stack listener shows up as ::ffff:a.b.c.d;
    // logs, sessions, throttling and X-Forwarded-For want a.b.c.d.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let connection = Arc::new(Connection::new(peer, verdict.clone(), activity.clone()));
    let service = {
        let state = state.clone();
        service_fn(move |request: Request<Incoming>| {
            let state = state.clone();
            let connection = connection.clone();
            async move { Ok::<_, Infallible>(pipeline::handle(&state, &connection, request).await) }
        })
    };
    let idle = activity.idle(header_timeout, idle_timeout);
    let result = if is_h2 {
        let conn = live
            .protocols
            .h2
            .serve_connection(TokioIo::new(tls), service);
        drive(conn, |c| c.graceful_shutdown(), idle, &mut stop, peer).await
    } else {
        let guarded = FramingGuard::new(tls, verdict, max_head, activity.clone());
        let conn = live
            .protocols
            .h1
            .serve_connection(TokioIo::new(guarded), service)
            .with_upgrades();
        drive(conn, |c| c.graceful_shutdown(), idle, &mut stop, peer).await
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Runs one connection to its end. On the gateway's stop it is told to
/// close gracefully (the accept loop's grace bounds the rest); when it has
/// been idle too long, too, and it is dropped if that takes over
/// [`CLOSE_GRACE`].
async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    idle: impl Future<Output = Idle>,
    stop: &mut watch::Receiver<bool>,
    peer: SocketAddr,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        why = idle => {
            tracing::debug!(%peer, reason = ?why, "closing an idle connection");
            graceful(conn.as_mut());
            tokio::time::timeout(CLOSE_GRACE, conn).await.unwrap_or(Ok(()))
        }
        _ = stopped(stop) => {
            graceful(conn.as_mut());
            conn.await
        }
    }
}

/// Serves a plain HTTP/1.1 listener until `stop`; `handler` gets each
/// request and the peer's address.
async fn serve_plain<F, Fut>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    header_timeout: Duration,
    handler: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    let mut connections = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let handler = handler.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let response = handler(request, peer);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
    connections.shutdown().await;
}

/// The `verify_listen` listener: `/.gateway/verify` and nothing else.
async fn verify_only(
    state: &State,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.uri().path() != "/.gateway/verify" {
        return own_response(StatusCode::NOT_FOUND, TEXT, "not found\n");
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return own_response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
    }
    let started = std::time::Instant::now();
    let live = state.live();
    let mut judged = crate::forward_auth::Judged::default();
    let peer = peer.ip().to_canonical();
    let trusted = live.config.server.trusted_proxies.trusts(peer);
    let request_id = crate::request_id::of_request(request.headers(), trusted);
    let mut response =
        crate::forward_auth::verify(state, &live, peer, request.headers(), &mut judged).await;
    // The same line as every other request's.
    let line = pipeline::Answered {
        method: request.method().as_str(),
        path: &judged.access_path(),
        host: judged.host.as_deref().unwrap_or("-"),
        decision: judged.decision.unwrap_or("-"),
        user: judged.user.as_deref().unwrap_or("-"),
        token: None,
        client: &peer.to_string(),
    };
    pipeline::finish(state, started, &line, request_id, &mut response);
    response
}

/// 308 to the same host and path over HTTPS.
fn redirect_to_https(request: &Request<Incoming>, https_port: u16) -> Response<Body> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            if h.starts_with('[') {
                h.split_inclusive(']').next().unwrap_or(h)
            } else {
                h.split(':').next().unwrap_or(h)
            }
        })
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
        });
    let Some(host) = host else {
        return own_response(StatusCode::BAD_REQUEST, TEXT, "a Host header is needed\n");
    };
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    let mut response = own_response(StatusCode::PERMANENT_REDIRECT, TEXT, "use https\n");
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => own_response(StatusCode::BAD_REQUEST, TEXT, "bad request target\n"),
    }
}
