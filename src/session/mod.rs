//! What a session is (SPEC §5): its ID, the key the store files it under,
//! and what a lookup can find. Where sessions are kept is [`crate::store`].
//!
//! The cookie carries a 256-bit random ID; every store keeps a session under
//! the SHA-256 of that ID, so nothing in a store is a usable cookie value.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// Length of an ID in the cookie: 32 bytes in unpadded base64url.
pub const ID_LEN: usize = 43;

/// The store's key for a session: SHA-256 of its ID.
pub type Key = [u8; 32];

/// Milliseconds since the Unix epoch: the store's clock. Every method takes
/// `now` explicitly, so tests drive time without sleeping.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new session ID from the OS CSPRNG.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key of a cookie value, or `None` when the value cannot be an ID we
/// issued (wrong length or alphabet): such values are never looked up.
pub fn key_of(id: &str) -> Option<Key> {
    if id.len() != ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some(Sha256::digest(id.as_bytes()).into())
}

/// What a session begins with.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// Canonical username.
    pub user: &'a Arc<str>,
    pub password_fingerprint: u32,
    pub ip: IpAddr,
    pub user_agent: &'a str,
    /// The sign-in passed the second factor.
    pub mfa: bool,
    /// An identity provider's word for the user.
    pub vouched: Option<Arc<Vouched>>,
    /// When the person last proved who they are, if before the session
    /// begins (a provider's `auth_time`); `None`: now.
    pub proved_ms: Option<u64>,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Live(LiveSession),
    /// No such session (never was, ended, or swept).
    Unknown,
    /// It was there but a deadline had passed; it is gone now.
    Expired(Expiry),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Absolute,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Idle => "idle timeout",
            Expiry::Absolute => "absolute timeout",
        }
    }
}

/// A copy of what the caller needs from a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    pub key: Key,
    pub user: Arc<str>,
    pub password_fingerprint: u32,
    /// The user's generation when the session began (see
    /// [`crate::users::User::generation`]).
    pub generation: u64,
    pub created_ms: u64,
    /// The last request before this one (or this one, if it moved the timer).
    pub last_seen_ms: u64,
    /// When the password was last entered for it (sign-in or a fresh sign-in).
    pub auth_ms: u64,
    /// It passed the second factor.
    pub mfa: bool,
    /// Set when an identity provider, not the users file, vouched for the
    /// user.
    pub vouched: Option<Arc<Vouched>>,
}

/// A person an identity provider (`[[oidc]]`) vouched for, as their session
/// keeps it: who they are here (built once, when the session begins or is
/// read back from a store) and what the provider's sign-in said.
#[derive(Debug)]
pub struct Vouched {
    /// Name and roles as the provider's claims and `role_map` gave them.
    pub user: Arc<crate::users::User>,
    /// The provider's `headers`, filled from its claims.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The provider's `sub` and `sid`, which back-channel logout names.
    pub subject: Box<str>,
    pub sid: Option<Box<str>>,
    /// The ID token, sent back as `id_token_hint` at sign-out.
    pub id_token: Box<str>,
}

/// How a store keeps a [`Vouched`]: one JSON text.
#[derive(serde::Serialize, serde::Deserialize)]
struct VouchedRecord {
    provider: String,
    name: String,
    roles: Vec<String>,
    headers: Vec<(String, String)>,
    subject: String,
    sid: Option<String>,
    id_token: String,
}

impl Vouched {
    pub fn provider(&self) -> &str {
        self.user.provider.as_deref().unwrap_or_default()
    }

    /// The text a store keeps.
    pub fn to_record(&self) -> String {
        serde_json::to_string(&VouchedRecord {
            provider: self.provider().to_owned(),
            name: self.user.name.to_string(),
            roles: self.user.roles.clone(),
            headers: self
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            subject: self.subject.to_string(),
            sid: self.sid.as_deref().map(str::to_owned),
            id_token: self.id_token.to_string(),
        })
        .expect("strings serialize")
    }

    /// Reads back what [`Self::to_record`] wrote; `None` if it is damaged
    /// (the session then ends: a store's text is not trusted to be whole).
    pub fn from_record(text: &str) -> Option<Vouched> {
        let record: VouchedRecord = serde_json::from_str(text).ok()?;
        let user =
            crate::users::User::vouched(&record.name, record.roles, record.provider.into()).ok()?;
        let headers = record
            .headers
            .into_iter()
            .map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(&v).ok()?,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Vouched {
            user: Arc::new(user),
            headers,
            subject: record.subject.into(),
            sid: record.sid.map(Into::into),
            id_token: record.id_token.into(),
        })
    }
}

impl PartialEq for Vouched {
    fn eq(&self, other: &Vouched) -> bool {
        self.to_record() == other.to_record()
    }
}

impl Eq for Vouched {}

/// A session as the admin API lists it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub key: Key,
    pub user: Arc<str>,
    pub created_ms: u64,
    pub last_seen_ms: u64,
    pub ip: IpAddr,
    pub user_agent: Box<str>,
    /// Set when an identity provider vouched for the user.
    pub vouched: Option<Arc<Vouched>>,
}

/// The handle the admin API, the admin page and the CLI show for a
/// session: the first 64 bits of its key, in hex. It names a session
/// without being a cookie.
pub fn handle(key: &Key) -> String {
    crate::hex(&key[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores hold sessions under this key (a SQLite file, a shared store): it must
    /// stay SHA-256 of the ID (the digest below is `sha256sum`'s), or an
    /// upgrade would sign everybody out.
    #[test]
    fn the_store_key_is_the_sha256_of_the_id() {
        let id = "Ab-_0123456789abcdefghijklmnopqrstuvwxyzABC";
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(
            key_of(id).map(|key| crate::hex(&key)),
            Some("dbe297143dec501227b1db35f16a1964ab7bbc1c6d34cee0f3b1d692eb8f6766".to_owned())
        );
        assert_eq!(key_of(&id[1..]), None);
        assert_eq!(key_of(&id.replace('A', "+")), None);
    }
}
