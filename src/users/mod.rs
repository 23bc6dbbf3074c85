//! The users file (`users.toml`): who may sign in, with which password hash
//! and roles. Usernames are compared canonically (SPEC §5): trimmed and
//! lower-cased, so `Alice`, `alice` and ` alice ` are one account.

pub mod change;
pub mod file;
pub mod passkey;
pub mod password;
pub mod totp;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::diag::ConfigError;
use crate::diag::{self, Diagnostics};

#[derive(Debug, Deserialize)]
struct RawUsersFile {
    #[serde(default)]
    users: BTreeMap<String, Spanned<RawUser>>,
}

#[derive(Debug, Deserialize)]
struct RawUser {
    /// Absent only for a provider's user (`provider`).
    password: Option<Spanned<String>>,
    /// An `[[oidc]]` provider's user, kept here only to be locked out: no
    /// password, no roles (the provider's claims give those).
    provider: Option<Spanned<String>>,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
    #[serde(default)]
    locked: bool,
    /// A service account: no password, only API tokens.
    #[serde(default)]
    service: bool,
    /// The TOTP secret (base32), once the user enrolled.
    totp: Option<Spanned<String>>,
    /// Unused recovery codes, as `sha256:HEX`.
    #[serde(default)]
    recovery_codes: Vec<Spanned<String>>,
    /// Passkeys: public keys and credential IDs (nothing secret).
    #[serde(default)]
    passkeys: Vec<Spanned<passkey::PasskeyRecord>>,
}

/// A TOTP secret: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Box<str>);

impl TotpSecret {
    pub fn new(secret: impl Into<Box<str>>) -> TotpSecret {
        TotpSecret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

/// One account as the gateway uses it.
#[derive(Debug)]
pub struct User {
    /// The name as written in the file; sent upstream in the user header.
    pub name: Arc<str>,
    /// The canonical name, the key of every lookup and counter.
    pub key: Arc<str>,
    /// An argon2id PHC string.
    pub password_hash: Box<str>,
    /// Sorted, without duplicates.
    pub roles: Vec<String>,
    /// `roles` joined with commas, ready for the roles header.
    pub roles_header: HeaderValue,
    /// `name`, ready for the user header.
    pub name_header: HeaderValue,
    pub locked: bool,
    /// Changes whenever the password hash does: a session remembers the
    /// value it began with and ends when the two differ.
    pub password_fingerprint: u32,
    /// Bumped by a store shared between replicas at every lock,
    /// password change and "end all sessions": a session remembers the
    /// value it began with and ends when the two differ. Always 0 with a
    /// users file, which ends sessions by itself.
    pub generation: u64,
    /// Set once the user enrolled a second factor.
    pub totp: Option<TotpSecret>,
    /// Hashes of the recovery codes not used yet.
    pub recovery_codes: Vec<String>,
    /// The passkeys the user added.
    pub passkeys: Vec<passkey::UserPasskey>,
    /// A service account: no password (nothing ever matches), only API
    /// tokens.
    pub service: bool,
    /// The `[[oidc]]` provider that vouched for this person; `None` for
    /// the users file's own users (wherever the store keeps them).
    pub provider: Option<Arc<str>>,
}

/// One account as a store other than the users file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub locked: bool,
    pub generation: u64,
    pub totp: Option<TotpSecret>,
    pub recovery_codes: Vec<String>,
    pub passkeys: Vec<passkey::PasskeyRecord>,
    /// A service account (the password hash is then empty).
    pub service: bool,
    /// Set for a provider's user kept here to be locked out; the password
    /// hash is then empty.
    pub provider: Option<String>,
}

impl User {
    /// Checks and builds one account; the error says what is wrong
    /// (never echoing the password).
    pub fn new(entry: Entry) -> Result<User, String> {
        let name = entry.name.trim();
        let key = canonical(name);
        if key.is_empty() || key.chars().any(char::is_control) {
            return Err(format!("invalid username {name:?}"));
        }
        match &entry.provider {
            Some(_) if !entry.password_hash.is_empty() || !entry.roles.is_empty() => {
                return Err(format!(
                    "user {name:?}: a provider's user has no password or roles here"
                ))
            }
            Some(_) if entry.service => {
                return Err(format!(
                    "user {name:?}: a provider's user is no service account"
                ))
            }
            Some(_) => {}
            None if entry.service && !entry.password_hash.is_empty() => {
                return Err(format!(
                    "user {name:?}: a service account has no password (only API tokens)"
                ))
            }
            None if entry.service => {}
            None => password::check_phc(&entry.password_hash)
                .map_err(|reason| format!("user {name:?}: {reason}"))?,
        }
        let mut roles = Vec::with_capacity(entry.roles.len());
        for role in entry.roles {
            file::check_role(role.trim()).map_err(|e| format!("user {name:?}: {e}"))?;
            roles.push(role.trim().to_owned());
        }
        roles.sort();
        roles.dedup();
        let roles_header =
            HeaderValue::from_str(&roles.join(",")).expect("roles are checked to be visible ASCII");
        let name_header =
            HeaderValue::from_str(name).map_err(|_| format!("invalid username {name:?}"))?;
        if let Some(secret) = &entry.totp {
            if !crate::users::totp::valid_secret(secret.expose()) {
                return Err(format!(
                    "user {name:?}: totp is not a base32 secret of at least 80 bits"
                ));
            }
        }
        if let Some(bad) = entry
            .recovery_codes
            .iter()
            .find(|h| !crate::users::totp::valid_recovery_hash(h))
        {
            let shown: String = bad.chars().take(12).collect();
            return Err(format!(
                "user {name:?}: recovery code {shown:?}... is not sha256:HEX"
            ));
        }
        if entry.passkeys.len() > passkey::MAX_PER_USER {
            return Err(format!(
                "user {name:?}: more than {} passkeys",
                passkey::MAX_PER_USER
            ));
        }
        let mut passkeys = Vec::with_capacity(entry.passkeys.len());
        for record in entry.passkeys {
            if passkeys
                .iter()
                .any(|p: &passkey::UserPasskey| p.record.id == record.id)
            {
                return Err(format!("user {name:?}: a passkey is listed twice"));
            }
            passkeys.push(
                passkey::UserPasskey::new(record).map_err(|e| format!("user {name:?}: {e}"))?,
            );
        }
        Ok(User {
            name: name.into(),
            key: key.into(),
            password_fingerprint: password_fingerprint(&entry.password_hash),
            password_hash: entry.password_hash.into(),
            roles,
            roles_header,
            name_header,
            locked: entry.locked,
            generation: entry.generation,
            totp: entry.totp,
            recovery_codes: entry.recovery_codes,
            passkeys,
            service: entry.service,
            provider: entry.provider.map(Into::into),
        })
    }

