//! Provider-issued bearer tokens (`[[bearer]]`): a JWT access token from
//! an OpenID provider (a client-credentials grant, a workload identity)
//! counts as an API token where a rule takes tokens.
//!
//! The token's `iss` picks the `[[bearer]]`; its signature is checked
//! with a key of that provider's JWKS (from discovery at the issuer, or
//! the `jwks` address; keys cached) with the `alg` that key allows, never `none` or an HMAC
//! ([`super::oidc::token`]). A `kid` the keys lack fetches them again, at
//! most once a minute per provider. Then `iss`, `aud` (must name the
//! `audience`), `exp` and `nbf` (60 s of clock skew at most), and the
//! subject. A token that passed is remembered (by its SHA-256) until its
//! `exp`, so the next request with it costs a hash and a map read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::{Map, Value};

use super::oidc::token::{self, Refusal};
use super::Auth;
use crate::config::Bearer;
use crate::session::Key;
use crate::users::User;

/// Seconds of clock skew allowed on `exp` and `nbf`.
const SKEW_SECS: i64 = 60;
/// An unknown `kid` fetches a provider's keys again at most this often.
pub const UNKNOWN_KID_REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Most verified tokens remembered at once.
const MAX_REMEMBERED: usize = 10_000;

/// A token that passed: who it is, its `[[bearer]]`, until when (ms).
#[derive(Clone)]
pub struct Passed {
    pub user: Arc<User>,
    pub bearer: Arc<str>,
    pub until_ms: u64,
}

/// What the bearer checks keep between requests.
#[derive(Default)]
pub struct BearerState {
    passed: DashMap<Key, Passed>,
    /// When each provider's keys were last fetched for an unknown `kid`.
    refreshed: Mutex<HashMap<String, Instant>>,
}

impl BearerState {
    /// Forgets tokens whose time is over.
    pub fn sweep(&self, now_ms: u64) {
        self.passed.retain(|_, p| p.until_ms > now_ms);
    }
}

/// Whether `token` looks like a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

