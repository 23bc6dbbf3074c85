//! Signed identity assertions (`[identity] assertion = true`): besides the
//! plain identity headers, the upstream gets a compact JWT (RFC 7519)
//! signed with ES256 (RFC 7518 §3.4: ECDSA P-256, SHA-256, the 64-byte
//! `r || s` signature), which an app can verify with the public keys at
//! `/.gateway/jwks.json` (RFC 7517) — so a header sent straight to the app
//! by someone who bypassed the gateway is worth nothing.
//!
//! Claims: `iss`, `aud` (the upstream's host unless configured), `sub`
//! (the username), `roles`, `iat`, `exp`, `sid` (the session's handle,
//! never its ID). A session's assertion is reused until a quarter of its
//! lifetime is left, so signing costs one ECDSA signature per session per
//! minute or so, not one per request.
//!
//! The key is a PKCS#8 PEM file (`authgate keygen PATH`, or made in the
//! state folder on first start). It is looked at every second like the
//! TLS pair: a new key signs from then on, and the one before stays in the
//! JWKS for [`RETIRED_KEY_GRACE`] so that assertions it signed still verify.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use sha2::{Digest, Sha256};

use crate::session::Key;

/// How long a replaced key stays in the JWKS.
pub const RETIRED_KEY_GRACE: Duration = Duration::from_secs(10 * 60);
/// How often the key file is looked at.
const KEY_POLL_EVERY: Duration = Duration::from_secs(1);
/// Audiences one session's assertions are kept for at most (about 0.7 KiB
/// each). In forward-auth mode the audience is the host the client names,
/// so without a bound one session asking for many hosts would grow the
/// cache without end; past it the oldest makes room.
pub const MAX_AUDIENCES_PER_SESSION: usize = 16;
/// Sessions whose assertions are kept at most; past it an arbitrary one
/// makes room, and a request at worst signs anew.
pub const MAX_CACHED_SESSIONS: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the assertion key {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the assertion key {path} is not a P-256 (ES256) PKCS#8 key: {reason}")]
    NotP256 { path: String, reason: String },
    #[error("cannot write the assertion key {path}: {reason}")]
    Write { path: String, reason: String },
}

/// One signing key and its public half as a JWK.
struct SigningKey {
    pair: EcdsaKeyPair,
    kid: Arc<str>,
    jwk: serde_json::Value,
}

impl SigningKey {
    fn from_pkcs8(der: &[u8], path: &Path) -> Result<SigningKey, KeyError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|e| KeyError::NotP256 {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        // The public key is the uncompressed point 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        );
        // RFC 7638: the thumbprint of the required members, in this order.
        let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid: Arc<str> = URL_SAFE_NO_PAD
            .encode(Sha256::digest(thumbprint.as_bytes()))
            .into();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "use": "sig", "alg": "ES256", "kid": &*kid,
        });
        Ok(SigningKey { pair, kid, jwk })
    }

    fn load(path: &Path) -> Result<SigningKey, KeyError> {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(path).map_err(|e| {
            KeyError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        SigningKey::from_pkcs8(der.secret_pkcs8_der(), path)
    }
}

/// Makes a new P-256 key and writes it to `path` as PKCS#8 PEM (mode 0600,
/// through a temporary file and a rename, so a watching gateway never
/// reads half a key). Returns its `kid`.
pub fn generate(path: &Path) -> Result<String, KeyError> {
    let write_error = |reason: String| KeyError::Write {
        path: path.display().to_string(),
        reason,
    };
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|e| write_error(e.to_string()))?;
    let key = SigningKey::from_pkcs8(der.as_ref(), path)?;
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    crate::files::write_private(path, pem.as_bytes(), crate::files::Existing::Replace)
        .map_err(|e| write_error(e.to_string()))?;
    Ok(key.kid.to_string())
}

/// A P-256 key that signs JWTs the gateway sends out of its own accord:
/// the client assertion of `private_key_jwt` (RFC 7523) at a provider's
/// token endpoint.
pub struct JwtKey(SigningKey);

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKey(kid {})", self.0.kid)
    }
}

