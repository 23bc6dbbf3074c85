//! `/.gateway/admin`: a JSON API and an HTML page for the admin role.
//!
//! Unsafe API methods need the `X-CSRF-Token` header to equal the session's
//! CSRF token (which `GET /.gateway/whoami` returns); the page's buttons are
//! plain forms carrying the same token. Every change is logged as a
//! security event naming the admin who made it.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::forms::read_form;
use super::next::percent_decode;
use super::{csrf, pages, rfc3339, Auth, SignedIn};
use crate::policy::DenyReason;
use crate::response::{escape_html, own_response, Body, GatewayError};
use crate::session;
use crate::users::file::{check_role, Change, UserFileError};

const JSON: &str = "application/json; charset=utf-8";
const MAX_JSON_BYTES: usize = 16 * 1024;

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    own_response(status, JSON, body.to_string())
}

fn error(status: StatusCode, code: &str) -> Response<Body> {
    json_response(status, json!({ "error": code }))
}

fn no_content() -> Response<Body> {
    let mut response = own_response(StatusCode::NO_CONTENT, JSON, "");
    response.headers_mut().remove(header::CONTENT_TYPE);
    response
}

impl Auth {
    fn is_admin(&self, signed_in: &SignedIn) -> bool {
        signed_in.user.roles.contains(&**self.admin_role.load())
    }
}

fn user_error(e: UserFileError) -> Response<Body> {
    match e {
        UserFileError::UnknownUser(_) => error(StatusCode::NOT_FOUND, "not_found"),
        UserFileError::StoreUnavailable => {
            error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
        UserFileError::BadRole(_) | UserFileError::BadName(_) => json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": "bad_request", "detail": e.to_string() }),
        ),
        other => {
            tracing::error!(error = %other, "admin change could not be saved");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "not_saved", "detail": other.to_string() }),
            )
        }
    }
}

