//! What the gateway answers itself: the body type, the one mapping from
//! [`GatewayError`] to a status code, and the small pages it serves.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};

/// Errors a body can fail with, from either side of the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether `error` or one of its causes is an `E` (a body limit, a body
/// timeout): what a failed upstream call or form read was really about.
pub fn caused_by<E: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Every response body: the gateway's own pages and streamed upstream bodies.
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// Every way a request can end without the upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadPath(#[from] crate::policy::path::PathError),
    #[error("the request carries both Content-Length and Transfer-Encoding")]
    AmbiguousFraming,
    #[error("{0}")]
    BadHost(#[from] crate::policy::host::HostError),
    #[error("the request head is larger than the configured limit")]
    HeadTooLarge,
    #[error("the request body is larger than the configured limit")]
    BodyTooLarge,
    /// The client left the body waiting longer than `body_timeout`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("this method is not allowed")]
    MethodNotAllowed,
    #[error("no such gateway page")]
    NotFound,
    #[error("access denied: {}", .0.as_str())]
    Forbidden(crate::policy::DenyReason),
    /// A session is needed; `next` is where to come back after login.
    #[error("a login is needed")]
    Unauthenticated { next: String, navigating: bool },
    /// Signed in, but the route wants a fresher sign-in (`max_auth_age`) or
    /// one that passed the second factor (`mfa = true`); `enroll`: the user
    /// has no second factor yet; `provider`: the `[[oidc]]` the user signed
    /// in with, who is sent back there instead.
    #[error("this page needs you to sign in again")]
    Reauth {
        next: String,
        navigating: bool,
        second_factor: bool,
        enroll: bool,
        provider: Option<std::sync::Arc<str>>,
    },
    /// An API token that is unknown, expired, revoked or no longer its
    /// account's to use (the answer never says which).
    #[error("the API token is not valid")]
    InvalidToken,
    /// An API token (or Basic with one) where the rule takes none.
    #[error("this route does not accept API tokens (in this form)")]
    TokenNotAccepted,
    #[error("the form's CSRF token is missing or wrong, or it came from another site")]
    CsrfRejected,
    #[error("the form is malformed")]
    BadForm,
    /// An `Upgrade` to anything but WebSocket (`h2c` included).
    #[error("only WebSocket upgrades are forwarded")]
    UpgradeRefused,
    /// A WebSocket handshake whose `Origin` is another site: a browser
    /// sends the session cookie along from any page.
    #[error("a WebSocket handshake from another site")]
    CrossSiteWebSocket,
    #[error("too many failed sign-ins")]
    Throttled { retry_after_secs: u64 },
    #[error("too many sign-ins are being checked right now")]
    LoginBusy,
    /// `[ldap]` cannot be asked, and the name is not a local user's.
    #[error("the directory cannot be reached right now; try again in a moment")]
    DirectoryUnavailable,
    /// The session store cannot answer, or cannot make a change durable.
    #[error("sessions cannot be checked or saved right now; try again in a moment")]
    StoreUnavailable,
    #[error("the upstream could not be reached: {0}")]
    UpstreamUnavailable(BoxError),
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    /// Several apps are configured and none serves this host and path.
    #[error("no application here")]
    NoUpstream,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadPath(_)
            | GatewayError::AmbiguousFraming
            | GatewayError::BadHost(_)
            | GatewayError::BadForm
            | GatewayError::UpgradeRefused => StatusCode::BAD_REQUEST,
            GatewayError::CsrfRejected | GatewayError::CrossSiteWebSocket => StatusCode::FORBIDDEN,
            GatewayError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::LoginBusy
            | GatewayError::StoreUnavailable
            | GatewayError::DirectoryUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::NotFound | GatewayError::NoUpstream => StatusCode::NOT_FOUND,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::Unauthenticated {
                navigating: true, ..
            } => StatusCode::FOUND,
            GatewayError::Unauthenticated { .. }
            | GatewayError::InvalidToken
            | GatewayError::TokenNotAccepted => StatusCode::UNAUTHORIZED,
            GatewayError::Reauth {
                navigating: true, ..
            } => StatusCode::FOUND,
            GatewayError::Reauth { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short machine-readable code in JSON error bodies.
    fn code(&self) -> &'static str {
        match self {
            GatewayError::BadPath(_)
            | GatewayError::AmbiguousFraming
            | GatewayError::BadHost(_)
            | GatewayError::BadForm
            | GatewayError::UpgradeRefused => "bad_request",
            GatewayError::CrossSiteWebSocket => "cross_site_websocket",
            GatewayError::CsrfRejected => "csrf",
            GatewayError::Throttled { .. } => "too_many_requests",
            GatewayError::LoginBusy => "busy",
            GatewayError::StoreUnavailable => "store_unavailable",
            GatewayError::DirectoryUnavailable => "directory_unavailable",
            GatewayError::HeadTooLarge => "request_header_fields_too_large",
            GatewayError::BodyTooLarge => "payload_too_large",
            GatewayError::BodyTimeout => "request_timeout",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::NotFound | GatewayError::NoUpstream => "not_found",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::Unauthenticated { .. } => "unauthenticated",
            GatewayError::InvalidToken => "invalid_token",
            GatewayError::TokenNotAccepted => "token_not_accepted",
            GatewayError::Reauth {
                second_factor: true,
                ..
            } => "second_factor_required",
            GatewayError::Reauth { .. } => "reauthentication_required",
            GatewayError::UpstreamUnavailable(_) => "bad_gateway",
            GatewayError::UpstreamTimeout => "gateway_timeout",
        }
    }

    /// The page a person sees; upstream details stay in the log.
    fn public_message(&self) -> String {
        match self {
            GatewayError::UpstreamUnavailable(_) => {
                "The application behind this gateway cannot be reached right now.".into()
            }
            GatewayError::UpstreamTimeout => {
                "The application behind this gateway did not answer in time.".into()
            }
            GatewayError::Forbidden(_) => "You do not have access to this page.".into(),
            GatewayError::Unauthenticated { .. } => "Please sign in to see this page.".into(),
            GatewayError::Throttled { retry_after_secs } => format!(
                "Too many sign-in attempts. Try again in {retry_after_secs} seconds."
            ),
            GatewayError::CsrfRejected => {
                "This form has expired or did not come from this site. Go back, reload the page and try again.".into()
            }
            other => {
                let mut text = other.to_string();
                if let Some(first) = text.get_mut(..1) {
                    first.make_ascii_uppercase();
                }
                text + "."
            }
        }
    }

    /// The response, as HTML for a browser (`html`: its `Accept` names
    /// `text/html`) or JSON.
    pub fn into_response(self, html: bool) -> Response<Body> {
        let status = self.status();
        if let GatewayError::Unauthenticated {
            next,
            navigating: true,
        } = &self
        {
            let location = format!("/.gateway/login?next={}", encode_query_value(next));
            let mut response = page(status, "Sign in", "Redirecting to the sign-in page.");
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            return response;
        }
        if let GatewayError::Reauth {
            next,
            navigating: true,
            enroll,
            second_factor,
            provider,
        } = &self
        {
            let next = encode_query_value(next);
            let location = match provider {
                Some(provider) if *second_factor => {
                    format!("/.gateway/oidc/{provider}/start?mfa=1&fresh=1&next={next}")
                }
                Some(provider) => format!("/.gateway/oidc/{provider}/start?fresh=1&next={next}"),
                None if *enroll => format!("/.gateway/totp?next={next}"),
                None => format!("/.gateway/reauth?next={next}"),
            };
            let mut response = page(status, "Sign in again", "Redirecting to sign in again.");
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            return response;
        }
        let mut response = if html {
            page(
                status,
                status.canonical_reason().unwrap_or("Error"),
                &self.public_message(),
            )
        } else {
            let body = serde_json::json!({ "error": self.code() }).to_string();
            own_response(status, "application/json; charset=utf-8", body)
        };
        if matches!(self, GatewayError::AmbiguousFraming) {
            // The rest of this connection's bytes cannot be trusted.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let retry_after = match self {
            GatewayError::Throttled { retry_after_secs } => Some(retry_after_secs),
            GatewayError::LoginBusy => Some(1),
            GatewayError::StoreUnavailable => Some(5),
            GatewayError::DirectoryUnavailable => Some(5),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(
            self,
            GatewayError::InvalidToken | GatewayError::TokenNotAccepted
        ) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"authgate\""),
            );
        }
        if matches!(self, GatewayError::MethodNotAllowed) {
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        response
    }
}

pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Headers every response of the gateway's own carries (SPEC §7).
pub fn own_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'",
        ),
    );
    response
}

impl From<crate::pages::Page> for Response<Body> {
    fn from(page: crate::pages::Page) -> Response<Body> {
        let mut response = own_response(page.status, "text/html; charset=utf-8", page.html);
        if page.script {
            // The passkey script, from the gateway itself, and its calls
            // back to it; still no inline script.
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'",
                ),
            );
        }
        response
    }
}

/// A small error page.
pub fn page(status: StatusCode, title: &str, message: &str) -> Response<Body> {
    crate::pages::error::page(status, title, message).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_next_for_a_query() {
        assert_eq!(encode_query_value("/a b?c=1&d"), "/a%20b%3Fc%3D1%26d");
    }
}
