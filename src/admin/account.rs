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
        return Ok(pages::account::page(
            signed_in.viewer(config),
            signed_in.user.provider.as_deref(),
            &signed_in.session.key,
            &own,
            &token,
            now,
            passkeys,
        )
        .into());
    }
    let form = checked_form(request, host, &token).await?;
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