/// `/.gateway/admin/api{rest}`.
pub(super) async fn api(
    auth: &Auth,
    rest: &str,
    request: Request<Incoming>,
    logged_user: &mut Option<Arc<str>>,
) -> Result<Response<Body>, GatewayError> {
    let presented = auth
        .authenticate(request.headers(), session::now_ms(), true)
        .await;
    let Some(admin) = presented.signed_in else {
        if presented.store_unavailable {
            return Err(GatewayError::StoreUnavailable);
        }
        return Ok(error(StatusCode::UNAUTHORIZED, "unauthenticated"));
    };
    *logged_user = Some(admin.user.name.clone());
    if !auth.is_admin(&admin) {
        return Ok(error(StatusCode::FORBIDDEN, "forbidden"));
    }
    let method = request.method().clone();
    if !matches!(method, Method::GET | Method::HEAD) {
        let given = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !csrf::matches(&admin.csrf_token(), given) {
            return Ok(error(StatusCode::FORBIDDEN, "csrf"));
        }
    }
    let actor = format!("admin {}", admin.user.name);
    let segments: Vec<String> = rest
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let query_user = request.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "user")
            .map(|(_, v)| v.into_owned())
    });
    let users = auth.users();
    let user_key = |name: &str| users.get(name).map(|u| u.key.clone());

    Ok(match (&method, segments.as_slice()) {
        (&Method::GET, ["sessions"]) => {
            let filter = match &query_user {
                Some(name) => match user_key(name) {
                    Some(key) => Some(key),
                    None => return Ok(error(StatusCode::NOT_FOUND, "not_found")),
                },
                None => None,
            };
            let sessions: Vec<serde_json::Value> = auth
                .sessions
                .list(filter.as_deref())
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?
                .into_iter()
                .map(|s| {
                    let name = users
                        .get_by_key(&s.user)
                        .map_or_else(|| s.user.to_string(), |u| u.name.to_string());
                    json!({
                        "id": session::handle(&s.key),
                        "user": name,
                        "created_at": rfc3339(s.created_ms),
                        "last_seen_at": rfc3339(s.last_seen_ms),
                        "ip": s.ip.to_string(),
                        "user_agent": &*s.user_agent,
                    })
                })
                .collect();
            json_response(StatusCode::OK, json!({ "sessions": sessions }))
        }
        (&Method::DELETE, ["sessions", id]) => match auth
            .sessions
            .end_by_handle(id)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?
        {
            Some(user) => {
                crate::security_event!(warn, event = "session_revoked", actor = %actor, user = %user, session = %id, "session ended by an admin");
                no_content()
            }
            None => error(StatusCode::NOT_FOUND, "not_found"),
        },
        (&Method::GET, ["users"]) => {
            let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
            let sessions = auth
                .sessions
                .list(None)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?;
            for s in sessions {
                *counts.entry(s.user).or_default() += 1;
            }
            let mut list: Vec<_> = users.iter().collect();
            list.sort_by(|a, b| a.key.cmp(&b.key));
            let users_json: Vec<serde_json::Value> = list
                .into_iter()
                .map(|u| {
                    json!({
                        "name": &*u.name,
                        "roles": u.roles,
                        "locked": u.locked,
                        "totp": u.totp.is_some(),
                        "sessions": counts.get(&u.key).copied().unwrap_or(0),
                    })
                })
                .collect();
            json_response(StatusCode::OK, json!({ "users": users_json }))
        }
        (
            &Method::POST,
            ["users", name, action @ ("lock" | "unlock" | "revoke" | "totp-reset")],
        ) => {
            let Some(key) = user_key(name) else {
                return Ok(error(StatusCode::NOT_FOUND, "not_found"));
            };
            drop(users);
            let result = match *action {
                "lock" => {
                    auth.change_users(Change::Lock(key.to_string()), &actor)
                        .await
                }
                "unlock" => {
                    auth.change_users(Change::Unlock(key.to_string()), &actor)
                        .await
                }
                "totp-reset" => {
                    auth.change_users(Change::ResetTotp(key.to_string()), &actor)
                        .await
                }
                _ => {
                    auth.revoke_sessions(&key, &actor)
                        .await
                        .map_err(|_| GatewayError::StoreUnavailable)?;
                    Ok(())
                }
            };
            match result {
                Ok(()) => no_content(),
                Err(e) => user_error(e),
            }
        }
        (&Method::PUT, ["users", name, "roles"]) => {
            let Some(key) = user_key(name) else {
                return Ok(error(StatusCode::NOT_FOUND, "not_found"));
            };
            drop(users);
            let body: Bytes = match Limited::new(request.into_body(), MAX_JSON_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return Ok(error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")),
            };
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Roles {
                roles: Vec<String>,
            }
            let Ok(Roles { roles }) = serde_json::from_slice::<Roles>(&body) else {
                return Ok(json_response(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "bad_request", "detail": "expected {\"roles\": [\"...\"]}" }),
                ));
            };
            if let Some(bad) = roles.iter().find(|r| check_role(r).is_err()) {
                return Ok(json_response(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "bad_request", "detail": format!("invalid role {bad:?}") }),
                ));
            }
            match auth
                .change_users(
                    Change::SetRoles {
                        name: key.to_string(),
                        roles,
                    },
                    &actor,
                )
                .await
            {
                Ok(()) => no_content(),
                Err(e) => user_error(e),
            }
        }
        (
            _,
            ["sessions"]
            | ["sessions", _]
            | ["users"]
            | ["users", _, "lock" | "unlock" | "revoke" | "roles" | "totp-reset"],
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    })
}

