//! `/.gateway/account`: a signed-in user's own page. It lists their
//! sessions (browser, address, started, last seen; this one marked), ends
//! any one of them or all but this one, and links the password and
//! second-factor pages. Every change is a CSRF-protected form.

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::identity::forms::checked_form;
use crate::identity::{Auth, Call};
use crate::pages;
use crate::response::{own_response, Body, GatewayError};
use crate::session;
use crate::store::stats::Ended;

pub async fn account(
    auth: &Auth,
    call: &mut Call<'_>,
    request: crate::body::GatewayRequest,
) -> Result<Response<Body>, GatewayError> {
    let Call { config, host, .. } = *call;
    let signed_in = auth
        .require_session(request.headers(), request.method(), "/.gateway/account")
        .await?;
    call.logged_user = Some(signed_in.user.name.clone());
    let token = auth.csrf_token(&signed_in.session.key);
    let own = auth
        .store
        .sessions
        .list(Some(&signed_in.user.key))
        .await
        .map_err(|_| GatewayError::StoreUnavailable)?;
    if request.method() != Method::POST {
        let now = session::now_ms();
        // A directory's user keeps passkeys here; a provider's at the provider.
        let user = auth.with_second_factor(&signed_in.user);
        let passkeys = signed_in
            .proved_elsewhere()
            .is_none()
            .then_some(&user.passkeys[..]);
        // A provider's person holds no API tokens here.
        let tokens = match signed_in.user.provider {
            Some(_) => None,
            None => Some(
                auth.store
                    .tokens
                    .list(Some(&signed_in.user.key))
                    .await
                    .map_err(|_| GatewayError::StoreUnavailable)?,
            ),
        };
        return Ok(pages::account::page(
            signed_in.viewer(config),
            signed_in.user.provider.as_deref(),
            &signed_in.session.key,
            &own,
            &token,
            now,
            passkeys,
            tokens.as_deref(),
        )
        .into());
    }
    let form = checked_form(request, host, &token).await?;
    if let Some(answer) = api_tokens(auth, call, &signed_in, &form).await? {
        return Ok(answer);
    }
    let current = signed_in.session.key;
    let ending: Vec<session::Key> = match form.get("action") {
        // Only among the user's own sessions: a handle of someone
        // else's session names nothing here.
        "end" => own
            .iter()
            .filter(|s| session::handle(&s.key) == form.get("target"))
            .map(|s| s.key)
            .collect(),
        "end_others" => own
            .iter()
            .filter(|s| s.key != current)
            .map(|s| s.key)
            .collect(),
        _ => return Err(GatewayError::BadForm),
    };
    let mut ended = 0;
    for key in &ending {
        if auth
            .store
            .sessions
            .end(key)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?
        {
            ended += 1;
        }
    }
    auth.store.sessions.stats().ended(Ended::Logout, ended);
    crate::security_event!(info, event = "sessions_ended_by_user", user = %signed_in.user.name, sessions_ended = ended, "a user ended sessions of their own");
    let mut response = own_response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "done\n");
    let location = if ending.contains(&current) {
        // This one too: signed out here.
        response
            .headers_mut()
            .insert(header::SET_COOKIE, auth.clear_cookie());
        "/.gateway/login"
    } else {
        "/.gateway/account"
    };
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    Ok(response)
}

/// The account page's API token forms: `token_create` (`name`,
/// `expires` in days, `roles`, blank for all) shows the new token once;
/// `token_revoke` (`target`: its name) ends one. `None`: another action.
async fn api_tokens(
    auth: &Auth,
    call: &Call<'_>,
    signed_in: &crate::identity::SignedIn,
    form: &crate::identity::forms::Form,
) -> Result<Option<Response<Body>>, GatewayError> {
    use crate::identity::tokens::{self, NewToken, TokenError};
    let user = &signed_in.user;
    let actor = format!("user {}", user.name);
    match form.get("action") {
        "token_create" => {
            let days = form.get("expires").trim();
            let lifetime = match days {
                "" => None,
                days => match days.parse::<u64>() {
                    Ok(n) if n > 0 => Some(std::time::Duration::from_secs(n * 24 * 3600)),
                    _ => return Err(GatewayError::BadForm),
                },
            };
            let roles: Vec<String> = form
                .get("roles")
                .split([',', ' '])
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect();
            let name = form.get("name").trim().to_owned();
            let new = NewToken {
                name: name.clone(),
                lifetime,
                roles: (!roles.is_empty()).then_some(roles),
            };
            let settings = auth.token_settings();
            let viewer = signed_in.viewer(call.config);
            let now = session::now_ms();
            match tokens::create(&auth.store.tokens, &settings, user, new, now).await {
                Ok(token) => {
                    crate::security_event!(warn, event = "token_created", actor, user = %user.name, token = %name, "API token made");
                    auth.audit()
                        .remember("token_created", &actor, &user.name, name.clone());
                    Ok(Some(
                        pages::account::token_made(viewer, &name, &token).into(),
                    ))
                }
                Err(TokenError::Unavailable) => Err(GatewayError::StoreUnavailable),
                Err(e) => Ok(Some(crate::response::page(
                    StatusCode::BAD_REQUEST,
                    "API token",
                    &format!("No token was made: {e}."),
                ))),
            }
        }
        "token_revoke" => {
            let name = form.get("target");
            let ended = tokens::revoke(&auth.store.tokens, &user.key, Some(name))
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?;
            if ended > 0 {
                crate::security_event!(warn, event = "token_revoked", actor, user = %user.name, token = %name, "API token revoked");
                auth.audit()
                    .remember("token_revoked", &actor, &user.name, name.to_owned());
            }
            let mut response =
                own_response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "done\n");
            response.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_static("/.gateway/account"),
            );
            Ok(Some(response))
        }
        _ => Ok(None),
    }
}
