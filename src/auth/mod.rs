//! Who is asking: the session cookie on every request, and the gateway's
//! own sign-in endpoints under `/.gateway/` (SPEC §3).

mod admin;
pub mod csrf;
mod next;
mod pages;
pub mod password;
pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::config::Config;
use crate::response::{own_response, Body, GatewayError};
use crate::session::{self, LiveSession, Lookup, SessionStore};
use crate::users::file::{check_new_password, Change, UserFileError, UsersFile};
use crate::users::{canonical, User, Users};
pub use next::safe_next;
use password::{Busy, Verifier};
use throttle::{Throttle, Verdict};

/// Largest sign-in form accepted; anything bigger is refused before hashing.
pub const MAX_FORM_BYTES: usize = 4096;
/// Most failure windows kept per map (accounts, clients).
const THROTTLE_CAPACITY: usize = 100_000;
const GENERIC_FAILURE: &str = "Invalid username or password.";

/// A request's signed-in user.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: Arc<User>,
    pub session: LiveSession,
    /// The cookie value, kept only to derive the CSRF token. Never logged.
    id: String,
}

impl SignedIn {
    pub fn csrf_token(&self) -> String {
        csrf::session_token(&self.id)
    }
}

/// What the request's cookies amount to.
#[derive(Debug, Default)]
pub struct Presented {
    pub signed_in: Option<SignedIn>,
    /// A session cookie came that no longer leads anywhere: clear it.
    pub stale_cookie: bool,
}

pub struct Auth {
    users: ArcSwap<Users>,
    pub sessions: Arc<SessionStore>,
    throttle: Throttle,
    verifier: Verifier,
    cookie_name: String,
    login_cookie_name: String,
    clear_cookie: HeaderValue,
    /// Where changes to users are written; `None` when no file is configured.
    users_file: Option<UsersFile>,
    /// The role that may use `/.gateway/admin`.
    admin_role: String,
}

impl Auth {
    /// Takes the users out of `config` (they are swapped in place on reload).
    pub fn new(config: &mut Config) -> Auth {
        let users = std::mem::take(&mut config.users);
        let cookie_name = config.session.cookie_name.clone();
        let clear_cookie = HeaderValue::from_str(&format!(
            "{cookie_name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
        ))
        .expect("a cookie name is a token");
        Auth {
            users: ArcSwap::from_pointee(users),
            sessions: SessionStore::new(
                config.session.idle_timeout,
                config.session.absolute_timeout,
            ),
            throttle: Throttle::new(
                config.login.max_failures,
                config.login.failure_window,
                THROTTLE_CAPACITY,
            ),
            verifier: Verifier::for_this_machine(),
            login_cookie_name: format!("{cookie_name}-login"),
            cookie_name,
            clear_cookie,
            users_file: config.users_file.clone().map(UsersFile::new),
            admin_role: config.admin.role.clone(),
        }
    }

