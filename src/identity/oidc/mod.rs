//! Signing in through an OpenID Connect provider (`[[oidc]]`): the
//! authorization code flow with PKCE (S256), `state` and `nonce`, ending in
//! an ordinary session marked with its provider; and the provider's
//! back-channel logout.
//!
//! - `GET /.gateway/oidc/{name}/start?next=...` keeps a pre-login record
//!   (provider, nonce, PKCE verifier, `next`, and the SHA-256 of a random
//!   value in a cookie of this browser) under the SHA-256 of a random
//!   `state` for [`PRE_LOGIN_TTL`], and sends the browser to the provider.
//! - `GET /.gateway/oidc/{name}/callback` takes that record (once: a
//!   replayed `state` finds nothing), checks the cookie, trades the code
//!   for tokens, checks the ID token ([`token`]) and the provider's rules
//!   for who may come in ([`claims`]), and begins the session.
//! - `POST /.gateway/oidc/{name}/backchannel-logout` ends the sessions a
//!   verified logout token names.

mod claims;
mod logout;
pub mod remote;
pub use remote::probe;
pub mod token;

use std::sync::Arc;

use dashmap::DashMap;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use openidconnect::core::CoreJsonWebKeySet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::forms::{query_param, see_other, user_agent_of};
use super::{cookie_values, Auth, Call};
use crate::config::OidcProvider;
use crate::metrics::Login;
use crate::pages::sign_in as pages;
use crate::response::{Body, GatewayError};
use crate::session::{self, Vouched};
use crate::store::counters::Refused;
use remote::{Discovered, Remote, RemoteError};
use token::Refusal;

/// How long a started sign-in waits for the provider's answer.
pub const PRE_LOGIN_TTL_MS: u64 = 10 * 60 * 1000;
/// Seconds a provider's `auth_time` may be before the start of a sign-in
/// that asked it to sign the person in again (clock skew).
const FRESH_SKEW: i64 = 30;
/// How old an ID token's `iat` may be at the callback, in seconds.
const ID_TOKEN_MAX_AGE: i64 = 10 * 60;
/// How old a logout token's `iat` may be, in seconds; its `jti` is
/// remembered this long, so a replay within it is refused and one after
/// it is too old.
const LOGOUT_TOKEN_MAX_AGE: i64 = 5 * 60;
const RECORD_KIND: &str = "oidc";
const JTI_KIND: &str = "oidc-jti";
/// The provider's subject -> the username it signed in as, for
/// back-channel logouts that name only `sub`.
const SUBJECT_KIND: &str = "oidc-sub";

/// Sign-ins one client may start per minute. Each keeps a pre-login
/// record for [`PRE_LOGIN_TTL_MS`]: this bounds what a storm of starts can
/// make the store hold.
pub const STARTS_PER_MINUTE: u32 = 30;
const MINUTE_MS: u64 = 60_000;
/// Clients tracked before the ones idle for a minute are dropped.
const TRACKED_CLIENTS: usize = 10_000;

/// The providers as reached so far (discovery, keys, connections), by
/// name; a reload that changes an entry starts it afresh.
#[derive(Default)]
pub struct Providers {
    remotes: DashMap<String, Arc<Remote>>,
    /// Per client: sign-ins started in the current minute, and when it began.
    starts: DashMap<std::net::IpAddr, (u32, u64)>,
}

impl Providers {
    /// Counts a start for `client`; `Err(seconds to wait)` past
    /// [`STARTS_PER_MINUTE`].
    fn admit_start(&self, client: std::net::IpAddr, now: u64) -> Result<(), u64> {
        if self.starts.len() > TRACKED_CLIENTS {
            self.starts
                .retain(|_, (_, since)| now.saturating_sub(*since) < MINUTE_MS);
        }
        let mut entry = self.starts.entry(client).or_insert((0, now));
        let (count, since) = &mut *entry;
        if now.saturating_sub(*since) >= MINUTE_MS {
            (*count, *since) = (0, now);
        }
        if *count >= STARTS_PER_MINUTE {
            return Err((*since + MINUTE_MS)
                .saturating_sub(now)
                .div_ceil(1000)
                .max(1));
        }
        *count += 1;
        Ok(())
    }

    pub fn remote(&self, settings: &Arc<OidcProvider>) -> Arc<Remote> {
        if let Some(found) = self.remotes.get(&settings.name) {
            if Arc::ptr_eq(&found.settings, settings) {
                return found.clone();
            }
        }
        let fresh = Arc::new(Remote::new(settings.clone()));
        self.remotes.insert(settings.name.clone(), fresh.clone());
        fresh
    }
}

