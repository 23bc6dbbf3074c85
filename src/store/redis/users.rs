//! The users in Redis: seeding an empty one, the change counter replicas
//! poll, reading them all, and changes (each bumping the counter and, where
//! sessions must end, the user's generation).

use super::*;

impl Redis {
    /// Writes `users` into an empty Redis; true if it did. A Redis that has
    /// users already is never overwritten. One replica seeds at a time (it
    /// holds the `seeding` lock), and the `seeded` mark is set only once
    /// every user is in: a replica that waits for it, or polls, never
    /// reads half the users (and takes the missing ones for removed).
    pub async fn seed(&self, users: &Users) -> Result<bool, Unavailable> {
        let lock = self.key("seeding", "users");
        let took: Option<String> = self
            .call(
                redis::cmd("SET")
                    .arg(&lock)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(SEEDING_LOCK.as_millis() as u64),
            )
            .await?;
        if took.is_none() || self.poll().await?.1 {
            return Ok(false);
        }
        for user in users.iter() {
            let entry = user.entry();
            self.change(&Op::Add(&entry)).await?;
            if entry.locked {
                self.change(&Op::Simple("lock", &user.key)).await?;
            }
            if let Some(secret) = &entry.totp {
                self.change(&Op::Totp(&user.key, secret, &entry.recovery_codes))
                    .await?;
            }
            for passkey in &entry.passkeys {
                self.change(&Op::AddPasskey(&user.key, passkey)).await?;
            }
        }
        self.call::<()>(redis::cmd("SET").arg(self.key("seeded", "users")).arg(1))
            .await?;
        let _: Result<i64, _> = self.call(redis::cmd("DEL").arg(&lock)).await;
        Ok(true)
    }

    /// Seeds a Redis that has no users with `users` (the users file's),
    /// but only after a running replica has had [`SEED_GRACE`] to put back
    /// the newer users it holds (see `Auth::start_background`); true if
    /// the file's users went in. While another replica seeds, waits for it
    /// (at most [`SEEDING_LOCK`] more).
    pub async fn seed_unless_a_replica_does(&self, users: &Users) -> Result<bool, Unavailable> {
        let waited = Instant::now();
        while !self.poll().await?.1 {
            if waited.elapsed() >= SEED_GRACE && self.seed(users).await? {
                return Ok(true);
            }
            if waited.elapsed() >= SEED_GRACE + SEEDING_LOCK {
                return Err(Unavailable);
            }
            tokio::time::sleep(POLL_USERS_EVERY / 5).await;
        }
        Ok(false)
    }

    /// The change counter (it moves whenever any user changes) and
    /// whether users were ever seeded into this Redis (false for a new one,
    /// and for one that came back empty: a FLUSHALL, a restart without
    /// persistence), in one call.
    pub async fn poll(&self) -> Result<(u64, bool), Unavailable> {
        let (changes, seeded): (Option<u64>, Option<String>) = self
            .call(
                redis::cmd("MGET")
                    .arg(self.key("changes", "users"))
                    .arg(self.key("seeded", "users")),
            )
            .await?;
        Ok((changes.unwrap_or(0), seeded.is_some()))
    }

