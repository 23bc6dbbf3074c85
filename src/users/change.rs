//! A change to the users (add, remove, lock, set a password, roles or a
//! second factor), what can refuse it, and how it edits a users.toml with
//! toml_edit so that comments and layout stay.

use std::path::PathBuf;

use toml_edit::{value, Array, DocumentMut, Item, Table};

use super::canonical;

/// Shortest password the gateway accepts when one is set or changed.
pub const MIN_PASSWORD_CHARS: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum UserFileError {
    #[error("there is no user {0:?}")]
    UnknownUser(String),
    #[error("a user {0:?} already exists")]
    Duplicate(String),
    #[error("the password is too short: it needs at least {MIN_PASSWORD_CHARS} characters")]
    WeakPassword,
    #[error("invalid username {0:?}: use letters, digits and . _ @ -")]
    BadName(String),
    #[error("invalid role {0:?}: roles are visible ASCII without commas")]
    BadRole(String),
    #[error("the users file {path} cannot be {doing}: {error}")]
    Io {
        path: PathBuf,
        doing: &'static str,
        error: std::io::Error,
    },
    #[error("the users file would not be valid after this change: {0}")]
    Invalid(String),
    #[error("no users file is configured ([users] file in the config)")]
    NotConfigured,
    #[error("the shared user store is unavailable; nothing was changed")]
    StoreUnavailable,
    #[error("that recovery code is not valid (or was used already)")]
    UnknownRecoveryCode,
    #[error("there is no such passkey")]
    UnknownPasskey,
    /// A passkey's use was noted by another sign-in meanwhile (its counter
    /// moved): this one is refused.
    #[error("the passkey was used by another sign-in meanwhile")]
    PasskeyChanged,
    #[error("invalid passkey: {0}")]
    BadPasskey(String),
    /// The users file is read-only here (a Secret, a read-only mount, a
    /// file nobody may write): its users are managed elsewhere.
    #[error("the users file {path} is read-only here ({why}): users are managed where it comes from; nothing was changed")]
    ReadOnly { path: PathBuf, why: String },
}

/// One change to the users file. Passwords arrive already hashed.
#[derive(Debug, Clone)]
pub enum Change {
    /// Adds a user; a service account (`service`) has no password
    /// (`password_hash` empty) and holds only API tokens.
    Add {
        name: String,
        password_hash: String,
        roles: Vec<String>,
        service: bool,
    },
    SetPassword {
        name: String,
        password_hash: String,
    },
    SetRoles {
        name: String,
        roles: Vec<String>,
    },
    Lock(String),
    /// Locks out a person an `[[oidc]]` provider vouches for: an entry
    /// with the provider's name and no password, locked (made if missing).
    LockProviderUser {
        name: String,
        provider: String,
    },
    Unlock(String),
    Delete(String),
    /// Enrolls a second factor: the TOTP secret and the recovery codes' hashes.
    SetTotp {
        name: String,
        secret: super::TotpSecret,
        recovery_codes: Vec<String>,
        /// A directory's user: their entry (no password, the provider's
        /// name) is made if missing, to keep the second factor.
        provider: Option<String>,
    },
    /// Removes the second factor (secret and recovery codes).
    ResetTotp(String),
    /// Uses up one recovery code (by its hash); refused if it is not there.
    UseRecoveryCode {
        name: String,
        hash: String,
    },
    /// Adds a passkey. A directory's user's entry is made if missing, as
    /// for [`Change::SetTotp`].
    AddPasskey {
        name: String,
        passkey: super::passkey::PasskeyRecord,
        provider: Option<String>,
    },
    /// Removes one passkey, by credential ID.
    RemovePasskey {
        name: String,
        id: String,
    },
    /// Notes a passkey's use: its credential as it is now (counter, backup
    /// flags) and when. Refused unless the stored credential is still
    /// `before`, so two sign-ins can never both move it from one state.
    UsePasskey {
        name: String,
        id: String,
        before: String,
        after: String,
        used: u64,
    },
    /// Removes every passkey of the user.
    ResetPasskeys(String),
}

impl Change {
    /// The user the change is about, as named.
    pub fn name(&self) -> &str {
        match self {
            Change::Add { name, .. }
            | Change::SetPassword { name, .. }
            | Change::SetRoles { name, .. }
            | Change::Lock(name)
            | Change::LockProviderUser { name, .. }
            | Change::Unlock(name)
            | Change::Delete(name)
            | Change::SetTotp { name, .. }
            | Change::ResetTotp(name)
            | Change::UseRecoveryCode { name, .. }
            | Change::AddPasskey { name, .. }
            | Change::RemovePasskey { name, .. }
            | Change::UsePasskey { name, .. }
            | Change::ResetPasskeys(name) => name,
        }
    }
}

/// Checks a new password against the gateway's rule (before hashing it).
pub fn check_new_password(password: &str) -> Result<(), UserFileError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserFileError::WeakPassword);
    }
    Ok(())
}

pub fn check_role(role: &str) -> Result<(), UserFileError> {
    if role.is_empty() || role.contains(',') || !role.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(UserFileError::BadRole(role.to_owned()));
    }
    Ok(())
}