/// What the gateway remembers of a started sign-in.
#[derive(Serialize, Deserialize)]
struct PreLogin {
    provider: String,
    nonce: String,
    verifier: String,
    next: String,
    redirect_uri: String,
    /// Hex SHA-256 of this browser's pre-login cookie.
    browser: String,
    /// A route's `mfa = true` sent the user: the sign-in must come back
    /// with a second factor (else a redirect loop).
    mfa: bool,
    /// A route's `max_auth_age` sent the user: the provider must have
    /// signed them in after this (seconds since the epoch).
    fresh_after: Option<i64>,
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl Auth {
    /// The `/.gateway/oidc/{name}/...` endpoints.
    pub(super) async fn oidc_endpoint(
        &self,
        call: &mut Call<'_>,
        rest: &str,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let (name, action) = rest.split_once('/').ok_or(GatewayError::NotFound)?;
        let settings = call
            .config
            .oidc
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or(GatewayError::NotFound)?;
        let method = request.method().clone();
        let is_get = method == Method::GET || method == Method::HEAD;
        match action {
            "start" if is_get => self.oidc_start(call, &settings, &request).await,
            "callback" if is_get => self.oidc_callback(call, &settings, &request).await,
            "backchannel-logout" if method == Method::POST => {
                self.backchannel_logout(&settings, request).await
            }
            "start" | "callback" | "backchannel-logout" => Err(GatewayError::MethodNotAllowed),
            _ => Err(GatewayError::NotFound),
        }
    }

    fn pre_login_cookie(&self) -> String {
        format!("{}-oidc", self.cookie_name)
    }

    /// Sends the browser to the provider. `fresh=1` asks the provider to
    /// have the person sign in again (`prompt=login`, `max_age=0`), for a
    /// route's `max_auth_age`; `mfa=1` sends the provider's `acr_values`.
    async fn oidc_start(
        &self,
        call: &mut Call<'_>,
        settings: &Arc<OidcProvider>,
        request: &crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let query = request.uri().query();
        if let Err(retry_after_secs) = self.providers.admit_start(call.peer, session::now_ms()) {
            self.metrics.record_login(Login::Throttled);
            return Err(GatewayError::Throttled { retry_after_secs });
        }
        let remote = self.providers.remote(settings);
        let discovered = match remote.discovered().await {
            Ok(d) => d,
            Err(e) => return Ok(unreachable_page(settings, &e)),
        };
        let redirect_uri = match (
            &settings.redirect_uri,
            call.host.and_then(|h| h.to_str().ok()),
        ) {
            (Some(uri), _) => uri.clone(),
            (None, Some(host)) => {
                format!("https://{host}/.gateway/oidc/{}/callback", settings.name)
            }
            (None, None) => return Err(GatewayError::NotFound),
        };
        let state = session::new_id();
        let nonce = session::new_id();
        let browser = session::new_id();
        let (challenge, verifier) = openidconnect::PkceCodeChallenge::new_random_sha256();
        let record = PreLogin {
            provider: settings.name.clone(),
            nonce: nonce.clone(),
            verifier: verifier.secret().clone(),
            next: self.next_of(query_param(query, "next").as_deref()),
            redirect_uri: redirect_uri.clone(),
            browser: crate::hex(&sha256(&browser)),
            mfa: query_param(query, "mfa").as_deref() == Some("1"),
            fresh_after: (query_param(query, "fresh").as_deref() == Some("1"))
                .then(|| (session::now_ms() / 1000) as i64 - FRESH_SKEW),
        };
        self.store
            .records
            .put(
                RECORD_KIND,
                &sha256(&state),
                serde_json::to_string(&record).expect("strings serialize"),
                PRE_LOGIN_TTL_MS,
            )
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        let mut url = url_with_query(&discovered.authorization_endpoint);
        {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("response_type", "code")
                .append_pair("client_id", &settings.client_id)
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("scope", &settings.scopes.join(" "))
                .append_pair("state", &state)
                .append_pair("nonce", &nonce)
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", "S256");
            if query_param(query, "fresh").as_deref() == Some("1") {
                q.append_pair("prompt", "login").append_pair("max_age", "0");
            }
            if let (Some("1"), Some(acr)) =
                (query_param(query, "mfa").as_deref(), &settings.acr_values)
            {
                q.append_pair("acr_values", acr);
            }
            url.push_str(&q.finish());
        }
        let mut response = see_other(&url);
        response.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_str(&format!(
                "{}={browser}; Path=/.gateway/oidc/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
                self.pre_login_cookie(),
                PRE_LOGIN_TTL_MS / 1000
            ))
            .expect("name and token are cookie-safe"),
        );
        Ok(response)
    }