    /// Every user in Redis.
    pub async fn users(&self) -> Result<Users, Unavailable> {
        let names: Vec<String> = self
            .call(redis::cmd("SMEMBERS").arg(self.key("users", "all")))
            .await?;
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HMGET").arg(self.key("user", name)).arg(&[
                "name", "password", "roles", "locked", "gen", "totp", "recovery", "passkeys",
            ]);
        }
        let rows: Vec<Vec<Option<String>>> = self.call_all(&pipe).await?;
        let entries = rows.into_iter().filter_map(|row| match row.as_slice() {
            [Some(name), Some(password), roles, locked, generation, totp, recovery, passkeys] => {
                // A provider's user keeps `provider:NAME` where a password
                // hash would be (a hash starts with `$`).
                let provider = password.strip_prefix(PROVIDER_MARK).map(str::to_owned);
                let service = password == SERVICE_MARK;
                Some(Entry {
                    name: name.clone(),
                    password_hash: if provider.is_some() || service {
                        String::new()
                    } else {
                        password.clone()
                    },
                    service,
                    provider,
                    roles: comma_list(roles.as_deref()),
                    locked: locked.as_deref() == Some("1"),
                    generation: generation
                        .as_deref()
                        .and_then(|g| g.parse().ok())
                        .unwrap_or(0),
                    totp: totp.clone().map(TotpSecret::new),
                    recovery_codes: comma_list(recovery.as_deref()),
                    passkeys: passkeys
                        .as_deref()
                        .and_then(|text| serde_json::from_str(text).ok())
                        .unwrap_or_default(),
                })
            }
            _ => None,
        });
        Users::from_entries(entries).map_err(|e| {
            tracing::error!(error = %e, "the users in Redis are not valid");
            Unavailable
        })
    }

    async fn change(&self, op: &Op<'_>) -> Result<String, Unavailable> {
        let marked;
        let text;
        let (name, key, password, roles, kind) = match op {
            Op::Add(entry) => (
                entry.name.as_str(),
                canonical(&entry.name),
                match &entry.provider {
                    Some(provider) => {
                        marked = format!("{PROVIDER_MARK}{provider}");
                        marked.as_str()
                    }
                    None if entry.service => SERVICE_MARK,
                    None => entry.password_hash.as_str(),
                },
                entry.roles.join(","),
                "add",
            ),
            Op::Simple(kind, key) => ("", (*key).to_owned(), "", String::new(), *kind),
            Op::Password(key, hash) => ("", (*key).to_owned(), *hash, String::new(), "password"),
            Op::Roles(key, roles) => ("", (*key).to_owned(), "", roles.join(","), "roles"),
            Op::Totp(key, secret, codes) => (
                "",
                (*key).to_owned(),
                secret.expose(),
                codes.join(","),
                "totp",
            ),
            Op::UseRecovery(key, hash) => {
                ("", (*key).to_owned(), *hash, String::new(), "recovery_use")
            }
            Op::AddPasskey(key, passkey) => {
                text = serde_json::to_string(passkey).expect("a record serializes");
                (
                    "",
                    (*key).to_owned(),
                    passkey.id.as_str(),
                    text,
                    "passkey_add",
                )
            }
            Op::RemovePasskey(key, id) => {
                ("", (*key).to_owned(), *id, String::new(), "passkey_remove")
            }
            Op::UsePasskey {
                key,
                id,
                before,
                after,
                used,
            } => {
                text = serde_json::json!({ "before": before, "after": after, "used": used })
                    .to_string();
                ("", (*key).to_owned(), *id, text, "passkey_use")
            }
        };
        let mut invocation = self.scripts.change_user.prepare_invoke();
        invocation
            .key(self.key("user", &key))
            .key(self.key("users", "all"))
            .key(self.key("changes", "users"))
            .key(self.key("sessions-of", &key))
            .arg(kind)
            .arg(&key)
            .arg(name)
            .arg(password)
            .arg(roles)
            .arg(&self.prefix);
        self.run(&invocation).await
    }

    /// Applies a user change for every replica.
    pub async fn apply(&self, change: &Change) -> Result<(), UserFileError> {
        let outcome = match change {
            Change::Add {
                name,
                password_hash,
                roles,
                service,
            } => {
                let entry = Entry {
                    name: name.clone(),
                    password_hash: password_hash.clone(),
                    roles: roles.clone(),
                    locked: false,
                    generation: 0,
                    totp: None,
                    recovery_codes: Vec::new(),
                    passkeys: Vec::new(),
                    service: *service,
                    provider: None,
                };
                crate::users::User::new(entry.clone()).map_err(UserFileError::Invalid)?;
                self.change(&Op::Add(&entry)).await
            }
            Change::SetPassword {
                name,
                password_hash,
            } => {
                self.change(&Op::Password(&canonical(name), password_hash))
                    .await
            }
            Change::SetRoles { name, roles } => {
                self.change(&Op::Roles(&canonical(name), roles)).await
            }
            Change::Lock(name) => self.change(&Op::Simple("lock", &canonical(name))).await,
            Change::LockProviderUser { name, provider } => {
                self.ensure_provider_entry(name, provider).await?;
                self.change(&Op::Simple("lock", &canonical(name))).await
            }
            Change::Unlock(name) => self.change(&Op::Simple("unlock", &canonical(name))).await,
            Change::Delete(name) => self.change(&Op::Simple("delete", &canonical(name))).await,
            Change::SetTotp {
                name,
                secret,
                recovery_codes,
                provider,
            } => {
                if let Some(provider) = provider {
                    self.ensure_provider_entry(name, provider).await?;
                }
                self.change(&Op::Totp(&canonical(name), secret, recovery_codes))
                    .await
            }
            Change::ResetTotp(name) => {
                self.change(&Op::Simple("totp_reset", &canonical(name)))
                    .await
            }
            Change::UseRecoveryCode { name, hash } => {
                self.change(&Op::UseRecovery(&canonical(name), hash)).await
            }
            Change::AddPasskey {
                name,
                passkey,
                provider,
            } => {
                if let Some(provider) = provider {
                    self.ensure_provider_entry(name, provider).await?;
                }
                self.change(&Op::AddPasskey(&canonical(name), passkey))
                    .await
            }
            Change::RemovePasskey { name, id } => {
                self.change(&Op::RemovePasskey(&canonical(name), id)).await
            }
            Change::UsePasskey {
                name,
                id,
                before,
                after,
                used,
            } => {
                self.change(&Op::UsePasskey {
                    key: &canonical(name),
                    id,
                    before,
                    after,
                    used: *used,
                })
                .await
            }
            Change::ResetPasskeys(name) => {
                self.change(&Op::Simple("passkeys_reset", &canonical(name)))
                    .await
            }
        }
        .map_err(|Unavailable| UserFileError::StoreUnavailable)?;
        let name = change.name();
        match outcome.as_str() {
            "duplicate" => Err(UserFileError::Duplicate(name.to_owned())),
            "unknown" => Err(UserFileError::UnknownUser(name.to_owned())),
            "unknown_code" => Err(UserFileError::UnknownRecoveryCode),
            "unknown_passkey" => Err(UserFileError::UnknownPasskey),
            "passkey_changed" => Err(UserFileError::PasskeyChanged),
            "passkey_twice" => Err(UserFileError::BadPasskey("it was added already".into())),
            "too_many" => Err(UserFileError::BadPasskey(format!(
                "an account holds at most {} passkeys",
                crate::users::passkey::MAX_PER_USER
            ))),
            _ => Ok(()),
        }
    }

    /// Makes the entry a provider's user is kept under (no password, the
    /// provider's name) unless it is there; a local user of that name is
    /// a duplicate.
    async fn ensure_provider_entry(&self, name: &str, provider: &str) -> Result<(), UserFileError> {
        let entry = Entry {
            name: crate::users::change::checked_name(name)?.to_owned(),
            password_hash: String::new(),
            roles: Vec::new(),
            locked: false,
            generation: 0,
            totp: None,
            recovery_codes: Vec::new(),
            passkeys: Vec::new(),
            service: false,
            provider: Some(provider.to_owned()),
        };
        let added = self
            .change(&Op::Add(&entry))
            .await
            .map_err(|Unavailable| UserFileError::StoreUnavailable)?;
        if added == "duplicate" {
            let users = self
                .users()
                .await
                .map_err(|Unavailable| UserFileError::StoreUnavailable)?;
            if users
                .get_by_key(&canonical(name))
                .is_none_or(|u| u.provider.is_none())
            {
                return Err(UserFileError::Duplicate(name.trim().to_owned()));
            }
        }
        Ok(())
    }

    /// Ends every session of a user on every replica; how many there were.
    pub async fn end_all_for_user(&self, user: &str) -> Result<usize, Unavailable> {
        self.forget_user(user);
        let outcome = self.change(&Op::Simple("end_sessions", user)).await?;
        Ok(outcome
            .strip_prefix("ok ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}

enum Op<'a> {
    Add(&'a Entry),
    Simple(&'static str, &'a str),
    Password(&'a str, &'a str),
    Roles(&'a str, &'a [String]),
    Totp(&'a str, &'a TotpSecret, &'a [String]),
    UseRecovery(&'a str, &'a str),
    AddPasskey(&'a str, &'a crate::users::passkey::PasskeyRecord),
    RemovePasskey(&'a str, &'a str),
    UsePasskey {
        key: &'a str,
        id: &'a str,
        before: &'a str,
        after: &'a str,
        used: u64,
    },
}

/// What a provider's user keeps in place of a password hash.
const PROVIDER_MARK: &str = "provider:";
/// What a service account keeps in place of a password hash.
const SERVICE_MARK: &str = "service:";

/// A comma-separated list as Redis keeps roles and recovery codes.
fn comma_list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or("")
        .split(',')
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}