/// `/.gateway/admin/`: `GET` shows users and sessions, `POST` (a button)
/// ends a session, ends all of a user's sessions, locks or unlocks.
pub(super) async fn page(
    auth: &Auth,
    request: Request<Incoming>,
    host: Option<&HeaderValue>,
    logged_user: &mut Option<Arc<str>>,
) -> Result<Response<Body>, GatewayError> {
    let admin = auth
        .require_session(request.headers(), request.method(), "/.gateway/admin/")
        .await?;
    *logged_user = Some(admin.user.name.clone());
    if !auth.is_admin(&admin) {
        return Err(GatewayError::Forbidden(DenyReason::MissingRole));
    }
    let token = admin.csrf_token();
    match *request.method() {
        Method::GET | Method::HEAD => render(auth, &token).await,
        Method::POST => {
            if !csrf::same_origin(request.headers(), host) {
                return Err(GatewayError::CsrfRejected);
            }
            let form = read_form(request).await?;
            if !csrf::matches(&token, form.get("csrf")) {
                return Err(GatewayError::CsrfRejected);
            }
            let actor = format!("admin {}", admin.user.name);
            let target = form.get("target");
            let key = auth.users().get(target).map(|u| u.key.clone());
            let outcome = match (form.get("action"), key) {
                ("end_session", _) => {
                    let ended = auth
                        .sessions
                        .end_by_handle(target)
                        .await
                        .map_err(|_| GatewayError::StoreUnavailable)?;
                    if let Some(user) = ended {
                        crate::security_event!(warn, event = "session_revoked", actor = %actor, user = %user, session = %target, "session ended by an admin");
                    }
                    Ok(())
                }
                ("revoke", Some(key)) => {
                    auth.revoke_sessions(&key, &actor)
                        .await
                        .map_err(|_| GatewayError::StoreUnavailable)?;
                    Ok(())
                }
                ("lock", Some(key)) => {
                    auth.change_users(Change::Lock(key.to_string()), &actor)
                        .await
                }
                ("unlock", Some(key)) => {
                    auth.change_users(Change::Unlock(key.to_string()), &actor)
                        .await
                }
                ("totp_reset", Some(key)) => {
                    auth.change_users(Change::ResetTotp(key.to_string()), &actor)
                        .await
                }
                (_, _) => Err(UserFileError::UnknownUser(target.to_owned())),
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "admin action refused");
                return Err(GatewayError::BadForm);
            }
            let mut response =
                own_response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "done\n");
            response.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_static("/.gateway/admin/"),
            );
            Ok(response)
        }
        _ => Err(GatewayError::MethodNotAllowed),
    }
}

fn button(token: &str, action: &str, target: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/.gateway/admin/\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"action\" value=\"{action}\"><input type=\"hidden\" name=\"target\" value=\"{}\">\
<button type=\"submit\" class=\"small\">{label}</button></form>",
        escape_html(token),
        escape_html(target),
    )
}

async fn render(auth: &Auth, token: &str) -> Result<Response<Body>, GatewayError> {
    let sessions = auth
        .sessions
        .list(None)
        .await
        .map_err(|_| GatewayError::StoreUnavailable)?;
    let users = auth.users();
    let mut list: Vec<_> = users.iter().collect();
    list.sort_by(|a, b| a.key.cmp(&b.key));
    let mut html = String::from("<h1>Users and sessions</h1><table><tr><th>User</th><th>Roles</th><th>State</th><th>Second factor</th><th>Sessions</th><th></th></tr>");
    for user in list {
        let count = sessions.iter().filter(|s| s.user == user.key).count();
        let (state, toggle) = if user.locked {
            ("locked", button(token, "unlock", &user.name, "Unlock"))
        } else {
            ("active", button(token, "lock", &user.name, "Lock"))
        };
        let second = match &user.totp {
            Some(_) => format!(
                "TOTP, {} recovery code(s) left {}",
                user.recovery_codes.len(),
                button(token, "totp_reset", &user.name, "Reset")
            ),
            None => "none".to_owned(),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{state}</td><td>{second}</td><td>{count}</td><td class=\"actions\">{toggle}{}</td></tr>",
            escape_html(&user.name),
            escape_html(&user.roles.join(", ")),
            button(token, "revoke", &user.name, "End all sessions"),
        );
    }
    html.push_str("</table><h2>Live sessions</h2><table><tr><th>User</th><th>IP</th><th>Browser</th><th>Last seen</th><th></th></tr>");
    let mut sessions = sessions;
    sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen_ms));
    for s in &sessions {
        let id = session::handle(&s.key);
        let name = users
            .get_by_key(&s.user)
            .map_or_else(|| s.user.to_string(), |u| u.name.to_string());
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"ua\">{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&name),
            escape_html(&s.ip.to_string()),
            escape_html(&s.user_agent),
            escape_html(&rfc3339(s.last_seen_ms)),
            button(token, "end_session", &id, "End"),
        );
    }
    if sessions.is_empty() {
        html.push_str("<tr><td colspan=\"5\">none</td></tr>");
    }
    html.push_str("</table><p class=\"note\"><a href=\"/.gateway/logout\">Sign out</a></p>");
    let style = "<style>main{max-width:60rem!important}table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:.4rem;border-bottom:1px solid #e2e5ea;vertical-align:top}\
td.ua{max-width:18rem;overflow-wrap:anywhere}td.actions form{display:inline}\
button.small{width:auto;margin:0 .3rem 0 0;padding:.3rem .6rem;font-size:.85rem}</style>";
    Ok(own_response(
        StatusCode::OK,
        "text/html; charset=utf-8",
        pages::document("Admin", &format!("{style}{html}")),
    ))
}