    /// Background work: the session sweeper, the throttle windows' sweep and
    /// the users-file watcher. Each ends when the `Auth` is dropped.
    pub fn start_background(self: &Arc<Self>) {
        self.sessions.start_sweeper();
        if let Some(file) = &self.users_file {
            crate::users::watch::spawn(Arc::downgrade(self), file.clone());
        }
        let auth = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(auth) = auth.upgrade() else { break };
                auth.throttle.sweep(session::now_ms());
            }
        });
    }

    pub fn users(&self) -> arc_swap::Guard<Arc<Users>> {
        self.users.load()
    }

    /// Puts `new` in force: logs every difference as a security event by
    /// `actor` (an admin, the user, the CLI, a file edit) and ends the
    /// sessions of users who were removed, locked, or whose password changed.
    pub fn replace_users(&self, new: Users, actor: &str) {
        let old = self.users.load_full();
        let end = |user: &str| self.sessions.end_all_for_user(user);
        for before in old.iter() {
            let key = &*before.key;
            match new.get_by_key(key) {
                None => {
                    let ended = end(key);
                    tracing::warn!(target: "authgate::security", event = "user_removed", actor, user = %before.name, sessions_ended = ended, "user removed");
                }
                Some(after) => {
                    if after.locked && !before.locked {
                        let ended = end(key);
                        tracing::warn!(target: "authgate::security", event = "user_locked", actor, user = %after.name, sessions_ended = ended, "user locked");
                    }
                    if !after.locked && before.locked {
                        tracing::warn!(target: "authgate::security", event = "user_unlocked", actor, user = %after.name, "user unlocked");
                    }
                    if after.password_fingerprint != before.password_fingerprint {
                        let ended = end(key);
                        tracing::warn!(target: "authgate::security", event = "password_changed", actor, user = %after.name, sessions_ended = ended, "password changed");
                    }
                    if after.roles != before.roles {
                        tracing::warn!(target: "authgate::security", event = "roles_changed", actor, user = %after.name, from = %before.roles.join(","), to = %after.roles.join(","), "roles changed");
                    }
                }
            }
        }
        for after in new.iter() {
            if old.get_by_key(&after.key).is_none() {
                tracing::warn!(target: "authgate::security", event = "user_added", actor, user = %after.name, roles = %after.roles.join(","), "user added");
            }
        }
        self.users.store(Arc::new(new));
    }

    /// Writes `change` to the users file (off the async threads) and puts
    /// the result in force at once.
    pub async fn change_users(&self, change: Change, actor: &str) -> Result<(), UserFileError> {
        let file = self
            .users_file
            .clone()
            .ok_or(UserFileError::NotConfigured)?;
        let recorded = actor.to_owned();
        let users = tokio::task::spawn_blocking(move || file.apply(&change, &recorded))
            .await
            .map_err(|e| UserFileError::Invalid(format!("the writer failed: {e}")))??;
        self.replace_users(users, actor);
        Ok(())
    }

    /// Ends every session of a user (canonical name) without locking them.
    pub fn revoke_sessions(&self, key: &str, actor: &str) -> usize {
        let ended = self.sessions.end_all_for_user(key);
        tracing::warn!(target: "authgate::security", event = "sessions_revoked", actor, user = %key, sessions_ended = ended, "sessions revoked");
        ended
    }

    fn set_session_cookie(&self, response: &mut Response<Body>, id: &str) {
        response.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!(
                "{}={id}; Path=/; Secure; HttpOnly; SameSite=Lax",
                self.cookie_name
            ))
            .expect("name and ID are cookie-safe"),
        );
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Names of the gateway's own cookies, which the upstream never sees.
    pub fn own_cookies(&self) -> [&str; 2] {
        [&self.cookie_name, &self.login_cookie_name]
    }

    /// Finds the request's session, checking it the way SPEC §5 asks: it
    /// exists, neither deadline has passed, the user still exists and is
    /// not locked, and the password has not changed since it began. `touch`
    /// moves the idle deadline on.
    pub fn authenticate(&self, headers: &HeaderMap, now: u64, touch: bool) -> Presented {
        let mut presented = Presented::default();
        for id in cookie_values(headers, &self.cookie_name) {
            let session = match self.sessions.lookup(id, now, touch) {
                Lookup::Live(session) => session,
                Lookup::Unknown => {
                    presented.stale_cookie = true;
                    continue;
                }
                Lookup::Expired(expiry) => {
                    tracing::info!(target: "authgate::security", event = "session_ended", reason = expiry.as_str(), "session ended");
                    presented.stale_cookie = true;
                    continue;
                }
            };
            let users = self.users.load();
            let reason = match users.get_by_key(&session.user) {
                None => Some("user removed"),
                Some(user) if user.locked => Some("user locked"),
                Some(user) if user.password_fingerprint != session.password_fingerprint => {
                    Some("password changed")
                }
                Some(user) => {
                    presented.signed_in = Some(SignedIn {
                        user: user.clone(),
                        session,
                        id: id.to_owned(),
                    });
                    presented.stale_cookie = false;
                    return presented;
                }
            };
            if let Some(reason) = reason {
                self.sessions.end(&session.key);
                tracing::info!(target: "authgate::security", event = "session_ended", user = %session.user, reason, "session ended by revocation");
                presented.stale_cookie = true;
            }
        }
        presented
    }

    /// `Set-Cookie` that removes the session cookie from the browser.
    pub fn clear_cookie(&self) -> HeaderValue {
        self.clear_cookie.clone()
    }

    /// Answers a request under `/.gateway/`.
    pub async fn endpoint(
        &self,
        path: &str,
        request: Request<Incoming>,
        peer: IpAddr,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        let method = request.method().clone();
        let is_get = method == Method::GET || method == Method::HEAD;
        match path {
            "/.gateway/login" if is_get => {
                Ok(self.login_page(request.headers(), request.uri().query()))
            }
            "/.gateway/login" if method == Method::POST => {
                self.login_submit(request, peer, host, logged_user).await
            }
            "/.gateway/logout" if is_get => {
                let presented = self.authenticate(request.headers(), session::now_ms(), false);
                Ok(match &presented.signed_in {
                    Some(s) => {
                        *logged_user = Some(s.user.name.clone());
                        pages::logout(Some((&s.user.name, &s.csrf_token())))
                    }
                    None => pages::logout(None),
                })
            }
            "/.gateway/logout" if method == Method::POST => {
                self.logout_submit(request, host, logged_user).await
            }
            "/.gateway/whoami" if is_get => Ok(self.whoami(request.headers(), logged_user)),
            "/.gateway/password" if is_get || method == Method::POST => {
                self.password(request, peer, host, logged_user).await
            }
            "/.gateway/login" | "/.gateway/logout" | "/.gateway/whoami" | "/.gateway/password" => {
                Err(GatewayError::MethodNotAllowed)
            }
            "/.gateway/admin" | "/.gateway/admin/" => {
                admin::page(self, request, host, logged_user).await
            }
            p if p.starts_with("/.gateway/admin/api/") || p == "/.gateway/admin/api" => {
                admin::api(
                    self,
                    &p["/.gateway/admin/api".len()..],
                    request,
                    logged_user,
                )
                .await
            }
            _ => Err(GatewayError::NotFound),
        }
    }

    fn login_page(&self, headers: &HeaderMap, query: Option<&str>) -> Response<Body> {
        let next = query
            .into_iter()
            .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.into_owned());
        let next = safe_next(next.as_deref());
        let (token, fresh) = match self.login_token(headers) {
            Some(token) => (token.to_owned(), false),
            None => (csrf::new_login_token(), true),
        };
        let mut response = pages::login(StatusCode::OK, &token, &next, None);
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
        request: Request<Incoming>,
        peer: IpAddr,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        if !csrf::same_origin(request.headers(), host) {
            return Err(GatewayError::CsrfRejected);
        }
        let token = self.login_token(request.headers()).map(str::to_owned);
        let user_agent = user_agent_of(request.headers());
        let earlier = self.authenticate(request.headers(), session::now_ms(), false);
        let form = read_form(request).await?;
        let token = match token {
            Some(t) if csrf::matches(&t, form.get("csrf")) => t,
            _ => return Err(GatewayError::CsrfRejected),
        };
        let name = form.get("username");
        let next = safe_next(
            form.fields
                .iter()
                .find(|(k, _)| k == "next")
                .map(|(_, v)| v.as_str()),
        );
        let key = canonical(name);

        let now = session::now_ms();
        if let Verdict::Throttled { retry_after_secs } = self.throttle.check(&key, peer, now) {
            tracing::warn!(target: "authgate::security", event = "login_throttled", user = %truncate(&key), ip = %peer, "login throttled");
            return Err(GatewayError::Throttled { retry_after_secs });
        }
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
            _ => {
                self.throttle.record_failure(&key, peer, session::now_ms());
                tracing::warn!(target: "authgate::security", event = "login_failed", user = %truncate(&key), ip = %peer, "login failed");
                return Ok(pages::login(
                    StatusCode::UNAUTHORIZED,
                    &token,
                    &next,
                    Some(GENERIC_FAILURE),
                ));
            }
        };
        self.throttle.record_success(&key);
        if let Some(old) = earlier.signed_in {
            self.sessions.end(&old.session.key);
        }
        let id = self.sessions.create(
            &user.key,
            user.password_fingerprint,
            peer,
            &user_agent,
            session::now_ms(),
        );
        *logged_user = Some(user.name.clone());
        tracing::info!(target: "authgate::security", event = "login_ok", user = %user.name, ip = %peer, "login ok");
        let mut response = own_response(
            StatusCode::SEE_OTHER,
            "text/plain; charset=utf-8",
            "signed in\n",
        );
        let headers = response.headers_mut();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_str(&next).expect("safe_next is ASCII"),
        );
        headers.insert(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!(
                "{}={id}; Path=/; Secure; HttpOnly; SameSite=Lax",
                self.cookie_name
            ))
            .expect("name and ID are cookie-safe"),
        );
        Ok(response)
    }

    async fn logout_submit(
        &self,
        request: Request<Incoming>,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        if !csrf::same_origin(request.headers(), host) {
            return Err(GatewayError::CsrfRejected);
        }
        let presented = self.authenticate(request.headers(), session::now_ms(), false);
        let form = read_form(request).await?;
        if let Some(signed_in) = &presented.signed_in {
            if !csrf::matches(&signed_in.csrf_token(), form.get("csrf")) {
                return Err(GatewayError::CsrfRejected);
            }
            self.sessions.end(&signed_in.session.key);
            *logged_user = Some(signed_in.user.name.clone());
            tracing::info!(target: "authgate::security", event = "logout", user = %signed_in.user.name, "logout");
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
        request: Request<Incoming>,
        peer: IpAddr,
        host: Option<&HeaderValue>,
        logged_user: &mut Option<Arc<str>>,
    ) -> Result<Response<Body>, GatewayError> {
        let presented = self.authenticate(request.headers(), session::now_ms(), true);
        let Some(signed_in) = presented.signed_in else {
            let navigating =
                request.method() == Method::GET && crate::response::wants_html(request.headers());
            return Err(GatewayError::Unauthenticated {
                next: "/.gateway/password".into(),
                navigating,
            });
        };
        *logged_user = Some(signed_in.user.name.clone());
        let csrf = signed_in.csrf_token();
        let page = |status, message: Option<(bool, &str)>| {
            pages::password(status, &signed_in.user.name, &csrf, message)
        };
        if request.method() != Method::POST {
            return Ok(page(StatusCode::OK, None));
        }
        if !csrf::same_origin(request.headers(), host) {
            return Err(GatewayError::CsrfRejected);
        }
        let user_agent = user_agent_of(request.headers());
        let form = read_form(request).await?;
        if !csrf::matches(&csrf, form.get("csrf")) {
            return Err(GatewayError::CsrfRejected);
        }
        let user = &signed_in.user;
        let now = session::now_ms();
        if let Verdict::Throttled { retry_after_secs } = self.throttle.check(&user.key, peer, now) {
            tracing::warn!(target: "authgate::security", event = "password_change_throttled", user = %user.name, ip = %peer, "password change throttled");
            return Err(GatewayError::Throttled { retry_after_secs });
        }
        let matched = self
            .verifier
            .verify(Some(&user.password_hash), form.get("current"))
            .await
            .map_err(|Busy| GatewayError::LoginBusy)?;
        if !matched {
            self.throttle
                .record_failure(&user.key, peer, session::now_ms());
            tracing::warn!(target: "authgate::security", event = "password_change_failed", user = %user.name, ip = %peer, "password change failed: wrong current password");
            return Ok(page(
                StatusCode::UNAUTHORIZED,
                Some((false, "The current password is wrong.")),
            ));
        }
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
        let id = self.sessions.create(
            &updated.key,
            updated.password_fingerprint,
            peer,
            &user_agent,
            session::now_ms(),
        );
        let mut response = pages::password(
            StatusCode::OK,
            &updated.name,
            &csrf::session_token(&id),
            Some((
                true,
                "Your password has been changed. Your other sessions have ended.",
            )),
        );
        self.set_session_cookie(&mut response, &id);
        Ok(response)
    }

    fn whoami(&self, headers: &HeaderMap, logged_user: &mut Option<Arc<str>>) -> Response<Body> {
        let presented = self.authenticate(headers, session::now_ms(), false);
        let Some(signed_in) = presented.signed_in else {
            return own_response(
                StatusCode::UNAUTHORIZED,
                "application/json; charset=utf-8",
                r#"{"error":"unauthenticated"}"#,
            );
        };
        *logged_user = Some(signed_in.user.name.clone());
        let (absolute, idle) = self.sessions.deadlines(&signed_in.session);
        let body = serde_json::json!({
            "user": &*signed_in.user.name,
            "roles": signed_in.user.roles,
            "expires_at": rfc3339(absolute),
            "idle_expires_at": rfc3339(idle),
            "csrf": signed_in.csrf_token(),
        });
        own_response(
            StatusCode::OK,
            "application/json; charset=utf-8",
            body.to_string(),
        )
    }
}

fn user_agent_of(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

pub(crate) fn rfc3339(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Usernames in logs are cut short: a flood of huge names must not flood the log.
fn truncate(name: &str) -> &str {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Values of every cookie called `name`, across all `Cookie` headers.
pub fn cookie_values<'h: 'n, 'n>(
    headers: &'h HeaderMap,
    name: &'n str,
) -> impl Iterator<Item = &'h str> + 'n {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

/// The first value of each field of a small urlencoded form.
struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

async fn read_form(request: Request<Incoming>) -> Result<Form, GatewayError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(GatewayError::BadForm);
    }
    let body: Bytes = match Limited::new(request.into_body(), MAX_FORM_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(GatewayError::BodyTooLarge),
        Err(_) => return Err(GatewayError::BadForm),
    };
    Ok(Form {
        fields: form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    })
}
