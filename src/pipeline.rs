//! One request's way through the gateway, top to bottom:
//!
//! 1. `refuse` what no rule should ever see (TRACE, ambiguous framing,
//!    oversized heads and bodies, ambiguous paths);
//! 2. answer `/.gateway/` itself (`own_routes`, the one place its paths
//!    are routed);
//! 3. [`access::authenticate`], [`access::authorize`], and answer what is
//!    not allowed (`unless_allowed`);
//! 4. `forward` to the upstream, streaming;
//! 5. finish the response (HSTS), count it and log one line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::access;
use crate::connection::framing::FramingVerdict;
use crate::connection::idle::Activity;
use crate::metrics::UpstreamFailure;
use crate::policy::host::Host;
use crate::policy::{path, Decision, Target};
use crate::proxy::Forward;
use crate::request_id;
use crate::response::{wants_html, Body, GatewayError};
use crate::session;
use crate::state::{Live, State};

/// What the request's log line says, filled in along the way.
#[derive(Default)]
struct RequestLog {
    path: String,
    /// The policy's decision, when it was asked (for `check --replay`).
    decision: Option<&'static str>,
    /// The host the request named.
    host: Option<HeaderValue>,
    user: Option<Arc<str>>,
    /// The client's address (behind a trusted proxy, the one it names).
    client_ip: Option<IpAddr>,
    /// The request brought a session cookie that leads nowhere: clear it.
    clear_cookie: bool,
    /// The name of the API token it came with.
    token: Option<HeaderValue>,
}

/// One client connection.
pub struct Connection {
    pub peer: SocketAddr,
    /// The peer's address as a header value, made once per connection.
    peer_value: HeaderValue,
    pub framing: Arc<FramingVerdict>,
    /// Requests in flight and seen (their numbers line up with `framing`),
    /// for the connection's idle watchdog.
    pub activity: Arc<Activity>,
}

impl Connection {
    /// The peer's address as text (as `IpAddr` displays it).
    pub fn peer_text(&self) -> &str {
        self.peer_value
            .to_str()
            .expect("an IP address is visible ASCII")
    }

    pub fn new(
        peer: SocketAddr,
        framing: Arc<FramingVerdict>,
        activity: Arc<Activity>,
    ) -> Connection {
        Connection {
            peer,
            peer_value: HeaderValue::from_str(&peer.ip().to_string())
                .expect("an IP address is a valid header value"),
            framing,
            activity,
        }
    }
}

static HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

/// The prefix of every path the gateway answers itself.
const GATEWAY_PREFIX: &str = "/.gateway";

pub async fn handle(
    state: &State,
    conn: &Connection,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let busy = conn.activity.begin();
    let method = request.method().clone();
    let html = wants_html(request.headers());
    // An HTTP/1.1 request whose body the gateway may refuse unread: its
    // error answer must say the connection closes, or the client would
    // send its next request on a connection that is going away.
    let declared = declared_length(&request);
    let unread_body_closes = request.version() < http::Version::HTTP_2
        && (declared.is_some_and(|n| n > 0)
            || request.headers().contains_key(header::TRANSFER_ENCODING));
    let mut log = RequestLog::default();
    let live = state.live();
    let trusted = live.config.server.trusted_proxies.trusts(conn.peer.ip());
    let request_id = request_id::of_request(request.headers(), trusted);
    // The upstream gets it too (a client's own is replaced).
    request
        .headers_mut()
        .insert(&request_id::X_REQUEST_ID, request_id.clone());

    let h2_stream = request.version() == http::Version::HTTP_2 && method != http::Method::CONNECT;
    let body_timeout = live.config.server.body_timeout;
    let request = request.map(|body| crate::body::TimedBody::new(body, body_timeout, h2_stream));
    let routed = request_id::scope(
        request_id.clone(),
        route(state, &live, conn, busy.index, declared, request, &mut log),
    )
    .await;
    let mut response = match routed {
        Ok(response) => response,
        Err(error) => {
            match &error {
                GatewayError::UpstreamUnavailable(cause) => {
                    state
                        .metrics
                        .record_upstream_failure(UpstreamFailure::Unavailable);
                    tracing::warn!(path = %log.path, error = %cause, "upstream unavailable");
                }
                GatewayError::UpstreamTimeout => {
                    state
                        .metrics
                        .record_upstream_failure(UpstreamFailure::Timeout);
                    tracing::warn!(path = %log.path, "upstream timed out");
                }
                GatewayError::Forbidden(reason) => state.metrics.record_denial(*reason),
                _ => {}
            }
            let mut response = error.into_response(html);
            if unread_body_closes {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };

    if log.clear_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, state.auth.clear_cookie());
    }
    if live.config.server.hsts {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, HSTS.clone());
    }
    // The connection's own address is already text; a forwarded one is
    // made so here.
    let forwarded_client;
    let client = match log.client_ip {
        Some(ip) if ip != conn.peer.ip() => {
            forwarded_client = ip.to_string();
            forwarded_client.as_str()
        }
        _ => conn.peer_text(),
    };
    let host = log.host.as_ref().and_then(|h| h.to_str().ok());
    let line = Answered {
        method: method.as_str(),
        path: &log.path,
        host: host.unwrap_or("-"),
        decision: log.decision.unwrap_or("-"),
        user: log.user.as_deref().unwrap_or("-"),
        token: log.token.as_ref().and_then(|t| t.to_str().ok()),
        client,
    };
    finish(state, started, &line, request_id, &mut response);
    response
}

