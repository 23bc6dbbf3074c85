//! The gateway's own sign-in endpoints under `/.gateway/` (SPEC §3):
//! login, logout, whoami, password change; admin requests go on to
//! [`super::admin`].

use crate::config::Config;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use super::forms::{checked_form, read_form, user_agent_of, MANAGED_ELSEWHERE};
use super::{admin, cookie_values, csrf, pages, rfc3339, Auth, GENERIC_FAILURE};
use crate::metrics::Login;
use crate::response::{own_response, Body, GatewayError};
use crate::session;
use crate::store::counters::Refused;
use crate::store::stats::Ended;
use crate::store::throttle::Throttled;
use crate::users::canonical;
use crate::users::file::{check_new_password, Change};
use crate::users::password::Busy;

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
    /// once the store has it for good; counted and logged.
    pub(super) async fn begin_session(
        &self,
        user: &crate::users::User,
        peer: IpAddr,
        user_agent: &str,
        mfa: bool,
    ) -> Result<String, GatewayError> {
        let id = self
            .store
            .sessions
            .create(
                &user.key,
                user.password_fingerprint,
                peer,
                user_agent,
                mfa,
                session::now_ms(),
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        self.metrics.record_login(Login::Ok);
        crate::security_event!(info, event = "login_ok", user = %user.name, ip = %peer, second_factor = mfa, "login ok");
        let most = self.max_sessions_per_user;
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

    /// Answers a request under `/.gateway/`.
    pub async fn endpoint(
        &self,
        config: &Config,
        path: &str,
        request: crate::body::GatewayRequest,
        peer: IpAddr,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        let method = request.method().clone();
        let is_get = method == Method::GET || method == Method::HEAD;
        match path {
            "/.gateway/login" if is_get => {
                Ok(self.login_page(config, request.headers(), request.uri().query()))
            }
            "/.gateway/login" if method == Method::POST => {
                self.login_submit(config, request, peer, host, logged_user)
                    .await
            }
            "/.gateway/logout" if is_get => {
                let presented = self
                    .authenticate(request.headers(), session::now_ms(), false)
                    .await;
                Ok(match &presented.signed_in {
                    Some(s) => {
                        *logged_user = Some(s.user.name.clone());
                        pages::logout(Some((&s.user.name, &self.csrf_token(&s.session.key))))
                    }
                    None => pages::logout(None),
                })
            }
            "/.gateway/logout" if method == Method::POST => {
                self.logout_submit(request, host, logged_user).await
            }
            "/.gateway/whoami" if is_get => Ok(self.whoami(request.headers(), logged_user).await),
            "/.gateway/password" if is_get || method == Method::POST => {
                self.password(config, request, peer, host, logged_user)
                    .await
            }
            "/.gateway/login/code" if is_get || method == Method::POST => {
                self.login_code(config, request, peer, host, logged_user)
                    .await
            }
            "/.gateway/totp" if is_get || method == Method::POST => {
                self.totp_page(config, request, peer, host, logged_user)
                    .await
            }
            "/.gateway/reauth" if is_get || method == Method::POST => {
                self.reauth(config, request, peer, host, logged_user).await
            }
            "/.gateway/account" if is_get || method == Method::POST => {
                self.account(request, host, logged_user).await
            }
            "/.gateway/login"
            | "/.gateway/logout"
            | "/.gateway/whoami"
            | "/.gateway/password"
            | "/.gateway/login/code"
            | "/.gateway/totp"
            | "/.gateway/reauth"
            | "/.gateway/account" => Err(GatewayError::MethodNotAllowed),
            "/.gateway/admin" | "/.gateway/admin/" => {
                admin::page(self, config, request, host, logged_user).await
            }
            p if p.starts_with("/.gateway/admin/api/") || p == "/.gateway/admin/api" => {
                admin::api(
                    self,
                    config,
                    &p["/.gateway/admin/api".len()..],
                    request,
                    logged_user,
                )
                .await
            }
            _ => Err(GatewayError::NotFound),
        }
    }

    fn login_page(
        &self,
        config: &Config,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Response<Body> {
        let next = self.query_next(query);
        let (token, fresh) = match self.login_token(headers) {
            Some(token) => (token.to_owned(), false),
            None => (csrf::new_login_token(), true),
        };
        let mut response = pages::login(StatusCode::OK, &token, &next, None, &config.login.words);
        if fresh {
            self.set_login_cookie(&mut response, &token);
        }
        response
    }

    fn login_token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        cookie_values(headers, &self.login_cookie_name).find(|v| session::key_of(v).is_some())
    }

    fn set_login_cookie(&self, response: &mut Response<Body>, token: &str) {
        let cookie = format!(
            "{}={token}; Path=/; Secure; HttpOnly; SameSite=Strict",
            self.login_cookie_name
        );
        response.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).expect("token and name are cookie-safe"),
        );
    }

    async fn login_submit(
        &self,
        config: &Config,
        request: crate::body::GatewayRequest,
        peer: IpAddr,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        if !csrf::same_origin(request.headers(), host) {
            return Err(GatewayError::CsrfRejected);
        }
        let token = self.login_token(request.headers()).map(str::to_owned);
        let user_agent = user_agent_of(request.headers());
        let earlier = self
            .authenticate(request.headers(), session::now_ms(), false)
            .await;
        let form = read_form(request).await?;
        let token = match token {
            Some(t) if csrf::matches(&t, form.get("csrf")) => t,
            _ => return Err(GatewayError::CsrfRejected),
        };
        let name = form.get("username");
        let next = self.next_of(
            form.fields
                .iter()
                .find(|(k, _)| k == "next")
                .map(|(_, v)| v.as_str()),
        );
        let key = canonical(name);

        // The attempt is held against the allowances before any hashing, so
        // that guesses sent at once get no more verifications than in turn.
        let attempt = match self.reserve(&config.login, &key, peer).await {
            Ok(attempt) => attempt,
            Err(Refused::Throttled(Throttled { retry_after_secs })) => {
                self.metrics.record_login(Login::Throttled);
                crate::security_event!(warn, event = "login_throttled", user = %truncate(&key), ip = %peer, "login throttled");
                self.audit.sign_in_refused(
                    &peer.to_string(),
                    truncate(&key),
                    super::SignInNoise::Throttled,
                );
                return Err(GatewayError::Throttled { retry_after_secs });
            }
            Err(Refused::Unavailable) => return Err(GatewayError::StoreUnavailable),
        };
        let user = self.users.load().get_by_key(&key).cloned();
        let matched = self
            .verifier
            .verify(
                user.as_ref().map(|u| &*u.password_hash),
                form.get("password"),
            )
            .await
            .map_err(|Busy| GatewayError::LoginBusy)?;
        let user = match user {
            Some(user) if matched && !user.locked => user,
            user => {
                attempt.failed();
                self.metrics.record_login(match user {
                    Some(user) if matched && user.locked => Login::Locked,
                    _ => Login::BadCredentials,
                });
                crate::security_event!(warn, event = "login_failed", user = %truncate(&key), ip = %peer, "login failed");
                self.audit.sign_in_refused(
                    &peer.to_string(),
                    truncate(&key),
                    super::SignInNoise::Failed,
                );
                return Ok(pages::login(
                    StatusCode::UNAUTHORIZED,
                    &token,
                    &next,
                    Some(GENERIC_FAILURE),
                    &config.login.words,
                ));
            }
        };
        // A second factor: no session until the code (or enrollment).
        let second_step = self.begin_second_step(config, &user, &next).await?;
        match second_step {
            Some(_) => attempt.given_back(),
            None => attempt.succeeded(),
        }
        if let Some(old) = earlier.signed_in {
            // The old session ends whatever happens next: the one who signs
            // in now may not be the one who signed in then.
            self.store.sessions.end_now(&old.session.key);
        }
        if let Some(second_step) = second_step {
            *logged_user = Some(user.name.clone());
            crate::security_event!(info, event = "login_password_ok", user = %user.name, ip = %peer, "password ok; second factor next");
            return Ok(second_step);
        }
        let id = self.begin_session(&user, peer, &user_agent, false).await?;
        *logged_user = Some(user.name.clone());
        let mut response = own_response(
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            "signed in\n",
        );
        response.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&next).expect("a checked next is ASCII"),
        );
        self.set_session_cookie(&mut response, &id);
        Ok(response)
    }

    async fn logout_submit(
        &self,
        request: crate::body::GatewayRequest,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        if !csrf::same_origin(request.headers(), host) {
            return Err(GatewayError::CsrfRejected);
        }
        let presented = self
            .authenticate(request.headers(), session::now_ms(), false)
            .await;
        let form = read_form(request).await?;
        if let Some(signed_in) = &presented.signed_in {
            if !csrf::matches(&self.csrf_token(&signed_in.session.key), form.get("csrf")) {
                return Err(GatewayError::CsrfRejected);
            }
            *logged_user = Some(signed_in.user.name.clone());
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
        }
        let mut response = own_response(
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            "signed out\n",
        );
        let headers = response.headers_mut();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("/.gateway/login"),
        );
        headers.insert(header::SET_COOKIE, self.clear_cookie());
        headers.insert(
            header::HeaderName::from_static("clear-site-data"),
            HeaderValue::from_static("\"cookies\""),
        );
        Ok(response)
    }

    /// `GET` shows the form; `POST` (fields `current`, `new`, `csrf`)
    /// changes the password: the hash in the users file is replaced, every
    /// session of the user ends, and this one continues under a new ID.
    async fn password(
        &self,
        config: &Config,
        request: crate::body::GatewayRequest,
        peer: IpAddr,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        let signed_in = self
            .require_session(request.headers(), request.method(), "/.gateway/password")
            .await?;
        *logged_user = Some(signed_in.user.name.clone());
        let csrf = self.csrf_token(&signed_in.session.key);
        let page = |status, message: Option<(bool, &str)>| {
            pages::password(status, &signed_in.user.name, &csrf, message)
        };
        if self.users_managed_elsewhere().is_some() {
            // Nothing here could be saved: say so rather than fail later.
            let status = if request.method() == Method::POST {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            };
            return Ok(page(status, Some((false, MANAGED_ELSEWHERE))));
        }
        if request.method() != Method::POST {
            return Ok(page(StatusCode::OK, None));
        }
        let user_agent = user_agent_of(request.headers());
        let form = checked_form(request, host, &csrf).await?;
        let user = &signed_in.user;
        let attempt = match self.reserve(&config.login, &user.key, peer).await {
            Ok(attempt) => attempt,
            Err(Refused::Unavailable) => return Err(GatewayError::StoreUnavailable),
            Err(Refused::Throttled(Throttled { retry_after_secs })) => {
                crate::security_event!(warn, event = "password_change_throttled", user = %user.name, ip = %peer, "password change throttled");
                return Err(GatewayError::Throttled { retry_after_secs });
            }
        };
        let matched = self
            .verifier
            .verify(Some(&user.password_hash), form.get("current"))
            .await
            .map_err(|Busy| GatewayError::LoginBusy)?;
        if !matched {
            attempt.failed();
            crate::security_event!(warn, event = "password_change_failed", user = %user.name, ip = %peer, "password change failed: wrong current password");
            return Ok(page(
                StatusCode::UNAUTHORIZED,
                Some((false, "The current password is wrong.")),
            ));
        }
        attempt.succeeded();
        let new = form.get("new");
        if check_new_password(new).is_err() {
            return Ok(page(
                StatusCode::BAD_REQUEST,
                Some((
                    false,
                    "The new password is too short: it needs at least 12 characters.",
                )),
            ));
        }
        let hash = self
            .verifier
            .hash(new)
            .await
            .map_err(|Busy| GatewayError::LoginBusy)?;
        let change = Change::SetPassword {
            name: user.key.to_string(),
            password_hash: hash,
        };
        if let Err(e) = self
            .change_users(change, &format!("user {}", user.name))
            .await
        {
            tracing::error!(user = %user.name, error = %e, "password change could not be saved");
            if matches!(e, crate::users::file::UserFileError::ReadOnly { .. }) {
                return Ok(page(StatusCode::CONFLICT, Some((false, MANAGED_ELSEWHERE))));
            }
            return Ok(page(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some((
                    false,
                    "The password could not be saved. Nothing was changed.",
                )),
            ));
        }
        // Every session of the user ended with the change; this one goes on under a new ID.
        let Some(updated) = self.users.load().get_by_key(&user.key).cloned() else {
            return Err(GatewayError::NotFound);
        };
        let id = self
            .store
            .sessions
            .create(
                &updated.key,
                updated.password_fingerprint,
                peer,
                &user_agent,
                // The password was just entered; the code stays as it was.
                signed_in.session.mfa,
                session::now_ms(),
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        let mut response = pages::password(
            StatusCode::OK,
            &updated.name,
            &self.csrf_token(&session::key_of(&id).expect("a new ID has the right form")),
            Some((
                true,
                "Your password has been changed. Your other sessions have ended.",
            )),
        );
        self.set_session_cookie(&mut response, &id);
        Ok(response)
    }

    async fn whoami(
        &self,
        headers: &HeaderMap,
        logged_user: &mut Option<Arc<str>>,
    ) -> Response<Body> {
        let presented = self.authenticate(headers, session::now_ms(), false).await;
        let Some(signed_in) = presented.signed_in else {
            return own_response(
                StatusCode::UNAUTHORIZED,
                "application/json; charset=utf-8",
                r#"{"error":"unauthenticated"}"#,
            );
        };
        *logged_user = Some(signed_in.user.name.clone());
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

/// Usernames in logs are cut short: a flood of huge names must not flood the log.
fn truncate(name: &str) -> &str {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}
