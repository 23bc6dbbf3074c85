//! Signing in against a directory (`[ldap]`: OpenLDAP, Active Directory)
//! on the same password form as local users, and keeping its users'
//! sessions true to what the directory says.
//!
//! - A sign-in hashes like a local sign-in (a stand-in hash when the name
//!   is not local), then makes one search and one bind whoever is named
//!   ([`directory::Directory::sign_in`]): a wrong name, a wrong password,
//!   a local or a directory user cost the same work.
//! - A directory user's session is marked with the provider
//!   [`Ldap::NAME`] and carries their roles and headers as the directory
//!   gave them; an entry `provider = "ldap"` in the users file locks
//!   them out by name, like a provider's user.
//! - Every `recheck`, the directory is asked again about everyone with a
//!   session ([`Auth::recheck_directory`]): an account gone, disabled or
//!   no longer matching the user filter ends its sessions; changed groups
//!   change the sessions' roles and headers. With a shared store one
//!   replica does it per round.

pub mod directory;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::metrics::DirectoryStats;
pub use directory::{Directory, Down, Person, Verdict};

use super::Auth;
use crate::config::{Config, Ldap, NameOrder};
use crate::response::GatewayError;
use crate::session::{self, Vouched};
use crate::users::{canonical, User};

/// The records kind of the recheck's round lock (one replica per round).
const RECHECK_KIND: &str = "ldap-recheck";

/// The directory in force; a reload that changes `[ldap]` starts afresh
/// (new connections), keeping the same figures.
pub struct Directories {
    current: Mutex<Option<Arc<Directory>>>,
    stats: Arc<DirectoryStats>,
}

impl Directories {
    pub fn new(stats: Arc<DirectoryStats>) -> Directories {
        Directories {
            current: Mutex::new(None),
            stats,
        }
    }

    /// The directory for `settings` (the config in force).
    pub fn of(&self, settings: &Arc<Ldap>) -> Arc<Directory> {
        let mut current = self.current.lock().expect("not poisoned");
        match &*current {
            Some(d) if Arc::ptr_eq(&d.settings, settings) => d.clone(),
            _ => {
                let fresh = Arc::new(Directory::new(settings.clone(), self.stats.clone()));
                *current = Some(fresh.clone());
                fresh
            }
        }
    }

    /// The directory last used or put in force, if `[ldap]` is configured.
    pub fn current(&self) -> Option<Arc<Directory>> {
        self.current.lock().expect("not poisoned").clone()
    }

    /// Puts `[ldap]` of a (re)loaded config in force.
    pub fn set(&self, settings: Option<&Arc<Ldap>>) {
        match settings {
            Some(settings) => {
                self.of(settings);
            }
            None => *self.current.lock().expect("not poisoned") = None,
        }
    }
}

/// Whose password a sign-in form carried.
pub(super) enum Outcome {
    Local(Arc<User>),
    Directory(Arc<Vouched>),
    Refused {
        /// The password was right but an administrator locked the account.
        locked: bool,
    },
    /// The directory cannot be asked and the name is not local.
    DirectoryDown,
}

/// A directory person as their session keeps them.
pub fn vouched(person: &Person) -> Option<Vouched> {
    let user = User::vouched(&person.name, person.roles.clone(), Ldap::NAME.into()).ok()?;
    Some(Vouched {
        user: Arc::new(user),
        headers: person.headers.clone(),
        subject: person.dn.as_str().into(),
        sid: None,
        id_token: "".into(),
    })
}