/// The `iss` a JWT claims, before anything is trusted.
fn claimed_issuer(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// Checks the claims of a verified access token.
fn check_claims(claims: &Map<String, Value>, bearer: &Bearer, now: i64) -> Result<(), Refusal> {
    if claims.get("iss").and_then(Value::as_str) != Some(bearer.provider.issuer.as_str()) {
        return Err(Refusal::Issuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&bearer.audience.as_str()) {
        return Err(Refusal::Audience);
    }
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    match number("exp") {
        Some(exp) if exp > now - SKEW_SECS => {}
        _ => return Err(Refusal::Expired),
    }
    if number("nbf").is_some_and(|nbf| nbf > now + SKEW_SECS) {
        return Err(Refusal::IssuedInFuture);
    }
    if number("iat").is_some_and(|iat| iat > now + SKEW_SECS) {
        return Err(Refusal::IssuedInFuture);
    }
    Ok(())
}

/// The roles a token's claims give under `bearer`'s `role_map`.
fn roles_of(claims: &Map<String, Value>, bearer: &Bearer) -> Vec<String> {
    let mut roles = bearer.default_roles.clone();
    let values: Vec<&str> = match bearer.roles_claim.as_deref().and_then(|c| claims.get(c)) {
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        // `scope` is one string of space-separated values.
        Some(Value::String(one)) => one.split(' ').filter(|v| !v.is_empty()).collect(),
        _ => Vec::new(),
    };
    for (value, given) in &bearer.role_map {
        if values.contains(&value.as_str()) {
            roles.extend(given.iter().cloned());
        }
    }
    roles
}

impl Auth {
    /// Checks a provider-issued JWT (its SHA-256 is `hash`); `None` when
    /// it lets nobody in (the reason is logged).
    pub(super) async fn bearer_token(&self, jwt: &str, hash: &Key, now_ms: u64) -> Option<Passed> {
        if let Some(passed) = self.bearer.passed.get(hash) {
            if passed.until_ms > now_ms {
                return Some(passed.clone());
            }
        }
        let bearers = self.bearers.load();
        let issuer = claimed_issuer(jwt)?;
        let bearer = bearers
            .iter()
            .find(|b| b.provider.issuer == issuer)?
            .clone();
        let refused = |why: Refusal| {
            tracing::warn!(bearer = %bearer.name, reason = %why, "a provider's bearer token was refused");
        };
        let remote = self.providers.remote(&bearer.provider);
        let discovered = remote
            .discovered()
            .await
            .inspect_err(|e| tracing::warn!(bearer = %bearer.name, error = %e, "the bearer token's provider cannot be reached"))
            .ok()?;
        let keys = remote.keys(&discovered).await.ok()?;
        let verified = match token::parse(jwt).ok()?.verify(&keys) {
            Err(Refusal::UnknownKey) if self.may_refresh_keys(&bearer.name) => {
                match remote.keys_for_unknown_kid(&discovered).await {
                    Some(Ok(keys)) => token::parse(jwt).ok()?.verify(&keys),
                    _ => Err(Refusal::UnknownKey),
                }
            }
            other => other,
        };
        let claims = verified.map_err(refused).ok()?;
        let now = (now_ms / 1000) as i64;
        check_claims(&claims, &bearer, now).map_err(refused).ok()?;
        let subject = claims.get(&bearer.subject_claim).and_then(Value::as_str)?;
        let user = User::vouched(subject, roles_of(&claims, &bearer), bearer.name.as_str().into())
            .inspect_err(|e| tracing::warn!(bearer = %bearer.name, error = %e, "a provider's bearer token names no usable subject"))
            .ok()?;
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        let passed = Passed {
            user: Arc::new(user),
            bearer: bearer.name.as_str().into(),
            until_ms: (exp.max(0) as u64).saturating_mul(1000),
        };
        if self.bearer.passed.len() < MAX_REMEMBERED {
            self.bearer.passed.insert(*hash, passed.clone());
        }
        Some(passed)
    }

    /// Whether an unknown `kid` may fetch `bearer`'s keys again now.
    fn may_refresh_keys(&self, bearer: &str) -> bool {
        let mut refreshed = self
            .bearer
            .refreshed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match refreshed.get(bearer) {
            Some(at) if at.elapsed() < UNKNOWN_KID_REFRESH_EVERY => false,
            _ => {
                refreshed.insert(bearer.to_owned(), Instant::now());
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer() -> Bearer {
        let tls = Arc::new(crate::tls::client_config(None, None).unwrap());
        Bearer {
            name: "ci".into(),
            audience: "https://api.example".into(),
            subject_claim: "sub".into(),
            roles_claim: Some("scope".into()),
            role_map: vec![("deploy".into(), vec!["deployer".into()])],
            default_roles: vec!["service".into()],
            provider: Arc::new(crate::config::OidcProvider {
                name: "ci".into(),
                title: String::new(),
                issuer: "https://idp.example".into(),
                client_id: String::new(),
                client_secret: None,
                client_key: None,
                scopes: vec![],
                username_claim: None,
                roles_claim: None,
                role_map: vec![],
                default_roles: vec![],
                allowed_users: vec![],
                allowed_domains: vec![],
                require_email_verified: false,
                headers: vec![],
                mfa_amr: vec![],
                acr_values: None,
                tls,
                timeout: Duration::from_secs(1),
                redirect_uri: None,
                jwks_uri: None,
            }),
        }
    }

    #[test]
    fn claims_are_checked_with_a_minute_of_skew_at_most() {
        let b = bearer();
        let now = 1_700_000_000;
        let claims = |extra: Value| -> Map<String, Value> {
            let mut base = serde_json::json!({
                "iss": "https://idp.example", "aud": "https://api.example",
                "exp": now + 300, "iat": now, "sub": "svc",
            });
            base.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            base.as_object().unwrap().clone()
        };
        assert_eq!(
            check_claims(&claims(serde_json::json!({})), &b, now),
            Ok(())
        );
        let cases = [
            (serde_json::json!({"iss": "https://other"}), Refusal::Issuer),
            (serde_json::json!({"aud": ["x", "y"]}), Refusal::Audience),
            (serde_json::json!({"exp": now - 61}), Refusal::Expired),
            (serde_json::json!({"exp": null}), Refusal::Expired),
            (
                serde_json::json!({"nbf": now + 61}),
                Refusal::IssuedInFuture,
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(
                check_claims(&claims(extra.clone()), &b, now),
                Err(want),
                "{extra}"
            );
        }
        // Within the minute of skew: taken.
        let within = claims(serde_json::json!({"exp": now - 59, "nbf": now + 59}));
        assert_eq!(check_claims(&within, &b, now), Ok(()));
        assert_eq!(
            roles_of(&claims(serde_json::json!({"scope": "read deploy"})), &b),
            ["service", "deployer"]
        );
    }
}
