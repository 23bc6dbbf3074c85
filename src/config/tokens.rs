//! `[tokens]` and `[[bearer]]` as the gateway uses them.

use std::sync::Arc;
use std::time::Duration;

use super::OidcProvider;

/// One `[[bearer]]`: a provider whose JWT access tokens count as tokens.
#[derive(Debug)]
pub struct Bearer {
    /// Short id in logs, `X-Auth-Bearer` and rules' `providers`.
    pub name: String,
    /// Every token's `aud` must name it.
    pub audience: String,
    /// Whose value is the user's name (default `sub`).
    pub subject_claim: String,
    /// A claim (a list, or a space-separated string such as `scope`)
    /// whose values `role_map` turns into roles.
    pub roles_claim: Option<String>,
    pub role_map: Vec<(String, Vec<String>)>,
    pub default_roles: Vec<String>,
    /// The provider as the gateway reaches it (issuer, discovery and
    /// keys, `ca`, timeout); only those fields mean anything here.
    pub provider: Arc<OidcProvider>,
}

/// `[tokens]`: API tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The longest a token may live (`max_lifetime`, default 365 days).
    pub max_lifetime: Duration,
    /// A token's life when none is asked for: 90 days, or `max_lifetime`
    /// if shorter.
    pub default_lifetime: Duration,
    /// A password change ends the account's tokens.
    pub end_on_password_change: bool,
}
