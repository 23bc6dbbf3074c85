//! Passkeys as the user stores keep them: per credential a
//! name, when it was added and last used, and webauthn-rs's record of it
//! (credential ID, public key, signature counter, backup flags), as JSON.
//! Nothing here is secret: the private key never leaves the authenticator.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{Passkey, Uuid};

/// Longest passkey name accepted (characters).
pub const MAX_NAME_CHARS: usize = 64;
/// Most passkeys one account may hold.
pub const MAX_PER_USER: usize = 20;

/// One passkey as stored: a table of the users file, a JSON object in a
/// shared store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyRecord {
    /// What the user called it ("laptop").
    pub name: String,
    /// The credential ID, base64url without padding (the key of removal
    /// and of each use).
    pub id: String,
    /// When it was added (Unix seconds).
    pub added: u64,
    /// When it was last used to sign in (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    /// webauthn-rs's `Passkey`, as JSON.
    pub credential: String,
}

/// A stored passkey, checked and ready for a ceremony.
#[derive(Debug, Clone)]
pub struct UserPasskey {
    pub record: PasskeyRecord,
    pub credential: Passkey,
}

impl UserPasskey {
    /// Checks a stored record: its JSON is a passkey and its ID is that
    /// passkey's.
    pub fn new(record: PasskeyRecord) -> Result<UserPasskey, String> {
        check_name(&record.name)?;
        let credential: Passkey = serde_json::from_str(&record.credential).map_err(|e| {
            format!(
                "passkey {:?}: credential is not a passkey: {e}",
                record.name
            )
        })?;
        if id_of(&credential) != record.id {
            return Err(format!(
                "passkey {:?}: its id is not its credential's",
                record.name
            ));
        }
        Ok(UserPasskey { record, credential })
    }

    /// A passkey just registered.
    pub fn registered(name: &str, credential: Passkey, now_secs: u64) -> Result<Self, String> {
        check_name(name)?;
        let record = PasskeyRecord {
            name: name.trim().to_owned(),
            id: id_of(&credential),
            added: now_secs,
            used: None,
            credential: credential_text(&credential),
        };
        Ok(UserPasskey { record, credential })
    }
}

/// The credential ID of `passkey`, base64url without padding.
pub fn id_of(passkey: &Passkey) -> String {
    data_encoding::BASE64URL_NOPAD.encode(passkey.cred_id().as_ref())
}

/// `passkey` as stored.
pub fn credential_text(passkey: &Passkey) -> String {
    serde_json::to_string(passkey).expect("a passkey serializes")
}

/// A passkey's name: 1 to [`MAX_NAME_CHARS`] visible characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "a passkey's name has 1 to {MAX_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("a passkey's name has no control characters".into());
    }
    Ok(())
}

/// The WebAuthn user handle of the account `key` (canonical name): the
/// same on every replica and after every restart, so that a discoverable
/// passkey names its account; no name in it.
pub fn user_handle(key: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"authgate passkey user\0")
        .chain_update(key.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_handles_are_stable_per_account() {
        assert!(check_name("laptop").is_ok());
        assert!(check_name("  ").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name("a\nb").is_err());
        assert_eq!(user_handle("alice"), user_handle("alice"));
        assert_ne!(user_handle("alice"), user_handle("bob"));
    }

    #[test]
    fn a_record_whose_id_is_not_its_credentials_is_refused() {
        let bad = PasskeyRecord {
            name: "x".into(),
            id: "AAAA".into(),
            added: 1,
            used: None,
            credential: "{}".into(),
        };
        assert!(UserPasskey::new(bad).unwrap_err().contains("not a passkey"));
    }
}
