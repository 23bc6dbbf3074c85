//! The upstream side: one pooled keep-alive client, and forwarding a request
//! with bodies streamed both ways.

pub mod headers;
pub mod pool;
pub mod tunnels;

use std::time::Duration;

use http::header::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{request, Request, Response, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{self, Identity};
use crate::response::{caused_by, Body, BoxError, GatewayError};
use crate::users::User;

/// Plain HTTP, or TLS with ALPN (`h2`, `http/1.1`) for an `https://` app.
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How requests reach the app.
enum Transport {
    /// `http://`: a pool of HTTP/1.1 connections of this upstream's own.
    Plain(pool::Pool),
    /// `https://`: hyper-util's pooled client, with ALPN (HTTP/2 or 1.1).
    Tls(Box<Client<Connector, Body>>),
}

/// The protected app, reached through a connection pool.
pub struct Upstream {
    transport: Transport,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
    max_body_size: usize,
    /// Open WebSockets (shared by every upstream).
    tunnels: std::sync::Arc<tunnels::Tunnels>,
    /// `strip_prefix`: this prefix is taken off the path and sent in
    /// `X-Forwarded-Prefix`.
    strip: Option<String>,
}

/// What the pipeline knows about a request that the upstream must be told.
pub struct Forward<'a> {
    /// The normalized path and the original query.
    pub path_and_query: PathAndQuery,
    /// Who the client is, and the `X-Forwarded-For` that says so.
    pub client: crate::forwarded::Client,
    /// The `Host` (HTTP/1.1) or `:authority` (HTTP/2) the client sent.
    pub host: Option<&'a HeaderValue>,
    /// The hosts the config names, which the upstream's redirects may go to.
    pub known_hosts: &'a KnownHosts,
    /// The signed-in user, whose identity the upstream is told.
    pub user: Option<&'a User>,
    /// Headers an identity provider's claims filled for that user.
    pub claims: &'a [(http::HeaderName, HeaderValue)],
    /// The signed identity assertion, if configured.
    pub assertion: Option<HeaderValue>,
    /// The gateway's cookies, removed from what the upstream sees.
    pub own_cookies: [&'a str; 3],
    /// An HTTP/1.1 WebSocket handshake: forwarded with its upgrade headers,
    /// and on the upstream's 101 the two connections are joined.
    pub websocket: bool,
    /// Whose session the WebSocket lives by (none on a public route).
    pub owner: Option<tunnels::Owner>,
    /// The client's `Authorization` header goes on to the upstream.
    pub keep_authorization: bool,
    /// Which API token (`X-Auth-Token`) or provider (`X-Auth-Bearer`)
    /// the request came with.
    pub token: Option<(http::HeaderName, HeaderValue)>,
}

impl Upstream {
    pub fn new(
        config: &config::Upstream,
        max_body_size: u64,
        tunnels: std::sync::Arc<tunnels::Tunnels>,
    ) -> Upstream {
        let transport = match &config.tls {
            // The name checked and sent as SNI is the url's host.
            Some(tls) => {
                let mut http = HttpConnector::new();
                http.set_connect_timeout(Some(config.connect_timeout));
                http.set_nodelay(true);
                http.enforce_http(false);
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((**tls).clone())
                    .https_only()
                    .enable_http1()
                    .enable_http2()
                    .wrap_connector(http);
                Transport::Tls(Box::new(
                    Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(Duration::from_secs(60))
                        .build(connector),
                ))
            }
            None => Transport::Plain(pool::Pool::new(&config.authority, config.connect_timeout)),
        };
        let scheme = match transport {
            Transport::Tls(_) => Scheme::HTTPS,
            Transport::Plain(_) => Scheme::HTTP,
        };
        Upstream {
            transport,
            scheme,
            authority: config.authority.clone(),
            timeout: config.timeout,
            max_body_size: usize::try_from(max_body_size).unwrap_or(usize::MAX),
            tunnels,
            strip: config.strip_prefix.then(|| config.path_prefix.clone()),
        }
    }

    /// Sends the request on and returns the upstream's response with its
    /// body still streaming. `timeout` bounds the wait for the response head.
    pub async fn forward(
        &self,
        mut parts: request::Parts,
        body: crate::body::TimedBody,
        identity: &Identity,
        forward: Forward<'_>,
    ) -> Result<Response<Body>, GatewayError> {
        let own_cookies = forward.own_cookies;
        let client_upgrade = if forward.websocket {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        headers::prepare_request(
            &mut parts.headers,
            identity,
            forward.client.forwarded_for,
            forward.host,
            forward.user.map(|user| (user, forward.claims)),
            &forward.own_cookies,
        );
        if !forward.keep_authorization {
            parts.headers.remove(http::header::AUTHORIZATION);
        }
        if let Some((header, name)) = forward.token {
            parts.headers.insert(header, name);
        }
        if let (Some(value), Some(settings)) = (forward.assertion, &identity.assertion) {
            parts.headers.insert(settings.header.clone(), value);
        }
        let mut path_and_query = forward.path_and_query;
        if let Some(prefix) = &self.strip {
            // The router only sends paths under the prefix here.
            let rest = &path_and_query.as_str()[prefix.len().min(path_and_query.as_str().len())..];
            let stripped = if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("/{rest}")
            };
            path_and_query = stripped.parse().map_err(|_| {
                GatewayError::BadPath(crate::policy::path::PathError::BadPercentEncoding)
            })?;
            if let Ok(value) = HeaderValue::from_str(prefix) {
                parts.headers.insert("x-forwarded-prefix", value);
            }
        }
        parts.uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .expect("scheme, authority and a normalized path make a valid URI");
        let from_h2 = parts.version == Version::HTTP_2;
        parts.version = Version::HTTP_11;
        if forward.websocket {
            // Hop-by-hop, so removed above; this hop wants them too.
            headers::ask_websocket_upgrade(&mut parts.headers);
            if from_h2 {
                // RFC 8441 §5: an extended CONNECT becomes the HTTP/1.1
                // handshake it stands for; the key is this hop's own.
                parts.method = http::Method::GET;
                parts.extensions.remove::<hyper::ext::Protocol>();
                parts.headers.insert(
                    http::header::SEC_WEBSOCKET_KEY,
                    HeaderValue::from_str(&websocket_key()).expect("base64 is a header value"),
                );
            }
        }
        // The only 101 that opens a tunnel answers this key (RFC 6455 §4.2.2).
        let expected_accept = forward
            .websocket
            .then(|| parts.headers.get(http::header::SEC_WEBSOCKET_KEY))
            .flatten()
            .map(|key| websocket_accept(key.as_bytes()));
        let body = if forward.websocket {
            // Nothing but the handshake goes before the 101.
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed()
        } else {
            Limited::new(body, self.max_body_size).boxed()
        };
        let request = Request::from_parts(parts, body);

        let sent = async {
            Ok::<Response<Body>, BoxError>(match &self.transport {
                Transport::Plain(pool) => pool.send(request).await?.map(boxed),
                Transport::Tls(client) => client.request(request).await?.map(boxed),
            })
        };
        let mut response: Response<Body> = match tokio::time::timeout(self.timeout, sent).await {
            Err(_elapsed) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(e)) if caused_by::<LengthLimitError>(&*e) => {
                return Err(GatewayError::BodyTooLarge)
            }
            Ok(Err(e)) if caused_by::<crate::body::BodyTimedOut>(&*e) => {
                return Err(GatewayError::BodyTimeout)
            }
            Ok(Err(e)) => return Err(GatewayError::UpstreamUnavailable(e)),
            Ok(Ok(response)) => response,
        };
        let switched = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        if switched {
            if !is_websocket_answer(response.headers(), expected_accept.as_deref()) {
                // An upstream that says 101 and goes on speaking HTTP (or
                // anything else) would get a raw tunnel in which the client
                // writes requests no rule judged, with identity headers of
                // its own. Dropping the response closes that connection.
                crate::security_event!(
                    warn,
                    event = "upstream_bad_switch",
                    "the upstream answered 101 without a valid WebSocket handshake; refused (502), its connection closed"
                );
                return Err(GatewayError::UpstreamUnavailable(
                    "the upstream's 101 was not a WebSocket handshake for the key sent".into(),
                ));
            }
            match client_upgrade {
                Some(client) => {
                    self.tunnels
                        .spawn(forward.owner, client, hyper::upgrade::on(&mut response))
                }
                // Nothing asked for it: an upstream's 101 cannot be passed on.
                None => {
                    return Err(GatewayError::UpstreamUnavailable(
                        "the upstream switched protocols unasked".into(),
                    ))
                }
            }
        }
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        if switched && from_h2 {
            // On HTTP/2 the stream is open once the answer is 200.
            parts.status = http::StatusCode::OK;
            parts.headers.remove(http::header::SEC_WEBSOCKET_ACCEPT);
        } else if switched {
            headers::ask_websocket_upgrade(&mut parts.headers);
        }
        let default_port = if self.scheme == Scheme::HTTPS {
            443
        } else {
            80
        };
        let known = forward.known_hosts;
        let client_host = forward.host;
        headers::rewrite_upstream_urls(&mut parts.headers, &self.authority, default_port, || {
            known.origin_for(client_host)
        });
        if parts.headers.contains_key(http::header::SET_COOKIE) {
            let dropped = headers::drop_own_set_cookies(&mut parts.headers, &own_cookies);
            if dropped > 0 {
                crate::security_event!(
                    warn,
                    event = "upstream_cookie_dropped",
                    cookies = dropped,
                    "the upstream tried to set the gateway's own cookie; dropped"
                );
            }
        }
        Ok(Response::from_parts(parts, body))
    }
}

