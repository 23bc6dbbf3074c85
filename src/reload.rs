//! Live config reload: on SIGHUP and when `gateway.toml` changes on disk
//! (links followed, so a Kubernetes ConfigMap's `..data` swap counts), the
//! whole file is validated and its `[[test]]`s run as `authgate check` would;
//! a config that passes becomes the snapshot new requests take
//! ([`crate::state::Live`]), one that fails changes nothing. Settings
//! that only a restart can change keep their running values and are named
//! in the log.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::state::{Fixed, Live, State};

/// How often the config file is looked at.
pub const CONFIG_POLL_EVERY: Duration = Duration::from_secs(1);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The new config is in force for new requests; these keys changed but
    /// keep their running values until a restart.
    Applied { needs_restart: Vec<&'static str> },
    /// The running config stays; the problems, as `check` prints them.
    Refused { problems: Vec<String> },
}

/// Reads, validates and tests the config file; puts it in force if it passes.
pub async fn reload(state: &State) -> Reloaded {
    let _one_at_a_time = state.reloading.lock().await;
    let source = state.live().config.source.clone();
    let loaded = tokio::task::spawn_blocking(move || load_and_test(&source))
        .await
        .unwrap_or_else(|e| Err(vec![format!("the reload stopped: {e}")]));
    let outcome = match loaded {
        Ok(mut config) => {
            // Users are the user store's (the users file's watcher's), not the config's.
            drop(std::mem::take(&mut config.users));
            for exposed in config.exposed_secret_files() {
                tracing::warn!("{exposed}");
            }
            let needs_restart = state.fixed.differences(&Fixed::of(&config));
            state.replace_live(Live::new(config, &state.tunnels));
            Reloaded::Applied { needs_restart }
        }
        Err(problems) => Reloaded::Refused { problems },
    };
    match &outcome {
        Reloaded::Applied { needs_restart } => {
            state.metrics.record_config_reload(true);
            for key in needs_restart {
                tracing::warn!(
                    key = *key,
                    "config reload: {key} changed, which needs a restart; the running value stays until then"
                );
            }
            tracing::info!(
                needs_restart = needs_restart.len(),
                "config reloaded: new requests use it"
            );
        }
        Reloaded::Refused { problems } => {
            state.metrics.record_config_reload(false);
            for problem in problems {
                tracing::error!("{problem}");
            }
            tracing::error!(
                problems = problems.len(),
                "config reload refused: the running config stays"
            );
        }
    }
    outcome
}

/// The config at `path` if it loads and its `[[test]]`s pass; otherwise
/// every problem and failed test, worded as `authgate check` words them.
pub fn load_and_test(path: &std::path::Path) -> Result<Config, Vec<String>> {
    let config = Config::load(path).map_err(|e| {
        e.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    })?;
    let failures = crate::review::run_tests(&config, &config.users);
    if failures.is_empty() {
        return Ok(config);
    }
    let file = path.display();
    Err(failures
        .iter()
        .map(|f| format!("{file}:{}:{}: {}", f.line, f.col, f.message))
        .collect())
}

/// Reloads whenever the config file's content changes (what the path
/// leads to: device, inode, size, modification time), once the change has
/// settled: a changed file is applied only when two polls in a row see it
/// the same. An editor that writes in place can be read between two
/// writes, and a rule cut before its `host =` line is a wider rule; a
/// whole file stays the same for a poll. SIGHUP still reloads at once.
/// Ends when the state is dropped.
pub fn watch(state: &Arc<State>) {
    let source = state.live().config.source.clone();
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut applied = crate::tls::fingerprint(&source);
        // A change seen once, waiting for the next poll to confirm it.
        let mut settling = None;
        let mut tick = tokio::time::interval(CONFIG_POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else { break };
            let now = crate::tls::fingerprint(&source);
            if now == applied || now.is_none() {
                // Unchanged, or gone for a moment (an editor's rename, a
                // volume swap): the next look sees what replaced it.
                settling = None;
                continue;
            }
            if settling != Some(now) {
                settling = Some(now);
                continue;
            }
            settling = None;
            applied = now;
            tracing::info!(config = %source.display(), "the config file changed: reloading");
            reload(&state).await;
        }
    });
}
