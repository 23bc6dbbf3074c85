//! Who is asking: the session cookie on every request, and the gateway's
//! own sign-in endpoints under `/.gateway/` (SPEC §3).

mod audit;
mod bearer;
mod changes;
pub mod csrf;
pub mod forms;
mod hold_off;
pub mod ldap;
mod lifecycle;
pub mod next;
pub mod oidc;
mod passkey;
mod password;
mod reauth;
pub mod tokens;
mod totp;

pub use audit::{
    Audit, AuditEntry, SignInNoise, SignInSummary, AUDIT_KEPT, SIGN_IN_SUMMARIES_KEPT,
};

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response};

use crate::config::Config;
use crate::response::{Body, GatewayError};
use crate::session::{self, LiveSession, Lookup};
use crate::store::counters::{Attempt, Limits, Refused};
use crate::store::stats::Ended;
use crate::store::users::UsersListener;
use crate::store::{Store, StoreError, Unavailable};
use crate::users::password::Verifier;
use crate::users::{User, Users};
pub use next::safe_next;

/// Largest sign-in form accepted; anything bigger is refused before hashing.
pub const MAX_FORM_BYTES: usize = 4096;
const GENERIC_FAILURE: &str = "Invalid username or password.";

/// A signed-in person, as every request, page and forward-auth answer
/// sees them: the user in force (name, roles, the identity headers made
/// once for them), the session, and how and when they proved who they are
/// ([`Proof`]).
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: Arc<User>,
    pub session: LiveSession,
    /// Not a session but an API token (then `session` is made from it).
    pub token: Option<Arc<tokens::TokenUse>>,
}

/// How and when a signed-in person last proved who they are. Today every
/// proof begins with the password; a second factor may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// When (ms): the sign-in, or the last fresh sign-in (`/.gateway/reauth`).
    pub at_ms: u64,
    /// A second factor (a TOTP code) was part of it.
    pub second_factor: bool,
}

impl SignedIn {
    pub fn proof(&self) -> Proof {
        Proof {
            at_ms: self.session.auth_ms,
            second_factor: self.session.mfa,
        }
    }

    /// Who the policy judges, as of `now` (ms).
    pub fn principal(&self, now: u64) -> crate::policy::Principal<'_> {
        let proof = self.proof();
        crate::policy::Principal {
            user: &self.user.key,
            roles: &self.user.roles,
            mfa: proof.second_factor,
            auth_age_ms: now.saturating_sub(proof.at_ms),
            provider: self.user.provider.as_deref().unwrap_or("local"),
            token: self.token.as_ref().map(|t| t.form),
        }
    }

    /// The `[[oidc]]` provider that keeps this person's password and
    /// second factor, where they sign in again; `None` when the gateway
    /// checks both itself (the users file's users, and a directory's,
    /// whose password it asks the directory about).
    pub fn proved_elsewhere(&self) -> Option<&Arc<str>> {
        self.user
            .provider
            .as_ref()
            .filter(|p| &***p != crate::config::Ldap::NAME)
    }

    /// Whether the user holds the admin role of `config`.
    pub fn is_admin(&self, config: &Config) -> bool {
        self.user.roles.contains(&config.admin.role)
    }

    /// Who a page is shown to, for its header.
    pub fn viewer(&self, config: &Config) -> crate::pages::Viewer<'_> {
        crate::pages::Viewer {
            name: &self.user.name,
            admin: self.is_admin(config),
        }
    }

    /// The signed identity assertion for this session and `audience`.
    pub fn assertion(
        &self,
        signer: &crate::assertion::Signer,
        settings: &crate::config::Assertion,
        audience: &str,
    ) -> HeaderValue {
        signer.assertion(&crate::assertion::Claims {
            issuer: &settings.issuer,
            audience: settings.audience.as_deref().unwrap_or(audience),
            user: &self.user.name,
            roles: &self.user.roles,
            session: &self.session.key,
            lifetime: settings.lifetime,
        })
    }
}

/// One call to the gateway's own pages: the config it runs under, the
/// client (behind a trusted proxy, the one it names), the host it named,
/// and the user its access line names once that is known.
pub struct Call<'a> {
    pub config: &'a Config,
    pub peer: IpAddr,
    pub host: Option<&'a HeaderValue>,
    pub logged_user: Option<Arc<str>>,
}

