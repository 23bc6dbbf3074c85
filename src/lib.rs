//! authgate: a TLS-terminating reverse proxy that puts a login, server-side
//! sessions and role rules in front of web apps that have none of their own.
//!
//! # Layout
//!
//! A newcomer starts at [`pipeline::handle`]: one request's way, top to
//! bottom; [`server`] is what calls it, [`config`] what it reads.
//!
//! - [`config`]: `gateway.toml`, raw serde structs validated into [`Config`],
//!   every problem reported as `FILE:LINE:COL`.
//! - [`tls`]: PEM loading and the rustls server config (TLS 1.2/1.3, ALPN).
//! - [`server`]: the TLS accept loop (connection cap, handshake timeout,
//!   graceful shutdown), each connection's idle watchdog and lingering
//!   close, the HTTP/1.1 framing guard, the redirect and ops listeners.
//! - [`body`]: the request body every handler reads, with `body_timeout`
//!   between its pieces and HTTP/2's unread rest drained.
//! - [`state`]: what requests and background tasks share: the running
//!   gateway's [`state::State`] and the [`state::Live`] snapshot of one
//!   config (rules, upstream clients, the HTTP servers, limits).
//! - [`pipeline`]: one request's way: refuse, gateway pages, session, policy, proxy, log.
//! - [`auth`]: sessions from cookies; the `/.gateway/` endpoints (sign-in,
//!   sign-out, whoami, password change, admin API and page); CSRF,
//!   throttling (attempts reserved before hashing, in Redis when shared),
//!   argon2 on a small pool of its own threads; applying user changes live.
//! - [`session`]: what a session is: its ID, the key it is filed under
//!   (SHA-256 of the ID), what a lookup finds.
//! - [`store`]: where sessions are kept, behind one seam: the in-memory map
//!   every request reads, and the durable record behind it (`local`: a
//!   SQLite file with one group-committing writer); or `redis`, shared by
//!   replicas with users and sign-in counters, behind a sub-second cache.
//! - [`users`]: the users file: parsing, canonical usernames, safe
//!   rewrites (lock, temp file, fsync, rename, owner and mode kept) and the
//!   change watcher, which hands what it sees to a callback.
//! - [`policy`]: path normalization and lenient aliases, host parsing, compiled and
//!   indexed rules, the decision; `check` warnings, `[[test]]`s, `explain`.
//! - [`proxy`]: the pooled upstream client (plain or TLS by ALPN), the
//!   header rules both ways (upstream redirects rewritten), who the client
//!   is behind a trusted load balancer (`trusted_proxies`), and open
//!   WebSockets registered under their session.
//! - [`response`]: body type, the one error-to-status mapping, the gateway's own pages.
//! - [`metrics`]: what the gateway counts, and its readiness latch.
//! - [`ops`]: the `/healthz` `/readyz` `/metrics` answers of the ops listener.
//! - [`logging`]: batched log output to stderr.
//! - [`forward_auth`]: `/.gateway/verify`, the gateway as the
//!   authentication service behind nginx, Traefik or Caddy: one header
//!   family, the same rules, an access line like every request's.
//! - [`assertion`]: signed ES256 identity assertions for the app and the
//!   JWKS that verifies them; the key file watched and rotated.
//! - [`reload`]: putting a changed config in force (SIGHUP, the watched
//!   file once it has settled), and what only a restart changes.
//! - [`request_id`]: every request's `X-Request-Id`, and the security-event
//!   macro that logs with it.
//! - [`init`]: `authgate init`'s setup: the shipped config, a certificate
//!   for the host, the first admin.
//! - [`files`]: files the gateway writes itself (keys, secrets, a seeded
//!   users file): private, whole or not at all.
//! - [`diag`]: problems in a TOML file (the config, the users file) with
//!   their `FILE:LINE:COL`, and the key-tracking deserializer.
//! - [`demo`]: the zero-setup demo: an upstream app and a gateway in front of it.
//! - [`cli`]: the binary's commands, one file each (`main.rs` parses the
//!   command line and calls them).

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod assertion;

pub mod body;
pub mod cli;
pub mod config;
pub mod connection;
pub mod demo;
pub mod diag;
pub mod files;
pub mod forward_auth;
pub mod forwarded;
pub mod identity;
pub mod init;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod pages;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod request_id;
pub mod response;
pub mod review;
pub mod server;
pub mod session;
pub mod state;
pub mod store;
pub mod tls;
pub mod units;
pub mod users;

pub use config::Config;
pub use server::Gateway;

use std::future::Future;

/// Lower-case hex of `bytes`: session handles, state and shared-store keys,
/// throttle keys, file digests.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Runs the gateway until `shutdown` resolves, then drains and returns.
/// SIGHUP reloads the config file.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let gateway = Gateway::start(config).await?;
    #[cfg(unix)]
    {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let state = std::sync::Arc::downgrade(gateway.state());
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let Some(state) = state.upgrade() else { break };
                tracing::info!("SIGHUP: reloading the config");
                reload::reload(&state).await;
            }
        });
    }
    let or_off =
        |addr: Option<std::net::SocketAddr>| addr.map_or("off".to_owned(), |a| a.to_string());
    tracing::info!(
        listen = %gateway.addr(),
        redirect_http = %or_off(gateway.redirect_addr()),
        ops_listen = %or_off(gateway.ops_addr()),
        verify_listen = %or_off(gateway.verify_addr()),
        "authgate is serving"
    );
    shutdown.await;
    gateway.shutdown().await;
    tracing::info!("authgate stopped");
    Ok(())
}
