//! `GET /.gateway/verify`: authgate as the authentication service behind
//! an edge proxy that already runs (nginx `auth_request`, Traefik
//! ForwardAuth, Caddy `forward_auth`). The proxy asks before it forwards a
//! request; the answer is the gateway's own decision for that request:
//! the same path normalization, session checks and rules.
//!
//! The original request is read from `X-Forwarded-Method`,
//! `X-Forwarded-Host` and `X-Forwarded-Uri` (Traefik, Caddy) or
//! `X-Original-URL` and `X-Original-Method` (nginx), and only from a peer in
//! `trusted_proxies`: from anyone else they would let a client name any
//! request it likes, so such a call is refused (403). One family only:
//! nginx's `auth_request` passes the client's own headers along, so the
//! family the proxy does not set is the client's to fill. `[server]
//! forward_auth` names the proxy's family and the other is ignored; with
//! none named, a call carrying both (or neither) is refused, never
//! guessed. A missing method is refused too, not taken for GET.
//!
//! Answers: `200` with the identity headers (and the assertion) for allow,
//! so the proxy can copy them to the app, and `X-Authgate-Cookie`: the
//! client's cookies without the gateway's own, for the app's `Cookie`; `401` for "sign in" (or "sign in
//! again"), with a `Location` to the login page on `public_url` for a
//! browser; `403` for deny. nginx turns any other status into a 500, so a
//! path the gateway refuses outright is a 403 here, not a 400.

use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::config::ForwardAuthFamily;
use crate::policy::host::Host;
use crate::policy::{path, Decision, ReauthReason, Target};
use crate::response::{encode_query_value, own_response, wants_html, Body};
use crate::state::{Live, State};

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
/// On a 200: the request's `Cookie` without the gateway's own cookies, for
/// the edge proxy to send the app in place of the client's (the built-in
/// proxy strips them the same way); absent when no other cookie is left.
pub static X_AUTHGATE_COOKIE: HeaderName = HeaderName::from_static("x-authgate-cookie");

/// The request the edge proxy asks about.
#[derive(Debug, PartialEq, Eq)]
pub struct Original {
    pub method: Method,
    pub host: Host,
    /// As the client sent it: path and query.
    pub uri: String,
    /// `https` or `http`, for the absolute URL a sign-in may return to.
    pub scheme: &'static str,
}

impl Original {
    /// `https://host/path?query`: made only for a sign-in's `next`.
    fn url(&self) -> String {
        let authority = self.host.value().to_str().unwrap_or_default();
        format!("{}://{authority}{}", self.scheme, self.uri)
    }
}

/// Why the original request could not be read; each is a 403 whose code
/// says what the proxy should fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// No `[server] forward_auth` and both header families (or neither):
    /// one of them is the client's own, and guessing which is the hole.
    Ambiguous,
    NoMethod,
    NoUri,
    NoHost,
    /// A fragment, an asterisk or authority form, a bad escape or byte.
    BadUri,
}

impl Unreadable {
    fn code(self) -> &'static str {
        match self {
            Unreadable::Ambiguous => "ambiguous_forward_auth",
            Unreadable::NoMethod => "no_original_method",
            Unreadable::NoUri => "no_original_uri",
            Unreadable::NoHost => "no_original_host",
            Unreadable::BadUri => "bad_original_uri",
        }
    }
}

fn text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().filter(|v| !v.is_empty())
}

/// Which family to read: the configured one, or with none configured the
/// only one present. The family's tell-tales are its method and URI
/// headers; `X-Forwarded-Host`/`-Proto` alone say nothing, many proxies
/// set them on every request.
fn family(
    headers: &HeaderMap,
    configured: Option<ForwardAuthFamily>,
) -> Result<ForwardAuthFamily, Unreadable> {
    if let Some(family) = configured {
        return Ok(family);
    }
    let nginx = headers.contains_key(&X_ORIGINAL_URL) || headers.contains_key(&X_ORIGINAL_METHOD);
    let traefik =
        headers.contains_key(&X_FORWARDED_METHOD) || headers.contains_key(&X_FORWARDED_URI);
    match (nginx, traefik) {
        (true, false) => Ok(ForwardAuthFamily::Nginx),
        (false, true) => Ok(ForwardAuthFamily::Traefik),
        _ => Err(Unreadable::Ambiguous),
    }
}

