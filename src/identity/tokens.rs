//! API tokens (`agt_` + 256 random bits, base64url): made for an account
//! (a person's, or a service account's that has no password), shown once,
//! kept by their SHA-256 only ([`crate::store::tokens`]). A request shows
//! one as `Authorization: Bearer agt_...`, or as the password of HTTP
//! Basic where a rule says `basic_auth = true`.
//!
//! Checking one costs one SHA-256 and one hash-map read; a wrong one
//! costs the same and takes one step from its client's allowance
//! ([`FAILURES_PER_CLIENT`] a minute), after which the client is answered
//! 429 until the minute is over. Whether a token existed is never said:
//! unknown, expired, revoked, a locked or removed account, a role it
//! names that the account lost, a password changed (with `[tokens]
//! end_on_password_change`) all get the same 401.

use std::net::IpAddr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dashmap::DashMap;
use http::header::{self, HeaderValue};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::{Auth, SignedIn};
use crate::policy::TokenForm;
use crate::session::{self, Key, LiveSession};
use crate::store::tokens::TokenRecord;
use crate::users::User;

/// Every token begins so: a scanner (or a person) can tell one.
pub const PREFIX: &str = "agt_";
/// Wrong tokens a client may send a minute before it is refused outright.
pub const FAILURES_PER_CLIENT: u32 = 20;
const FAILURE_WINDOW_MS: u64 = 60_000;

/// How a request's token was used: the form it came in and its name, for
/// the upstream's `X-Auth-Token` header and the access log.
#[derive(Debug)]
pub struct TokenUse {
    pub form: TokenForm,
    /// The token's name, or for a provider's JWT its `[[bearer]]`'s.
    pub name: HeaderValue,
    pub hash: Key,
    /// A provider's JWT (`[[bearer]]`), not one of the gateway's tokens.
    pub issued_by_provider: bool,
}

impl TokenUse {
    /// How the access line names it: its name, or `bearer:NAME` for a
    /// provider's JWT.
    pub fn log_name(&self) -> HeaderValue {
        if !self.issued_by_provider {
            return self.name.clone();
        }
        let text = format!("bearer:{}", self.name.to_str().unwrap_or("-"));
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("bearer"))
    }

    /// The header that tells the upstream which token (or provider) it was.
    pub fn header(&self) -> http::HeaderName {
        http::HeaderName::from_static(if self.issued_by_provider {
            "x-auth-bearer"
        } else {
            "x-auth-token"
        })
    }
}

/// A new token and the hash it is kept under.
pub fn new_token() -> (String, Key) {
    let token = format!("{PREFIX}{}", session::new_id());
    let hash = hash_of(&token);
    (token, hash)
}

pub fn hash_of(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

/// The token an `Authorization` header carries, and in which form; for
/// Basic, the name it came with too.
fn presented(headers: &HeaderMap) -> Option<(TokenForm, String, Option<String>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (rest.starts_with(PREFIX) || super::bearer::looks_like_jwt(rest))
            .then(|| (TokenForm::Bearer, rest.to_owned(), None));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(STANDARD.decode(rest).ok()?).ok()?;
        let (name, password) = decoded.split_once(':')?;
        return password
            .starts_with(PREFIX)
            .then(|| (TokenForm::Basic, password.to_owned(), Some(name.to_owned())));
    }
    None
}

/// Whether the request's `Authorization` header carries one of the
/// gateway's API tokens (which never goes on to an upstream; a provider's
/// JWT may, where a rule says `pass_authorization = true`).
pub fn carries_token(headers: &HeaderMap) -> bool {
    presented(headers).is_some_and(|(_, token, _)| token.starts_with(PREFIX))
}

/// A client's wrong tokens within the current minute.
#[derive(Default)]
pub struct TokenFailures {
    by_client: DashMap<IpAddr, (u32, u64)>,
    /// Whether any client has any: while none has, a good token's request
    /// does not touch the map.
    any: std::sync::atomic::AtomicBool,
}

impl TokenFailures {
    /// Seconds until `client` may try again, if it is over its allowance.
    fn throttled(&self, client: IpAddr, now: u64) -> Option<u64> {
        if !self.any.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let entry = self.by_client.get(&client)?;
        let (count, since) = *entry;
        let ends = since + FAILURE_WINDOW_MS;
        (count >= FAILURES_PER_CLIENT && now < ends).then(|| (ends - now).div_ceil(1000).max(1))
    }