    /// The provider's answer. Every refusal is a page that says what
    /// failed; failures count against the client like wrong passwords.
    async fn oidc_callback(
        &self,
        call: &mut Call<'_>,
        settings: &Arc<OidcProvider>,
        request: &crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let peer = call.peer;
        let attempt = match self
            .reserve(
                &call.config.login,
                &format!("oidc:{}@{peer}", settings.name),
                peer,
            )
            .await
        {
            Ok(attempt) => attempt,
            Err(Refused::Unavailable) => return Err(GatewayError::StoreUnavailable),
            Err(Refused::Throttled(t)) => {
                self.metrics.record_login(Login::Throttled);
                return Err(GatewayError::Throttled {
                    retry_after_secs: t.retry_after_secs,
                });
            }
        };
        match self.finish_sign_in(call, settings, request).await {
            Ok(response) => {
                attempt.succeeded();
                Ok(response)
            }
            Err(Failure::Refused(status, what, detail)) => {
                attempt.failed();
                self.metrics.record_login(Login::BadCredentials);
                crate::security_event!(warn, event = "login_failed", provider = %settings.name, ip = %peer, reason = what, "sign-in through an identity provider refused");
                self.audit.sign_in_refused(
                    &peer.to_string(),
                    &settings.name,
                    super::SignInNoise::Failed,
                );
                let mut response: Response<Body> =
                    pages::provider_failed(status, &settings.title, what, detail.as_deref()).into();
                response
                    .headers_mut()
                    .append(header::SET_COOKIE, self.clear_pre_login_cookie());
                Ok(response)
            }
            Err(Failure::Gateway(e)) => {
                attempt.given_back();
                Err(e)
            }
            Err(Failure::Down(e)) => {
                attempt.given_back();
                Ok(unreachable_page(settings, &e))
            }
        }
    }

