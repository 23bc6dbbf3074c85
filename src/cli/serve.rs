//! `authgate run` and `authgate demo`.

use std::net::SocketAddr;

use anyhow::Context;

use crate::config::LogFormat;

use super::*;

/// `after_burst`: what the binary does to hand memory back after a
/// sign-in burst (its allocator's trim; see `users::password`).
pub fn run(
    path: &std::path::Path,
    flag_format: Option<LogFormat>,
    after_burst: fn(),
) -> anyhow::Result<()> {
    if !path.exists() {
        anyhow::bail!(
            "there is no config at {}. To start: `authgate demo` runs a demo app behind the gateway with two users; `authgate init DIR --upstream URL --host NAME` writes a setup of your own (then `authgate run -c DIR/gateway.toml`); -c PATH or AUTHGATE_CONFIG names a config elsewhere",
            path.display()
        );
    }
    // The stop signals are caught before anything else: a SIGTERM that
    // comes while the config and the sessions load is a stop (exit 0 once
    // started), not the default kill.
    let runtime = runtime_unlogged()?;
    let stop = {
        let _inside = runtime.enter();
        StopSignals::install()?
    };
    let config = load_or_report(path)?;
    crate::users::password::set_after_burst(after_burst);
    let _log = init_logging(
        flag_format
            .or(config.server.log_format)
            .unwrap_or(LogFormat::Human),
    );
    log_runtime();
    runtime.block_on(async { crate::run(config, stop.received()).await })?;
    Ok(())
}

pub fn demo(
    listen: SocketAddr,
    flag_format: Option<LogFormat>,
    after_burst: fn(),
) -> anyhow::Result<()> {
    let _log = init_logging(flag_format.unwrap_or(LogFormat::Human));
    crate::users::password::set_after_burst(after_burst);
    let runtime = runtime()?;
    let stop = {
        let _inside = runtime.enter();
        StopSignals::install()?
    };
    runtime.block_on(async {
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let app_addr = app.local_addr()?;
        tokio::spawn(crate::demo::serve_app(app));
        let dir = crate::demo::private_dir().context("cannot make the demo's folder")?;
        let demo = crate::demo::write_config(dir.path(), listen, app_addr)
            .context("cannot write the demo config")?;
        let config = load_or_report(&demo.config)?;
        let gateway = crate::Gateway::start(config).await?;
        println!();
        println!("  authgate demo: open https://{}/", gateway.addr());
        println!("  (a self-signed certificate: your browser will ask you to accept it)");
        println!();
        println!(
            "  sign in as   alice / {}   (roles admin, user: sees everything)",
            demo.alice_password
        );
        println!(
            "          or   bob   / {}   (role user: no /admin/)",
            demo.bob_password
        );
        println!(
            "  a second factor (TOTP): https://{}/.gateway/totp once signed in",
            gateway.addr()
        );
        println!();
        println!(
            "  demo app behind it: http://{app_addr}/   config: {}",
            demo.config.display()
        );
        println!("  stop with Ctrl-C");
        println!();
        stop.received().await;
        gateway.shutdown().await;
        // The folder and its secrets go with `dir`.
        drop(dir);
        Ok(())
    })
}