/// The hosts the config names: upstream entries', rules' and
/// `public_url`'s. An upstream redirect to its own address is rewritten
/// onto the client's `Host` only when it is one of these: a client that
/// sends `Host: evil.example` must not get `Location: https://evil.example/`
/// (a shared cache would hand that to everyone). Otherwise it goes to
/// `public_url`, or becomes a path on the browser's own origin.
#[derive(Debug, Default)]
pub struct KnownHosts {
    /// Lower case, no port.
    names: Vec<String>,
    /// `https://host[:port]`.
    public_url: Option<String>,
}

impl KnownHosts {
    pub fn of(config: &crate::Config) -> KnownHosts {
        let mut names: Vec<String> = config
            .upstreams
            .iter()
            .filter_map(|u| u.host.clone())
            .chain(config.policy.rules().iter().filter_map(|r| r.host.clone()))
            .collect();
        let public_url = config.server.public_url.clone();
        if let Some(url) = &public_url {
            let authority = url.strip_prefix("https://").unwrap_or(url);
            if let Ok(host) = crate::policy::host::Host::parse(authority.as_bytes()) {
                names.push(host.name().to_owned());
            }
        }
        names.sort();
        names.dedup();
        KnownHosts { names, public_url }
    }

    /// The origin an upstream redirect is rewritten onto, or "" for a
    /// path on the browser's own origin.
    pub fn origin_for(&self, client_host: Option<&HeaderValue>) -> String {
        let known = client_host.and_then(|value| {
            let host = crate::policy::host::Host::parse_value(value).ok()?;
            let name = host.name();
            let text = value.to_str().ok()?;
            self.names
                .iter()
                .any(|n| crate::policy::same_host(name, n))
                .then(|| format!("https://{text}"))
        });
        known
            .or_else(|| self.public_url.clone())
            .unwrap_or_default()
    }
}

/// An upstream response body as the pipeline's body type.
fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with (RFC 6455
/// §4.2.2): base64 of the SHA-1 of the key and the protocol's GUID.
fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut hash = Sha1::new();
    hash.update(key);
    hash.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(hash.finalize())
}

/// A 101 that really is the WebSocket handshake asked for: `Upgrade:
/// websocket` and the `Sec-WebSocket-Accept` of the key sent.
fn is_websocket_answer(headers: &http::HeaderMap, expected_accept: Option<&str>) -> bool {
    let upgrade = headers.get(http::header::UPGRADE).is_some_and(|u| {
        u.to_str()
            .is_ok_and(|u| u.trim().eq_ignore_ascii_case("websocket"))
    });
    let accept = headers.get(http::header::SEC_WEBSOCKET_ACCEPT);
    let accepted = match (accept, expected_accept) {
        (Some(got), Some(want)) => got.as_bytes() == want.as_bytes(),
        _ => false,
    };
    upgrade && accepted
}

/// A fresh `Sec-WebSocket-Key` (RFC 6455 §4.1): 16 random bytes, base64.
fn websocket_key() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