/// What the request's cookies amount to.
#[derive(Debug, Default)]
pub struct Presented {
    pub signed_in: Option<SignedIn>,
    /// A session cookie came that no longer leads anywhere: clear it.
    pub stale_cookie: bool,
    /// A cookie could not be checked because the store is unavailable:
    /// a route that needs a session gets 503, and the cookie stays.
    pub store_unavailable: bool,
    /// An API token came that lets nobody in: a route that needs a
    /// session gets 401 `invalid_token` (or with `Some`, the client is
    /// throttled for that many seconds).
    pub token_refused: Option<Option<u64>>,
}

pub struct Auth {
    users: ArcSwap<Users>,
    /// Sessions, where users come from, sign-in counters and records.
    pub store: Store,
    verifier: Verifier,
    cookie_name: String,
    login_cookie_name: String,
    /// The cookie of a sign-in waiting for its second factor.
    pending_cookie_name: String,
    /// `[session] cookie_domain`: the session cookie is sent to its subdomains.
    cookie_domain: Option<String>,
    clear_cookie: HeaderValue,
    /// Signs the session forms' CSRF tokens.
    csrf: csrf::CsrfSecret,
    /// The last security events, for the admin page.
    audit: Audit,
    metrics: Arc<crate::metrics::Metrics>,
    /// The `[[oidc]]` providers as reached so far.
    providers: oidc::Providers,
    /// The names of the `[[oidc]]` providers (and `ldap`) in force: a
    /// session from one that a reload removed ends.
    provider_names: ArcSwap<Vec<String>>,
    /// `[ldap]` as reached so far.
    pub directories: ldap::Directories,
    /// `[tokens]` in force.
    token_settings: ArcSwap<crate::config::Tokens>,
    /// Each client's wrong API tokens this minute.
    token_failures: tokens::TokenFailures,
    /// `[[bearer]]` in force.
    bearers: ArcSwap<Vec<Arc<crate::config::Bearer>>>,
    /// Provider tokens that passed, and key refreshes.
    bearer: bearer::BearerState,
}

