//! `authgate user ...` and `authgate hash-password`: the users wherever
//! the store keeps them.

use anyhow::Context;
use clap::Subcommand;

use crate::Config;

use super::*;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from stdin.
    Add {
        name: String,
        /// A role (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// A service account: no password (none is read), only API tokens
        /// (`authgate token create NAME --name ...`).
        #[arg(long)]
        service: bool,
    },
    /// Set a user's password, read from stdin.
    Passwd { name: String },
    /// Replace a user's roles.
    Roles {
        name: String,
        #[arg(required = true)]
        roles: Vec<String>,
    },
    /// Lock a user out: sign-in refused, every session ended.
    Lock {
        name: String,
        /// The user signs in through this [[oidc]] provider, or `ldap` for
        /// the [ldap] directory (they need not be in the users file yet).
        #[arg(long)]
        provider: Option<String>,
    },
    /// Let a locked user sign in again.
    Unlock { name: String },
    /// Remove a user; their sessions end.
    Del { name: String },
    /// Remove a user's second factor (TOTP secret and recovery codes), for
    /// a lost phone; they enroll again at /.gateway/totp.
    TotpReset { name: String },
    /// Remove every passkey of a user (a lost or stolen device); their
    /// sessions end. They add passkeys again on their account page.
    PasskeysReset { name: String },
    /// List the users.
    List,
    /// Print the users as a users.toml (from the shared store when there is one).
    Export,
}

/// The config when its `[store]` shares users between replicas (then the
/// whole config must be valid); `None` when users live in the users file,
/// which is all the command needs then.
fn shared_store(config_path: &std::path::Path) -> anyhow::Result<Option<Config>> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read the config file {}", config_path.display()))?;
    let table: toml::Table = text.parse().unwrap_or_default();
    let backend = table
        .get("store")
        .and_then(|s| s.get("backend"))
        .and_then(|b| b.as_str());
    if !crate::config::shares_users(backend) {
        return Ok(None);
    }
    load_or_report(config_path).map(Some)
}

pub fn print_users(users: &crate::users::Users, as_toml: bool) {
    if as_toml {
        print!("{}", users.to_toml());
        return;
    }
    let mut list: Vec<_> = users.iter().collect();
    list.sort_by(|a, b| a.key.cmp(&b.key));
    for u in list {
        let state = if u.locked { "  (locked)" } else { "" };
        let totp = if u.totp.is_some() { "  (totp)" } else { "" };
        let state = if u.service {
            format!("{state}  (service account)")
        } else {
            state.to_owned()
        };
        let passkeys = match u.passkeys.len() {
            0 => String::new(),
            n => format!("  ({n} passkey{})", if n == 1 { "" } else { "s" }),
        };
        println!("{}\t{}{state}{totp}{passkeys}", u.name, u.roles.join(","));
    }
}

pub fn user(config_path: &std::path::Path, command: UserCommand) -> anyhow::Result<()> {
    use crate::store::users::UserStore;
    use crate::users::file::{check_new_password, check_role, Change, UsersFile};
    let shared = shared_store(config_path)?;
    let new_hash = || -> anyhow::Result<String> {
        let password = read_password("New password: ")?;
        check_new_password(&password)?;
        Ok(crate::users::password::hash_password(&password))
    };
    let (change, done) = match command {
        UserCommand::List | UserCommand::Export => (None, String::new()),
        UserCommand::Add {
            ref name,
            ref roles,
            service,
        } => {
            for role in roles {
                check_role(role)?;
            }
            let change = Change::Add {
                name: name.clone(),
                password_hash: if service { String::new() } else { new_hash()? },
                roles: roles.clone(),
                service,
            };
            let what = if service { "service account" } else { "user" };
            (Some(change), format!("added the {what} {name}"))
        }
        UserCommand::Passwd { ref name } => {
            let change = Change::SetPassword {
                name: name.clone(),
                password_hash: new_hash()?,
            };
            (Some(change), format!("changed the password of {name}"))
        }
        UserCommand::Roles {
            ref name,
            ref roles,
        } => {
            let done = format!("set the roles of {name} to {}", roles.join(","));
            let change = Change::SetRoles {
                name: name.clone(),
                roles: roles.clone(),
            };
            (Some(change), done)
        }
        UserCommand::Lock {
            ref name,
            provider: None,
        } => (Some(Change::Lock(name.clone())), format!("locked {name}")),
        UserCommand::Lock {
            ref name,
            provider: Some(ref provider),
        } => (
            Some(Change::LockProviderUser {
                name: name.clone(),
                provider: provider.clone(),
            }),
            format!("locked out {name} of {provider}"),
        ),
        UserCommand::Unlock { ref name } => (
            Some(Change::Unlock(name.clone())),
            format!("unlocked {name}"),
        ),
        UserCommand::Del { ref name } => (
            Some(Change::Delete(name.clone())),
            format!("removed {name}"),
        ),
        UserCommand::TotpReset { ref name } => (
            Some(Change::ResetTotp(name.clone())),
            format!("removed the second factor of {name}"),
        ),
        UserCommand::PasskeysReset { ref name } => (
            Some(Change::ResetPasskeys(name.clone())),
            format!("removed every passkey of {name}"),
        ),
    };
    runtime()?.block_on(async {
        let store = match &shared {
            Some(config) => {
                let (store, seeded) = UserStore::connect(config).await?;
                if seeded {
                    eprintln!(
                        "(the shared store was empty: it got the users of the users file first)"
                    );
                }
                store
            }
            None => UserStore::file(UsersFile::new(
                crate::config::users_file_of(config_path).map_err(|e| anyhow::anyhow!(e))?,
            )),
        };
        match change {
            Some(change) => {
                store.apply(change, "cli").await?;
                println!("{done} {}", store.where_changes_go());
            }
            None => print_users(
                &store.users().await?,
                matches!(command, UserCommand::Export),
            ),
        }
        Ok(())
    })
}

pub fn hash_password() -> anyhow::Result<()> {
    let password = read_password("Password: ")?;
    // The same minimum as `user add` and the password page.
    crate::users::file::check_new_password(&password)?;
    println!("{}", crate::users::password::hash_password(&password));
    Ok(())
}
