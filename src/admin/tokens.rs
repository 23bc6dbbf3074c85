//! The admin API's tokens of a user: `GET /users/{name}/tokens` lists
//! them, `POST` (`{"name", "expires"?, "roles"?}`) makes one and answers
//! it this once, `DELETE /users/{name}/tokens/{token}` revokes one.

use http::{Method, Response, StatusCode};
use serde_json::json;

use super::answers::{bad_request, error, json_response, no_content, read_json};
use crate::identity::tokens::{self, NewToken, TokenError};
use crate::identity::Auth;
use crate::response::{Body, GatewayError};
use crate::units::rfc3339;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Asked {
    name: String,
    expires: Option<String>,
    roles: Option<Vec<String>>,
}

pub async fn api(
    auth: &Auth,
    actor: &str,
    method: &Method,
    name: &str,
    rest: &[&str],
    request: crate::body::GatewayRequest,
) -> Result<Response<Body>, GatewayError> {
    let Some(user) = auth.users().get(name).cloned() else {
        return Ok(error(StatusCode::NOT_FOUND, "not_found"));
    };
    let store = &auth.store.tokens;
    Ok(match (method, rest) {
        (&Method::GET, []) => {
            let list: Vec<serde_json::Value> = store
                .list(Some(&user.key))
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?
                .into_iter()
                .map(|t| {
                    json!({
                        "name": t.record.name,
                        "roles": t.record.roles,
                        "created": rfc3339(t.record.created_ms),
                        "expires": rfc3339(t.record.expires_ms),
                        "last_used": t.last_used_ms.map(rfc3339),
                    })
                })
                .collect();
            json_response(StatusCode::OK, json!({ "tokens": list }))
        }
        (&Method::POST, []) => {
            let Some(asked) = read_json::<Asked>(request).await? else {
                return Ok(bad_request(
                    "expected {\"name\": \"...\", \"expires\"?: \"30d\", \"roles\"?: [\"...\"]}",
                ));
            };
            let lifetime = match asked.expires.as_deref().map(crate::units::parse_duration) {
                Some(Err(e)) => return Ok(bad_request(&e)),
                Some(Ok(d)) => Some(d),
                None => None,
            };
            let new = NewToken {
                name: asked.name.clone(),
                lifetime,
                roles: asked.roles,
            };
            let settings = auth.token_settings();
            match tokens::create(store, &settings, &user, new, crate::session::now_ms()).await {
                Ok(token) => {
                    crate::security_event!(warn, event = "token_created", actor, user = %user.name, token = %asked.name, "API token made");
                    auth.audit()
                        .remember("token_created", actor, &user.name, asked.name);
                    json_response(StatusCode::CREATED, json!({ "token": token }))
                }
                Err(e) => token_error(e),
            }
        }
        (&Method::DELETE, [token]) => match tokens::revoke(store, &user.key, Some(token)).await {
            Ok(0) => error(StatusCode::NOT_FOUND, "not_found"),
            Ok(_) => {
                crate::security_event!(warn, event = "token_revoked", actor, user = %user.name, token = %token, "API token revoked");
                auth.audit()
                    .remember("token_revoked", actor, &user.name, (*token).to_owned());
                no_content()
            }
            Err(e) => token_error(e),
        },
        (_, [] | [_]) => error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    })
}

/// The admin API's caller by an API token, where the rules say a token
/// may reach `/.gateway/admin/api` + `rest` (a rule matching that path
/// with `tokens = true`, or `[tokens] default`); `Ok(None)` when the
/// request carries none; `Err` with the answer when it carries one that
/// is refused, or not taken there.
pub async fn by_token(
    auth: &Auth,
    call: &crate::identity::Call<'_>,
    headers: &http::HeaderMap,
    method: &Method,
    rest: &str,
) -> Result<Option<crate::identity::SignedIn>, Response<Body>> {
    let now = crate::session::now_ms();
    let signed_in = match auth.token(headers, call.peer, now).await {
        tokens::TokenCheck::Absent => return Ok(None),
        tokens::TokenCheck::Valid(signed_in) => signed_in,
        tokens::TokenCheck::Refused => {
            return Err(error(StatusCode::UNAUTHORIZED, "invalid_token"))
        }
        tokens::TokenCheck::Throttled(_) => {
            return Err(error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests"))
        }
    };
    let path = format!("/.gateway/admin/api{rest}");
    let host = call
        .host
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name));
    let target = crate::policy::Target {
        method,
        host,
        path: &path,
    };
    match crate::access::authorize(&call.config.policy, Some(&signed_in), &target) {
        crate::policy::Decision::Allow => Ok(Some(signed_in)),
        _ => Err(error(StatusCode::UNAUTHORIZED, "token_not_accepted")),
    }
}

fn token_error(e: TokenError) -> Response<Body> {
    match e {
        TokenError::Unavailable => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        TokenError::NameTaken(..) => json_response(
            StatusCode::CONFLICT,
            json!({ "error": "duplicate", "detail": e.to_string() }),
        ),
        other => bad_request(&other.to_string()),
    }
}
