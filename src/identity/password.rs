//! Signing in with a password: the sign-in page and form
//! (`/.gateway/login`), and a signed-in user's password change
//! (`/.gateway/password`). A right password begins a session, or the
//! second step when the user has (or must have) a second factor.

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use super::forms::{checked_form, read_form, user_agent_of, MANAGED_ELSEWHERE};
use super::ldap::Outcome;
use super::Call;
use super::{cookie_values, csrf, Auth, GENERIC_FAILURE};
use crate::metrics::Login;
use crate::pages::sign_in as pages;
use crate::response::{own_response, Body, GatewayError};
use crate::session;
use crate::store::counters::Refused;
use crate::store::throttle::Throttled;
use crate::users::file::{check_new_password, Change};
use crate::users::password::Busy;
use crate::users::{canonical, User};

impl Auth {
    pub(super) fn login_page(
        &self,
        call: &mut Call<'_>,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Response<Body> {
        let Call { config, .. } = *call;
        let next = self.query_next(query);
        let (token, fresh) = match self.login_token(headers) {
            Some(token) => (token.to_owned(), false),
            None => (csrf::new_login_token(), true),
        };
        let mut response: Response<Body> = pages::login(
            StatusCode::OK,
            &token,
            &next,
            None,
            &config.login.words,
            pages::Ways::of(config),
        )
        .into();
        if fresh {
            self.set_login_cookie(&mut response, &token);
        }
        response
    }

    pub(super) fn login_token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
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

    pub(super) async fn login_submit(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let Call {
            config, peer, host, ..
        } = *call;
        if !csrf::same_origin(request.headers(), host) {
            return Err(GatewayError::CsrfRejected);
        }
        if !config.login.local {
            // `[login] local = false`: everyone signs in through a provider.
            return Err(GatewayError::NotFound);
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
        let outcome = self
            .check_password(config, name, form.get("password"))
            .await?;
        let (user, vouched) = match outcome {
            Outcome::Local(user) => (user, None),
            Outcome::Directory(vouched) => (vouched.user.clone(), Some(vouched)),
            Outcome::DirectoryDown => {
                attempt.given_back();
                return Err(GatewayError::DirectoryUnavailable);
            }
            Outcome::Refused { locked } => {
                attempt.failed();
                self.metrics.record_login(if locked {
                    Login::Locked
                } else {
                    Login::BadCredentials
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
                    pages::Ways::of(config),
                )
                .into());
            }
        };
        // A second factor: no session until the code (or enrollment).
        let second_step = match &vouched {
            None => self.begin_second_step(config, &user, &next, None).await?,
            // A directory user's second factor is kept here, by their name.
            Some(v) => {
                let user = self.with_second_factor(&v.user);
                self.begin_second_step(config, &user, &next, Some(v))
                    .await?
            }
        };
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
            call.logged_user = Some(user.name.clone());
            crate::security_event!(info, event = "login_password_ok", user = %user.name, ip = %peer, "password ok; second factor next");
            return Ok(second_step);
        }
        let id = self
            .begin_session(call, &user, &user_agent, false, vouched.map(|v| (v, None)))
            .await?;
        call.logged_user = Some(user.name.clone());
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

    /// Whether `typed` is `user`'s password, hashed on the hashing threads
    /// (an unknown user costs the same hashing, and never matches; nor
    /// does a provider's user, who has no password here).
    pub(super) async fn password_matches(
        &self,
        user: Option<&User>,
        typed: &str,
    ) -> Result<bool, GatewayError> {
        let local = user.filter(|u| u.provider.is_none());
        self.verifier
            .verify(local.map(|u| &*u.password_hash), typed)
            .await
            .map_err(|Busy| GatewayError::LoginBusy)
    }

    /// `GET` shows the form; `POST` (fields `current`, `new`, `csrf`)
    /// changes the password: the hash in the users file is replaced, every
    /// session of the user ends, and this one continues under a new ID.
    pub(super) async fn password(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let Call {
            config, peer, host, ..
        } = *call;
        let signed_in = self
            .require_session(request.headers(), request.method(), "/.gateway/password")
            .await?;
        call.logged_user = Some(signed_in.user.name.clone());
        if let Some(provider) = &signed_in.user.provider {
            return Ok(pages::kept_by_provider(signed_in.viewer(config), provider).into());
        }
        let csrf = self.csrf_token(&signed_in.session.key);
        let page = |status, message: Option<(bool, &str)>| -> Response<Body> {
            pages::password(status, signed_in.viewer(config), &csrf, message).into()
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
            .password_matches(Some(user), form.get("current"))
            .await?;
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
        let failed = "The password could not be saved. Nothing was changed.";
        if let Err((status, words)) = self
            .save_own(change, user, "a password change", failed)
            .await
        {
            return Ok(page(status, Some((false, words))));
        }
        // Every session of the user ended with the change; this one goes on under a new ID.
        let Some(updated) = self.users.load().get_by_key(&user.key).cloned() else {
            return Err(GatewayError::NotFound);
        };
        let id = self
            .store
            .sessions
            .create(
                session::NewSession {
                    user: &updated.key,
                    password_fingerprint: updated.password_fingerprint,
                    ip: peer,
                    user_agent: &user_agent,
                    // The password was just entered; the code stays as it was.
                    mfa: signed_in.session.mfa,
                    vouched: None,
                    proved_ms: None,
                },
                session::now_ms(),
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        let viewer = crate::pages::Viewer {
            name: &updated.name,
            admin: updated.roles.contains(&config.admin.role),
        };
        let mut response: Response<Body> = pages::password(
            StatusCode::OK,
            viewer,
            &self.csrf_token(&session::key_of(&id).expect("a new ID has the right form")),
            Some((
                true,
                "Your password has been changed. Your other sessions have ended.",
            )),
        )
        .into();
        self.set_session_cookie(&mut response, &id);
        Ok(response)
    }
}

/// Usernames in logs are cut short: a flood of huge names must not flood the log.
pub(super) fn truncate(name: &str) -> &str {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}
