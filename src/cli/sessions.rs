//! `authgate sessions ...`: the sessions the store keeps, beside running
//! gateways.

use clap::Subcommand;

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
    use crate::store::{OnRecord, Revoke};
    let config = load_or_report(config_path)?;
    let canonical = |name: &str| crate::users::canonical(name);
    runtime()?.block_on(async {
        let on_record = OnRecord::open(&config).await?;
        match command {
            SessionsCommand::List { user } => {
                let key = user.as_deref().map(canonical);
                print_sessions(&on_record.list(key.as_deref()).await?);
            }
            SessionsCommand::Revoke { user, all, handle } => {
                let what = match (user, all, handle) {
                    (Some(user), _, _) => Revoke::User(canonical(&user)),
                    (None, true, _) => Revoke::All,
                    (None, false, Some(handle)) => Revoke::Handle(handle),
                    (None, false, None) => unreachable!("clap requires one of them"),
                };
                let ended = on_record.revoke(&what).await?;
                if let Revoke::Handle(handle) = &what {
                    if ended == 0 {
                        anyhow::bail!(
                            "no session has the handle {handle:?} (see `authgate sessions list`)"
                        );
                    }
                }
                println!("ended {ended} session(s); {}", on_record.in_force());
            }
        }
        Ok(())
    })
}

pub fn print_sessions(sessions: &[crate::session::SessionInfo]) {
    for s in sessions {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            crate::session::handle(&s.key),
            s.user,
            crate::units::rfc3339(s.created_ms),
            crate::units::rfc3339(s.last_seen_ms),
            s.ip,
            s.user_agent.replace(['\t', '\n', '\r'], " "),
        );
    }
}