/// What an answered request's access line says besides its status, time
/// and request ID.
pub(crate) struct Answered<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub decision: &'a str,
    pub user: &'a str,
    pub token: Option<&'a str>,
    pub client: &'a str,
}

/// How every answered request ends, on the main listener and on
/// `verify_listen`: counted, one access line, its `X-Request-Id`.
pub(crate) fn finish(
    state: &State,
    started: Instant,
    line: &Answered<'_>,
    request_id: HeaderValue,
    response: &mut Response<Body>,
) {
    let elapsed = started.elapsed();
    let status = response.status();
    state.metrics.record_response(status, elapsed);
    crate::logging::access(&crate::logging::Access {
        method: line.method,
        path: line.path,
        status: status.as_u16(),
        host: line.host,
        decision: line.decision,
        user: line.user,
        token: line.token,
        client: line.client,
        micros: u64::try_from(elapsed.as_nanos().saturating_add(500) / 1000).unwrap_or(u64::MAX),
        request_id: request_id.to_str().unwrap_or("-"),
    });
    response
        .headers_mut()
        .insert(&request_id::X_REQUEST_ID, request_id);
}

/// One request, as the named steps it goes through: `refuse` what no
/// rule should see, answer the gateway's `own_routes`, [`access::authenticate`]
/// and [`access::authorize`] (answered by `unless_allowed`), check a
/// WebSocket's origin (`websocket_of`), and `forward`.
async fn route(
    state: &State,
    live: &Live,
    conn: &Connection,
    index: u64,
    declared_length: Option<u64>,
    request: crate::body::GatewayRequest,
    log: &mut RequestLog,
) -> Result<Response<Body>, GatewayError> {
    let server = &live.config.server;
    log.path = refuse(server, conn, index, declared_length, &request).map_err(|(raw, e)| {
        log.path = raw;
        e
    })?;
    let normalized: &str = &log.path;
    let host = Host::of_request(request.version(), request.uri(), request.headers())?;
    let client = server
        .trusted_proxies
        .client(conn.peer.ip(), &conn.peer_value, request.headers());
    log.client_ip = Some(client.ip);

    // One test on the proxied path; the gateway's own paths below it.
    if normalized == GATEWAY_PREFIX || normalized.starts_with("/.gateway/") {
        return own_routes(state, live, conn, request, client.ip, host.as_ref(), log).await;
    }

    let presented = access::authenticate(state, request.headers(), client.ip).await;
    let user = presented.signed_in.as_ref().map(|s| &s.user);
    log.clear_cookie = presented.stale_cookie && !presented.store_unavailable;
    log.user = user.map(|u| u.name.clone());
    let upgrade = upgrade_of(&request);
    let target = Target {
        method: judged_method(upgrade, request.method()),
        host: host.as_ref().map(Host::name),
        path: normalized,
    };
    let (decision, pass_authorization) =
        access::authorize_with_rule(&live.config.policy, presented.signed_in.as_ref(), &target);
    log.decision = Some(decision.as_str());
    log.token = presented
        .signed_in
        .as_ref()
        .and_then(|s| s.token.as_ref())
        .map(|t| t.log_name());
    log.host = host.as_ref().map(Host::value).cloned();
    unless_allowed(decision, &presented, &request, normalized, &state.auth)?;
    let websocket = websocket_of(upgrade, &request, host.as_ref(), server)?;
    // An API token never goes on; other credentials where a rule says so.
    let keep_authorization =
        pass_authorization && !crate::identity::tokens::carries_token(request.headers());
    forward(
        state,
        live,
        conn,
        request,
        Judged {
            path: normalized,
            host: host.as_ref(),
            client,
            signed_in: presented.signed_in.as_ref(),
            websocket,
            keep_authorization,
        },
    )
    .await
}