impl JwtKey {
    /// Reads a PKCS#8 PEM P-256 key (`authgate keygen PATH` makes one).
    pub fn load(path: &Path) -> Result<JwtKey, KeyError> {
        SigningKey::load(path).map(JwtKey)
    }

    /// The public half, as the JWK to register at the provider.
    pub fn jwk(&self) -> &serde_json::Value {
        &self.0.jwk
    }

    /// `claims` signed with ES256, the key's `kid` in the header.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "kid": &*self.0.kid });
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .0
            .pair
            .sign(&SystemRandom::new(), token.as_bytes())
            .expect("signing with a loaded P-256 key works");
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        token
    }
}

/// What an assertion says and who it is for.
pub struct Claims<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub user: &'a str,
    pub roles: &'a [String],
    pub session: &'a Key,
    pub lifetime: Duration,
}

struct Cached {
    token: HeaderValue,
    expires: u64,
    kid: Arc<str>,
    /// What it says that may change within a session.
    said: String,
}

struct Keys {
    current: Arc<SigningKey>,
    /// Replaced keys' JWKs and until when (Unix ms) they stay published.
    retired: Vec<(serde_json::Value, u64)>,
}

/// Signs assertions and publishes the keys.
pub struct Signer {
    path: PathBuf,
    keys: ArcSwap<Keys>,
    /// By session, then audience (oldest first).
    cache: dashmap::DashMap<Key, Vec<(Box<str>, Cached)>>,
    rng: SystemRandom,
}

impl Signer {
    /// Loads the key at `path`, first making one there if `generate` and
    /// there is none.
    pub fn open(path: &Path, generate_if_missing: bool) -> Result<Signer, KeyError> {
        if generate_if_missing && !path.exists() {
            let kid = generate(path)?;
            tracing::info!(key = %path.display(), kid, "made a new assertion signing key");
        }
        let current = Arc::new(SigningKey::load(path)?);
        Ok(Signer {
            path: path.to_owned(),
            keys: ArcSwap::from_pointee(Keys {
                current,
                retired: Vec::new(),
            }),
            cache: dashmap::DashMap::new(),
            rng: SystemRandom::new(),
        })
    }

    /// The `kid` of the key that signs now.
    pub fn kid(&self) -> Arc<str> {
        self.keys.load().current.kid.clone()
    }