    /// A person an identity provider vouched for: `name` as the provider
    /// gave it (checked to be a header value), `roles` as the provider's
    /// `role_map` gave them. They have no password here: nothing ever
    /// checks one against them.
    pub fn vouched(name: &str, roles: Vec<String>, provider: Arc<str>) -> Result<User, String> {
        let key = canonical(name);
        let name_header =
            HeaderValue::from_str(name).map_err(|_| format!("invalid username {name:?}"))?;
        if key.is_empty() || name.chars().any(char::is_control) || name != name.trim() {
            return Err(format!("invalid username {name:?}"));
        }
        let mut roles = roles;
        roles.sort();
        roles.dedup();
        for role in &roles {
            file::check_role(role).map_err(|e| format!("user {name:?}: {e}"))?;
        }
        let roles_header =
            HeaderValue::from_str(&roles.join(",")).expect("roles are checked to be visible ASCII");
        Ok(User {
            name: name.into(),
            key: key.into(),
            password_hash: "".into(),
            roles,
            roles_header,
            name_header,
            locked: false,
            password_fingerprint: 0,
            generation: 0,
            totp: None,
            recovery_codes: Vec::new(),
            passkeys: Vec::new(),
            service: false,
            provider: Some(provider),
        })
    }

    pub fn entry(&self) -> Entry {
        Entry {
            name: self.name.to_string(),
            password_hash: self.password_hash.to_string(),
            roles: self.roles.clone(),
            locked: self.locked,
            generation: self.generation,
            totp: self.totp.clone(),
            recovery_codes: self.recovery_codes.clone(),
            passkeys: self.passkeys.iter().map(|p| p.record.clone()).collect(),
            service: self.service,
            provider: self.provider.as_deref().map(str::to_owned),
        }
    }

