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
//! request it likes, so such a call is refused (403).
//!
//! Answers: `200` with the identity headers (and the assertion) for allow,
//! so the proxy can copy them to the app; `401` for "sign in" (or "sign in
//! again"), with a `Location` to the login page on `public_url` for a
//! browser; `403` for deny. nginx turns any other status into a 500, so a
//! path the gateway refuses outright is a 403 here, not a 400.

use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::pipeline::{Live, State};
use crate::policy::host::Host;
use crate::policy::{path, Decision, ReauthReason, Target};
use crate::response::{encode_query_value, own_response, wants_html, Body};
use crate::session;

static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");

/// The request the edge proxy asks about.
struct Original {
    method: Method,
    host: Option<Host>,
    /// As the client sent it: path and query.
    uri: String,
    /// `https://host/path?query`, for the login page's `next`.
    url: Option<String>,
}

fn text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().filter(|v| !v.is_empty())
}

fn original(headers: &HeaderMap) -> Option<Original> {
    let method = text(headers, &X_FORWARDED_METHOD)
        .or_else(|| text(headers, &X_ORIGINAL_METHOD))
        .unwrap_or("GET");
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).ok()?;
    if let Some(url) = text(headers, &X_ORIGINAL_URL) {
        let uri: Uri = url.parse().ok()?;
        let host = match uri.authority() {
            Some(a) => Some(Host::parse(a.as_str().as_bytes()).ok()?),
            None => match text(headers, &X_FORWARDED_HOST) {
                Some(h) => Some(Host::parse(h.as_bytes()).ok()?),
                None => None,
            },
        };
        let uri_text = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let url = uri.authority().map(|a| format!("https://{a}{uri_text}"));
        return Some(Original {
            method,
            host,
            uri: uri_text,
            url,
        });
    }
    let uri = text(headers, &X_FORWARDED_URI)?.to_owned();
    if !uri.starts_with('/') {
        return None;
    }
    let host_text = text(headers, &X_FORWARDED_HOST);
    let host = match host_text {
        Some(h) => Some(Host::parse(h.as_bytes()).ok()?),
        None => None,
    };
    let scheme = text(headers, &X_FORWARDED_PROTO).unwrap_or("https");
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else {
        "https"
    };
    let url = host_text.map(|h| format!("{scheme}://{h}{uri}"));
    Some(Original {
        method,
        host,
        uri,
        url,
    })
}

fn json(status: StatusCode, error: &str) -> http::Response<Body> {
    own_response(
        status,
        "application/json; charset=utf-8",
        format!("{{\"error\":\"{error}\"}}"),
    )
}

/// Answers one forward-auth request from `peer`.
pub async fn verify(
    state: &State,
    live: &Live,
    peer: IpAddr,
    headers: &HeaderMap,
    user_log: &mut Option<std::sync::Arc<str>>,
) -> http::Response<Body> {
    let server = &live.config.server;
    if !server.trusted_proxies.trusts(peer) {
        tracing::warn!(%peer, "a forward-auth call from outside trusted_proxies was refused");
        return json(StatusCode::FORBIDDEN, "untrusted_proxy");
    }
    let Some(original) = original(headers) else {
        return json(StatusCode::FORBIDDEN, "no_original_request");
    };
    let Some(path_only) = original.uri.split('?').next() else {
        return json(StatusCode::FORBIDDEN, "bad_path");
    };
    let Ok(normalized) = path::normalize(path_only) else {
        return json(StatusCode::FORBIDDEN, "bad_path");
    };
    if normalized == "/.gateway" || normalized.starts_with("/.gateway/") {
        // The gateway's own pages, when they are behind the same proxy.
        return own_response(StatusCode::OK, "text/plain; charset=utf-8", "ok\n");
    }
    let presented = state
        .auth
        .authenticate(headers, session::now_ms(), true)
        .await;
    let now = session::now_ms();
    let principal = presented.signed_in.as_ref().map(|s| s.principal(now));
    *user_log = presented.signed_in.as_ref().map(|s| s.user.name.clone());
    let target = Target {
        method: &original.method,
        host: original.host.as_ref().map(Host::name),
        path: &normalized,
    };
    let browser = wants_html(headers);
    let next = original
        .url
        .as_deref()
        .filter(|url| state.auth.accepts_absolute_next(url))
        .map_or_else(|| original.uri.clone(), str::to_owned);
    let sign_in = |page: &str, status_error: &str| {
        let mut response = json(StatusCode::UNAUTHORIZED, status_error);
        if browser {
            if let Some(public) = &server.public_url {
                let location = format!("{public}{page}?next={}", encode_query_value(&next));
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
            }
        }
        response
    };
    match live.config.policy.decide(&target, principal).decision {
        Decision::Allow => {}
        Decision::Login if presented.store_unavailable => {
            return json(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
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
        if let (Some(settings), Some(signer)) = (&identity.assertion, &state.signer) {
            let host = original.host.as_ref().map_or("authgate", Host::name);
            out.insert(
                settings.header.clone(),
                signed_in.assertion(signer, settings, host),
            );
        }
    }
    response
}