    /// The JWKS document: the current key and the recently replaced ones.
    pub fn jwks(&self) -> String {
        let now = crate::session::now_ms();
        let keys = self.keys.load();
        let mut list = vec![keys.current.jwk.clone()];
        list.extend(
            keys.retired
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(jwk, _)| jwk.clone()),
        );
        serde_json::json!({ "keys": list }).to_string()
    }

    /// The assertion for a request of this session, reused while it has
    /// more than a quarter of its life left and says the same.
    pub fn assertion(&self, claims: &Claims) -> HeaderValue {
        let now = crate::session::now_ms() / 1000;
        let lifetime = claims.lifetime.as_secs().max(1);
        let said = format!(
            "{}\n{}\n{}",
            claims.issuer,
            claims.user,
            claims.roles.join(",")
        );
        let keys = self.keys.load();
        if let Some(audiences) = self.cache.get(claims.session) {
            let found = audiences.iter().find(|(a, _)| **a == *claims.audience);
            if let Some((_, cached)) = found {
                if cached.expires > now + lifetime / 4
                    && cached.kid == keys.current.kid
                    && cached.said == said
                {
                    return cached.token.clone();
                }
            }
        }
        let key = &keys.current;
        let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "kid": &*key.kid });
        let payload = serde_json::json!({
            "iss": claims.issuer,
            "aud": claims.audience,
            "sub": claims.user,
            "roles": claims.roles,
            "iat": now,
            "exp": now + lifetime,
            "sid": crate::session::handle(claims.session),
        });
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = key
            .pair
            .sign(&self.rng, token.as_bytes())
            .expect("signing with a loaded P-256 key works");
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        let value =
            HeaderValue::from_str(&token).expect("base64url and dots are a valid header value");
        if self.cache.len() >= MAX_CACHED_SESSIONS && !self.cache.contains_key(claims.session) {
            let victim = self.cache.iter().next().map(|entry| *entry.key());
            if let Some(victim) = victim {
                self.cache.remove(&victim);
            }
        }
        let cached = Cached {
            token: value.clone(),
            expires: now + lifetime,
            kid: key.kid.clone(),
            said,
        };
        let mut audiences = self.cache.entry(*claims.session).or_default();
        audiences.retain(|(a, _)| **a != *claims.audience);
        if audiences.len() >= MAX_AUDIENCES_PER_SESSION {
            audiences.remove(0);
        }
        audiences.push((claims.audience.into(), cached));
        value
    }

    /// How many assertions are kept for reuse.
    pub fn cached(&self) -> usize {
        self.cache.iter().map(|entry| entry.value().len()).sum()
    }

    /// Looks at the key file every second: a changed key that loads signs
    /// from then on (the old one stays published for [`RETIRED_KEY_GRACE`]);
    /// one that does not is refused with a log line. Also drops expired
    /// cached assertions. Ends when the signer is dropped.
    pub fn watch(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let mut seen = crate::tls::fingerprint(&self.path);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(KEY_POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { break };
                let now_secs = crate::session::now_ms() / 1000;
                me.cache.retain(|_, audiences| {
                    audiences.retain(|(_, c)| c.expires > now_secs);
                    !audiences.is_empty()
                });
                let now = crate::tls::fingerprint(&me.path);
                if now == seen {
                    continue;
                }
                seen = now;
                match SigningKey::load(&me.path) {
                    Ok(key) => {
                        let old = me.keys.load();
                        let until = crate::session::now_ms() + RETIRED_KEY_GRACE.as_millis() as u64;
                        let mut retired: Vec<_> = old
                            .retired
                            .iter()
                            .filter(|(_, u)| *u > crate::session::now_ms())
                            .cloned()
                            .collect();
                        retired.push((old.current.jwk.clone(), until));
                        tracing::info!(kid = %key.kid, "new assertion signing key in force; the old one stays in the JWKS for a while");
                        me.keys.store(Arc::new(Keys {
                            current: Arc::new(key),
                            retired,
                        }));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the changed assertion key is not usable; the one in force keeps signing")
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_bounded_whatever_audiences_a_session_names() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::open(&dir.path().join("assertion.key"), true).unwrap();
        let session = [7u8; 32];
        let roles = vec!["user".to_owned()];
        for i in 0..MAX_AUDIENCES_PER_SESSION * 100 {
            let audience = format!("host{i}.example");
            signer.assertion(&Claims {
                issuer: "authgate",
                audience: &audience,
                user: "alice",
                roles: &roles,
                session: &session,
                lifetime: Duration::from_secs(60),
            });
            assert!(signer.cached() <= MAX_AUDIENCES_PER_SESSION);
        }
        assert_eq!(signer.cached(), MAX_AUDIENCES_PER_SESSION);
        // The newest audience is the one reused.
        let claims = |audience| Claims {
            issuer: "authgate",
            audience,
            user: "alice",
            roles: &roles,
            session: &session,
            lifetime: Duration::from_secs(60),
        };
        let last = format!("host{}.example", MAX_AUDIENCES_PER_SESSION * 100 - 1);
        assert_eq!(
            signer.assertion(&claims(&last)),
            signer.assertion(&claims(&last))
        );
        // Many sessions: bounded too.
        for i in 0..MAX_CACHED_SESSIONS + 100 {
            let mut other = [0u8; 32];
            other[..8].copy_from_slice(&(i as u64).to_le_bytes());
            signer.assertion(&Claims {
                session: &other,
                ..claims("app.example")
            });
        }
        assert!(signer.cache.len() <= MAX_CACHED_SESSIONS);
    }
}