impl Auth {
    /// Takes the users out of `config` (they are swapped in place on
    /// reload) and opens the session store.
    pub async fn new(
        config: &mut Config,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Auth, StoreError> {
        let from_file = std::mem::take(&mut config.users);
        let (store, users) = Store::open(config, from_file, metrics.store.clone()).await?;
        let csrf = csrf::CsrfSecret::new(store.sessions.secret("csrf").await?);
        let directories = ldap::Directories::new(metrics.directory.clone());
        directories.set(config.ldap.as_ref());
        let verifier = Verifier::with_threads(config.login.hashing_threads);
        verifier.match_strongest(users.iter().map(|u| &*u.password_hash));
        let cookie_name = config.session.cookie_name.clone();
        let domain = config
            .session
            .cookie_domain
            .as_ref()
            .map_or(String::new(), |d| format!("; Domain={d}"));
        let clear_cookie = HeaderValue::from_str(&format!(
            "{cookie_name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0{domain}"
        ))
        .expect("a cookie name is a token");
        Ok(Auth {
            users: ArcSwap::from_pointee(users),
            store,
            verifier,
            login_cookie_name: format!("{cookie_name}-login"),
            pending_cookie_name: format!("{cookie_name}-mfa"),
            cookie_domain: config.session.cookie_domain.clone(),
            cookie_name,
            clear_cookie,
            csrf,
            audit: Audit::default(),
            metrics,
            providers: oidc::Providers::default(),
            provider_names: ArcSwap::from_pointee(provider_names(config)),
            directories,
            token_settings: ArcSwap::from_pointee(config.tokens.clone()),
            token_failures: Default::default(),
            bearers: ArcSwap::from_pointee(config.bearer.clone()),
            bearer: Default::default(),
        })
    }

    /// Background work: the session sweeper, the sweep of sign-in
    /// counters and records, and the watch for changes to users. Each ends
    /// when the `Auth` is dropped.
    pub fn start_background(self: &Arc<Self>) {
        self.store.sessions.start_sweeper();
        let listener: std::sync::Weak<dyn UsersListener> = Arc::downgrade(self) as _;
        self.store.users.watch(listener);
        self.store.tokens.start();
        let auth = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(auth) = auth.upgrade() else { break };
                auth.store.sweep(session::now_ms());
                auth.token_failures.sweep(session::now_ms());
                auth.bearer.sweep(session::now_ms());
            }
        });
        self.start_directory_recheck();
    }

    /// Answers the sign-in paths under `/.gateway/`: each way of proving
    /// who one is (a file of this folder) and the session it leads to.
    pub async fn endpoint(
        &self,
        call: &mut Call<'_>,
        path: &str,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let method = request.method().clone();
        let is_get = method == Method::GET || method == Method::HEAD;
        match path {
            "/.gateway/login" if is_get => {
                Ok(self.login_page(call, request.headers(), request.uri().query()))
            }
            "/.gateway/login" if method == Method::POST => self.login_submit(call, request).await,
            "/.gateway/logout" if is_get => Ok(self.logout_page(call, request.headers()).await),
            "/.gateway/logout" if method == Method::POST => self.logout_submit(call, request).await,
            "/.gateway/whoami" if is_get => Ok(self.whoami(call, request.headers()).await),
            "/.gateway/password" if is_get || method == Method::POST => {
                self.password(call, request).await
            }
            "/.gateway/login/code" if is_get || method == Method::POST => {
                self.login_code(call, request).await
            }
            "/.gateway/totp" if is_get || method == Method::POST => {
                self.totp_page(call, request).await
            }
            "/.gateway/passkey.js" if is_get => Ok(passkey::script()),
            "/.gateway/passkeys/options" => self.passkey_register_options(call, request).await,
            "/.gateway/passkeys" => self.passkeys(call, request).await,
            "/.gateway/login/passkey/options" => self.login_passkey_options(call, request).await,
            "/.gateway/login/passkey" if is_get || method == Method::POST => {
                self.login_passkey(call, request).await
            }
            "/.gateway/reauth/passkey/options" => self.reauth_passkey(call, request, true).await,
            "/.gateway/reauth/passkey" => self.reauth_passkey(call, request, false).await,
            "/.gateway/reauth" if is_get || method == Method::POST => {
                self.reauth(call, request).await
            }
            _ if path.starts_with("/.gateway/oidc/") => {
                self.oidc_endpoint(call, &path["/.gateway/oidc/".len()..], request)
                    .await
            }
            "/.gateway/login"
            | "/.gateway/logout"
            | "/.gateway/whoami"
            | "/.gateway/password"
            | "/.gateway/login/code"
            | "/.gateway/totp"
            | "/.gateway/passkey.js"
            | "/.gateway/login/passkey"
            | "/.gateway/reauth" => Err(GatewayError::MethodNotAllowed),
            _ => Err(GatewayError::NotFound),
        }
    }

    /// `[tokens]` in force.
    pub fn token_settings(&self) -> Arc<crate::config::Tokens> {
        self.token_settings.load_full()
    }

    /// Puts the `[[oidc]]` providers and `[ldap]` of a reloaded config in force.
    pub fn set_providers(&self, config: &Config) {
        self.provider_names.store(Arc::new(provider_names(config)));
        self.token_settings.store(Arc::new(config.tokens.clone()));
        self.bearers.store(Arc::new(config.bearer.clone()));
        self.directories.set(config.ldap.as_ref());
    }

    /// Hashes a new password on the hashing threads (`Err` when they are
    /// too busy).
    pub async fn hash_password(
        &self,
        password: &str,
    ) -> Result<String, crate::users::password::Busy> {
        self.verifier.hash(password).await
    }

    /// argon2 (m KiB, t passes, p lanes) that an unknown user's sign-in
    /// costs: the strongest in the users file in force.
    pub fn unknown_user_cost(&self) -> (u32, u32, u32) {
        let params = self.verifier.dummy_params();
        (params.m_cost(), params.t_cost(), params.p_cost())
    }

    /// The last security events, newest first.
    /// The CSRF token of the forms of the session (or pending sign-in)
    /// filed under `key`.
    pub fn csrf_token(&self, key: &crate::session::Key) -> String {
        self.csrf.session_token(key)
    }

    /// The admin page's memory of security events.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    pub fn recent_events(&self) -> Vec<AuditEntry> {
        self.audit.recent()
    }

    /// Failed and throttled sign-ins, summed per client and minute.
    pub fn sign_in_summaries(&self) -> Vec<SignInSummary> {
        self.audit.sign_in_summaries()
    }

    pub fn users(&self) -> arc_swap::Guard<Arc<Users>> {
        self.users.load()
    }

    /// Ends every session of a user (canonical name) without locking
    /// them; returns how many once that is durable.
    pub async fn revoke_sessions(&self, key: &Arc<str>, actor: &str) -> Result<usize, Unavailable> {
        let ended = self.store.sessions.end_all_for_user(key).await;
        self.store
            .sessions
            .stats()
            .ended(Ended::Revoked, *ended.as_ref().unwrap_or(&0));
        crate::security_event!(warn, event = "sessions_revoked", actor, user = %key, sessions_ended = ended.unwrap_or(0), durable = ended.is_ok(), "sessions revoked");
        self.audit.remember(
            "sessions_revoked",
            actor,
            key,
            format!("{} session(s) ended", ended.as_ref().unwrap_or(&0)),
        );
        ended
    }

    /// Takes a sign-in attempt from the throttle's allowances under the
    /// limits of `login` (the config the request runs under).
    async fn reserve(
        &self,
        login: &crate::config::Login,
        account: &str,
        ip: std::net::IpAddr,
    ) -> Result<Attempt<'_>, Refused> {
        let limits = Limits {
            max_failures: login.max_failures,
            window: login.failure_window,
        };
        self.store.counters.reserve(limits, account, ip).await
    }

    /// Names of the gateway's own cookies, which the upstream never sees
    /// (the pre-login cookie of a provider's sign-in is sent only to
    /// `/.gateway/oidc/`).
    pub fn own_cookies(&self) -> [&str; 3] {
        [
            &self.cookie_name,
            &self.login_cookie_name,
            &self.pending_cookie_name,
        ]
    }

    /// Finds the request's session, checking it the way SPEC §5 asks: it
    /// exists, neither deadline has passed, the user still exists and is
    /// not locked, and the password has not changed since it began. `touch`
    /// moves the idle deadline on.
    pub async fn authenticate(&self, headers: &HeaderMap, now: u64, touch: bool) -> Presented {
        let mut presented = Presented::default();
        for id in cookie_values(headers, &self.cookie_name) {
            let session = match self.store.sessions.lookup(id, now, touch).await {
                Err(Unavailable) => {
                    presented.store_unavailable = true;
                    continue;
                }
                Ok(Lookup::Live(session)) => session,
                Ok(Lookup::Unknown) => {
                    presented.stale_cookie = true;
                    continue;
                }
                Ok(Lookup::Expired(expiry)) => {
                    crate::security_event!(
                        info,
                        event = "session_ended",
                        reason = expiry.as_str(),
                        "session ended"
                    );
                    presented.stale_cookie = true;
                    continue;
                }
            };
            match self.check(session) {
                Ok(signed_in) => {
                    presented.signed_in = Some(signed_in);
                    presented.stale_cookie = false;
                    presented.store_unavailable = false;
                    return presented;
                }
                Err(()) => presented.stale_cookie = true,
            }
        }
        presented
    }

    /// Checks a live session against the user record in force: the user
    /// still exists, is not locked, and has not changed password or had
    /// every session ended since it began. A session that fails is ended.
    fn check(&self, session: LiveSession) -> Result<SignedIn, ()> {
        let users = self.users.load();
        let provider_gone = session.vouched.as_ref().is_some_and(|v| {
            !self
                .provider_names
                .load()
                .iter()
                .any(|name| name == v.provider())
        });
        let reason = match (&session.vouched, users.get_by_key(&session.user)) {
            (Some(_), _) if provider_gone => "its provider was removed from the config",
            // A provider vouched for them: what it said stands until the
            // session ends, unless a local user has taken the name since.
            (Some(vouched), None) => {
                return Ok(SignedIn {
                    user: vouched.user.clone(),
                    session,
                    token: None,
                })
            }
            (Some(vouched), Some(entry))
                if entry.provider.is_none() && !self.directory_wins(vouched) =>
            {
                "a local user has the name"
            }
            (Some(_), Some(entry)) if entry.locked => "user locked",
            (Some(vouched), Some(_)) => {
                return Ok(SignedIn {
                    user: vouched.user.clone(),
                    session,
                    token: None,
                })
            }
            (None, found) => match found {
                None => "user removed",
                Some(user) if user.locked => "user locked",
                // Older than the user's last revocation in a shared store.
                Some(user) if session.generation < user.generation => "sessions ended",
                // A session made after a change (a new password) that this
                // replica has yet to load, within half a second: its record
                // of the user is the stale one, not the session.
                Some(user)
                    if session.generation == user.generation
                        && user.password_fingerprint != session.password_fingerprint =>
                {
                    "password changed"
                }
                Some(user) => {
                    return Ok(SignedIn {
                        user: user.clone(),
                        session,
                        token: None,
                    })
                }
            },
        };
        self.store.sessions.end_now(&session.key);
        self.store.sessions.stats().ended(Ended::UserChange, 1);
        crate::security_event!(info, event = "session_ended", user = %session.user, reason, "session ended by revocation");
        Err(())
    }

    /// The session under `key` and its user, if it is still live and
    /// passes [`Self::check`]; for connections that outlive their request
    /// (WebSockets). `touch` moves the idle deadline on. `Err` when the
    /// store cannot say.
    pub async fn still_signed_in(
        &self,
        key: &session::Key,
        touch: bool,
    ) -> Result<Option<SignedIn>, Unavailable> {
        match self
            .store
            .sessions
            .lookup_key(key, session::now_ms(), touch)
            .await?
        {
            Lookup::Live(session) => Ok(self.check(session).ok()),
            Lookup::Unknown | Lookup::Expired(_) => Ok(None),
        }
    }

    /// The request's signed-in user, or the login answer (a redirect back
    /// to `next` for a browser) for one of the gateway's own pages.
    pub(crate) async fn require_session(
        &self,
        headers: &HeaderMap,
        method: &http::Method,
        next: &str,
    ) -> Result<SignedIn, crate::response::GatewayError> {
        let presented = self.authenticate(headers, session::now_ms(), true).await;
        match presented.signed_in {
            Some(signed_in) => Ok(signed_in),
            None if presented.store_unavailable => {
                Err(crate::response::GatewayError::StoreUnavailable)
            }
            None => Err(crate::response::GatewayError::Unauthenticated {
                next: next.to_owned(),
                navigating: method == http::Method::GET && crate::response::wants_html(headers),
            }),
        }
    }

    /// Where the browser goes after a sign-in: a local path, or with a
    /// cookie domain an `https://` URL on it.
    pub(crate) fn next_of(&self, raw: Option<&str>) -> String {
        match raw.and_then(|r| next::absolute_on_domain(r, self.cookie_domain.as_deref())) {
            Some(url) => url.to_owned(),
            None => safe_next(raw),
        }
    }

    /// Whether the login page may send the browser to this absolute URL
    /// after signing in (only on the cookie domain, when one is set).
    pub fn accepts_absolute_next(&self, url: &str) -> bool {
        next::absolute_on_domain(url, self.cookie_domain.as_deref()).is_some()
    }

    /// `Set-Cookie` that removes the session cookie from the browser.
    pub fn clear_cookie(&self) -> HeaderValue {
        self.clear_cookie.clone()
    }
}