/// Refuses what no rule should ever see: TRACE, a request the framing
/// guard found ambiguous, oversized heads and bodies, paths that do not
/// normalize. `Ok` is the normalized path; `Err` carries the raw one for
/// the log line.
fn refuse(
    server: &crate::config::Server,
    conn: &Connection,
    index: u64,
    declared_length: Option<u64>,
    request: &crate::body::GatewayRequest,
) -> Result<String, (String, GatewayError)> {
    let raw = || request.uri().path().to_owned();
    // Any spelling: an upstream may act on `trace` as on TRACE.
    if request.method().as_str().eq_ignore_ascii_case("TRACE") {
        return Err((raw(), GatewayError::MethodNotAllowed));
    }
    if conn.framing.is_ambiguous(index) {
        return Err((raw(), GatewayError::AmbiguousFraming));
    }
    if head_size(request) > server.max_header_size {
        return Err((raw(), GatewayError::HeadTooLarge));
    }
    if declared_length.is_some_and(|n| n > server.max_body_size) {
        return Err((raw(), GatewayError::BodyTooLarge));
    }
    path::normalize(request.uri().path()).map_err(|e| (raw(), e.into()))
}

/// The gateway's own paths under `/.gateway/`, all routed here:
/// forward-auth, the assertion keys, account and admin pages, and the
/// ways of signing in ([`crate::identity`]'s own table).
async fn own_routes(
    state: &State,
    live: &Live,
    conn: &Connection,
    request: crate::body::GatewayRequest,
    client_ip: IpAddr,
    host: Option<&Host>,
    log: &mut RequestLog,
) -> Result<Response<Body>, GatewayError> {
    // The normalized path, as the log line has it.
    let path = log.path.as_str();
    let is_get = request.method() == http::Method::GET || request.method() == http::Method::HEAD;
    let mut call = crate::identity::Call {
        config: &live.config,
        peer: client_ip,
        host: host.map(Host::value),
        logged_user: None,
    };
    let result = match path {
        "/.gateway/verify" => {
            if !is_get {
                return Err(GatewayError::MethodNotAllowed);
            }
            let mut judged = crate::forward_auth::Judged::default();
            // Boxed, as the pages below: the proxied path's future stays
            // small (it is copied as it moves).
            let response = Box::pin(crate::forward_auth::verify(
                state,
                live,
                conn.peer.ip(),
                request.headers(),
                &mut judged,
            ))
            .await;
            log.path = judged.access_path();
            log.user = judged.user;
            log.decision = judged.decision;
            log.host = judged.host.and_then(|h| HeaderValue::from_str(&h).ok());
            return Ok(response);
        }
        "/.gateway/jwks.json" => {
            // The assertion keys are public: apps fetch them without a session.
            let Some(signer) = &state.signer else {
                return Err(GatewayError::NotFound);
            };
            if !is_get {
                return Err(GatewayError::MethodNotAllowed);
            }
            return Ok(crate::response::own_response(
                http::StatusCode::OK,
                "application/jwk-set+json",
                signer.jwks(),
            ));
        }
        p if p == "/.gateway/account"
            || p == "/.gateway/admin"
            || p.starts_with("/.gateway/admin/") =>
        {
            Box::pin(crate::admin::endpoint(&state.auth, &mut call, p, request)).await
        }
        _ => Box::pin(state.auth.endpoint(&mut call, path, request)).await,
    };
    log.user = call.logged_user;
    result
}

