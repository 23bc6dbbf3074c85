//! The optional ops listener's answers: `/healthz`, `/readyz` and
//! `/metrics` (what [`crate::metrics`] counted).

use http::{Method, Response, StatusCode};

use crate::metrics::Gauges;
use crate::response::{own_response, Body};

/// Answers one request on the ops listener.
pub fn answer(method: &Method, path: &str, state: &crate::state::State) -> Response<Body> {
    let (metrics, readiness) = (&state.metrics, &state.readiness);
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return own_response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
    }
    match path {
        // Alive even while the store is not: a failing liveness probe would
        // restart every replica, and public routes still work.
        "/healthz" if metrics.store_up() => own_response(StatusCode::OK, TEXT, "ok\n"),
        "/healthz" => own_response(
            StatusCode::OK,
            TEXT,
            "ok; the session store is unavailable: sign-ins and routes that need a session answer 503\n",
        ),
        "/readyz" if readiness.is_ready() => own_response(StatusCode::OK, TEXT, "ready\n"),
        "/readyz" => own_response(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n"),
        "/metrics" => own_response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(&Gauges {
                sessions: state.auth.store.sessions.live(),
                certificate_expiry: state.certificate.expires_at(),
                tasks: tokio::runtime::Handle::try_current()
                    .ok()
                    .map(|runtime| runtime.metrics().num_alive_tasks()),
            }),
        ),
        _ => own_response(StatusCode::NOT_FOUND, TEXT, "not found\n"),
    }
}
