//! The commands of the `authgate` binary, one file each; `main.rs` only
//! parses the command line and calls them. They print for a person and
//! answer with `anyhow` errors (the library's own errors are typed).

pub mod check;
pub mod healthcheck;
pub mod init;
pub mod serve;
pub mod sessions;
pub mod tokens;
pub mod users;

use anyhow::Context;

use crate::config::LogFormat;
use crate::Config;

pub fn load_or_report(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| {
        for problem in &e.problems {
            eprintln!("{problem}");
        }
        anyhow::anyhow!(
            "{} has {} problem(s); not starting",
            path.display(),
            e.problems.len()
        )
    })
}

/// One password from stdin: without echo when stdin is a terminal, else
/// the first line as it is (only the line ending is removed).
pub fn read_password(prompt: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).context("cannot read the password")?
    } else {
        piped_password()?
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(password)
}

/// The first line of a piped stdin as it is (only the line ending is
/// removed): a password given by a script.
pub fn piped_password() -> anyhow::Result<String> {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    Ok(trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned())
}

/// The async runtime: work-stealing across the CPUs this process may use,
/// or, given only one, tokio's single-threaded scheduler, which does the
/// same work without the cross-thread queues and wake-ups (measured by
/// `bench/run.sh`, whose proxy gets one CPU).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = runtime_unlogged()?;
    log_runtime();
    Ok(runtime)
}

/// The runtime's shape, in the log.
pub fn log_runtime() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let scheduler = if cpus == 1 {
        "current_thread"
    } else {
        "multi_thread"
    };
    tracing::info!(cpus, scheduler, "async runtime");
}

/// One thread per core, or the current thread alone on one core; built
/// before logging is set up where the stop signals must be caught first.
pub fn runtime_unlogged() -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Logs go to stderr in batches (see `crate::logging`); the guard
/// flushes what is left when it is dropped.
pub fn init_logging(format: LogFormat) -> crate::logging::FlushGuard {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let (writer, guard) = crate::logging::batched_stderr();
    let filter = EnvFilter::try_from_env("AUTHGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    if format == LogFormat::Human && !ansi {
        crate::logging::write_access_directly(&writer);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_timer(crate::logging::Clock)
        .with_writer(writer);
    match format {
        LogFormat::Human => builder.fmt_fields(crate::logging::HumanFields).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

/// SIGTERM and SIGINT, caught from the moment they are installed (inside
/// the runtime).
pub struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals {
                terminate: signal(SignalKind::terminate())
                    .context("cannot install a SIGTERM handler")?,
                interrupt: signal(SignalKind::interrupt())
                    .context("cannot install a SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Resolves at the first SIGTERM or SIGINT.
    async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("signal received: shutting down");
    }
}
