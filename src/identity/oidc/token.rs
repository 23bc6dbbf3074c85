//! Checking a provider's signed tokens (ID tokens and back-channel logout
//! tokens; OpenID Connect Core 1.0 §3.1.3.7, Back-Channel Logout 1.0 §2.6).
//!
//! The signature comes first, with a key from the provider's JWKS and an
//! asymmetric `alg` that key allows: never `none`, never an HMAC (whose
//! "secret" would be the public key, or the client secret, which is not
//! the provider's word). Then the claims: `iss`, `aud` (and `azp` when
//! there are several audiences), `exp`, `iat` neither in the future nor
//! old, and the `nonce` the sign-in sent (or, for a logout token, none).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::JsonWebKey;
use serde_json::{Map, Value};

/// Seconds a token's `iat` may be ahead of this clock.
const CLOCK_SKEW_SECS: i64 = 60;
/// Largest token read.
const MAX_TOKEN: usize = 16 * 1024;
/// The event a logout token carries.
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Why a token was refused. Every variant says what a person reading the
/// log needs; none echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the token is not a signed JWT ({0})")]
    Malformed(&'static str),
    #[error("the token's alg {0:?} is not an asymmetric algorithm of the provider's keys")]
    Algorithm(String),
    #[error("no key of the provider's JWKS fits the token's kid and alg")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token's iss is not the provider's issuer")]
    Issuer,
    #[error("the token's aud does not name this client (or names others without azp)")]
    Audience,
    #[error("the token's azp is not this client")]
    AuthorizedParty,
    #[error("the token has expired")]
    Expired,
    #[error("the token's iat is in the future")]
    IssuedInFuture,
    #[error("the token's iat is too long ago")]
    IssuedTooLongAgo,
    #[error("the token's nonce is not the sign-in's")]
    Nonce,
    #[error("not a logout token: {0}")]
    NotLogout(&'static str),
}

/// A token split and decoded, not yet trusted.
pub struct Parsed<'t> {
    alg: CoreJwsSigningAlgorithm,
    kid: Option<String>,
    signing_input: &'t str,
    signature: Vec<u8>,
    /// Trust them only after [`Parsed::verify`].
    claims: Map<String, Value>,
}

/// Splits a compact JWS and decodes its header and claims.
pub fn parse(token: &str) -> Result<Parsed<'_>, Refusal> {
    if token.len() > MAX_TOKEN {
        return Err(Refusal::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed("not three parts"));
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| Refusal::Malformed("not base64url"))
    };
    let header: Map<String, Value> = serde_json::from_slice(&decode(header)?)
        .map_err(|_| Refusal::Malformed("header is not a JSON object"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&decode(payload)?)
        .map_err(|_| Refusal::Malformed("claims are not a JSON object"))?;
    if header.contains_key("crit") || header.contains_key("enc") {
        return Err(Refusal::Malformed("crit or enc in the header"));
    }
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let alg = asymmetric(alg_name)
        .ok_or_else(|| Refusal::Algorithm(alg_name.chars().take(16).collect()))?;
    let signing_input = &token[..token.len() - signature.len() - 1];
    Ok(Parsed {
        alg,
        kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
        signing_input,
        signature: decode(signature)?,
        claims,
    })
}

/// The algorithms a provider's public keys can sign with.
fn asymmetric(name: &str) -> Option<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    Some(match name {
        "RS256" => A::RsaSsaPkcs1V15Sha256,
        "RS384" => A::RsaSsaPkcs1V15Sha384,
        "RS512" => A::RsaSsaPkcs1V15Sha512,
        "PS256" => A::RsaSsaPssSha256,
        "PS384" => A::RsaSsaPssSha384,
        "PS512" => A::RsaSsaPssSha512,
        "ES256" => A::EcdsaP256Sha256,
        "ES384" => A::EcdsaP384Sha384,
        "ES512" => A::EcdsaP521Sha512,
        "EdDSA" => A::EdDsa,
        _ => return None,
    })
}

impl Parsed<'_> {
    /// Checks the signature with the one key of `keys` that fits; the
    /// claims, if it holds.
    pub fn verify(self, keys: &CoreJsonWebKeySet) -> Result<Map<String, Value>, Refusal> {
        let key = super::remote::key_for(keys, self.kid.as_deref(), &self.alg)
            .ok_or(Refusal::UnknownKey)?;
        key.verify_signature(&self.alg, self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| Refusal::Signature)?;
        Ok(self.claims)
    }
}

/// What the claims of a verified token must say.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// Seconds since the Unix epoch.
    pub now: i64,
    /// How old `iat` may be, in seconds.
    pub max_age: i64,
    /// An ID token's: the nonce the sign-in sent. A logout token must have none.
    pub nonce: Option<&'a str>,
}

/// Checks `iss`, `aud`/`azp`, `exp`, `iat` and `nonce` of verified claims.
pub fn check_claims(claims: &Map<String, Value>, expect: &Expect) -> Result<(), Refusal> {
    if claims.get("iss").and_then(Value::as_str) != Some(expect.issuer) {
        return Err(Refusal::Issuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&expect.client_id) {
        return Err(Refusal::Audience);
    }
    match claims.get("azp") {
        Some(azp) if azp.as_str() != Some(expect.client_id) => {
            return Err(Refusal::AuthorizedParty)
        }
        None if audiences.len() > 1 => return Err(Refusal::Audience),
        _ => {}
    }
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    match number("exp") {
        Some(exp) if exp > expect.now - CLOCK_SKEW_SECS => {}
        // A logout token may leave `exp` out; an ID token may not.
        None if expect.nonce.is_none() => {}
        _ => return Err(Refusal::Expired),
    }
    let iat = number("iat").ok_or(Refusal::Malformed("no iat"))?;
    if iat > expect.now + CLOCK_SKEW_SECS {
        return Err(Refusal::IssuedInFuture);
    }
    if iat < expect.now - expect.max_age {
        return Err(Refusal::IssuedTooLongAgo);
    }
    let nonce = claims.get("nonce").and_then(Value::as_str);
    match (expect.nonce, nonce) {
        (Some(wanted), Some(found)) if crate::identity::csrf::matches(wanted, found) => Ok(()),
        (Some(_), _) => Err(Refusal::Nonce),
        (None, None) if !claims.contains_key("nonce") => Ok(()),
        (None, _) => Err(Refusal::NotLogout("it carries a nonce")),
    }
}

/// The checks a logout token adds (Back-Channel Logout 1.0 §2.4): the
/// event, and a `sub` or a `sid`.
pub fn check_logout(claims: &Map<String, Value>) -> Result<(), Refusal> {
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(LOGOUT_EVENT));
    if !event.is_some_and(Value::is_object) {
        return Err(Refusal::NotLogout("no back-channel logout event"));
    }
    let has = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if !has("sub") && !has("sid") {
        return Err(Refusal::NotLogout("neither sub nor sid"));
    }
    if !has("jti") {
        return Err(Refusal::NotLogout("no jti"));
    }
    Ok(())
}