impl Auth {
    /// Checks a sign-in form's name and password against the users file
    /// and, with `[ldap]`, the directory (both always asked).
    pub(super) async fn check_password(
        &self,
        config: &Config,
        typed: &str,
        password: &str,
    ) -> Result<Outcome, GatewayError> {
        let key = canonical(typed);
        let entry = self.users.load().get_by_key(&key).cloned();
        let local = entry.as_ref().filter(|u| u.provider.is_none()).cloned();
        let Some(settings) = &config.ldap else {
            let matched = self.password_matches(local.as_deref(), password).await?;
            return Ok(match local {
                Some(user) if matched && !user.locked => Outcome::Local(user),
                Some(user) => Outcome::Refused {
                    locked: matched && user.locked,
                },
                None => Outcome::Refused { locked: false },
            });
        };
        let directory = self.directories.of(settings);
        // The hash first: a sign-in the hashing queue has no place for
        // (503, busy) costs the directory nothing, so a burst is bounded
        // there as for local users.
        let matched = self.password_matches(local.as_deref(), password).await?;
        let found = directory.sign_in(typed, password).await;
        let local_outcome = |user: Arc<User>| match (matched, user.locked) {
            (true, false) => Outcome::Local(user),
            (m, locked) => Outcome::Refused {
                locked: m && locked,
            },
        };
        let found = match (found, local) {
            // The directory cannot say: a local user with their password
            // still signs in; anything else is "unavailable", so that an
            // outage does not tell local names from unknown ones.
            (Err(_), Some(user)) => {
                return Ok(match local_outcome(user) {
                    Outcome::Local(user) => Outcome::Local(user),
                    _ => Outcome::DirectoryDown,
                })
            }
            (Err(_), None) => return Ok(Outcome::DirectoryDown),
            (Ok(Verdict::Unknown), Some(user)) => return Ok(local_outcome(user)),
            (Ok(verdict), Some(user)) => match settings.order {
                Some(NameOrder::LocalFirst) => return Ok(local_outcome(user)),
                Some(NameOrder::DirectoryFirst) => verdict,
                None => {
                    tracing::error!(user = %user.name, "a name is both in the users file and in the directory, and [users] order does not say which signs in: refused");
                    return Ok(Outcome::Refused { locked: false });
                }
            },
            (Ok(verdict), None) => verdict,
        };
        let person = match found {
            Verdict::Passed(person) => person,
            Verdict::Ambiguous => {
                tracing::warn!(user = %super::password::truncate(typed), "more than one directory entry matches the name: refused");
                return Ok(Outcome::Refused { locked: false });
            }
            Verdict::Disabled => return Ok(Outcome::Refused { locked: true }),
            Verdict::Unknown | Verdict::WrongPassword => {
                return Ok(Outcome::Refused { locked: false })
            }
        };
        let Some(vouched) = vouched(&person) else {
            tracing::warn!(dn = %person.dn, "a directory user's name cannot be used here");
            return Ok(Outcome::Refused { locked: false });
        };
        // Their own name (not the typed one) is what locks and clashes go by.
        match self.users.load().get_by_key(&vouched.user.key) {
            Some(e)
                if e.provider.is_none() && settings.order != Some(NameOrder::DirectoryFirst) =>
            {
                tracing::error!(user = %e.name, "a directory user's name belongs to a local user: refused (see [users] order)");
                Ok(Outcome::Refused { locked: false })
            }
            Some(e) if e.provider.as_deref() == Some(Ldap::NAME) && e.locked => {
                Ok(Outcome::Refused { locked: true })
            }
            _ => Ok(Outcome::Directory(Arc::new(vouched))),
        }
    }

    /// `user` as the second-factor pages see them: a directory user (from
    /// their session) gets the second factor the users file keeps for
    /// them (an entry `provider = "ldap"`); anyone else is as they are.
    pub fn with_second_factor(&self, user: &Arc<User>) -> Arc<User> {
        if user.provider.as_deref() != Some(Ldap::NAME) {
            return user.clone();
        }
        let users = self.users.load();
        let Some(entry) = users
            .get_by_key(&user.key)
            .filter(|e| e.provider.as_deref() == Some(Ldap::NAME) && e.has_second_factor())
        else {
            return user.clone();
        };
        Arc::new(User {
            name: user.name.clone(),
            key: user.key.clone(),
            password_hash: user.password_hash.clone(),
            roles: user.roles.clone(),
            roles_header: user.roles_header.clone(),
            name_header: user.name_header.clone(),
            locked: entry.locked,
            password_fingerprint: user.password_fingerprint,
            generation: user.generation,
            totp: entry.totp.clone(),
            recovery_codes: entry.recovery_codes.clone(),
            passkeys: entry.passkeys.clone(),
            service: false,
            provider: user.provider.clone(),
        })
    }

    /// Who the directory says a directory's user is today (a passkey
    /// sign-in, which asks it for no password): `None` when the entry is
    /// gone, disabled or outside `user_filter`.
    pub(super) async fn directory_person(
        &self,
        config: &Config,
        user: &User,
    ) -> Result<Option<Arc<Vouched>>, GatewayError> {
        let Some(settings) = &config.ldap else {
            return Ok(None);
        };
        match self.directories.of(settings).find(&user.name).await {
            Ok(Some(person)) if !person.disabled => Ok(vouched(&person).map(Arc::new)),
            Ok(_) => Ok(None),
            Err(_) => Err(GatewayError::DirectoryUnavailable),
        }
    }

    /// Whether `user` (signed in) has a second factor here.
    pub fn has_second_factor(&self, user: &User) -> bool {
        user.has_second_factor()
            || (user.provider.as_deref() == Some(Ldap::NAME)
                && self.users.load().get_by_key(&user.key).is_some_and(|e| {
                    e.provider.as_deref() == Some(Ldap::NAME) && e.has_second_factor()
                }))
    }

