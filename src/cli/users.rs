//! `authgate user ...` and `authgate hash-password`: the users file, or
//! Redis when it holds the users.

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
    Lock { name: String },
    /// Let a locked user sign in again.
    Unlock { name: String },
    /// Remove a user; their sessions end.
    Del { name: String },
    /// Remove a user's second factor (TOTP secret and recovery codes), for
    /// a lost phone; they enroll again at /.gateway/totp.
    TotpReset { name: String },
    /// List the users.
    List,
    /// Print the users as a users.toml (from Redis when the store is Redis).
    Export,
}

/// The shared store a config names, if it names Redis (then the whole
/// config must be valid); `None` for a users file.
pub fn shared_store(config_path: &std::path::Path) -> anyhow::Result<Option<Config>> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read the config file {}", config_path.display()))?;
    let table: toml::Table = text.parse().unwrap_or_default();
    let redis = table
        .get("store")
        .and_then(|s| s.get("backend"))
        .and_then(|b| b.as_str())
        == Some("redis");
    if !redis {
        return Ok(None);
    }
    load_or_report(config_path).map(Some)
}

/// `authgate user ...` against Redis, the user store of replicas.
pub fn user_in_redis(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    use crate::config::StoreBackend;
    use crate::users::file::{check_new_password, check_role, Change};
    let StoreBackend::Redis(settings) = &config.store.backend else {
        unreachable!("only called for a Redis config")
    };
    let new_hash = || -> anyhow::Result<String> {
        let password = read_password("New password: ")?;
        check_new_password(&password)?;
        Ok(crate::users::password::hash_password(&password))
    };
    let change = match &command {
        UserCommand::List | UserCommand::Export => None,
        UserCommand::Add { name, roles } => {
            for role in roles {
                check_role(role)?;
            }
            Some(Change::Add {
                name: name.clone(),
                password_hash: new_hash()?,
                roles: roles.clone(),
            })
        }
        UserCommand::Passwd { name } => Some(Change::SetPassword {
            name: name.clone(),
            password_hash: new_hash()?,
        }),
        UserCommand::Roles { name, roles } => Some(Change::SetRoles {
            name: name.clone(),
            roles: roles.clone(),
        }),
        UserCommand::Lock { name } => Some(Change::Lock(name.clone())),
        UserCommand::Unlock { name } => Some(Change::Unlock(name.clone())),
        UserCommand::Del { name } => Some(Change::Delete(name.clone())),
        UserCommand::TotpReset { name } => Some(Change::ResetTotp(name.clone())),
    };
    runtime()?.block_on(async {
        let redis = connect_redis(config, settings).await?;
        let unavailable = || anyhow::anyhow!("Redis stopped answering");
        if redis
            .seed_unless_a_replica_does(&config.users)
            .await
            .map_err(|_| unavailable())?
        {
            eprintln!("(Redis was empty: it got the users of the users file first)");
        }
        match change {
            Some(change) => {
                redis.apply(&change).await?;
                println!("done in Redis; every gateway applies it within a second");
            }
            None => {
                let users = redis.users().await.map_err(|_| unavailable())?;
                print_users(&users, matches!(command, UserCommand::Export));
            }
        }
        Ok(())
    })
}

/// The Redis a config names, for the command line.
pub async fn connect_redis(
    config: &Config,
    settings: &crate::store::redis::Settings,
) -> anyhow::Result<crate::store::redis::Redis> {
    Ok(crate::store::redis::Redis::connect(
        settings,
        config.session.idle_timeout,
        config.session.absolute_timeout,
        Default::default(),
    )
    .await?)
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
        println!("{}\t{}{state}{totp}", u.name, u.roles.join(","));
    }
}

pub fn user(config_path: &std::path::Path, command: UserCommand) -> anyhow::Result<()> {
    use crate::users::file::{check_new_password, check_role, Change, UsersFile};
    if let Some(config) = shared_store(config_path)? {
        return user_in_redis(&config, command);
    }
    let file =
        UsersFile::new(crate::config::users_file_of(config_path).map_err(|e| anyhow::anyhow!(e))?);
    let new_hash = || -> anyhow::Result<String> {
        let password = read_password("New password: ")?;
        check_new_password(&password)?;
        Ok(crate::users::password::hash_password(&password))
    };
    let (change, done) = match command {
        UserCommand::List | UserCommand::Export => {
            let (_, users) = file.load()?;
            print_users(&users, matches!(command, UserCommand::Export));
            return Ok(());
        }
        UserCommand::Add { name, roles } => {
            for role in &roles {
                check_role(role)?;
            }
            let password_hash = new_hash()?;
            let done = format!("added {name}");
            (
                Change::Add {
                    name,
                    password_hash,
                    roles,
                },
                done,
            )
        }
        UserCommand::Passwd { name } => {
            let password_hash = new_hash()?;
            let done = format!("changed the password of {name}");
            (
                Change::SetPassword {
                    name,
                    password_hash,
                },
                done,
            )
        }
        UserCommand::Roles { name, roles } => {
            let done = format!("set the roles of {name} to {}", roles.join(","));
            (Change::SetRoles { name, roles }, done)
        }
        UserCommand::Lock { name } => (Change::Lock(name.clone()), format!("locked {name}")),
        UserCommand::Unlock { name } => (Change::Unlock(name.clone()), format!("unlocked {name}")),
        UserCommand::Del { name } => (Change::Delete(name.clone()), format!("removed {name}")),
        UserCommand::TotpReset { name } => (
            Change::ResetTotp(name.clone()),
            format!("removed the second factor of {name}"),
        ),
    };
    file.apply(&change, "cli")?;
    println!("{done} ({})", file.path().display());
    Ok(())
}

pub fn hash_password() -> anyhow::Result<()> {
    let password = read_password("Password: ")?;
    // The same minimum as `user add` and the password page.
    crate::users::file::check_new_password(&password)?;
    println!("{}", crate::users::password::hash_password(&password));
    Ok(())
}
