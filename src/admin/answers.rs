//! The admin API's answers: JSON bodies, errors by code, a small JSON
//! request read within a limit, and a users-file refusal as its answer.

use bytes::Bytes;
use http::header;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::json;

use crate::response::{own_response, Body, GatewayError};
use crate::users::file::UserFileError;

pub(super) const JSON: &str = "application/json; charset=utf-8";
pub(super) const MAX_JSON_BYTES: usize = 16 * 1024;

pub(super) fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    own_response(status, JSON, body.to_string())
}

pub(super) fn error(status: StatusCode, code: &str) -> Response<Body> {
    json_response(status, json!({ "error": code }))
}

pub(super) fn no_content() -> Response<Body> {
    let mut response = own_response(StatusCode::NO_CONTENT, JSON, "");
    response.headers_mut().remove(header::CONTENT_TYPE);
    response
}

pub(super) fn bad_request(detail: &str) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({ "error": "bad_request", "detail": detail }),
    )
}

/// A small JSON body: `None` if it is empty or not `T`.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    request: crate::body::GatewayRequest,
) -> Result<Option<T>, GatewayError> {
    let body: Bytes = match Limited::new(request.into_body(), MAX_JSON_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(GatewayError::BodyTooLarge),
    };
    Ok(serde_json::from_slice(&body).ok())
}

pub(super) fn user_error(e: UserFileError) -> Response<Body> {
    match e {
        UserFileError::UnknownUser(_) => error(StatusCode::NOT_FOUND, "not_found"),
        UserFileError::StoreUnavailable => {
            error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
        UserFileError::Duplicate(_) => error(StatusCode::CONFLICT, "duplicate"),
        UserFileError::ReadOnly { .. } => json_response(
            StatusCode::CONFLICT,
            json!({ "error": "managed_elsewhere", "detail": e.to_string() }),
        ),
        UserFileError::BadRole(_) | UserFileError::BadName(_) | UserFileError::WeakPassword => {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({ "error": "bad_request", "detail": e.to_string() }),
            )
        }
        other => {
            tracing::error!(error = %other, "admin change could not be saved");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "not_saved", "detail": other.to_string() }),
            )
        }
    }
}
