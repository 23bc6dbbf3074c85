//! `authgate sessions ...`: the sessions on record, or in Redis.

use clap::Subcommand;

use crate::Config;

use super::users::connect_redis;
use super::*;

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// One line per session: handle, user, started, last seen, IP, browser.
    List {
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
    },
    /// End sessions: one (by the handle `list` shows), a user's, or all.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["user", "all", "handle"])))]
    Revoke {
        /// Every session of this user.
        #[arg(long)]
        user: Option<String>,
        /// Every session.
        #[arg(long)]
        all: bool,
        /// The session with this handle.
        handle: Option<String>,
    },
}

pub fn sessions(config_path: &std::path::Path, command: SessionsCommand) -> anyhow::Result<()> {
    use crate::store::local::commands::Revoke;
    let config = load_or_report(config_path)?;
    let canonical = |name: &str| crate::users::canonical(name);
    if let crate::config::StoreBackend::Redis(settings) = &config.store.backend {
        return sessions_in_redis(&config, settings, command);
    }
    match command {
        SessionsCommand::List { user } => {
            let key = user.as_deref().map(canonical);
            print_sessions(&crate::store::list_on_record(
                &config.store,
                key.as_deref(),
            )?);
        }
        SessionsCommand::Revoke { user, all, handle } => {
            let what = match (user, all, handle) {
                (Some(user), _, _) => Revoke::User(canonical(&user)),
                (None, true, _) => Revoke::All,
                (None, false, Some(handle)) => Revoke::Handle(handle),
                (None, false, None) => unreachable!("clap requires one of them"),
            };
            let ended = crate::store::revoke_on_record(&config.store, &what)?;
            if let Revoke::Handle(handle) = &what {
                if ended == 0 {
                    anyhow::bail!(
                        "no session has the handle {handle:?} (see `authgate sessions list`)"
                    );
                }
            }
            println!("ended {ended} session(s); a running gateway ends them within a second");
        }
    }
    Ok(())
}

pub fn print_sessions(sessions: &[crate::session::SessionInfo]) {
    for s in sessions {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            crate::session::handle(&s.key),
            s.user,
            crate::auth::rfc3339(s.created_ms),
            crate::auth::rfc3339(s.last_seen_ms),
            s.ip,
            s.user_agent.replace(['\t', '\n', '\r'], " "),
        );
    }
}

/// `authgate sessions ...` against Redis: every replica sees the change at
/// its next lookup (within a second).
pub fn sessions_in_redis(
    config: &Config,
    settings: &crate::store::redis::Settings,
    command: SessionsCommand,
) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let redis = connect_redis(config, settings).await?;
        let unavailable = |_| anyhow::anyhow!("Redis stopped answering");
        match command {
            SessionsCommand::List { user } => {
                let key = user.as_deref().map(crate::users::canonical);
                print_sessions(&redis.list(key.as_deref()).await.map_err(unavailable)?);
            }
            SessionsCommand::Revoke { user, all, handle } => {
                let ended = if let Some(user) = user {
                    let key = crate::users::canonical(&user);
                    redis.end_all_for_user(&key).await.map_err(unavailable)?
                } else if all {
                    let mut ended = 0;
                    for s in redis.list(None).await.map_err(unavailable)? {
                        ended +=
                            usize::from(redis.end(&s.key).await.map_err(unavailable)?.is_some());
                    }
                    ended
                } else {
                    let handle = handle.expect("clap requires one of them");
                    let Some(key) = redis.find_handle(&handle).await.map_err(unavailable)? else {
                        anyhow::bail!(
                            "no session has the handle {handle:?} (see `authgate sessions list`)"
                        );
                    };
                    usize::from(redis.end(&key).await.map_err(unavailable)?.is_some())
                };
                println!("ended {ended} session(s); every gateway ends them within a second");
            }
        }
        Ok(())
    })
}
