//! Keeping a session: it begins once a person has proved who they are
//! (whichever way: [`super::password`], then [`super::totp`] when a code
//! is asked), it shows itself at `/.gateway/whoami`, and it ends at
//! `/.gateway/logout`.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use super::forms::read_form;
use super::Call;
use super::{csrf, Auth};
use crate::metrics::Login;
use crate::pages::sign_in as pages;
use crate::response::{own_response, Body, GatewayError};
use crate::session::{self, Vouched};
use crate::store::stats::Ended;
use crate::units::rfc3339;
use std::sync::Arc;

impl Auth {
    pub(super) fn set_session_cookie(&self, response: &mut Response<Body>, id: &str) {
        response.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!(
                "{}={id}; Path=/; Secure; HttpOnly; SameSite=Lax{}",
                self.cookie_name,
                self.cookie_domain
                    .as_ref()
                    .map_or(String::new(), |d| format!("; Domain={d}"))
            ))
            .expect("name, ID and domain are cookie-safe"),
        );
    }

    /// A whole sign-in succeeded: the new session's ID (the cookie value),
    /// once the store has it for good; counted and logged. Past `[session]
    /// max_per_user` of the config the call runs under, the user's least
    /// recently used sessions end. `vouched`: an identity provider's word
    /// for `user`, and when (ms) it says they signed in there.
    pub(super) async fn begin_session(
        &self,
        call: &Call<'_>,
        user: &crate::users::User,
        user_agent: &str,
        mfa: bool,
        vouched: Option<(Arc<Vouched>, Option<u64>)>,
    ) -> Result<String, GatewayError> {
        let (vouched, proved_ms) = vouched.map_or((None, None), |(v, at)| (Some(v), at));
        let peer = call.peer;
        let id = self
            .store
            .sessions
            .create(
                session::NewSession {
                    user: &user.key,
                    password_fingerprint: user.password_fingerprint,
                    ip: peer,
                    user_agent,
                    mfa,
                    vouched,
                    proved_ms,
                },
                session::now_ms(),
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        self.metrics.record_login(Login::Ok);
        crate::security_event!(info, event = "login_ok", user = %user.name, provider = user.provider.as_deref().unwrap_or("local"), ip = %peer, second_factor = mfa, "login ok");
        let most = call.config.session.max_per_user;
        match self.store.sessions.keep_at_most(&user.key, most).await {
            Ok(0) => {}
            Ok(ended) => {
                crate::security_event!(warn, event = "session_limit", user = %user.name, ip = %peer, sessions_ended = ended, max_per_user = most, "a sign-in over max_per_user ended the user's least recently used session");
            }
            // The new session stands; the next sign-in trims again.
            Err(_) => {
                tracing::warn!(user = %user.name, "the user's sessions could not be counted for max_per_user")
            }
        }
        Ok(id)
    }

    /// `GET /.gateway/logout`: the sign-out button (a form, so that a
    /// link cannot sign anyone out).
    pub(super) async fn logout_page(
        &self,
        call: &mut Call<'_>,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let Call { config, .. } = *call;
        let presented = self.authenticate(headers, session::now_ms(), false).await;
        match &presented.signed_in {
            Some(s) => {
                call.logged_user = Some(s.user.name.clone());
                pages::logout(Some((s.viewer(config), &self.csrf_token(&s.session.key)))).into()
            }
            None => pages::logout(None).into(),
        }
    }

    pub(super) async fn logout_submit(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let Call { host, .. } = *call;
        if !csrf::same_origin(request.headers(), host) {
            return Err(GatewayError::CsrfRejected);
        }
        let presented = self
            .authenticate(request.headers(), session::now_ms(), false)
            .await;
        let form = read_form(request).await?;
        let mut location = "/.gateway/login".to_owned();
        if let Some(signed_in) = &presented.signed_in {
            if !csrf::matches(&self.csrf_token(&signed_in.session.key), form.get("csrf")) {
                return Err(GatewayError::CsrfRejected);
            }
            call.logged_user = Some(signed_in.user.name.clone());
            let ended = self
                .store
                .sessions
                .end(&signed_in.session.key)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?;
            self.store
                .sessions
                .stats()
                .ended(Ended::Logout, usize::from(ended));
            crate::security_event!(info, event = "logout", user = %signed_in.user.name, "logout");
            // The provider's session ends too, when it offers that.
            if let Some(vouched) = &signed_in.session.vouched {
                if let Some(url) = self.provider_logout_url(call.config, vouched, host).await {
                    location = url;
                }
            }
        }
        let mut response = own_response(
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            "signed out\n",
        );
        let headers = response.headers_mut();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/.gateway/login")),
        );
        headers.insert(header::SET_COOKIE, self.clear_cookie());
        headers.insert(
            header::HeaderName::from_static("clear-site-data"),
            HeaderValue::from_static("\"cookies\""),
        );
        Ok(response)
    }

    pub(super) async fn whoami(&self, call: &mut Call<'_>, headers: &HeaderMap) -> Response<Body> {
        let presented = self.authenticate(headers, session::now_ms(), false).await;
        let Some(signed_in) = presented.signed_in else {
            return own_response(
                StatusCode::UNAUTHORIZED,
                "application/json; charset=utf-8",
                r#"{"error":"unauthenticated"}"#,
            );
        };
        call.logged_user = Some(signed_in.user.name.clone());
        let (absolute, idle) = self.store.sessions.deadlines(&signed_in.session);
        let body = serde_json::json!({
            "user": &*signed_in.user.name,
            "roles": signed_in.user.roles,
            "expires_at": rfc3339(absolute),
            "idle_expires_at": rfc3339(idle),
            "csrf": self.csrf_token(&signed_in.session.key),
        });
        own_response(
            StatusCode::OK,
            "application/json; charset=utf-8",
            body.to_string(),
        )
    }
}