    /// Whether `typed` is the password of `user`, who is signed in (or
    /// half-way): the users file's hash, or for a directory user a bind
    /// as the entry the directory names them by today.
    pub(super) async fn own_password_matches(
        &self,
        user: &User,
        typed: &str,
    ) -> Result<bool, GatewayError> {
        if user.provider.as_deref() != Some(Ldap::NAME) {
            return self.password_matches(Some(user), typed).await;
        }
        let Some(directory) = self.directories.current() else {
            return Ok(false);
        };
        match directory.sign_in(&user.name, typed).await {
            Ok(Verdict::Passed(person)) => Ok(*canonical(&person.name) == *user.key),
            Ok(_) => Ok(false),
            Err(_) => Err(GatewayError::DirectoryUnavailable),
        }
    }

    /// With `[ldap]` and no `[users] order`: the users file's names that
    /// the directory also has (each such name can sign in neither way).
    pub async fn names_in_both(&self) -> Result<Vec<String>, Down> {
        let Some(directory) = self.directories.current() else {
            return Ok(Vec::new());
        };
        if directory.settings.order.is_some() {
            return Ok(Vec::new());
        }
        let local: Vec<String> = self
            .users
            .load()
            .iter()
            .filter(|u| u.provider.is_none())
            .map(|u| u.key.to_string())
            .collect();
        let mut both: Vec<String> = directory.look_up(&local).await?.into_keys().collect();
        both.sort();
        Ok(both)
    }

    /// Asks the directory again about every user with a session it
    /// vouched for (one round). Returns (sessions changed or ended, users
    /// asked), or `Err` when the directory could not be asked (sessions
    /// stay as they are until it answers).
    pub async fn recheck_directory(&self) -> Result<(usize, usize), Down> {
        let Some(directory) = self.directories.current() else {
            return Ok((0, 0));
        };
        let sessions = self
            .store
            .sessions
            .list(None)
            .await
            .map_err(|_| Down("the session store cannot list sessions".into()))?;
        let mut by_user: BTreeMap<Arc<str>, Arc<Vouched>> = BTreeMap::new();
        for s in sessions {
            if let Some(v) = s.vouched.filter(|v| v.provider() == Ldap::NAME) {
                by_user.insert(s.user, v);
            }
        }
        let names: Vec<String> = by_user.keys().map(|k| k.to_string()).collect();
        let now = directory.look_up(&names).await?;
        let mut touched = 0;
        for (user, before) in &by_user {
            let fresh = now
                .get(&**user)
                .filter(|p| !p.disabled)
                .and_then(vouched)
                .map(Arc::new);
            let outcome = match &fresh {
                Some(fresh) if **fresh == **before => continue,
                Some(fresh) => {
                    crate::security_event!(info, event = "directory_user_changed", user = %user, roles = %fresh.user.roles.join(","), "the directory changed a user's groups: their sessions take the new roles");
                    self.store
                        .sessions
                        .replace_vouched(user, Ldap::NAME, Some(fresh))
                        .await
                }
                None => {
                    crate::security_event!(warn, event = "directory_user_gone", user = %user, "the directory no longer has this user (deleted, disabled or outside the user filter): their sessions end");
                    self.audit.remember(
                        "sessions_revoked",
                        "directory",
                        user,
                        "the directory no longer has the user".to_owned(),
                    );
                    self.store
                        .sessions
                        .replace_vouched(user, Ldap::NAME, None)
                        .await
                }
            };
            touched += outcome.map_err(|_| Down("the session store is unavailable".into()))?;
        }
        Ok((touched, names.len()))
    }

    /// Runs [`Self::recheck_directory`] every `recheck` of the directory
    /// in force, while the `Auth` lives. With a shared store, the replica
    /// that claims a round does it.
    pub(super) fn start_directory_recheck(self: &Arc<Self>) {
        let auth = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let every = match auth.upgrade().and_then(|a| a.directories.current()) {
                    Some(d) => d.settings.recheck,
                    None => std::time::Duration::from_secs(5),
                };
                tokio::time::sleep(every).await;
                let Some(auth) = auth.upgrade() else { break };
                if auth.directories.current().is_none() {
                    continue;
                }
                let round = session::now_ms() / every.as_millis().max(1) as u64;
                let mine = auth
                    .store
                    .records
                    .claim(RECHECK_KIND, &sha_of_round(round), every.as_millis() as u64)
                    .await
                    .unwrap_or(false);
                if !mine {
                    continue;
                }
                match auth.recheck_directory().await {
                    Ok((changed, users)) => {
                        tracing::debug!(users, changed, "directory users checked again")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "directory users could not be checked again; their sessions stay as they are until the next round")
                    }
                }
            }
        });
    }
}

fn sha_of_round(round: u64) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(round.to_be_bytes()).into()
}
