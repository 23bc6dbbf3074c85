//! `authgate token ...`: API tokens in the configured store, beside
//! running gateways (which see a change within a second).

use clap::Subcommand;

use super::*;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token for USER (a person, or a service account) and print it
    /// once; only its hash is kept.
    Create {
        user: String,
        /// What to call it ("ci"); unique per account.
        #[arg(long)]
        name: String,
        /// How long it lives (e.g. 30d) [default: [tokens]'s, 90 days].
        #[arg(long)]
        expires: Option<String>,
        /// Only this role of the account's (repeat for several) [default: all].
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// One line per token: user, name, roles, created, expires, last used.
    List { user: Option<String> },
    /// End a token (by its name), or every token of the user.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["name", "all"])))]
    Revoke {
        user: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

pub fn tokens(config_path: &std::path::Path, command: TokenCommand) -> anyhow::Result<()> {
    use crate::identity::tokens::{self, NewToken};
    let config = load_or_report(config_path)?;
    runtime()?.block_on(async {
        let store = crate::store::tokens::Tokens::connect(&config).await?;
        match command {
            TokenCommand::Create {
                user,
                name,
                expires,
                roles,
            } => {
                let (users, _) = crate::store::users::UserStore::connect(&config).await?;
                let users = users.users().await?;
                let account = users
                    .get(&user)
                    .ok_or_else(|| tokens::TokenError::UnknownUser(user.clone()))?;
                let lifetime = expires
                    .as_deref()
                    .map(crate::units::parse_duration)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--expires: {e}"))?;
                let new = NewToken {
                    name,
                    lifetime,
                    roles: (!roles.is_empty()).then_some(roles),
                };
                let token = tokens::create(
                    &store,
                    &config.tokens,
                    account,
                    new,
                    crate::session::now_ms(),
                )
                .await?;
                // The token itself on stdout alone, for a script to take.
                eprintln!("made a token for {}; it is shown this once:", account.name);
                println!("{token}");
            }
            TokenCommand::List { user } => {
                let key = user.as_deref().map(crate::users::canonical);
                for t in store.list(key.as_deref()).await? {
                    let roles = t.record.roles.map_or("(all)".into(), |r| r.join(","));
                    let used = t.last_used_ms.map_or("never".into(), crate::units::rfc3339);
                    println!(
                        "{}\t{}\t{roles}\tcreated {}\texpires {}\tlast used {used}",
                        t.record.user,
                        t.record.name,
                        crate::units::rfc3339(t.record.created_ms),
                        crate::units::rfc3339(t.record.expires_ms),
                    );
                }
            }
            TokenCommand::Revoke { user, name, all } => {
                let key = crate::users::canonical(&user);
                let name = if all { None } else { name };
                let ended = tokens::revoke(&store, &key, name.as_deref()).await?;
                if ended == 0 {
                    anyhow::bail!("{user} has no such token (see `authgate token list {user}`)");
                }
                println!(
                    "revoked {ended} token(s); running gateways stop taking them within a second"
                );
            }
        }
        Ok(())
    })
}
