//! `/.gateway/admin`: a JSON API and an HTML page for the admin role.
//!
//! Unsafe API methods need the `X-CSRF-Token` header to equal the session's
//! CSRF token (which `GET /.gateway/whoami` returns); the page's buttons are
//! plain forms carrying the same token. Every change is logged as a
//! security event naming the admin who made it.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{header, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::json;

use crate::identity::forms::checked_form;
use crate::identity::next::percent_decode;
use crate::identity::{csrf, Auth, Call};
use crate::pages;
use crate::policy::DenyReason;
use crate::response::{own_response, Body, GatewayError};
use crate::session;
use crate::units::rfc3339;
use crate::users::file::{check_new_password, check_role, Change, UserFileError};

pub mod account;
mod answers;
mod tokens;
use answers::*;

/// Answers `/.gateway/account` and `/.gateway/admin...`: `rest` is the
/// path after `/.gateway`.
pub async fn endpoint(
    auth: &Auth,
    call: &mut Call<'_>,
    path: &str,
    request: crate::body::GatewayRequest,
) -> Result<Response<Body>, GatewayError> {
    let method = request.method();
    match path {
        "/.gateway/account" => {
            if method != Method::GET && method != Method::HEAD && method != Method::POST {
                return Err(GatewayError::MethodNotAllowed);
            }
            account::account(auth, call, request).await
        }
        "/.gateway/admin" | "/.gateway/admin/" => page(auth, call, request).await,
        _ => match path.strip_prefix("/.gateway/admin/api") {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                api(auth, call, rest, request).await
            }
            _ => Err(GatewayError::NotFound),
        },
    }
}

/// The user change an admin's action names (the API spells it with `-`,
/// the page's buttons with `_`).
fn action_change(action: &str, key: &str) -> Option<Change> {
    let key = key.to_owned();
    Some(match action {
        "lock" => Change::Lock(key),
        "unlock" => Change::Unlock(key),
        "totp-reset" | "totp_reset" => Change::ResetTotp(key),
        "passkeys-reset" | "passkeys_reset" => Change::ResetPasskeys(key),
        _ => return None,
    })
}

/// A password for a user and its hash: the one given, or one made here
/// (`true`: to be shown to the admin once). A short one is refused.
async fn password_and_hash(
    auth: &Auth,
    given: Option<String>,
) -> Result<Result<(String, bool, String), UserFileError>, GatewayError> {
    let (password, made) = match given.filter(|p| !p.is_empty()) {
        Some(p) => (p, false),
        None => (crate::users::password::random_password(), true),
    };
    if let Err(e) = check_new_password(&password) {
        return Ok(Err(e));
    }
    let hash = auth
        .hash_password(&password)
        .await
        .map_err(|_| GatewayError::LoginBusy)?;
    Ok(Ok((password, made, hash)))
}