    fn failed(&self, client: IpAddr, now: u64) {
        self.any.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut entry = self.by_client.entry(client).or_insert((0, now));
        if now >= entry.1 + FAILURE_WINDOW_MS {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    /// Forgets windows that are over.
    pub fn sweep(&self, now: u64) {
        self.by_client
            .retain(|_, (_, since)| now < *since + FAILURE_WINDOW_MS);
        if self.by_client.is_empty() {
            self.any.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// What a request's token amounts to.
pub enum TokenCheck {
    /// No token came.
    Absent,
    Valid(SignedIn),
    /// A token came that lets nobody in.
    Refused,
    /// The client sent too many wrong tokens: again in this many seconds.
    Throttled(u64),
}

impl Auth {
    /// Checks the API token (or a provider's JWT) of a request from
    /// `client` at `now` (ms).
    pub async fn token(&self, headers: &HeaderMap, client: IpAddr, now: u64) -> TokenCheck {
        let Some((form, token, basic_name)) = presented(headers) else {
            return TokenCheck::Absent;
        };
        if let Some(retry) = self.token_failures.throttled(client, now) {
            self.metrics
                .record_token(crate::metrics::TokenResult::Throttled);
            return TokenCheck::Throttled(retry);
        }
        let hash = hash_of(&token);
        if !token.starts_with(PREFIX) {
            return self.provider_token(&token, hash, client, now).await;
        }
        let found = self.store.tokens.get(&hash).and_then(|entry| {
            self.token_user(&entry.record, now)
                .map(|user| (entry, user))
        });
        let Some((entry, user)) = found.filter(|(entry, _)| {
            let record = &entry.record;
            // Basic's name, when given, must be the token's account.
            basic_name
                .as_deref()
                .is_none_or(|n| n.is_empty() || crate::users::canonical(n) == record.user)
        }) else {
            self.token_failures.failed(client, now);
            self.metrics
                .record_token(crate::metrics::TokenResult::Refused);
            crate::security_event!(warn, event = "token_refused", ip = %client, "an API token was refused");
            return TokenCheck::Refused;
        };
        self.store.tokens.note_use(&entry, now);
        let record = &entry.record;
        self.metrics
            .record_token(crate::metrics::TokenResult::Accepted);
        let session = LiveSession {
            key: hash,
            user: user.key.clone(),
            password_fingerprint: user.password_fingerprint,
            generation: user.generation,
            created_ms: record.created_ms,
            last_seen_ms: now,
            auth_ms: record.created_ms,
            mfa: false,
            vouched: None,
        };
        TokenCheck::Valid(SignedIn {
            user,
            session,
            token: Some(Arc::new(TokenUse {
                form,
                name: entry.name.clone(),
                hash,
                issued_by_provider: false,
            })),
        })
    }

    /// A provider's JWT, as `[[bearer]]` says to check it.
    async fn provider_token(&self, jwt: &str, hash: Key, client: IpAddr, now: u64) -> TokenCheck {
        let Some(passed) = self.bearer_token(jwt, &hash, now).await else {
            self.token_failures.failed(client, now);
            self.metrics
                .record_token(crate::metrics::TokenResult::Refused);
            crate::security_event!(warn, event = "token_refused", ip = %client, "a provider's bearer token was refused");
            return TokenCheck::Refused;
        };
        self.metrics
            .record_token(crate::metrics::TokenResult::Accepted);
        let user = passed.user;
        let session = LiveSession {
            key: hash,
            user: user.key.clone(),
            password_fingerprint: 0,
            generation: 0,
            created_ms: now,
            last_seen_ms: now,
            auth_ms: now,
            mfa: false,
            vouched: None,
        };
        TokenCheck::Valid(SignedIn {
            user,
            session,
            token: Some(Arc::new(TokenUse {
                form: TokenForm::Bearer,
                name: HeaderValue::from_str(&passed.bearer)
                    .unwrap_or(HeaderValue::from_static("-")),
                hash,
                issued_by_provider: true,
            })),
        })
    }

    /// The account a live token acts for, with the roles it may use;
    /// `None` when it lets nobody in.
    fn token_user(&self, record: &TokenRecord, now: u64) -> Option<Arc<User>> {
        if now >= record.expires_ms {
            return None;
        }
        let users = self.users.load();
        let user = users.get_by_key(&record.user)?;
        if user.locked || user.provider.is_some() {
            return None;
        }
        if self.token_settings.load().end_on_password_change
            && user.password_fingerprint != record.password_fingerprint
        {
            return None;
        }
        let Some(roles) = &record.roles else {
            return Some(user.clone());
        };
        // A role the token names and the account lost ends it.
        if !roles.iter().all(|r| user.roles.contains(r)) {
            return None;
        }
        if *roles == user.roles {
            return Some(user.clone());
        }
        User::with_roles(user, roles.clone()).map(Arc::new)
    }
}

/// Why a token cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token's name has 1 to 64 characters: letters, digits and . _ -")]
    BadName,
    #[error("{0} already has a token called {1:?}")]
    NameTaken(String, String),
    #[error("a token may live at most {0} ([tokens] max_lifetime)")]
    TooLong(String),
    #[error("{user} does not hold the role {role:?}")]
    NotTheirRole { user: String, role: String },
    #[error("there is no user {0:?}")]
    UnknownUser(String),
    #[error("{0} cannot hold API tokens: their sign-in service or directory vouches for them")]
    NotLocal(String),
    #[error("the store is unavailable; no token was made or revoked")]
    Unavailable,
}

/// What a new token asks for.
pub struct NewToken {
    pub name: String,
    /// How long it lives (`None`: `[tokens]`'s default).
    pub lifetime: Option<std::time::Duration>,
    /// Only these of the account's roles (`None`: all of them).
    pub roles: Option<Vec<String>>,
}

/// A token's name: 1 to 64 of letters, digits and `. _ -`.
fn check_name(name: &str) -> Result<(), TokenError> {
    let ok = (1..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then_some(()).ok_or(TokenError::BadName)
}

/// Makes a token for `user` and keeps its hash: the token, shown once.
pub async fn create(
    tokens: &crate::store::tokens::Tokens,
    settings: &crate::config::Tokens,
    user: &User,
    new: NewToken,
    now_ms: u64,
) -> Result<String, TokenError> {
    check_name(&new.name)?;
    if user.provider.is_some() {
        return Err(TokenError::NotLocal(user.name.to_string()));
    }
    let lifetime = new.lifetime.unwrap_or(settings.default_lifetime);
    if lifetime > settings.max_lifetime {
        return Err(TokenError::TooLong(
            humantime::format_duration(settings.max_lifetime).to_string(),
        ));
    }
    if let Some(roles) = &new.roles {
        if let Some(role) = roles.iter().find(|r| !user.roles.contains(r)) {
            return Err(TokenError::NotTheirRole {
                user: user.name.to_string(),
                role: role.clone(),
            });
        }
    }
    let taken = tokens
        .list(Some(&user.key))
        .await
        .map_err(|_| TokenError::Unavailable)?
        .iter()
        .any(|t| t.record.name == new.name);
    if taken {
        return Err(TokenError::NameTaken(user.name.to_string(), new.name));
    }
    let (token, hash) = new_token();
    let record = TokenRecord {
        user: user.key.to_string(),
        name: new.name,
        roles: new.roles.map(|mut r| {
            r.sort();
            r.dedup();
            r
        }),
        created_ms: now_ms,
        expires_ms: now_ms.saturating_add(lifetime.as_millis() as u64),
        password_fingerprint: user.password_fingerprint,
    };
    tokens
        .create(hash, record)
        .await
        .map_err(|_| TokenError::Unavailable)?;
    Ok(token)
}

/// Revokes `user`'s token called `name`, or all of the user's (`None`);
/// how many went.
pub async fn revoke(
    tokens: &crate::store::tokens::Tokens,
    user: &str,
    name: Option<&str>,
) -> Result<usize, TokenError> {
    let hashes = tokens
        .list(Some(user))
        .await
        .map_err(|_| TokenError::Unavailable)?
        .into_iter()
        .filter(|t| name.is_none_or(|n| t.record.name == n))
        .map(|t| t.hash)
        .collect();
    tokens
        .revoke(hashes)
        .await
        .map_err(|_| TokenError::Unavailable)
}
