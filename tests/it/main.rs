//! The one integration-test binary: every module drives a real gateway over
//! real HTTPS, in-process on 127.0.0.1:0 (or the real binary, for the CLI).

mod account;
mod admin;
mod apps;
mod assertion;
mod browser;
mod cli;
mod config;
mod deploy;
mod edges;
mod forward_auth;
mod front_door;
mod ldap;
mod lifecycle;
mod limits;
mod login;
pub mod logs;
pub mod metrics;
mod oidc;
mod oidc_fake;
pub mod oidc_real;
mod passkeys;
mod paths;
mod policy;
mod properties;
mod proxy;
mod reload;
pub mod replicas;
mod slapd;
mod store;
mod structure;
mod support;
mod tls;
mod tokens;
pub mod totp;
mod upstream_tls;
pub mod websocket;