/// `/.gateway/admin/api{rest}`.
pub async fn api(
    auth: &Auth,
    call: &mut Call<'_>,
    rest: &str,
    request: crate::body::GatewayRequest,
) -> Result<Response<Body>, GatewayError> {
    let Call { config, .. } = *call;
    let presented = auth
        .authenticate(request.headers(), session::now_ms(), true)
        .await;
    let by_token = match presented.signed_in {
        Some(_) => None,
        None => match tokens::by_token(auth, call, request.headers(), request.method(), rest).await
        {
            Ok(found) => found,
            Err(refused) => return Ok(refused),
        },
    };
    let Some(admin) = presented.signed_in.or_else(|| by_token.clone()) else {
        if presented.store_unavailable {
            return Err(GatewayError::StoreUnavailable);
        }
        return Ok(error(StatusCode::UNAUTHORIZED, "unauthenticated"));
    };
    call.logged_user = Some(admin.user.name.clone());
    if !admin.is_admin(config) {
        return Ok(error(StatusCode::FORBIDDEN, "forbidden"));
    }
    let method = request.method().clone();
    // A token request carries no cookie a page could send along: no CSRF.
    if !matches!(method, Method::GET | Method::HEAD) && by_token.is_none() {
        let given = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !csrf::matches(&auth.csrf_token(&admin.session.key), given) {
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
    if let ["users", name, "tokens", rest @ ..] = segments.as_slice() {
        return tokens::api(auth, &actor, &method, name, rest, request).await;
    }
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
                .store
                .sessions
                .list(filter.as_deref())
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?
                .into_iter()
                .map(|s| {
                    let name = match &s.vouched {
                        Some(vouched) => vouched.user.name.to_string(),
                        None => users
                            .get_by_key(&s.user)
                            .map_or_else(|| s.user.to_string(), |u| u.name.to_string()),
                    };
                    json!({
                        "id": session::handle(&s.key),
                        "user": name,
                        "provider": s.vouched.as_ref().map_or("local", |v| v.provider()),
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
            .store
            .sessions
            .end_by_handle(id)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?
        {
            Some(user) => {
                crate::security_event!(warn, event = "session_revoked", actor = %actor, user = %user, session = %id, "session ended by an admin");
                auth.audit()
                    .remember("session_revoked", &actor, &user, format!("session {id}"));
                no_content()
            }
            None => error(StatusCode::NOT_FOUND, "not_found"),
        },
        (&Method::GET, ["users"]) => {
            let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
            let sessions = auth
                .store
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
                    let mut entry = json!({
                        "name": &*u.name,
                        "roles": u.roles,
                        "locked": u.locked,
                        "totp": u.totp.is_some(),
                        "passkeys": u.passkeys.len(),
                        "sessions": counts.get(&u.key).copied().unwrap_or(0),
                    });
                    // A provider's user, kept here to be locked out.
                    if let Some(provider) = &u.provider {
                        entry["provider"] = json!(&**provider);
                    }
                    entry
                })
                .collect();
            json_response(StatusCode::OK, json!({ "users": users_json }))
        }
        (
            &Method::POST,
            ["users", name, action @ ("lock" | "unlock" | "revoke" | "totp-reset" | "passkeys-reset")],
        ) => {
            let Some(key) = user_key(name) else {
                return Ok(error(StatusCode::NOT_FOUND, "not_found"));
            };
            drop(users);
            let result = match action_change(action, &key) {
                Some(change) => auth.change_users(change, &actor).await,
                None => {
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
        (&Method::POST, ["providers", provider, "users", name, "lock"]) => {
            if !config.has_provider(provider) {
                return Ok(error(StatusCode::NOT_FOUND, "not_found"));
            }
            drop(users);
            let change = Change::LockProviderUser {
                name: (*name).to_owned(),
                provider: (*provider).to_owned(),
            };
            match auth.change_users(change, &actor).await {
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
        (&Method::GET, ["events"]) => {
            let events: Vec<serde_json::Value> = auth
                .recent_events()
                .into_iter()
                .map(|e| {
                    json!({
                        "at": rfc3339(e.at_ms),
                        "event": e.event,
                        "actor": e.actor,
                        "user": e.user,
                        "detail": e.detail,
                    })
                })
                .collect();
            let sign_ins: Vec<serde_json::Value> = auth
                .sign_in_summaries()
                .into_iter()
                .map(|s| {
                    json!({
                        "client": s.client,
                        "first": rfc3339(s.first_ms),
                        "last": rfc3339(s.last_ms),
                        "failed": s.failed,
                        "throttled": s.throttled,
                        "last_user": s.last_user,
                    })
                })
                .collect();
            json_response(
                StatusCode::OK,
                json!({ "events": events, "sign_in_failures": sign_ins }),
            )
        }
        (&Method::POST, ["users"]) => {
            drop(users);
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct NewUser {
                name: String,
                roles: Vec<String>,
                password: Option<String>,
            }
            let Some(new) = read_json::<NewUser>(request).await? else {
                return Ok(bad_request(
                    "expected {\"name\": \"...\", \"roles\": [...], \"password\": optional}",
                ));
            };
            let (password, generated, hash) = match password_and_hash(auth, new.password).await? {
                Ok(made) => made,
                Err(e) => return Ok(bad_request(&e.to_string())),
            };
            let change = Change::Add {
                name: new.name.clone(),
                password_hash: hash,
                roles: new.roles,
                service: false,
            };
            match auth.change_users(change, &actor).await {
                Ok(()) if generated => json_response(
                    StatusCode::CREATED,
                    json!({ "name": new.name.trim(), "password": password }),
                ),
                Ok(()) => json_response(StatusCode::CREATED, json!({ "name": new.name.trim() })),
                Err(e) => user_error(e),
            }
        }
        (&Method::POST, ["users", name, "password"]) => {
            let Some(key) = user_key(name) else {
                return Ok(error(StatusCode::NOT_FOUND, "not_found"));
            };
            drop(users);
            #[derive(serde::Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct NewPassword {
                password: Option<String>,
            }
            let given = read_json::<NewPassword>(request).await?.unwrap_or_default();
            let (password, generated, hash) = match password_and_hash(auth, given.password).await? {
                Ok(made) => made,
                Err(e) => return Ok(bad_request(&e.to_string())),
            };
            let change = Change::SetPassword {
                name: key.to_string(),
                password_hash: hash,
            };
            match auth.change_users(change, &actor).await {
                Ok(()) if generated => {
                    json_response(StatusCode::OK, json!({ "password": password }))
                }
                Ok(()) => no_content(),
                Err(e) => user_error(e),
            }
        }
        (&Method::DELETE, ["users", name]) => {
            let Some(key) = user_key(name) else {
                return Ok(error(StatusCode::NOT_FOUND, "not_found"));
            };
            drop(users);
            match auth
                .change_users(Change::Delete(key.to_string()), &actor)
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
            | ["users", _]
            | ["events"]
            | ["users", _, "lock" | "unlock" | "revoke" | "roles" | "totp-reset" | "passkeys-reset" | "password"],
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    })
}

/// `/.gateway/admin/`: `GET` shows users and sessions, `POST` (a button)
/// ends a session, ends all of a user's sessions, locks or unlocks.
pub async fn page(
    auth: &Auth,
    call: &mut Call<'_>,
    request: crate::body::GatewayRequest,
) -> Result<Response<Body>, GatewayError> {
    let Call { config, host, .. } = *call;
    let admin = auth
        .require_session(request.headers(), request.method(), "/.gateway/admin/")
        .await?;
    call.logged_user = Some(admin.user.name.clone());
    if !admin.is_admin(config) {
        return Err(GatewayError::Forbidden(DenyReason::MissingRole));
    }
    let token = auth.csrf_token(&admin.session.key);
    let viewer = admin.viewer(config);
    match *request.method() {
        Method::GET | Method::HEAD => render(auth, viewer, &token).await,
        Method::POST => {
            let form = checked_form(request, host, &token).await?;
            let actor = format!("admin {}", admin.user.name);
            let target = form.get("target");
            let key = auth.users().get(target).map(|u| u.key.clone());
            let outcome = match (form.get("action"), key) {
                ("end_session", _) => {
                    let ended = auth
                        .store
                        .sessions
                        .end_by_handle(target)
                        .await
                        .map_err(|_| GatewayError::StoreUnavailable)?;
                    if let Some(user) = ended {
                        crate::security_event!(warn, event = "session_revoked", actor = %actor, user = %user, session = %target, "session ended by an admin");
                        auth.audit().remember(
                            "session_revoked",
                            &actor,
                            &user,
                            format!("session {target}"),
                        );
                    }
                    Ok(())
                }
                ("lock_provider_user", _) => match target.split_once('/') {
                    Some((provider, name)) if config.has_provider(provider) => {
                        let change = Change::LockProviderUser {
                            name: name.to_owned(),
                            provider: provider.to_owned(),
                        };
                        auth.change_users(change, &actor).await
                    }
                    _ => return Err(GatewayError::BadForm),
                },
                ("revoke", Some(key)) => {
                    auth.revoke_sessions(&key, &actor)
                        .await
                        .map_err(|_| GatewayError::StoreUnavailable)?;
                    Ok(())
                }
                (action, Some(key)) if action_change(action, &key).is_some() => {
                    let change = action_change(action, &key).expect("just matched");
                    auth.change_users(change, &actor).await
                }
                ("roles", Some(key)) => {
                    let roles: Vec<String> = form
                        .get("roles")
                        .split([',', ' '])
                        .filter(|r| !r.is_empty())
                        .map(str::to_owned)
                        .collect();
                    auth.change_users(
                        Change::SetRoles {
                            name: key.to_string(),
                            roles,
                        },
                        &actor,
                    )
                    .await
                }
                ("delete", Some(key)) => {
                    auth.change_users(Change::Delete(key.to_string()), &actor)
                        .await
                }
                ("reset_password", Some(key)) => {
                    // A new password, shown to the admin this once.
                    let (password, _, hash) = match password_and_hash(auth, None).await? {
                        Ok(made) => made,
                        Err(e) => return Ok(refused(viewer, &e)),
                    };
                    let change = Change::SetPassword {
                        name: key.to_string(),
                        password_hash: hash,
                    };
                    return Ok(match auth.change_users(change, &actor).await {
                        Ok(()) => pages::error::shown_once(
                            viewer,
                            target,
                            &password,
                            "password reset; the user's sessions have ended",
                        )
                        .into(),
                        Err(e) => refused(viewer, &e),
                    });
                }
                ("add", _) => {
                    let name = form.get("name").trim().to_owned();
                    let roles: Vec<String> = form
                        .get("roles")
                        .split([',', ' '])
                        .filter(|r| !r.is_empty())
                        .map(str::to_owned)
                        .collect();
                    let typed = Some(form.get("password").to_owned());
                    let (password, made, hash) = match password_and_hash(auth, typed).await? {
                        Ok(made) => made,
                        Err(e) => return Ok(refused(viewer, &e)),
                    };
                    let change = Change::Add {
                        name: name.clone(),
                        password_hash: hash,
                        roles,
                        service: false,
                    };
                    return Ok(match auth.change_users(change, &actor).await {
                        Ok(()) if made => {
                            pages::error::shown_once(viewer, &name, &password, "added").into()
                        }
                        Ok(()) => back_to_page(),
                        Err(e) => refused(viewer, &e),
                    });
                }
                (_, _) => Err(UserFileError::UnknownUser(target.to_owned())),
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "admin action refused");
                return Ok(refused(viewer, &e));
            }
            Ok(back_to_page())
        }
        _ => Err(GatewayError::MethodNotAllowed),
    }
}

fn back_to_page() -> Response<Body> {
    let mut response = own_response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "done\n");
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_static("/.gateway/admin/"),
    );
    response
}

/// A change the users file refused, said on a page with the way back.
fn refused(viewer: pages::Viewer<'_>, e: &UserFileError) -> Response<Body> {
    let status = match e {
        UserFileError::UnknownUser(_) => StatusCode::NOT_FOUND,
        UserFileError::Duplicate(_) | UserFileError::ReadOnly { .. } => StatusCode::CONFLICT,
        UserFileError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        UserFileError::Io { .. } | UserFileError::NotConfigured => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    pages::error::not_changed(status, viewer, &e.to_string(), "/.gateway/admin/").into()
}

async fn render(
    auth: &Auth,
    viewer: pages::Viewer<'_>,
    token: &str,
) -> Result<Response<Body>, GatewayError> {
    let sessions = auth
        .store
        .sessions
        .list(None)
        .await
        .map_err(|_| GatewayError::StoreUnavailable)?;
    let users = auth.users();
    let events = auth.recent_events();
    let page = pages::admin::page(
        viewer,
        pages::admin::Admin {
            users: &users,
            sessions,
            events: events
                .iter()
                .map(|e| pages::admin::Event {
                    at_ms: e.at_ms,
                    event: e.event,
                    actor: &e.actor,
                    user: &e.user,
                    detail: &e.detail,
                })
                .collect(),
            sign_ins: auth
                .sign_in_summaries()
                .iter()
                .map(|s| pages::admin::SignIns {
                    last_ms: s.last_ms,
                    text: s.text(),
                })
                .collect(),
            managed_elsewhere: auth.users_managed_elsewhere(),
        },
        token,
        session::now_ms(),
    );
    Ok(page.into())
}
