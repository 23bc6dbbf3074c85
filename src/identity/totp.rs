//! The second factor's pages: the code step of a sign-in
//! (`/.gateway/login/code`), enrollment (`/.gateway/totp`) and the fresh
//! sign-in a route may ask for (`/.gateway/reauth`).
//!
//! Between a correct password and a correct code the browser holds only a
//! *pending sign-in*: a random ID in its own cookie, kept (by its SHA-256,
//! in the store's records, which replicas may share) for
//! [`PENDING_FOR_MS`], used once. No session exists, and no
//! session cookie is set, before the code. A user whose role must have a
//! second factor (`[login] require_second_factor`) and has none gets a pending
//! sign-in that leads to enrollment instead.
//!
//! Every code tried takes an attempt from the same throttle as passwords.
//! A code is accepted once per account (the step it belongs to is
//! remembered), a recovery code once ever (it leaves the users file).

use crate::config::Config;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use super::forms::{checked_form, see_other, Form};
use super::Call;
use super::{cookie_values, Auth};
use crate::metrics::Login;
use crate::pages::sign_in as pages;
use crate::response::{own_response, Body, GatewayError};
use crate::session::{self, Key, Vouched};
use crate::store::counters::{Attempt, Refused};
use crate::store::throttle::Throttled;
use crate::users::file::{Change, UserFileError};
use crate::users::totp;
use crate::users::{TotpSecret, User};

/// How long a pending sign-in (password done, code not yet) lives.
pub const PENDING_FOR_MS: u64 = 5 * 60 * 1000;
/// How long a secret shown for enrollment waits for its first code.
pub const ENROLLING_FOR_MS: u64 = 10 * 60 * 1000;

/// A sign-in between the password and the code (or enrollment).
#[derive(Clone)]
pub struct Pending {
    user: Arc<str>,
    password_fingerprint: u32,
    next: String,
    expires_ms: u64,
    /// The user must enroll before getting a session.
    enroll: bool,
    /// A directory user: who the directory said they are (a
    /// [`Vouched::to_record`] text, one line).
    vouched: Option<String>,
}

impl Pending {
    /// As the store keeps it: one field a line (`next` holds no control
    /// characters; a record's JSON has none either).
    fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.user,
            self.password_fingerprint,
            u8::from(self.enroll),
            self.expires_ms,
            self.next,
            self.vouched.as_deref().unwrap_or_default()
        )
    }

    fn from_text(text: &str) -> Option<Pending> {
        let mut lines = text.splitn(6, '\n');
        Some(Pending {
            user: lines.next()?.into(),
            password_fingerprint: lines.next()?.parse().ok()?,
            enroll: lines.next()? == "1",
            expires_ms: lines.next()?.parse().ok()?,
            next: lines.next()?.to_owned(),
            vouched: lines.next().filter(|v| !v.is_empty()).map(str::to_owned),
        })
    }
}

/// A pending sign-in as the second-factor pages use it.
pub(super) struct PendingSignIn {
    pub key: Key,
    /// With the second factor kept for them.
    pub user: Arc<User>,
    pub enroll: bool,
    pub next: String,
    /// A directory user's session begins with this.
    pub vouched: Option<Arc<Vouched>>,
}

/// Who is on a second-factor page: a session, or a pending sign-in.
enum Who {
    Session(super::SignedIn),
    Pending {
        key: Key,
        user: Arc<User>,
        vouched: Option<Arc<Vouched>>,
    },
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

pub(super) enum CodeCheck {
    Accepted,
    Wrong,
}

const PENDING: &str = "pending";
const ENROLLING: &str = "enrolling";

impl Auth {
    async fn put_pending(&self, key: &Key, pending: Pending) -> Result<(), GatewayError> {
        self.store
            .records
            .put(PENDING, key, pending.to_text(), PENDING_FOR_MS)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)
    }

    async fn get_pending(&self, key: &Key) -> Result<Option<Pending>, GatewayError> {
        Ok(self
            .store
            .records
            .get(PENDING, key)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?
            .and_then(|text| Pending::from_text(&text)))
    }

    /// Uses up a pending sign-in: true for the one request that does.
    pub(super) async fn take_pending(&self, key: &Key) -> Result<bool, GatewayError> {
        self.store
            .records
            .take(PENDING, key)
            .await
            .map(|taken| taken.is_some())
            .map_err(|_| GatewayError::StoreUnavailable)
    }