    /// The same account acting with only `roles` (an API token that names
    /// some of its roles); `None` if a role is not one it could hold.
    pub fn with_roles(user: &User, mut roles: Vec<String>) -> Option<User> {
        roles.sort();
        roles.dedup();
        Some(User {
            name: user.name.clone(),
            key: user.key.clone(),
            password_hash: user.password_hash.clone(),
            roles_header: HeaderValue::from_str(&roles.join(",")).ok()?,
            roles,
            name_header: user.name_header.clone(),
            locked: user.locked,
            password_fingerprint: user.password_fingerprint,
            generation: user.generation,
            totp: None,
            recovery_codes: Vec::new(),
            passkeys: Vec::new(),
            service: user.service,
            provider: user.provider.clone(),
        })
    }

    /// Whether the user has a second factor: a TOTP app or a passkey.
    pub fn has_second_factor(&self) -> bool {
        self.totp.is_some() || !self.passkeys.is_empty()
    }
}

#[derive(Debug, Default, Clone)]
pub struct Users {
    by_key: HashMap<Arc<str>, Arc<User>>,
}

/// The canonical form of a username (SPEC §5).
pub fn canonical(name: &str) -> String {
    name.trim().to_lowercase()
}

pub fn password_fingerprint(hash: &str) -> u32 {
    let digest = Sha256::digest(hash.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

impl Users {
    /// Validates the text of a users file; `path` names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Users, ConfigError> {
        let mut diag = Diagnostics::new(path.display().to_string(), text);
        let Some(raw) = diag::deserialize::<RawUsersFile>(text, &mut diag) else {
            return Err(diag.finish().unwrap_err());
        };
        let mut by_key: HashMap<Arc<str>, Arc<User>> = HashMap::new();
        for (name, raw_user) in raw.users {
            let span = raw_user.span();
            let raw_user = raw_user.into_inner();
            let key = canonical(&name);
            if key.is_empty() || key.chars().any(char::is_control) {
                diag.at(span.clone(), format!("invalid username {name:?}"));
                continue;
            }
            if by_key.contains_key(key.as_str()) {
                diag.at(
                    span.clone(),
                    format!("user {name:?} is listed twice (names are compared ignoring case and surrounding spaces)"),
                );
                continue;
            }
            let password = match (&raw_user.password, &raw_user.provider) {
                (None, None) if raw_user.service => String::new(),
                (Some(password), None) => {
                    if let Err(reason) = password::check_phc(password.get_ref()) {
                        // Never echo the value: it may be a plaintext password.
                        diag.at(
                            password.span(),
                            format!(
                                "user {name:?}: {reason}; make one with `authgate hash-password`"
                            ),
                        );
                        continue;
                    }
                    password.get_ref().clone()
                }
                (None, Some(_)) => String::new(),
                (Some(password), Some(_)) => {
                    diag.at(
                        password.span(),
                        format!("user {name:?} is a provider's user (`provider`): they have no password here"),
                    );
                    continue;
                }
                (None, None) => {
                    diag.at(
                        span.clone(),
                        format!("user {name:?} has no password (make one with `authgate hash-password`)"),
                    );
                    continue;
                }
            };
            // Each bad role is named at its own place; the rest of the
            // checks and the building are `User::new`'s.
            let mut roles_ok = true;
            for role in &raw_user.roles {
                if let Err(e) = file::check_role(role.get_ref().trim()) {
                    diag.at(role.span(), format!("user {name:?}: {e}"));
                    roles_ok = false;
                }
            }
            if !roles_ok {
                continue;
            }
            let entry = Entry {
                name: name.clone(),
                password_hash: password,
                provider: raw_user.provider.map(Spanned::into_inner),
                roles: raw_user
                    .roles
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
                locked: raw_user.locked,
                service: raw_user.service,
                generation: 0,
                totp: raw_user.totp.map(|t| TotpSecret::new(t.into_inner())),
                recovery_codes: raw_user
                    .recovery_codes
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
                passkeys: raw_user
                    .passkeys
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
            };
            match User::new(entry) {
                Ok(user) => {
                    by_key.insert(user.key.clone(), Arc::new(user));
                }
                Err(e) => diag.at(span.clone(), e),
            }
        }
        diag.finish()?;
        Ok(Users { by_key })
    }

    /// Builds the users a shared store holds; the first bad entry is the error.
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Result<Users, String> {
        let mut by_key = HashMap::new();
        for entry in entries {
            let user = User::new(entry)?;
            if by_key.contains_key(&user.key) {
                return Err(format!("user {:?} is there twice", user.name));
            }
            by_key.insert(user.key.clone(), Arc::new(user));
        }
        Ok(Users { by_key })
    }

    /// The users as a users.toml (`authgate user export`), sorted by name.
    pub fn to_toml(&self) -> String {
        let mut list: Vec<_> = self.iter().collect();
        list.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out = String::new();
        for u in list {
            let mut table = toml::Table::new();
            match &u.provider {
                Some(provider) => table.insert("provider".into(), provider.to_string().into()),
                None if u.service => table.insert("service".into(), true.into()),
                None => table.insert("password".into(), u.password_hash.to_string().into()),
            };
            table.insert(
                "roles".into(),
                toml::Value::Array(u.roles.iter().map(|r| r.clone().into()).collect()),
            );
            if u.locked {
                table.insert("locked".into(), true.into());
            }
            if let Some(secret) = &u.totp {
                table.insert("totp".into(), secret.expose().into());
                table.insert(
                    "recovery_codes".into(),
                    toml::Value::Array(u.recovery_codes.iter().map(|h| h.clone().into()).collect()),
                );
            }
            if !u.passkeys.is_empty() {
                let list = u
                    .passkeys
                    .iter()
                    .map(|p| toml::Value::try_from(&p.record).expect("a record serializes"))
                    .collect();
                table.insert("passkeys".into(), toml::Value::Array(list));
            }
            let mut users = toml::Table::new();
            users.insert(u.name.to_string(), table.into());
            let mut doc = toml::Table::new();
            doc.insert("users".into(), users.into());
            out.push_str(&toml::to_string(&doc).expect("a table serializes"));
            out.push('\n');
        }
        out
    }

    /// Looks a user up by any spelling of the name.
    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_key.get(canonical(name).as_str())
    }

    /// Looks a user up by canonical name.
    pub fn get_by_key(&self, key: &str) -> Option<&Arc<User>> {
        self.by_key.get(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<User>> {
        self.by_key.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0Wd3o6T3ooE7kQ2oxLMhxfC8EBDqBb7DTKcWrMCsHrg";

    fn parse(text: &str) -> Result<Users, Vec<String>> {
        Users::parse(text, Path::new("users.toml"))
            .map_err(|e| e.problems.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn names_are_canonical_and_roles_sorted() {
        let users = parse(&format!(
            "[users.\" Alice \"]\npassword = \"{HASH}\"\nroles = [\"user\", \"admin\", \"user\"]\n"
        ))
        .unwrap();
        let alice = users.get("ALICE").unwrap();
        assert_eq!(&*alice.name, "Alice");
        assert_eq!(&*alice.key, "alice");
        assert_eq!(alice.roles, ["admin", "user"]);
        assert_eq!(alice.roles_header, "admin,user");
        assert!(!alice.locked);
        assert!(users.get(" alice").is_some());
    }

    #[test]
    fn plaintext_and_weak_hashes_are_refused_without_echoing_them() {
        let weak = "$argon2id$v=19$m=4096,t=1,p=1$c2FsdHNhbHRzYWx0$0Wd3o6T3ooE7kQ2oxLMhxfC8EBDqBb7DTKcWrMCsHrg";
        let bcrypt = "$2b$12$abcdefghijklmnopqrstuuTMXh0AVmNmjMKfmNy7eH5gJ0/yJHd4G";
        let text = format!(
            "[users.bob]\npassword = \"hunter2secret\"\n[users.carol]\npassword = \"{weak}\"\n[users.dave]\npassword = \"{bcrypt}\"\n"
        );
        let problems = parse(&text).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("users.toml:2:12: user \"bob\""),
            "{problems:?}"
        );
        assert!(problems[1].contains("user \"carol\""));
        assert!(problems[2].contains("user \"dave\""));
        assert!(!problems.join("\n").contains("hunter2secret"));
    }

    #[test]
    fn duplicates_after_canonicalization_and_unknown_keys_are_errors() {
        let text = format!(
            "[users.alice]\npassword = \"{HASH}\"\n[users.ALICE]\npassword = \"{HASH}\"\nrole = [\"x\"]\n"
        );
        let problems = parse(&text).unwrap_err().join("\n");
        assert!(problems.contains("listed twice"), "{problems}");
        assert!(
            problems.contains("unknown key `users.ALICE.role`"),
            "{problems}"
        );
    }
}