/// What the policy's decision means for a request that is not allowed:
/// sign in (a browser is sent to the page), sign in again or add a second
/// factor, or forbidden.
fn unless_allowed(
    decision: Decision,
    presented: &crate::identity::Presented,
    request: &crate::body::GatewayRequest,
    normalized: &str,
    auth: &crate::identity::Auth,
) -> Result<(), GatewayError> {
    let navigating = || {
        let method = request.method().as_str();
        (method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD"))
            && wants_html(request.headers())
    };
    match decision {
        Decision::Allow => Ok(()),
        Decision::Login if presented.store_unavailable => Err(GatewayError::StoreUnavailable),
        Decision::Login => match presented.token_refused {
            Some(Some(retry_after_secs)) => Err(GatewayError::Throttled { retry_after_secs }),
            Some(None) => Err(GatewayError::InvalidToken),
            None => Err(GatewayError::Unauthenticated {
                next: with_query(normalized, request.uri().query()),
                navigating: navigating(),
            }),
        },
        Decision::Deny(crate::policy::DenyReason::TokenNotAccepted) => {
            Err(GatewayError::TokenNotAccepted)
        }
        Decision::Deny(reason) => Err(GatewayError::Forbidden(reason)),
        Decision::Reauth(reason) => {
            let second_factor = reason == crate::policy::ReauthReason::SecondFactor;
            let signed_in = presented.signed_in.as_ref();
            Err(GatewayError::Reauth {
                next: with_query(normalized, request.uri().query()),
                navigating: navigating(),
                second_factor,
                enroll: second_factor
                    && signed_in.is_some_and(|s| !auth.has_second_factor(&s.user)),
                provider: signed_in.and_then(|s| s.proved_elsewhere().cloned()),
            })
        }
    }
}

/// Whether the request opens a WebSocket, refusing other upgrades and a
/// WebSocket from a page of another site (not the request's host, nor in
/// `websocket_origins`).
fn websocket_of(
    upgrade: Upgrade,
    request: &crate::body::GatewayRequest,
    host: Option<&Host>,
    server: &crate::config::Server,
) -> Result<bool, GatewayError> {
    match upgrade {
        Upgrade::None => Ok(false),
        Upgrade::Other => Err(GatewayError::UpgradeRefused),
        Upgrade::WebSocket => {
            let origin = request.headers().get(header::ORIGIN);
            let own = host.and_then(|h| h.value().to_str().ok());
            let same_site = match (origin.map(|o| o.to_str()), own) {
                (None, _) => true,
                (Some(Ok(origin)), own) => {
                    own.is_some_and(|own| {
                        origin
                            .strip_prefix("https://")
                            .is_some_and(|o| o.eq_ignore_ascii_case(own))
                    }) || server
                        .websocket_origins
                        .iter()
                        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
                }
                _ => false,
            };
            if !same_site {
                return Err(GatewayError::CrossSiteWebSocket);
            }
            Ok(true)
        }
    }
}

/// What was judged of an allowed request, for forwarding it.
struct Judged<'a> {
    path: &'a str,
    host: Option<&'a Host>,
    client: crate::forwarded::Client,
    signed_in: Option<&'a crate::identity::SignedIn>,
    websocket: bool,
    /// The client's `Authorization` header goes on (a rule's
    /// `pass_authorization`, and no API token in it).
    keep_authorization: bool,
}

/// Sends an allowed request to its upstream (by host and path prefix),
/// with the identity headers and assertion, and streams the answer back.
async fn forward(
    state: &State,
    live: &Live,
    conn: &Connection,
    request: crate::body::GatewayRequest,
    judged: Judged<'_>,
) -> Result<Response<Body>, GatewayError> {
    let Judged {
        path: normalized,
        host,
        client,
        signed_in,
        websocket,
        keep_authorization,
    } = judged;
    let Some(index) = live.config.upstream_for(host.map(Host::name), normalized) else {
        return Err(GatewayError::NoUpstream);
    };
    let upstream = &live.upstreams[index];
    let assertion = match (&live.config.identity.assertion, &state.signer, signed_in) {
        (Some(settings), Some(signer), Some(signed_in)) => Some(signed_in.assertion(
            signer,
            settings,
            live.config.upstreams[index].authority.host(),
        )),
        _ => None,
    };
    let owner = match (signed_in, websocket) {
        // A token's WebSocket is judged once, when it opens.
        (Some(signed_in), true) if signed_in.token.is_none() => {
            Some(crate::proxy::tunnels::Owner {
                session: signed_in.session.key,
                // Judged again as it was now: an HTTP/2 WebSocket as its GET.
                method: judged_method(Upgrade::WebSocket, request.method()).clone(),
                host: host.map(|h| h.name().to_owned()),
                path: normalized.to_owned(),
            })
        }
        _ => None,
    };
    let path_and_query =
        PathAndQuery::from_maybe_shared(Bytes::from(with_query(normalized, request.uri().query())))
            .map_err(|_| GatewayError::BadPath(path::PathError::BadPercentEncoding))?;
    let (parts, body) = request.into_parts();
    let forward = Forward {
        path_and_query,
        client,
        host: host.map(Host::value),
        known_hosts: &live.known_hosts,
        user: signed_in.map(|s| &*s.user),
        claims: signed_in
            .and_then(|s| s.session.vouched.as_deref())
            .map_or(&[], |v| &v.headers),
        own_cookies: state.auth.own_cookies(),
        assertion,
        websocket,
        owner,
        keep_authorization,
        token: signed_in
            .and_then(|s| s.token.as_ref())
            .map(|t| (t.header(), t.name.clone())),
    };
    let response = upstream
        .forward(parts, body, &live.config.identity, forward)
        .await?;
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // What follows on this connection is the tunnel's, not HTTP/1.1.
        conn.framing.switched_protocols();
    }
    Ok(response)
}