    fn clear_pre_login_cookie(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{}=; Path=/.gateway/oidc/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
            self.pre_login_cookie()
        ))
        .expect("a cookie name is a token")
    }

    async fn finish_sign_in(
        &self,
        call: &mut Call<'_>,
        settings: &Arc<OidcProvider>,
        request: &crate::body::GatewayRequest,
    ) -> Result<Response<Body>, Failure> {
        let query = request.uri().query();
        let refused = |what: &'static str| Failure::Refused(StatusCode::BAD_REQUEST, what, None);
        let state = query_param(query, "state").ok_or(refused(
            "The answer from the sign-in service has no state. Start again from the sign-in page.",
        ))?;
        // The record goes at the first answer that names it, right or wrong:
        // a `state` is good for one try.
        let key = sha256(&state);
        let taken = self
            .store
            .records
            .take(RECORD_KIND, &key)
            .await
            .map_err(|_| Failure::Gateway(GatewayError::StoreUnavailable))?;
        let record: PreLogin = match taken.and_then(|text| serde_json::from_str(&text).ok()) {
            Some(record) => record,
            None => return Err(refused(
                "This sign-in has expired or was already used. Start again from the sign-in page.",
            )),
        };
        let browser = cookie_values(request.headers(), &self.pre_login_cookie()).any(|value| {
            crate::identity::csrf::matches(&record.browser, &crate::hex(&sha256(value)))
        });
        if !browser || record.provider != settings.name {
            return Err(refused("This sign-in was started in another browser (or for another provider). Start again from the sign-in page."));
        }
        if let Some(detail) = provider_error(query) {
            return Err(Failure::Refused(
                StatusCode::FORBIDDEN,
                "The sign-in service did not sign you in.",
                Some(detail),
            ));
        }
        let code = query_param(query, "code")
            .ok_or(refused("The answer from the sign-in service has no code."))?;
        let remote = self.providers.remote(settings);
        let discovered = remote.discovered().await.map_err(Failure::Down)?;
        let id_token = self.exchange(&remote, &discovered, &code, &record).await?;
        let claims = self
            .verified(
                &remote,
                &discovered,
                &id_token,
                Some(&record.nonce),
                ID_TOKEN_MAX_AGE,
            )
            .await?;
        let person = claims::person(settings, &claims)
            .map_err(|what| Failure::Refused(StatusCode::FORBIDDEN, what, None))?;
        if record.mfa && !person.mfa {
            return Err(Failure::Refused(
                StatusCode::FORBIDDEN,
                "This page needs a second factor, and the sign-in service did not say you used one.",
                None,
            ));
        }
        let auth_time = claims.get("auth_time").and_then(serde_json::Value::as_i64);
        if let Some(after) = record.fresh_after {
            if auth_time.is_none_or(|t| t < after) {
                return Err(Failure::Refused(
                    StatusCode::FORBIDDEN,
                    "This page needs a fresh sign-in, and the sign-in service did not sign you in again.",
                    None,
                ));
            }
        }
        match self.users.load().get_by_key(&crate::users::canonical(&person.name)) {
            Some(entry) if entry.provider.is_none() => {
                return Err(Failure::Refused(
                    StatusCode::FORBIDDEN,
                    "Your name at the sign-in service belongs to a user of this gateway's own; ask an administrator.",
                    None,
                ))
            }
            Some(entry) if entry.locked => {
                return Err(Failure::Refused(
                    StatusCode::FORBIDDEN,
                    "An administrator has locked you out of this gateway.",
                    None,
                ))
            }
            _ => {}
        }
        let user =
            crate::users::User::vouched(&person.name, person.roles, settings.name.as_str().into())
                .map_err(|_| {
                    Failure::Refused(
                        StatusCode::FORBIDDEN,
                        "The sign-in service gave a name this gateway cannot use.",
                        None,
                    )
                })?;
        let vouched = Arc::new(Vouched {
            user: Arc::new(user),
            headers: person.headers,
            subject: person.subject.into(),
            sid: person.sid.map(Into::into),
            id_token: id_token.into(),
        });
        // Lets a back-channel logout that names only `sub` list one user's
        // sessions; without it (lost, or a restart of the memory records)
        // that logout looks through every session instead.
        let _ = self
            .store
            .records
            .put(
                SUBJECT_KIND,
                &subject_key(&settings.name, &vouched.subject),
                vouched.user.key.to_string(),
                call.config.session.absolute_timeout.as_millis() as u64,
            )
            .await;
        // A sign-in again (for `max_auth_age`) replaces the session it came from.
        let previous = self
            .authenticate(request.headers(), session::now_ms(), false)
            .await
            .signed_in;
        let id = self
            .begin_session(
                call,
                &vouched.user,
                &user_agent_of(request.headers()),
                person.mfa,
                Some((vouched.clone(), auth_time.map(|t| t.max(0) as u64 * 1000))),
            )
            .await
            .map_err(Failure::Gateway)?;
        if let Some(previous) = previous {
            let _ = self.store.sessions.end(&previous.session.key).await;
        }
        call.logged_user = Some(vouched.user.name.clone());
        // `next` was checked at the start, like the password form's.
        let mut response = see_other(&record.next);
        self.set_session_cookie(&mut response, &id);
        response
            .headers_mut()
            .append(header::SET_COOKIE, self.clear_pre_login_cookie());
        Ok(response)
    }

    /// Trades the code for tokens at the token endpoint; the ID token.
    async fn exchange(
        &self,
        remote: &Remote,
        discovered: &Discovered,
        code: &str,
        record: &PreLogin,
    ) -> Result<String, Failure> {
        let settings = &remote.settings;
        let request = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &record.redirect_uri)
                .append_pair("code_verifier", &record.verifier);
            let mut builder = http::Request::post(&discovered.token_endpoint)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::ACCEPT, "application/json");
            match &settings.client_secret {
                _ if settings.client_key.is_some() => {
                    let key = settings.client_key.as_ref().expect("just checked");
                    let now = session::now_ms() / 1000;
                    // RFC 7523 §3: iss and sub the client, aud the token endpoint.
                    let assertion = key.sign(&serde_json::json!({
                        "iss": settings.client_id,
                        "sub": settings.client_id,
                        "aud": discovered.token_endpoint,
                        "jti": session::new_id(),
                        "iat": now,
                        "exp": now + 60,
                    }));
                    form.append_pair("client_id", &settings.client_id)
                        .append_pair(
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        )
                        .append_pair("client_assertion", &assertion);
                }
                Some(secret) if !discovered.secret_in_form => {
                    // RFC 6749 §2.3.1: both form-encoded, then Basic.
                    use base64::Engine;
                    let enc =
                        |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        enc(&settings.client_id),
                        enc(&secret.0)
                    ));
                    builder = builder.header(header::AUTHORIZATION, format!("Basic {basic}"));
                }
                Some(secret) => {
                    form.append_pair("client_id", &settings.client_id)
                        .append_pair("client_secret", &secret.0);
                }
                None => {
                    form.append_pair("client_id", &settings.client_id);
                }
            }
            builder.body(form.finish().into_bytes()).map_err(|_| {
                Failure::Down(RemoteError::Unusable(
                    "the token endpoint is not a URL".into(),
                ))
            })?
        };
        let response = remote.call(request).await.map_err(Failure::Down)?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            id_token: Option<String>,
            error: Option<String>,
        }
        let answer: Option<TokenAnswer> = serde_json::from_slice(response.body()).ok();
        match answer {
            Some(TokenAnswer { id_token: Some(token), .. }) if response.status().is_success() => Ok(token),
            Some(TokenAnswer { error: Some(error), .. }) => Err(Failure::Refused(
                StatusCode::BAD_REQUEST,
                "The sign-in service would not trade its code for a sign-in (a code is good once, and for a short while).",
                Some(error.chars().take(100).collect()),
            )),
            _ => Err(Failure::Down(RemoteError::Unusable(format!(
                "the token endpoint answered {} without an id_token",
                response.status()
            )))),
        }
    }

    /// Verifies a token's signature (fetching the keys again once, within
    /// the rate limit, when its `kid` is unknown) and its claims.
    async fn verified(
        &self,
        remote: &Remote,
        discovered: &Discovered,
        token: &str,
        nonce: Option<&str>,
        max_age: i64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
        let refused = |why: Refusal| {
            tracing::warn!(provider = %remote.settings.name, reason = %why, "a token from the identity provider was refused");
            Failure::Refused(
                StatusCode::FORBIDDEN,
                "The sign-in service's answer did not pass the gateway's checks.",
                Some(why.to_string()),
            )
        };
        let keys: Arc<CoreJsonWebKeySet> = remote.keys(discovered).await.map_err(Failure::Down)?;
        let claims = match token::parse(token).map_err(refused)?.verify(&keys) {
            Err(Refusal::UnknownKey) => match remote.keys_for_unknown_kid(discovered).await {
                Some(Ok(keys)) => token::parse(token).map_err(refused)?.verify(&keys),
                Some(Err(e)) => return Err(Failure::Down(e)),
                None => Err(Refusal::UnknownKey),
            },
            other => other,
        }
        .map_err(refused)?;
        let expect = token::Expect {
            issuer: &remote.settings.issuer,
            client_id: &remote.settings.client_id,
            now: (session::now_ms() / 1000) as i64,
            max_age,
            nonce,
        };
        token::check_claims(&claims, &expect).map_err(refused)?;
        Ok(claims)
    }
}