/// A request target in origin form (`/path?query`): no fragment, no
/// whitespace or control bytes.
fn origin_form(target: &str) -> Result<&str, Unreadable> {
    let fine = target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
    if fine {
        Ok(target)
    } else {
        Err(Unreadable::BadUri)
    }
}

/// The original request as the headers of `configured`'s family (or the
/// one family present) describe it; the other family's headers are never
/// read.
pub fn original(
    headers: &HeaderMap,
    configured: Option<ForwardAuthFamily>,
) -> Result<Original, Unreadable> {
    let family = family(headers, configured)?;
    let (method, host, uri, scheme) = match family {
        ForwardAuthFamily::Nginx => {
            let method = text(headers, &X_ORIGINAL_METHOD).ok_or(Unreadable::NoMethod)?;
            let url = text(headers, &X_ORIGINAL_URL).ok_or(Unreadable::NoUri)?;
            // Absolute form, `$scheme://$http_host$request_uri`: the host
            // comes with it, never from a header the client could add.
            let (scheme, rest) = url.split_once("://").ok_or(Unreadable::NoHost)?;
            let scheme = match scheme.to_ascii_lowercase().as_str() {
                "https" => "https",
                "http" => "http",
                _ => return Err(Unreadable::BadUri),
            };
            let split = rest.find('/').unwrap_or(rest.len());
            let (authority, target) = rest.split_at(split);
            let target = if target.is_empty() { "/" } else { target };
            if authority.contains(['@', '?', '#']) {
                return Err(Unreadable::BadUri);
            }
            (method, authority, origin_form(target)?, scheme)
        }
        ForwardAuthFamily::Traefik => {
            let method = text(headers, &X_FORWARDED_METHOD).ok_or(Unreadable::NoMethod)?;
            let uri = text(headers, &X_FORWARDED_URI).ok_or(Unreadable::NoUri)?;
            let host = text(headers, &X_FORWARDED_HOST).ok_or(Unreadable::NoHost)?;
            let scheme = match text(headers, &X_FORWARDED_PROTO) {
                Some(p) if p.eq_ignore_ascii_case("http") => "http",
                _ => "https",
            };
            (method, host, origin_form(uri)?, scheme)
        }
    };
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Unreadable::NoMethod)?;
    let parsed = Host::parse(host.as_bytes()).map_err(|_| Unreadable::NoHost)?;
    Ok(Original {
        method,
        host: parsed,
        uri: uri.to_owned(),
        scheme,
    })
}

/// Whether a normalized path is one of the gateway's own pages asked for
/// on the gateway's own public host, so the proxy may let it through
/// unjudged. Only plain spellings count: a segment another server would
/// read differently (`..%20`, `...`, `;x`, upper case, an escape) is judged
/// by the rules like any other path.
fn own_page(normalized: &str, host: &Host, public_url: Option<&str>) -> bool {
    if normalized != "/.gateway" && !normalized.starts_with("/.gateway/") {
        return false;
    }
    let on_own_host = public_url
        .and_then(|url| url.strip_prefix("https://"))
        .and_then(|authority| Host::parse(authority.as_bytes()).ok())
        .is_some_and(|own| own.name().eq_ignore_ascii_case(host.name()));
    let plain = normalized.split('/').skip(2).all(|segment| {
        !segment.starts_with('.')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    });
    on_own_host && plain && path::lenient_alias(normalized).is_none()
}

fn json(status: StatusCode, error: &str) -> http::Response<Body> {
    own_response(
        status,
        "application/json; charset=utf-8",
        format!("{{\"error\":\"{error}\"}}"),
    )
}

/// What a forward-auth call judged, for its access line.
#[derive(Default)]
pub struct Judged {
    pub user: Option<std::sync::Arc<str>>,
    /// The original request's host and normalized path.
    pub host: Option<String>,
    pub path: Option<String>,
    pub decision: Option<&'static str>,
}

impl Judged {
    /// The path its access line shows: `/.gateway/verify?/judged/path`
    /// (or the bare endpoint when nothing was judged).
    pub fn access_path(&self) -> String {
        match &self.path {
            Some(path) => format!("/.gateway/verify?{path}"),
            None => "/.gateway/verify".to_owned(),
        }
    }
}