/// A new user's name, trimmed: letters, digits and `. _ @ -`.
pub fn checked_name(name: &str) -> Result<&str, UserFileError> {
    let trimmed = name.trim();
    if trimmed.is_empty()
        || !trimmed
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err(UserFileError::BadName(name.to_owned()));
    }
    Ok(trimmed)
}

/// The key under `[users]` that names `name`, in whatever spelling the file uses.
fn find_key(users: &Table, name: &str) -> Option<String> {
    let wanted = canonical(name);
    users
        .iter()
        .map(|(k, _)| k)
        .find(|k| canonical(k) == wanted)
        .map(str::to_owned)
}

fn roles_array(roles: &[String]) -> Result<Array, UserFileError> {
    let mut array = Array::new();
    for role in roles {
        check_role(role)?;
        array.push(role.as_str());
    }
    Ok(array)
}

pub(super) fn edit(document: &mut DocumentMut, change: &Change) -> Result<(), UserFileError> {
    if !document.contains_key("users") {
        let mut table = Table::new();
        table.set_implicit(true);
        document.insert("users", Item::Table(table));
    }
    let users = document["users"]
        .as_table_mut()
        .ok_or_else(|| UserFileError::Invalid("`users` is not a table".into()))?;
    let existing = |users: &Table, name: &str| {
        find_key(users, name).ok_or_else(|| UserFileError::UnknownUser(name.to_owned()))
    };
    match change {
        Change::LockProviderUser { name, provider } => match find_key(users, name) {
            Some(key) if users[&key].get("provider").is_some() => {
                users[&key]["locked"] = value(true);
            }
            Some(_) => return Err(UserFileError::Duplicate(name.trim().to_owned())),
            None => {
                let trimmed = checked_name(name)?;
                let mut table = Table::new();
                table.insert("provider", value(provider.as_str()));
                table.insert("locked", value(true));
                users.insert(trimmed, Item::Table(table));
            }
        },
        Change::Add {
            name,
            password_hash,
            roles,
            service,
        } => {
            let trimmed = checked_name(name)?;
            if find_key(users, trimmed).is_some() {
                return Err(UserFileError::Duplicate(trimmed.to_owned()));
            }
            let mut table = Table::new();
            if *service {
                table.insert("service", value(true));
            } else {
                table.insert("password", value(password_hash.as_str()));
            }
            table.insert("roles", value(roles_array(roles)?));
            users.insert(trimmed, Item::Table(table));
        }
        Change::SetPassword {
            name,
            password_hash,
        } => {
            let key = existing(users, name)?;
            users[&key]["password"] = value(password_hash.as_str());
        }
        Change::SetRoles { name, roles } => {
            let key = existing(users, name)?;
            users[&key]["roles"] = value(roles_array(roles)?);
        }
        Change::Lock(name) => {
            let key = existing(users, name)?;
            users[&key]["locked"] = value(true);
        }
        Change::Unlock(name) => {
            let key = existing(users, name)?;
            if let Some(table) = users[&key].as_table_like_mut() {
                table.remove("locked");
            }
        }
        Change::Delete(name) => {
            let key = existing(users, name)?;
            users.remove(&key);
        }
        Change::SetTotp {
            name,
            secret,
            recovery_codes,
            provider,
        } => {
            let key = entry_for(users, name, provider.as_deref())?;
            users[&key]["totp"] = value(secret.expose());
            let mut array = Array::new();
            for hash in recovery_codes {
                array.push(hash.as_str());
            }
            users[&key]["recovery_codes"] = value(array);
        }
        Change::ResetTotp(name) => {
            let key = existing(users, name)?;
            if let Some(table) = users[&key].as_table_like_mut() {
                table.remove("totp");
                table.remove("recovery_codes");
            }
        }
        Change::UseRecoveryCode { name, hash } => {
            let key = existing(users, name)?;
            let codes = users[&key]
                .get_mut("recovery_codes")
                .and_then(Item::as_array_mut)
                .ok_or(UserFileError::UnknownRecoveryCode)?;
            let at = codes
                .iter()
                .position(|v| v.as_str() == Some(hash.as_str()))
                .ok_or(UserFileError::UnknownRecoveryCode)?;
            codes.remove(at);
        }
        Change::AddPasskey {
            name,
            passkey,
            provider,
        } => {
            let key = entry_for(users, name, provider.as_deref())?;
            let table = users[&key]
                .as_table_mut()
                .ok_or_else(|| UserFileError::Invalid(format!("user {key:?} is not a table")))?;
            let list = table
                .entry("passkeys")
                .or_insert(Item::ArrayOfTables(Default::default()))
                .as_array_of_tables_mut()
                .ok_or_else(|| UserFileError::Invalid("`passkeys` is not a list".into()))?;
            if list
                .iter()
                .any(|t| t.get("id").and_then(Item::as_str) == Some(passkey.id.as_str()))
            {
                return Err(UserFileError::BadPasskey("it was added already".into()));
            }
            let mut row = Table::new();
            row.insert("name", value(passkey.name.as_str()));
            row.insert("id", value(passkey.id.as_str()));
            row.insert("added", value(passkey.added as i64));
            row.insert("credential", value(passkey.credential.as_str()));
            list.push(row);
        }
        Change::RemovePasskey { name, id } => {
            let key = existing(users, name)?;
            let list = passkeys_of(users, &key)?;
            let at = position_of(list, id)?;
            list.remove(at);
            if list.is_empty() {
                if let Some(table) = users[&key].as_table_like_mut() {
                    table.remove("passkeys");
                }
            }
        }
        Change::UsePasskey {
            name,
            id,
            before,
            after,
            used,
        } => {
            let key = existing(users, name)?;
            let list = passkeys_of(users, &key)?;
            let at = position_of(list, id)?;
            let row = list.get_mut(at).expect("found just now");
            if row.get("credential").and_then(Item::as_str) != Some(before.as_str()) {
                return Err(UserFileError::PasskeyChanged);
            }
            row["credential"] = value(after.as_str());
            row["used"] = value(*used as i64);
        }
        Change::ResetPasskeys(name) => {
            let key = existing(users, name)?;
            if let Some(table) = users[&key].as_table_like_mut() {
                table.remove("passkeys");
            }
        }
    }
    Ok(())
}