fn subject_key(provider: &str, subject: &str) -> [u8; 32] {
    sha256(&format!("{provider}\n{subject}"))
}

/// `url` ready for more query parameters.
fn url_with_query(url: &str) -> String {
    let mut url = url.to_owned();
    url.push(if url.contains('?') { '&' } else { '?' });
    url
}

/// The provider's own words when a callback's query says it refused
/// (`error`, `error_description`): cut to 300 characters, for a page that
/// shows them escaped.
pub fn provider_error(query: Option<&str>) -> Option<String> {
    let error = query_param(query, "error")?;
    let detail = match query_param(query, "error_description") {
        Some(d) => format!("{error}: {d}"),
        None => error.into_owned(),
    };
    Some(detail.chars().take(300).collect())
}

/// Why a callback did not end in a session.
enum Failure {
    /// Refused, with the words for the page and a detail for it.
    Refused(StatusCode, &'static str, Option<String>),
    /// The provider could not be asked.
    Down(RemoteError),
    Gateway(GatewayError),
}

/// The page a provider that cannot be reached gets: 503, saying which.
fn unreachable_page(settings: &OidcProvider, e: &RemoteError) -> Response<Body> {
    tracing::warn!(provider = %settings.name, error = %e, "identity provider unreachable");
    let mut response: Response<Body> = pages::provider_failed(
        StatusCode::SERVICE_UNAVAILABLE,
        &settings.title,
        "The sign-in service cannot be reached right now. Try again in a minute, or sign in another way.",
        None,
    )
    .into();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}
