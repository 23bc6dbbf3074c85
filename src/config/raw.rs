//! The file as written: serde structs that mirror `gateway.toml` key for key.
//!
//! Values that need more than a type check (durations, sizes, addresses,
//! paths, access words) stay `Spanned<String>` here so that validation can
//! point at the exact place in the file when they are wrong.

use serde::Deserialize;
use toml::Spanned;

pub type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
pub struct RawConfig {
    pub server: Spanned<RawServer>,
    pub upstream: Spanned<RawUpstreams>,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub store: RawStore,
    pub users: Option<Spanned<RawUsers>>,
    #[serde(default)]
    pub login: RawLogin,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default, rename = "oidc")]
    pub oidc: Vec<Spanned<RawOidc>>,
    pub ldap: Option<Spanned<RawLdap>>,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default, rename = "bearer")]
    pub bearer: Vec<Spanned<RawBearer>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RawRule>>,
    #[serde(default, rename = "test")]
    pub tests: Vec<Spanned<RawTest>>,
}

#[derive(Debug, Deserialize)]
pub struct RawTest {
    pub user: Option<Text>,
    pub anonymous: Option<Spanned<bool>>,
    pub method: Text,
    pub path: Text,
    pub host: Option<Text>,
    pub expect: Text,
    /// The upstream url the request must go to (several apps).
    pub upstream: Option<Text>,
    /// How long ago the user entered the password (default: just now).
    pub auth_age: Option<Text>,
    /// Whether the session passed the second factor (default: whether the
    /// user has one).
    pub mfa: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
pub struct RawServer {
    pub listen: Text,
    pub cert: Text,
    pub key: Text,
    pub redirect_http: Option<Text>,
    pub ops_listen: Option<Text>,
    /// A plain listener that answers only `/.gateway/verify`.
    pub verify_listen: Option<Text>,
    /// How browsers reach the gateway (`https://auth.example`), for the
    /// login links of forward-auth answers.
    pub public_url: Option<Text>,
    pub shutdown_grace: Option<Text>,
    /// On SIGTERM: how long the listener keeps accepting, with `/readyz`
    /// already 503, before the graceful close starts.
    pub drain_delay: Option<Text>,
    pub max_header_size: Option<Text>,
    pub max_body_size: Option<Text>,
    pub header_timeout: Option<Text>,
    pub idle_timeout: Option<Text>,
    pub handshake_timeout: Option<Text>,
    pub max_connections: Option<Spanned<i64>>,
    pub hsts: Option<bool>,
    pub log_format: Option<Text>,
    pub trusted_proxies: Option<Vec<Text>>,
    pub websocket_origins: Option<Vec<Text>>,
    /// Which forward-auth header family the edge proxy sets: "nginx"
    /// (`X-Original-*`) or "traefik" (`X-Forwarded-*`).
    pub forward_auth: Option<Text>,
    /// The longest wait between two reads of a request body.
    pub body_timeout: Option<Text>,
    /// Open connections one client address may hold at once.
    pub max_connections_per_client: Option<Spanned<i64>>,
}

/// `[upstream]` (one app) or `[[upstream]]` entries (several apps, picked
/// by host and path prefix): the same key as a table or an array of tables.
#[derive(Debug)]
pub enum RawUpstreams {
    One(Box<RawUpstream>),
    Many(Vec<Spanned<RawUpstream>>),
}

impl<'de> Deserialize<'de> for RawUpstreams {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // By hand, not `#[serde(untagged)]`: that buffers the value and
        // loses the spans every problem is reported at.
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawUpstreams;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an [upstream] table or [[upstream]] entries")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawUpstreams, A::Error> {
                RawUpstream::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|one| RawUpstreams::One(Box::new(one)))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<RawUpstreams, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(RawUpstreams::Many)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
pub struct RawUpstream {
    pub url: Text,
    /// Several apps only: the host this entry serves.
    pub host: Option<Text>,
    /// Several apps only: the path prefix this entry serves.
    pub path_prefix: Option<Text>,
    /// Several apps only: send the path without the prefix.
    pub strip_prefix: Option<Spanned<bool>>,
    pub ca: Option<Text>,
    pub client_cert: Option<Text>,
    pub client_key: Option<Text>,
    pub connect_timeout: Option<Text>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawIdentity {
    pub user_header: Option<Text>,
    pub roles_header: Option<Text>,
    /// Also send a signed ES256 JWT (see `crate::assertion`).
    pub assertion: Option<Spanned<bool>>,
    pub assertion_header: Option<Text>,
    pub assertion_key: Option<Text>,
    pub assertion_issuer: Option<Text>,
    pub assertion_audience: Option<Text>,
    pub assertion_lifetime: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub struct RawRule {
    pub path: Text,
    pub methods: Option<Vec<Text>>,
    pub host: Option<Text>,
    pub access: Option<Text>,
    pub roles: Option<Spanned<Vec<Text>>>,
    /// The route needs a session that passed the second factor.
    pub mfa: Option<Spanned<bool>>,
    /// The route needs the password entered within this long.
    pub max_auth_age: Option<Text>,
    /// Only sessions from these sign-in methods (`[[oidc]]` names, or
    /// `local`) satisfy the rule.
    pub providers: Option<Vec<Text>>,
    /// API tokens (`Authorization: Bearer agt_...`) are accepted here.
    pub tokens: Option<Spanned<bool>>,
    /// HTTP Basic with a token as the password is accepted here too.
    pub basic_auth: Option<Spanned<bool>>,
    /// The client's `Authorization` header goes on to the upstream.
    pub pass_authorization: Option<Spanned<bool>>,
}

/// One `[[bearer]]`: an OpenID provider whose JWT access tokens (from a
/// client-credentials grant, a workload identity) are taken as tokens.
#[derive(Debug, Deserialize)]
pub struct RawBearer {
    pub name: Text,
    pub issuer: Text,
    pub audience: Text,
    /// The provider's keys, when it publishes no discovery document.
    pub jwks: Option<Text>,
    pub ca: Option<Text>,
    pub subject_claim: Option<Text>,
    pub roles_claim: Option<Text>,
    pub role_map: Option<Spanned<std::collections::BTreeMap<String, Vec<Text>>>>,
    pub default_roles: Option<Vec<Text>>,
    pub timeout: Option<Text>,
}

/// `[tokens]`: API tokens for scripts and services.
#[derive(Debug, Default, Deserialize)]
pub struct RawTokens {
    /// The longest a token may live.
    pub max_lifetime: Option<Text>,
    /// Every rule that asks for a session accepts tokens.
    pub default: Option<Spanned<bool>>,
    /// A password change ends the account's tokens.
    pub end_on_password_change: Option<Spanned<bool>>,
}

/// One `[[oidc]]`: an OpenID Connect provider people may sign in with.
#[derive(Debug, Deserialize)]
pub struct RawOidc {
    pub name: Text,
    pub title: Option<Text>,
    pub issuer: Text,
    pub client_id: Text,
    pub client_secret_file: Option<Text>,
    /// `client_secret` or `private_key_jwt`.
    pub client_auth: Option<Text>,
    /// The P-256 key of `private_key_jwt`.
    pub client_key: Option<Text>,
    pub scopes: Option<Vec<Text>>,
    pub username_claim: Option<Text>,
    pub roles_claim: Option<Text>,
    pub role_map: Option<Spanned<std::collections::BTreeMap<String, Vec<Text>>>>,
    pub default_roles: Option<Vec<Text>>,
    pub allowed_users: Option<Vec<Text>>,
    pub allowed_domains: Option<Vec<Text>>,
    pub require_email_verified: Option<Spanned<bool>>,
    pub headers: Option<Spanned<std::collections::BTreeMap<String, Text>>>,
    pub mfa_amr: Option<Vec<Text>>,
    pub acr_values: Option<Text>,
    /// PEM roots to trust for the provider instead of the system's.
    pub ca: Option<Text>,
    pub timeout: Option<Text>,
    /// The callback URL registered at the provider, when it is not
    /// `https://HOST/.gateway/oidc/NAME/callback` of the request's host.
    pub redirect_uri: Option<Text>,
}

/// `[ldap]`: a directory (OpenLDAP, Active Directory) people sign in
/// against with their directory password.
#[derive(Debug, Deserialize)]
pub struct RawLdap {
    /// `ldaps://HOST[:PORT]`, or `ldap://` with `start_tls` or `insecure`.
    pub url: Text,
    pub start_tls: Option<Spanned<bool>>,
    /// Allows plain `ldap://` without TLS (passwords in the clear).
    pub insecure: Option<Spanned<bool>>,
    /// PEM roots to trust for the directory instead of the system's.
    pub ca: Option<Text>,
    /// The search account; without it, searches are anonymous.
    pub bind_dn: Option<Text>,
    pub bind_password_file: Option<Text>,
    pub user_base: Text,
    /// With `{username}` where the typed name goes (escaped).
    pub user_filter: Option<Text>,
    /// The attribute whose value is the user's name here.
    pub username_attribute: Option<Text>,
    /// Presets for Active Directory: `sAMAccountName` or
    /// `userPrincipalName`, `memberOf`, the disabled bit.
    pub active_directory: Option<Spanned<bool>>,
    /// Groups are searched here with `group_filter`; without it, the
    /// user's `memberOf` names them.
    pub group_base: Option<Text>,
    /// With `{dn}` (the user's DN) or `{username}`.
    pub group_filter: Option<Text>,
    /// A group's DN or name -> the roles it gives.
    pub role_map: Option<Spanned<std::collections::BTreeMap<String, Vec<Text>>>>,
    pub default_roles: Option<Vec<Text>>,
    /// Headers sent upstream, each from an attribute of the user's entry.
    pub headers: Option<Spanned<std::collections::BTreeMap<String, Text>>>,
    pub timeout: Option<Text>,
    /// How often every directory user's sessions are checked again.
    pub recheck: Option<Text>,
    /// Connections kept to the directory, for searches and for binds each.
    pub connections: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSession {
    pub cookie_name: Option<Text>,
    /// Send the session cookie to this domain and its subdomains.
    pub cookie_domain: Option<Text>,
    pub idle_timeout: Option<Text>,
    pub absolute_timeout: Option<Text>,
    /// Sessions one user may hold; past it the least recently used ends.
    pub max_per_user: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawStore {
    pub backend: Option<Text>,
    pub path: Option<Text>,
    pub url: Option<Text>,
    pub password_file: Option<Text>,
    pub key_prefix: Option<Text>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Deserialize)]
pub struct RawUsers {
    pub file: Text,
    /// A read-only users file (a Kubernetes Secret) that `file` is made
    /// from when it does not exist yet.
    pub seed: Option<Text>,
    /// Where a name that is both in this file and in `[ldap]` signs in:
    /// `["local", "ldap"]` or `["ldap", "local"]`. Unset: such a name is
    /// an error.
    pub order: Option<Vec<Text>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLogin {
    pub max_failures: Option<Spanned<i64>>,
    pub failure_window: Option<Text>,
    /// Roles whose users must have a second factor (the older name).
    pub require_totp: Option<Vec<Text>>,
    /// Roles whose users must have a second factor: a TOTP app or a passkey.
    pub require_second_factor: Option<Vec<Text>>,
    /// The organisation's name on the sign-in page.
    pub title: Option<Text>,
    /// A short plain-text notice on the sign-in page.
    pub notice: Option<Text>,
    /// Passwords checked at once (each holds the hash's memory).
    pub hashing_threads: Option<Spanned<i64>>,
    /// Show the username and password form (default true); `false` when
    /// everyone signs in through a provider.
    pub local: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub role: Option<Text>,
}