impl UsersListener for Auth {
    fn users(&self) -> Arc<Users> {
        self.users.load_full()
    }

    fn replace(&self, users: Users, actor: &str) {
        self.replace_users(users, actor);
    }

    fn file_problem(&self) {
        self.metrics.record_users_file_problem();
    }

    fn store_health(&self, up: bool, round_trips: u64) {
        self.metrics.set_store_up(up);
        self.metrics.set_store_round_trips(round_trips);
    }
}

/// The sign-in methods besides the users file that sessions may name.
fn provider_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config.oidc.iter().map(|p| p.name.clone()).collect();
    if config.ldap.is_some() {
        names.push(crate::config::Ldap::NAME.to_owned());
    }
    names
}

impl Auth {
    /// A directory session for a name the users file also has stands only
    /// under `[users] order = ["ldap", "local"]`.
    fn directory_wins(&self, vouched: &session::Vouched) -> bool {
        vouched.provider() == crate::config::Ldap::NAME
            && self
                .directories
                .current()
                .is_some_and(|d| d.settings.order == Some(crate::config::NameOrder::DirectoryFirst))
    }
}

/// Values of every cookie called `name`, across all `Cookie` headers.
/// Read pair by pair as bytes: another app's cookie with non-ASCII bytes
/// in the same header must not hide the gateway's.
pub fn cookie_values<'h: 'n, 'n>(
    headers: &'h HeaderMap,
    name: &'n str,
) -> impl Iterator<Item = &'h str> + 'n {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(move |pair| {
            let (k, v) = std::str::from_utf8(pair).ok()?.split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}