/// The key of `name`'s entry; for a directory's (or provider's) user,
/// made (no password, the provider's name) if missing. A local user of
/// that name is a duplicate.
fn entry_for(
    users: &mut Table,
    name: &str,
    provider: Option<&str>,
) -> Result<String, UserFileError> {
    match (find_key(users, name), provider) {
        (Some(key), Some(_)) if users[&key].get("provider").is_none() => {
            Err(UserFileError::Duplicate(name.trim().to_owned()))
        }
        (Some(key), _) => Ok(key),
        (None, Some(provider)) => {
            let trimmed = checked_name(name)?;
            let mut table = Table::new();
            table.insert("provider", value(provider));
            users.insert(trimmed, Item::Table(table));
            Ok(trimmed.to_owned())
        }
        (None, None) => Err(UserFileError::UnknownUser(name.to_owned())),
    }
}

fn passkeys_of<'t>(
    users: &'t mut Table,
    key: &str,
) -> Result<&'t mut toml_edit::ArrayOfTables, UserFileError> {
    users[key]
        .get_mut("passkeys")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or(UserFileError::UnknownPasskey)
}

fn position_of(list: &toml_edit::ArrayOfTables, id: &str) -> Result<usize, UserFileError> {
    list.iter()
        .position(|t| t.get("id").and_then(Item::as_str) == Some(id))
        .ok_or(UserFileError::UnknownPasskey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::passkey::PasskeyRecord;

    fn record(id: &str, credential: &str) -> PasskeyRecord {
        PasskeyRecord {
            name: "laptop".into(),
            id: id.into(),
            added: 1,
            used: None,
            credential: credential.into(),
        }
    }

    #[test]
    fn a_passkeys_use_is_saved_only_from_the_state_it_was_checked_against() {
        let mut doc: DocumentMut = "[users.Bob]\npassword = \"x\"\n".parse().unwrap();
        let add = |id: &str| Change::AddPasskey {
            name: "bob".into(),
            passkey: record(id, "{\"counter\":1}"),
            provider: None,
        };
        edit(&mut doc, &add("AAAA")).unwrap();
        edit(&mut doc, &add("BBBB")).unwrap();
        assert!(matches!(
            edit(&mut doc, &add("AAAA")),
            Err(UserFileError::BadPasskey(_))
        ));
        let used = |before: &str, after: &str| Change::UsePasskey {
            name: "BOB".into(),
            id: "AAAA".into(),
            before: before.into(),
            after: after.into(),
            used: 7,
        };
        edit(&mut doc, &used("{\"counter\":1}", "{\"counter\":2}")).unwrap();
        // A second sign-in that checked the same counter loses.
        assert!(matches!(
            edit(&mut doc, &used("{\"counter\":1}", "{\"counter\":2}")),
            Err(UserFileError::PasskeyChanged)
        ));
        let text = doc.to_string();
        assert!(
            text.contains("{\"counter\":2}") && text.contains("used = 7"),
            "{text}"
        );
        let remove = |id: &str| Change::RemovePasskey {
            name: "bob".into(),
            id: id.into(),
        };
        edit(&mut doc, &remove("AAAA")).unwrap();
        assert!(matches!(
            edit(&mut doc, &remove("AAAA")),
            Err(UserFileError::UnknownPasskey)
        ));
        edit(&mut doc, &Change::ResetPasskeys("bob".into())).unwrap();
        assert!(!doc.to_string().contains("passkeys"), "{doc}");
        // A directory's user gets an entry of their own; a local name is not theirs.
        let directory = |name: &str| Change::AddPasskey {
            name: name.into(),
            passkey: record("CCCC", "{}"),
            provider: Some("ldap".into()),
        };
        edit(&mut doc, &directory("carol")).unwrap();
        assert!(doc.to_string().contains("provider = \"ldap\""));
        assert!(matches!(
            edit(&mut doc, &directory("bob")),
            Err(UserFileError::Duplicate(_))
        ));
    }
}