/// How often open WebSockets are judged again: a session's end or a lost
/// role closes them within this (plus a shared store's cache age).
const TUNNEL_WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// A WebSocket's client activity touches its session at most this often.
const TUNNEL_TOUCH_EVERY_MS: u64 = 60_000;

/// Judges every open WebSocket again, as often as [`TUNNEL_WATCH_EVERY`]:
/// its session must still be live and its user still allowed the route.
/// Ends when the state is dropped.
pub fn watch_tunnels(state: &Arc<State>) {
    use crate::proxy::tunnels::Verdict;
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TUNNEL_WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else { break };
            let tunnels = &state.tunnels;
            let live = state.live();
            state.metrics.set_websockets_open(tunnels.len() as u64);
            for (id, owner, active_ms, touched_ms) in tunnels.owned() {
                // At most once a minute, and often enough for a short idle timeout.
                let every = TUNNEL_TOUCH_EVERY_MS
                    .min(live.config.session.idle_timeout.as_millis() as u64 / 4);
                let touch =
                    active_ms > touched_ms && session::now_ms().saturating_sub(touched_ms) >= every;
                let verdict = match state.auth.still_signed_in(&owner.session, touch).await {
                    Ok(Some(signed_in)) => {
                        let target = Target {
                            method: &owner.method,
                            host: owner.host.as_deref(),
                            path: &owner.path,
                        };
                        match access::authorize(&live.config.policy, Some(&signed_in), &target) {
                            Decision::Allow if touch => Verdict::Touched,
                            Decision::Allow => Verdict::Keep,
                            _ => Verdict::Close,
                        }
                    }
                    // Ended, or the store cannot say: fail closed.
                    Ok(None) | Err(_) => Verdict::Close,
                };
                if matches!(verdict, Verdict::Close) {
                    crate::security_event!(info, event = "websocket_closed", path = %owner.path, "a WebSocket closed: its session ended or no longer allows the route");
                }
                tunnels.settle(id, verdict);
            }
        }
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    WebSocket,
    Other,
}

/// The method the policy judges: an HTTP/2 WebSocket (extended CONNECT)
/// is judged as the GET it stands for, like its HTTP/1.1 handshake.
fn judged_method(upgrade: Upgrade, method: &http::Method) -> &http::Method {
    match upgrade {
        Upgrade::WebSocket if method == http::Method::CONNECT => &http::Method::GET,
        _ => method,
    }
}

/// What upgrade, if any, a request asks for: on HTTP/1.1 (RFC 9110 §7.8,
/// RFC 6455 §4.1) a GET with `Upgrade: websocket` and `Connection:
/// upgrade`; on HTTP/2 (RFC 8441 §4) a CONNECT with `:protocol` websocket.
fn upgrade_of(request: &crate::body::GatewayRequest) -> Upgrade {
    if request.method() == http::Method::CONNECT {
        return match request.extensions().get::<hyper::ext::Protocol>() {
            Some(p) if p.as_str().eq_ignore_ascii_case("websocket") => Upgrade::WebSocket,
            Some(_) => Upgrade::Other,
            None => Upgrade::None,
        };
    }
    let headers = request.headers();
    let Some(upgrade) = headers.get(header::UPGRADE) else {
        return Upgrade::None;
    };
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        // Not an upgrade request (RFC 9110 §7.8 asks for both); the stray
        // header is hop-by-hop and goes like the others.
        return Upgrade::None;
    }
    let websocket = upgrade.to_str().is_ok_and(|u| {
        u.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
    });
    if websocket
        && request.version() == http::Version::HTTP_11
        && request.method() == http::Method::GET
    {
        Upgrade::WebSocket
    } else {
        Upgrade::Other
    }
}

fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// Size of the request head as it came: request line and header lines.
fn head_size<B>(request: &Request<B>) -> usize {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    let line = request.method().as_str().len() + target + 12;
    request.headers().iter().fold(line, |sum, (name, value)| {
        sum + name.as_str().len() + value.len() + 4
    })
}

fn declared_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