    async fn get_enrolling(&self, key: &Key) -> Result<Option<String>, GatewayError> {
        self.store
            .records
            .get(ENROLLING, key)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)
    }

    /// A new secret to enroll, kept for [`ENROLLING_FOR_MS`].
    async fn start_enrolling(&self, key: &Key) -> Result<String, GatewayError> {
        let secret = totp::new_secret();
        self.store
            .records
            .put(ENROLLING, key, secret.clone(), ENROLLING_FOR_MS)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        Ok(secret)
    }

    async fn end_enrolling(&self, key: &Key) {
        let _ = self.store.records.take(ENROLLING, key).await;
    }

    /// The step of the account's last accepted code.
    async fn last_step(&self, user: &Arc<str>) -> Result<Option<u64>, GatewayError> {
        self.store
            .records
            .last_step(user)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)
    }

    /// Records `step` as the account's last accepted one, unless a later
    /// or equal one got there first (the same code sent twice at once).
    async fn accept_step(&self, user: &Arc<str>, step: u64) -> Result<bool, GatewayError> {
        // Kept past the drift window, after which no code of that step or
        // earlier is accepted anyway.
        let keep_ms = (totp::DRIFT_STEPS * 2 + 2) * totp::STEP_SECS * 1000;
        self.store
            .records
            .advance_step(user, step, keep_ms)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)
    }

    /// The pending sign-in the request's cookie names, if it is live.
    pub(super) async fn pending_of(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<PendingSignIn>, GatewayError> {
        let now = session::now_ms();
        for id in cookie_values(headers, &self.pending_cookie_name) {
            let Some(key) = session::key_of(id) else {
                continue;
            };
            let Some(pending) = self.get_pending(&key).await? else {
                continue;
            };
            if pending.expires_ms <= now {
                continue;
            }
            let vouched = match &pending.vouched {
                Some(text) => match Vouched::from_record(text) {
                    Some(v) => Some(Arc::new(v)),
                    None => continue,
                },
                None => None,
            };
            let entry = self.users.load().get_by_key(&pending.user).cloned();
            let user = match (&vouched, entry) {
                // A directory user: locked out meanwhile, or a local user
                // took the name: no.
                (Some(v), entry) => {
                    if entry.is_some_and(|e| e.locked || e.provider.is_none()) {
                        continue;
                    }
                    self.with_second_factor(&v.user)
                }
                // A password changed or the user locked meanwhile: no.
                (None, Some(user))
                    if !user.locked
                        && user.password_fingerprint == pending.password_fingerprint =>
                {
                    user
                }
                (None, _) => continue,
            };
            return Ok(Some(PendingSignIn {
                key,
                user,
                enroll: pending.enroll,
                next: pending.next,
                vouched,
            }));
        }
        Ok(None)
    }

    /// After a correct password: a second step if the user has (or must
    /// have) a second factor, else `None` and the caller makes the session.
    /// `vouched`: a directory user, who the directory said they are.
    pub(super) async fn begin_second_step(
        &self,
        config: &Config,
        user: &User,
        next: &str,
        vouched: Option<&Arc<Vouched>>,
    ) -> Result<Option<Response<Body>>, GatewayError> {
        let needs_enroll = !user.has_second_factor()
            && user
                .roles
                .iter()
                .any(|r| config.login.require_second_factor.contains(r));
        if !user.has_second_factor() && !needs_enroll {
            return Ok(None);
        }
        let id = session::new_id();
        let key = session::key_of(&id).expect("a new ID has the right form");
        self.put_pending(
            &key,
            Pending {
                user: user.key.clone(),
                password_fingerprint: user.password_fingerprint,
                next: next.to_owned(),
                expires_ms: session::now_ms() + PENDING_FOR_MS,
                enroll: needs_enroll,
                vouched: vouched.map(|v| v.to_record()),
            },
        )
        .await?;
        let location = if needs_enroll {
            "/.gateway/totp"
        } else if !user.passkeys.is_empty() {
            // The passkey step offers the code too, when there is one.
            "/.gateway/login/passkey"
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
        Ok(Some(response))
    }

    pub(super) fn clear_pending_cookie(&self, response: &mut Response<Body>) {
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
    pub(super) async fn code_attempt(
        &self,
        config: &Config,
        user: &User,
        peer: IpAddr,
    ) -> Result<Attempt<'_>, GatewayError> {
        match self.reserve(&config.login, &user.key, peer).await {
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
    pub(super) async fn check_code(
        &self,
        user: &User,
        code: &str,
        peer: IpAddr,
    ) -> Result<CodeCheck, GatewayError> {
        let Some(secret) = &user.totp else {
            return Ok(CodeCheck::Wrong);
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
                Ok(()) => Ok(CodeCheck::Accepted),
                Err(UserFileError::StoreUnavailable) => Err(GatewayError::StoreUnavailable),
                Err(_) => {
                    crate::security_event!(warn, event = "totp_failed", user = %user.name, ip = %peer, kind = "recovery code", "a wrong recovery code");
                    Ok(CodeCheck::Wrong)
                }
            };
        }
        let now_secs = session::now_ms() / 1000;
        let last = self.last_step(&user.key).await?;
        let accepted = match totp::verify(secret.expose(), code, now_secs, last) {
            Some(step) => self.accept_step(&user.key, step).await?,
            None => false,
        };
        if accepted {
            Ok(CodeCheck::Accepted)
        } else {
            crate::security_event!(warn, event = "totp_failed", user = %user.name, ip = %peer, kind = "code", "a wrong or reused second-factor code");
            Ok(CodeCheck::Wrong)
        }
    }

    /// `GET` shows the code form of a pending sign-in; `POST` (`code`,
    /// `csrf`) checks it and, if right, makes the session.
    pub(super) async fn login_code(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let Call {
            config, peer, host, ..
        } = *call;
        let Some(PendingSignIn {
            key,
            user,
            enroll: false,
            next,
            vouched,
        }) = self.pending_of(request.headers()).await?
        else {
            // None (or one for enrollment): start over.
            return Ok(see_other("/.gateway/login"));
        };
        call.logged_user = Some(user.name.clone());
        let token = self.csrf_token(&key);
        if request.method() != Method::POST {
            return Ok(pages::login_code(StatusCode::OK, &token, None).into());
        }
        let user_agent = super::forms::user_agent_of(request.headers());
        let form = checked_form(request, host, &token).await?;
        let attempt = self.code_attempt(config, &user, peer).await?;
        if let CodeCheck::Wrong = self.check_code(&user, form.get("code"), peer).await? {
            attempt.failed();
            self.metrics.record_login(Login::BadCredentials);
            return Ok(pages::login_code(
                StatusCode::UNAUTHORIZED,
                &token,
                Some("That code is not right (or was used already). Try the next one."),
            )
            .into());
        }
        attempt.succeeded();
        // Used once: the pending sign-in is gone whatever happens next.
        if !self.take_pending(&key).await? {
            return Ok(see_other("/.gateway/login"));
        }
        let id = self
            .begin_session(call, &user, &user_agent, true, vouched.map(|v| (v, None)))
            .await?;
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
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let Call {
            config, peer, host, ..
        } = *call;
        let query_next = self.query_next(request.uri().query());
        let who = match self.pending_of(request.headers()).await? {
            Some(PendingSignIn {
                key,
                user,
                enroll: true,
                next,
                vouched,
            }) => (Who::Pending { key, user, vouched }, next),
            _ => {
                let mut signed_in = self
                    .require_session(request.headers(), request.method(), "/.gateway/totp")
                    .await?;
                if let Some(provider) = signed_in.proved_elsewhere() {
                    let page = pages::kept_by_provider(signed_in.viewer(config), provider);
                    return Ok(page.into());
                }
                // A directory's user keeps a second factor here too.
                signed_in.user = self.with_second_factor(&signed_in.user);
                (Who::Session(signed_in), query_next.clone())
            }
        };
        let (who, next) = who;
        let user = who.user().clone();
        call.logged_user = Some(user.name.clone());
        let token = self.csrf_token(&who.key());
        // The page's header, for a signed-in user (not a pending sign-in).
        let viewer = match &who {
            Who::Session(signed_in) => Some(signed_in.viewer(config)),
            Who::Pending { .. } => None,
        };
        if user.totp.is_some() {
            let viewer = viewer.unwrap_or(crate::pages::Viewer {
                name: &user.name,
                admin: false,
            });
            return Ok(pages::totp_enrolled(viewer, user.recovery_codes.len()).into());
        }
        if self.users_managed_elsewhere().is_some() {
            // Enrolment would end in a users file that cannot be written.
            return Ok(crate::response::page(
                StatusCode::CONFLICT,
                "Second factor",
                super::forms::MANAGED_ELSEWHERE,
            ));
        }
        let now = session::now_ms();
        let scan = |status, secret: &str, next: &str, error| -> Response<Body> {
            let issuer = host
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h))
                .unwrap_or("authgate");
            let uri = totp::uri(issuer, &user.name, secret);
            pages::totp_scan(
                status,
                viewer,
                &totp::qr_svg(&uri),
                secret,
                &token,
                next,
                error,
            )
            .into()
        };
        let shown = self.get_enrolling(&who.key()).await?;
        if request.method() != Method::POST {
            return Ok(match (&who, shown) {
                (_, Some(secret)) => scan(StatusCode::OK, &secret, &next, None),
                (Who::Pending { .. }, None) => {
                    let secret = self.start_enrolling(&who.key()).await?;
                    scan(StatusCode::OK, &secret, &next, None)
                }
                (Who::Session(_), None) => {
                    pages::totp_password(StatusCode::OK, &user.name, viewer, &token, &next, None)
                        .into()
                }
            });
        }
        let user_agent = super::forms::user_agent_of(request.headers());
        let form = checked_form(request, host, &token).await?;
        let next = match &who {
            Who::Pending { .. } => next,
            Who::Session(_) => self.next_of(form_next(&form)),
        };
        let attempt = self.code_attempt(config, &user, peer).await?;
        match form.get("step") {
            "password" => {
                let matched = self
                    .own_password_matches(&user, form.get("password"))
                    .await?;
                if !matched {
                    attempt.failed();
                    crate::security_event!(warn, event = "totp_failed", user = %user.name, ip = %peer, kind = "password", "wrong password on the second-factor page");
                    return Ok(pages::totp_password(
                        StatusCode::UNAUTHORIZED,
                        &user.name,
                        viewer,
                        &token,
                        &next,
                        Some("The password is wrong."),
                    )
                    .into());
                }
                // A right password here is no whole sign-in: the count
                // stays (only a sign-in starts it again).
                attempt.given_back();
                let secret = self.start_enrolling(&who.key()).await?;
                Ok(scan(StatusCode::OK, &secret, &next, None))
            }
            "confirm" => {
                let Some(secret) = shown else {
                    // Nothing was verified: the attempt is given back and
                    // the count stays.
                    attempt.given_back();
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
                match &who {
                    // The last step of a sign-in: the count starts again.
                    Who::Pending { .. } => attempt.succeeded(),
                    // Enrolment within a session signs nobody in.
                    Who::Session(_) => attempt.given_back(),
                }
                let (codes, hashes) = totp::new_recovery_codes();
                let change = Change::SetTotp {
                    name: user.key.to_string(),
                    secret: TotpSecret::new(secret),
                    recovery_codes: hashes,
                    provider: user.provider.as_deref().map(str::to_owned),
                };
                let failed = "The second factor could not be saved. Nothing was changed.";
                if let Err((status, words)) = self
                    .save_own(change, &user, "the second factor", failed)
                    .await
                {
                    let text = format!("{words}\n");
                    return Ok(own_response(status, "text/plain; charset=utf-8", text));
                }
                self.end_enrolling(&who.key()).await;
                self.accept_step(&user.key, step).await?;
                let mut response: Response<Body> =
                    pages::totp_recovery(viewer, &codes, &next).into();
                match &who {
                    Who::Session(signed_in) => {
                        self.store
                            .sessions
                            .reauthenticate(&signed_in.session.key, true, session::now_ms())
                            .await
                            .map_err(|_| GatewayError::StoreUnavailable)?;
                    }
                    Who::Pending { key, vouched, .. } => {
                        if !self.take_pending(key).await? {
                            return Ok(see_other("/.gateway/login"));
                        }
                        let id = match vouched {
                            Some(v) => {
                                self.begin_session(
                                    call,
                                    &v.user,
                                    &user_agent,
                                    true,
                                    Some((v.clone(), None)),
                                )
                                .await?
                            }
                            None => {
                                let Some(updated) =
                                    self.users.load().get_by_key(&user.key).cloned()
                                else {
                                    return Err(GatewayError::NotFound);
                                };
                                self.begin_session(call, &updated, &user_agent, true, None)
                                    .await?
                            }
                        };
                        self.set_session_cookie(&mut response, &id);
                        self.clear_pending_cookie(&mut response);
                    }
                }
                Ok(response)
            }
            _ => {
                attempt.given_back();
                Err(GatewayError::BadForm)
            }
        }
    }
}

pub(super) fn form_next(form: &Form) -> Option<&str> {
    form.fields
        .iter()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.as_str())
}
