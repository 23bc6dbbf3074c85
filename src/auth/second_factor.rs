//! The second factor's pages: the code step of a sign-in
//! (`/.gateway/login/code`), enrollment (`/.gateway/totp`) and the fresh
//! sign-in a route may ask for (`/.gateway/reauth`).
//!
//! Between a correct password and a correct code the browser holds only a
//! *pending sign-in*: a random ID in its own cookie, kept here (by its
//! SHA-256) for [`PENDING_FOR_MS`], used once. No session exists, and no
//! session cookie is set, before the code. A user whose role must have a
//! second factor (`[login] require_totp`) and has none gets a pending
//! sign-in that leads to enrollment instead.
//!
//! Every code tried takes an attempt from the same throttle as passwords.
//! A code is accepted once per account (the step it belongs to is
//! remembered), a recovery code once ever (it leaves the users file).

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::attempt::{Attempt, Refused};
use super::forms::{read_form, Form};
use super::password::Busy;
use super::throttle::Throttled;
use super::{cookie_values, csrf, pages, safe_next, totp, Auth};
use crate::ops::Login;
use crate::response::{own_response, Body, GatewayError};
use crate::session::{self, Key};
use crate::users::file::Change;
use crate::users::{TotpSecret, User};

/// How long a pending sign-in (password done, code not yet) lives.
pub const PENDING_FOR_MS: u64 = 5 * 60 * 1000;
/// How long a secret shown for enrollment waits for its first code.
pub const ENROLLING_FOR_MS: u64 = 10 * 60 * 1000;

/// A sign-in between the password and the code (or enrollment).
pub struct Pending {
    user: Arc<str>,
    password_fingerprint: u32,
    next: String,
    expires_ms: u64,
    /// The user must enroll before getting a session.
    enroll: bool,
}

/// What the second-factor state of the gateway holds (all in memory).
#[derive(Default)]
pub struct SecondFactor {
    pending: dashmap::DashMap<Key, Pending>,
    /// Secrets shown for enrollment, by the session or pending sign-in key.
    enrolling: dashmap::DashMap<Key, (String, u64)>,
    /// The step of the last code accepted, per account: a code works once.
    last_steps: dashmap::DashMap<Arc<str>, u64>,
}

impl SecondFactor {
    /// Drops pending sign-ins and enrollments past their time.
    pub fn sweep(&self, now: u64) {
        self.pending.retain(|_, p| p.expires_ms > now);
        self.enrolling.retain(|_, (_, until)| *until > now);
    }
}

/// Who is on a second-factor page: a session, or a pending sign-in.
enum Who {
    Session(super::SignedIn),
    Pending { key: Key, user: Arc<User> },
}

impl Who {
    fn key(&self) -> Key {
        match self {
            Who::Session(s) => s.session.key,
            Who::Pending { key, .. } => *key,
        }
    }

    fn user(&self) -> &Arc<User> {
        match self {
            Who::Session(s) => &s.user,
            Who::Pending { user, .. } => user,
        }
    }
}

enum CodeCheck {
    Accepted,
    Wrong,
}

impl Auth {
    /// The pending sign-in the request's cookie names, if it is live.
    fn pending_of(&self, headers: &HeaderMap) -> Option<(Key, Arc<User>, bool, String)> {
        let now = session::now_ms();
        cookie_values(headers, &self.pending_cookie_name).find_map(|id| {
            let key = session::key_of(id)?;
            let pending = self.second_factor.pending.get(&key)?;
            if pending.expires_ms <= now {
                return None;
            }
            let user = self.users.load().get_by_key(&pending.user).cloned()?;
            // A password changed or the user locked meanwhile: no.
            if user.locked || user.password_fingerprint != pending.password_fingerprint {
                return None;
            }
            Some((key, user, pending.enroll, pending.next.clone()))
        })
    }