/// Answers one forward-auth request from `peer`.
pub async fn verify(
    state: &State,
    live: &Live,
    peer: IpAddr,
    headers: &HeaderMap,
    judged: &mut Judged,
) -> http::Response<Body> {
    let server = &live.config.server;
    if !server.trusted_proxies.trusts(peer) {
        tracing::warn!(%peer, "a forward-auth call from outside trusted_proxies was refused");
        return json(StatusCode::FORBIDDEN, "untrusted_proxy");
    }
    let original = match original(headers, server.forward_auth) {
        Ok(original) => original,
        Err(why) => {
            if why == Unreadable::Ambiguous {
                crate::security_event!(warn, event = "ambiguous_forward_auth", %peer, "a forward-auth call named its request in both header families (or neither) and [server] forward_auth does not say which is the proxy's; refused");
            } else {
                tracing::warn!(%peer, error = why.code(), "a forward-auth call did not name a readable original request; refused");
            }
            return json(StatusCode::FORBIDDEN, why.code());
        }
    };
    let Some(path_only) = original.uri.split('?').next() else {
        return json(StatusCode::FORBIDDEN, "bad_path");
    };
    let Ok(normalized) = path::normalize(path_only) else {
        return json(StatusCode::FORBIDDEN, "bad_path");
    };
    if own_page(&normalized, &original.host, server.public_url.as_deref()) {
        // The gateway's own pages, when they are behind the same proxy.
        return own_response(StatusCode::OK, "text/plain; charset=utf-8", "ok\n");
    }
    // The client the proxy names (it is trusted), for the token throttle.
    let peer_value =
        HeaderValue::from_str(&peer.to_string()).expect("an address is a header value");
    let client = server.trusted_proxies.client(peer, &peer_value, headers).ip;
    let presented = crate::access::authenticate(state, headers, client).await;
    judged.user = presented.signed_in.as_ref().map(|s| s.user.name.clone());
    judged.host = Some(original.host.name().to_owned());
    let target = Target {
        method: &original.method,
        host: Some(original.host.name()),
        path: &normalized,
    };
    let decision =
        crate::access::authorize(&live.config.policy, presented.signed_in.as_ref(), &target);
    judged.decision = Some(decision.as_str());
    judged.path = Some(normalized);
    // Only a sign-in answer needs the way back, and only a browser's.
    let sign_in = |page: &str, status_error: &str| {
        let mut response = json(StatusCode::UNAUTHORIZED, status_error);
        if wants_html(headers) {
            if let Some(public) = &server.public_url {
                let url = original.url();
                let next = if state.auth.accepts_absolute_next(&url) {
                    &url
                } else {
                    &original.uri
                };
                let location = format!("{public}{page}?next={}", encode_query_value(next));
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
            }
        }
        response
    };
    match decision {
        Decision::Allow => {}
        Decision::Login if presented.store_unavailable => {
            return json(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
        }
        Decision::Login if presented.token_refused.is_some() => {
            return json(StatusCode::UNAUTHORIZED, "invalid_token");
        }
        Decision::Login => return sign_in("/.gateway/login", "unauthenticated"),
        Decision::Reauth(ReauthReason::SecondFactor) => {
            return sign_in("/.gateway/reauth", "second_factor_required")
        }
        Decision::Reauth(ReauthReason::TooOld) => {
            return sign_in("/.gateway/reauth", "reauthentication_required")
        }
        Decision::Deny(reason) => {
            state.metrics.record_denial(reason);
            return json(StatusCode::FORBIDDEN, "forbidden");
        }
    }
    let mut response = own_response(StatusCode::OK, "text/plain; charset=utf-8", "ok\n");
    if let Some(cookies) =
        crate::proxy::headers::cookies_without(headers, &state.auth.own_cookies())
    {
        response.headers_mut().insert(&X_AUTHGATE_COOKIE, cookies);
    }
    if let Some(signed_in) = &presented.signed_in {
        let identity = &live.config.identity;
        let out = response.headers_mut();
        out.insert(
            identity.user_header.clone(),
            signed_in.user.name_header.clone(),
        );
        out.insert(
            identity.roles_header.clone(),
            signed_in.user.roles_header.clone(),
        );
        if let Some(vouched) = &signed_in.session.vouched {
            for (name, value) in &vouched.headers {
                out.insert(name.clone(), value.clone());
            }
        }
        if let (Some(settings), Some(signer)) = (&identity.assertion, &state.signer) {
            let host = original.host.name();
            out.insert(
                settings.header.clone(),
                signed_in.assertion(signer, settings, host),
            );
        }
    }
    response
}
