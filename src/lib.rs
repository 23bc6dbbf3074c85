//! authgate: a TLS-terminating reverse proxy that puts a login, server-side
//! sessions and role rules in front of web apps that have none of their own.
//!
//! # Layout
//!
//! A newcomer starts at [`pipeline::handle`]: one request's way, as named
//! steps (refuse, the gateway's own routes, authenticate, authorize,
//! forward); [`server`] is what calls it, [`config`] what it reads,
//! [`state`] what it shares. To add a way of signing in, read
//! [`identity`]: one file there, its config section, its pages in
//! [`pages`].
//!
//! Rooms, from the request's edge inwards (a room imports only rooms
//! below it in this sense; `python3 .ci/structure.py` shows the map and
//! finds no circle):
//!
//! - [`server`]: the TLS accept loop (connection cap, handshake timeout,
//!   graceful shutdown), the redirect and ops listeners; [`connection`]:
//!   what the server and the pipeline both know of one connection (the
//!   HTTP/1.1 framing guard's verdicts, the idle watchdog's activity).
//! - [`pipeline`]: one request's way, top to bottom, and the one place
//!   `/.gateway/` is routed; [`access`]: the two judgments it and
//!   [`forward_auth`] (`/.gateway/verify` behind nginx, Traefik or Caddy)
//!   both make: who is asking, and what the rules say.
//! - [`identity`]: who is asking ([`identity::SignedIn`]: user, roles,
//!   session, how they proved it) and each way to prove it: a password
//!   (`identity/password.rs`), a TOTP second factor (`identity/totp.rs`)
//!   and fresh sign-in (`identity/reauth.rs`), an OpenID Connect provider
//!   (`identity/oidc/`: the code flow, token checks, claims, back-channel
//!   and RP-initiated logout), a directory (`identity/ldap/`: OpenLDAP or
//!   Active Directory, pooled connections, the recheck of its users'
//!   sessions), the session's beginning and end
//!   (`identity/lifecycle.rs`), user changes (`identity/changes.rs`);
//!   CSRF, form reading, safe `next`.
//! - [`admin`]: the account page and the admin page and API.
//! - [`pages`]: every page the gateway serves (maud templates, one
//!   stylesheet); [`response`]: the body type, the one error-to-status
//!   mapping, the gateway's own headers.
//! - [`state`]: the running gateway's [`state::State`] and the
//!   [`state::Live`] snapshot of one config that a request takes once
//!   (a reload swaps one pointer); [`reload`]: putting a changed config
//!   in force, and what only a restart changes.
//! - [`proxy`]: the pooled upstream client, the header rules both ways,
//!   upstream redirects, open WebSockets under their session;
//!   [`forwarded`]: who the client is behind `trusted_proxies`;
//!   [`assertion`]: signed ES256 identity assertions and their JWKS.
//! - [`store`]: everything kept, behind one seam: sessions, users (the
//!   users file or the shared store), sign-in counters and short-lived sign-in
//!   records, each one type with its backend inside (memory, a SQLite
//!   file, a store shared by replicas). Nothing outside it knows which.
//! - [`users`]: users, canonical names, the users file (safe rewrites,
//!   the change watcher), password hashing on its own threads, TOTP;
//!   [`session`]: what a session is (its ID, the key it is filed under,
//!   a lookup's outcome).
//! - [`policy`]: paths, hosts, compiled rules, the decision;
//!   [`review`]: what `check` and `explain` say of a policy (warnings,
//!   `[[test]]`s, `--replay`).
//! - [`config`]: `gateway.toml`, raw serde structs validated into
//!   [`Config`], every problem at `FILE:LINE:COL`; [`diag`]: those
//!   problems and the key-tracking deserializer; [`units`]: durations,
//!   sizes and times as written; [`tls`]: PEM loading and the rustls
//!   config; [`files`]: files the gateway writes itself, private and
//!   whole.
//! - [`body`]: the request body every handler reads (`body_timeout`,
//!   HTTP/2's unread rest drained); [`metrics`]: what the gateway counts,
//!   and its readiness latch; [`ops`]: `/healthz` `/readyz` `/metrics`;
//!   [`logging`]: batched log output; [`request_id`]: `X-Request-Id` and
//!   the security-event macro.
//! - [`cli`]: the binary's commands, one file each (`main.rs` parses and
//!   dispatches); [`init`]: `authgate init`'s setup; [`demo`]: the
//!   zero-setup demo app and gateway.

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

/// The bytes of lower-case (or upper-case) hex; `None` for anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
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