    /// After a correct password: a second step if the user has (or must
    /// have) a second factor, else `None` and the caller makes the session.
    pub(super) fn begin_second_step(&self, user: &User, next: &str) -> Option<Response<Body>> {
        let needs_enroll = user.totp.is_none()
            && user
                .roles
                .iter()
                .any(|r| self.require_totp.load().contains(r));
        if user.totp.is_none() && !needs_enroll {
            return None;
        }
        let id = session::new_id();
        let key = session::key_of(&id).expect("a new ID has the right form");
        self.second_factor.pending.insert(
            key,
            Pending {
                user: user.key.clone(),
                password_fingerprint: user.password_fingerprint,
                next: next.to_owned(),
                expires_ms: session::now_ms() + PENDING_FOR_MS,
                enroll: needs_enroll,
            },
        );
        let location = if needs_enroll {
            "/.gateway/totp"
        } else {
            "/.gateway/login/code"
        };
        let mut response = own_response(
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            "one more step\n",
        );
        let headers = response.headers_mut();
        headers.insert(header::LOCATION, HeaderValue::from_static(location));
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!(
                "{}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
                self.pending_cookie_name,
                PENDING_FOR_MS / 1000
            ))
            .expect("name and ID are cookie-safe"),
        );
        Some(response)
    }

    fn clear_pending_cookie(&self, response: &mut Response<Body>) {
        response.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!(
                "{}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
                self.pending_cookie_name
            ))
            .expect("a cookie name is a token"),
        );
    }

    /// Takes an attempt from the throttle for `user`, as a password try does.
    async fn code_attempt(&self, user: &User, peer: IpAddr) -> Result<Attempt<'_>, GatewayError> {
        match self.reserve(&user.key, peer).await {
            Ok(attempt) => Ok(attempt),
            Err(Refused::Throttled(Throttled { retry_after_secs })) => {
                self.metrics.record_login(Login::Throttled);
                crate::security_event!(warn, event = "login_throttled", user = %user.name, ip = %peer, "second-factor code throttled");
                Err(GatewayError::Throttled { retry_after_secs })
            }
            Err(Refused::Unavailable) => Err(GatewayError::StoreUnavailable),
        }
    }

    /// Checks a code (or a recovery code) of `user`'s second factor; the
    /// caller holds the throttle attempt.
    async fn check_code(&self, user: &User, code: &str, peer: IpAddr) -> CodeCheck {
        let Some(secret) = &user.totp else {
            return CodeCheck::Wrong;
        };
        if totp::looks_like_recovery_code(code) {
            let change = Change::UseRecoveryCode {
                name: user.key.to_string(),
                hash: totp::recovery_hash(code),
            };
            return match self
                .change_users(change, &format!("user {}", user.name))
                .await
            {
                Ok(()) => CodeCheck::Accepted,
                Err(_) => {
                    crate::security_event!(warn, event = "totp_failed", user = %user.name, ip = %peer, kind = "recovery code", "a wrong recovery code");
                    CodeCheck::Wrong
                }
            };
        }
        let now_secs = session::now_ms() / 1000;
        let last = self.second_factor.last_steps.get(&user.key).map(|s| *s);
        let accepted = totp::verify(secret.expose(), code, now_secs, last)
            .is_some_and(|step| self.accept_step(&user.key, step));
        if accepted {
            CodeCheck::Accepted
        } else {
            crate::security_event!(warn, event = "totp_failed", user = %user.name, ip = %peer, kind = "code", "a wrong or reused second-factor code");
            CodeCheck::Wrong
        }
    }

    /// Records `step` as the account's last accepted one, unless a later
    /// or equal one got there first (the same code sent twice at once).
    fn accept_step(&self, user: &Arc<str>, step: u64) -> bool {
        let mut accepted = false;
        self.second_factor
            .last_steps
            .entry(user.clone())
            .and_modify(|last| {
                if step > *last {
                    *last = step;
                    accepted = true;
                }
            })
            .or_insert_with(|| {
                accepted = true;
                step
            });
        accepted
    }

    /// `GET` shows the code form of a pending sign-in; `POST` (`code`,
    /// `csrf`) checks it and, if right, makes the session.
    pub(super) async fn login_code(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        let Some((key, user, false, next)) = self.pending_of(request.headers()) else {
            // None (or one for enrollment): start over.
            return Ok(see_other("/.gateway/login"));
        };
        *logged_user = Some(user.name.clone());
        let token = csrf::session_token(&key);
        if request.method() != Method::POST {
            return Ok(pages::login_code(StatusCode::OK, &token, None));
        }
        if !csrf::same_origin(request.headers(), host) {
            return Err(GatewayError::CsrfRejected);
        }
        let user_agent = super::endpoints::user_agent_of(request.headers());
        let form = read_form(request).await?;
        if !csrf::matches(&token, form.get("csrf")) {
            return Err(GatewayError::CsrfRejected);
        }
        let attempt = self.code_attempt(&user, peer).await?;
        if let CodeCheck::Wrong = self.check_code(&user, form.get("code"), peer).await {
            attempt.failed();
            self.metrics.record_login(Login::BadCredentials);
            return Ok(pages::login_code(
                StatusCode::UNAUTHORIZED,
                &token,
                Some("That code is not right (or was used already). Try the next one."),
            ));
        }
        attempt.succeeded();
        // Used once: the pending sign-in is gone whatever happens next.
        if self.second_factor.pending.remove(&key).is_none() {
            return Ok(see_other("/.gateway/login"));
        }
        let id = self
            .sessions
            .create(
                &user.key,
                user.password_fingerprint,
                peer,
                &user_agent,
                true,
                session::now_ms(),
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        self.metrics.record_login(Login::Ok);
        crate::security_event!(info, event = "login_ok", user = %user.name, ip = %peer, second_factor = true, "login ok");
        let mut response = see_other(&next);
        self.set_session_cookie(&mut response, &id);
        self.clear_pending_cookie(&mut response);
        Ok(response)
    }

    /// `/.gateway/totp`: enrollment. A signed-in user enters the password
    /// again; a pending sign-in that must enroll has just entered it. Then
    /// the secret is shown (QR code and text) and kept here until a code
    /// from it proves the app has it; only then is it saved, with ten
    /// recovery codes shown this once.
    pub(super) async fn totp_page(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        let query_next = super::endpoints::query_next(request.uri().query());
        let who = match self.pending_of(request.headers()) {
            Some((key, user, true, next)) => (Who::Pending { key, user }, next),
            _ => {
                let signed_in = self
                    .require_session(request.headers(), request.method(), "/.gateway/totp")
                    .await?;
                (Who::Session(signed_in), query_next.clone())
            }
        };
        let (who, next) = who;
        let user = who.user().clone();
        *logged_user = Some(user.name.clone());
        let token = csrf::session_token(&who.key());
        if user.totp.is_some() {
            return Ok(pages::totp_enrolled(&user.name, user.recovery_codes.len()));
        }
        let now = session::now_ms();
        let scan = |status, secret: &str, next: &str, error| {
            let issuer = host
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h))
                .unwrap_or("authgate");
            let uri = totp::uri(issuer, &user.name, secret);
            pages::totp_scan(status, &totp::qr_svg(&uri), secret, &token, next, error)
        };
        let shown = |me: &Self| {
            me.second_factor
                .enrolling
                .get(&who.key())
                .map(|e| e.0.clone())
        };
        if request.method() != Method::POST {
            return Ok(match (&who, shown(self)) {
                (_, Some(secret)) => scan(StatusCode::OK, &secret, &next, None),
                (Who::Pending { .. }, None) => {
                    let secret = self.start_enrolling(who.key(), now);
                    scan(StatusCode::OK, &secret, &next, None)
                }
                (Who::Session(_), None) => {
                    pages::totp_password(StatusCode::OK, &user.name, &token, &next, None)
                }
            });
        }
        if !csrf::same_origin(request.headers(), host) {
            return Err(GatewayError::CsrfRejected);
        }
        let user_agent = super::endpoints::user_agent_of(request.headers());
        let form = read_form(request).await?;
        if !csrf::matches(&token, form.get("csrf")) {
            return Err(GatewayError::CsrfRejected);
        }
        let next = match &who {
            Who::Pending { .. } => next,
            Who::Session(_) => safe_next(form_next(&form)),
        };
        let attempt = self.code_attempt(&user, peer).await?;
        match form.get("step") {
            "password" => {
                let matched = self
                    .verifier
                    .verify(Some(&user.password_hash), form.get("password"))
                    .await
                    .map_err(|Busy| GatewayError::LoginBusy)?;
                if !matched {
                    attempt.failed();
                    crate::security_event!(warn, event = "totp_failed", user = %user.name, ip = %peer, kind = "password", "wrong password on the second-factor page");
                    return Ok(pages::totp_password(
                        StatusCode::UNAUTHORIZED,
                        &user.name,
                        &token,
                        &next,
                        Some("The password is wrong."),
                    ));
                }
                attempt.succeeded();
                let secret = self.start_enrolling(who.key(), now);
                Ok(scan(StatusCode::OK, &secret, &next, None))
            }
            "confirm" => {
                let Some(secret) = shown(self) else {
                    attempt.succeeded();
                    return Ok(see_other("/.gateway/totp"));
                };
                let step = totp::verify(&secret, form.get("code"), now / 1000, None);
                let Some(step) = step else {
                    attempt.failed();
                    crate::security_event!(warn, event = "totp_failed", user = %user.name, ip = %peer, kind = "enrollment code", "a wrong code while enrolling");
                    return Ok(scan(
                        StatusCode::UNAUTHORIZED,
                        &secret,
                        &next,
                        Some("That code is not right. Check the phone's clock, and enter the code the app shows now."),
                    ));
                };
                attempt.succeeded();
                let (codes, hashes) = totp::new_recovery_codes();
                let change = Change::SetTotp {
                    name: user.key.to_string(),
                    secret: TotpSecret::new(secret),
                    recovery_codes: hashes,
                };
                if let Err(e) = self
                    .change_users(change, &format!("user {}", user.name))
                    .await
                {
                    tracing::error!(user = %user.name, error = %e, "the second factor could not be saved");
                    return Ok(own_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        "The second factor could not be saved. Nothing was changed.\n",
                    ));
                }
                self.second_factor.enrolling.remove(&who.key());
                self.accept_step(&user.key, step);
                let mut response = pages::totp_recovery(&codes, &next);
                match &who {
                    Who::Session(signed_in) => {
                        self.sessions
                            .reauthenticate(&signed_in.session.key, true, session::now_ms())
                            .await
                            .map_err(|_| GatewayError::StoreUnavailable)?;
                    }
                    Who::Pending { key, .. } => {
                        self.second_factor.pending.remove(key);
                        let Some(updated) = self.users.load().get_by_key(&user.key).cloned() else {
                            return Err(GatewayError::NotFound);
                        };
                        let id = self
                            .sessions
                            .create(
                                &updated.key,
                                updated.password_fingerprint,
                                peer,
                                &user_agent,
                                true,
                                session::now_ms(),
                            )
                            .await
                            .map_err(|_| GatewayError::StoreUnavailable)?;
                        self.metrics.record_login(Login::Ok);
                        crate::security_event!(info, event = "login_ok", user = %user.name, ip = %peer, second_factor = true, "login ok after enrolling");
                        self.set_session_cookie(&mut response, &id);
                        self.clear_pending_cookie(&mut response);
                    }
                }
                Ok(response)
            }
            _ => {
                attempt.succeeded();
                Err(GatewayError::BadForm)
            }
        }
    }

    fn start_enrolling(&self, key: Key, now: u64) -> String {
        let secret = totp::new_secret();
        self.second_factor
            .enrolling
            .insert(key, (secret.clone(), now + ENROLLING_FOR_MS));
        secret
    }

    /// `/.gateway/reauth?next=`: the password (and the code, for a user
    /// with a second factor) entered again within a session; success
    /// refreshes the session's sign-in time without a new session.
    pub(super) async fn reauth(
        &self,
        request: Request<Incoming>,
        peer: IpAddr,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        let query_next = super::endpoints::query_next(request.uri().query());
        let signed_in = self
            .require_session(request.headers(), request.method(), "/.gateway/reauth")
            .await?;
        let user = signed_in.user.clone();
        *logged_user = Some(user.name.clone());
        let token = signed_in.csrf_token();
        let with_code = user.totp.is_some();
        if request.method() != Method::POST {
            return Ok(pages::reauth(
                StatusCode::OK,
                &user.name,
                &token,
                &query_next,
                with_code,
                None,
            ));
        }
        if !csrf::same_origin(request.headers(), host) {
            return Err(GatewayError::CsrfRejected);
        }
        let form = read_form(request).await?;
        if !csrf::matches(&token, form.get("csrf")) {
            return Err(GatewayError::CsrfRejected);
        }
        let next = safe_next(form_next(&form));
        let attempt = self.code_attempt(&user, peer).await?;
        let matched = self
            .verifier
            .verify(Some(&user.password_hash), form.get("password"))
            .await
            .map_err(|Busy| GatewayError::LoginBusy)?;
        let code_ok = !with_code
            || (matched
                && matches!(
                    self.check_code(&user, form.get("code"), peer).await,
                    CodeCheck::Accepted
                ));
        if !matched || !code_ok {
            attempt.failed();
            crate::security_event!(warn, event = "reauth_failed", user = %user.name, ip = %peer, "a fresh sign-in failed");
            return Ok(pages::reauth(
                StatusCode::UNAUTHORIZED,
                &user.name,
                &token,
                &next,
                with_code,
                Some(super::GENERIC_FAILURE),
            ));
        }
        attempt.succeeded();
        let live = self
            .sessions
            .reauthenticate(&signed_in.session.key, with_code, session::now_ms())
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        if !live {
            return Ok(see_other("/.gateway/login"));
        }
        crate::security_event!(info, event = "reauthenticated", user = %user.name, ip = %peer, second_factor = with_code, "fresh sign-in");
        Ok(see_other(&next))
    }
}

fn form_next(form: &Form) -> Option<&str> {
    form.fields
        .iter()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.as_str())
}

fn see_other(location: &str) -> Response<Body> {
    let mut response = own_response(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        "see other\n",
    );
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
