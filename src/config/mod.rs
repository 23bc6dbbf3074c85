//! `gateway.toml`: the raw file ([`raw`]) validated into the [`Config`] the
//! rest of the gateway uses. Every problem names `FILE:LINE:COL`, and one load
//! reports all the problems it can find rather than the first.

mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::Authority;

use crate::diag::{self, Diagnostics};
pub use crate::diag::{ConfigError, Problem};
use raw::RawConfig;
use validate::Validator;

use crate::policy::Policy;

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from; relative paths inside it were resolved against its folder.
    pub source: PathBuf,
    pub server: Server,
    /// One app, or several picked by host and path prefix
    /// ([`Config::upstream_for`]).
    pub upstreams: Vec<Upstream>,
    pub session: Session,
    pub store: Store,
    /// The users file as loaded at start.
    pub users: crate::users::Users,
    /// Where the users file is, for reloads and rewrites (none configured: no users).
    pub users_file: Option<PathBuf>,
    /// `[users] seed`: the users file is made from this one at start when
    /// it does not exist (until then its users are the seed's).
    pub users_seed: Option<PathBuf>,
    pub login: Login,
    pub identity: Identity,
    pub admin: Admin,
    /// `[[oidc]]`: identity providers people may sign in with.
    pub oidc: Vec<Arc<OidcProvider>>,
    /// `[ldap]`: a directory people may sign in against.
    pub ldap: Option<Arc<Ldap>>,
    pub tokens: Tokens,
    pub bearer: Vec<Arc<Bearer>>,
    pub policy: Policy,
    /// The `[[test]]` cases `authgate check` runs.
    pub tests: Vec<PolicyTest>,
}

/// One `[[test]]`: a request and the decision the policy must reach.
#[derive(Debug, Clone)]
pub struct PolicyTest {
    pub line: usize,
    pub col: usize,
    /// `None`: anonymous.
    pub user: Option<String>,
    pub method: http::Method,
    pub path: String,
    pub host: Option<String>,
    /// `allow`, `deny` or `login`.
    pub expect: &'static str,
    /// The upstream url it must be sent to, if the test says.
    pub upstream: Option<String>,
    /// How long ago the password was entered (default 0).
    pub auth_age: Duration,
    /// The session passed the second factor (`None`: as the user has one).
    pub mfa: Option<bool>,
}

/// The session cookie's name unless configured otherwise. Every cookie
/// whose name starts with it is the gateway's (the login cookie adds `-login`).
pub const DEFAULT_COOKIE_NAME: &str = "__Host-authgate";
/// The session cookie's name with a `cookie_domain` unless configured
/// otherwise (a `__Host-` cookie cannot have a `Domain`).
pub const DEFAULT_DOMAIN_COOKIE_NAME: &str = "__Secure-authgate";

#[derive(Debug)]
pub struct Session {
    pub cookie_name: String,
    /// `Domain=` of the session cookie (forward-auth across subdomains);
    /// `None`: host-only, the `__Host-` way.
    pub cookie_domain: Option<String>,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// Sessions one user may hold at once; a sign-in past it ends the
    /// user's least recently used session.
    pub max_per_user: usize,
}

/// `[store]`: where sessions are kept (see [`crate::store`]).
#[derive(Debug, Clone)]
pub struct Store {
    pub backend: StoreBackend,
    /// How long a write to the state file waits for another process's lock
    /// (the command line's) before the change is refused. Not a config
    /// key: a minute-long wait would only hide a stuck process; tests
    /// shorten it.
    pub lock_wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// Sessions end with the process.
    Memory,
    /// A SQLite file, the default.
    Local { path: PathBuf },
    /// Redis, shared by replicas: sessions, users and sign-in counters.
    Redis(RedisSettings),
}

/// The state file's name unless `[store] path` says otherwise.
pub const DEFAULT_STATE_FILE: &str = "authgate-state.db";

#[derive(Debug)]
pub struct Login {
    /// Failures allowed per account within `failure_window` (per client IP: 4x).
    pub max_failures: u32,
    pub failure_window: Duration,
    /// Users with any of these roles must have a second factor (a TOTP
    /// app or a passkey) before they get a session: `[login]
    /// require_second_factor`, and `require_totp`, its older name.
    pub require_second_factor: Vec<String>,
    /// What the sign-in page says besides its form.
    pub words: LoginWords,
    /// `[login] local`: the username and password form is offered.
    pub local: bool,
    /// Passwords checked at once, each on a thread that holds the
    /// strongest hash's memory (19 MiB at the floor): a fixed number, not
    /// one per visible core, so the memory a pod needs does not depend on
    /// the node it lands on. At most the cores the process may use.
    pub hashing_threads: usize,
}

/// `[login] title` and `notice`: plain text on the sign-in page.
#[derive(Debug, Clone, Default)]
pub struct LoginWords {
    pub title: Option<String>,
    pub notice: Option<String>,
}

#[derive(Debug)]
pub struct Admin {
    pub role: String,
}

mod tokens;
pub use tokens::{Bearer, Tokens};

/// One `[[oidc]]`: an OpenID Connect provider (see
/// [`crate::identity::oidc`]).
#[derive(Debug)]
pub struct OidcProvider {
    /// Short id in URLs, logs and rules' `providers`.
    pub name: String,
    /// The button's words.
    pub title: String,
    /// As configured; discovery is at `{issuer}/.well-known/openid-configuration`
    /// and every token's `iss` must equal it.
    pub issuer: String,
    pub client_id: String,
    /// Read from `client_secret_file` at load; `None` (and no
    /// `client_key`): a public client (PKCE alone).
    pub client_secret: Option<Secret>,
    /// `client_auth = "private_key_jwt"`: the key that signs the client
    /// assertion at the token endpoint.
    pub client_key: Option<Arc<crate::assertion::JwtKey>>,
    pub scopes: Vec<String>,
    /// `None`: `preferred_username`, then `email`.
    pub username_claim: Option<String>,
    pub roles_claim: Option<String>,
    /// A value of `roles_claim` -> the roles it gives. Values not listed
    /// give nothing.
    pub role_map: Vec<(String, Vec<String>)>,
    /// Roles every user of this provider gets.
    pub default_roles: Vec<String>,
    /// Canonical usernames; empty: anyone the provider vouches for.
    pub allowed_users: Vec<String>,
    /// Lower-case email domains; empty: any.
    pub allowed_domains: Vec<String>,
    pub require_email_verified: bool,
    /// Headers sent upstream, each from a claim.
    pub headers: Vec<(HeaderName, String)>,
    /// `amr` values that count as a second factor.
    pub mfa_amr: Vec<String>,
    /// Asked for when a route needs a second factor the session lacks.
    pub acr_values: Option<String>,
    /// How the provider's certificate is checked (`ca`, or the system's roots).
    pub tls: Arc<rustls::ClientConfig>,
    /// For each call to the provider (discovery, keys, the code exchange).
    pub timeout: Duration,
    /// `None`: `https://HOST/.gateway/oidc/NAME/callback` of the request's host.
    pub redirect_uri: Option<String>,
    /// Keys from this address without discovery (a `[[bearer]]`'s
    /// `jwks`); `None` for every `[[oidc]]`.
    pub jwks_uri: Option<String>,
}

/// `[ldap]`: a directory (see [`crate::identity::ldap`]). Its users sign
/// in on the password form and their sessions are marked with the
/// provider name [`Ldap::NAME`].
#[derive(Debug)]
pub struct Ldap {
    /// `ldaps://...` or `ldap://...` as written.
    pub url: String,
    pub start_tls: bool,
    /// `None`: plain LDAP (`insecure = true`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The search account; `None`: anonymous searches.
    pub bind: Option<(String, Secret)>,
    pub user_base: String,
    /// With `{username}` where the escaped name goes.
    pub user_filter: String,
    /// Whose value becomes the user's name here (`uid`, `sAMAccountName`).
    pub username_attribute: String,
    /// `userAccountControl`'s disabled bit refuses the account.
    pub active_directory: bool,
    pub groups: LdapGroups,
    /// A group's DN or name (lower case) -> the roles it gives.
    pub role_map: Vec<(String, Vec<String>)>,
    pub default_roles: Vec<String>,
    /// Headers sent upstream, each from an attribute.
    pub headers: Vec<(HeaderName, String)>,
    /// For each exchange with the directory.
    pub timeout: Duration,
    /// How often directory users' sessions are checked again.
    pub recheck: Duration,
    /// Connections kept open for searches, and as many for binds.
    pub connections: usize,
    /// `[users] order`: who wins a name in both the users file and the
    /// directory; `None`: such a name cannot sign in (and is refused at start).
    pub order: Option<NameOrder>,
}

impl Ldap {
    /// Sessions, rules' `providers` and provider entries name the directory so.
    pub const NAME: &'static str = "ldap";
}

/// Where a user's groups come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdapGroups {
    /// The user entry's `memberOf`.
    MemberOf,
    /// A search under `base` with `filter` (`{dn}` or `{username}` filled).
    Search { base: String, filter: String },
}

/// `[users] order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameOrder {
    LocalFirst,
    DirectoryFirst,
}

/// A secret read from a file: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// SPEC §2: a session never lives longer than this, whatever the config says.
pub const MAX_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug)]
pub struct Server {
    pub listen: SocketAddr,
    /// Built once at load, so a certificate that does not match its key is a
    /// config error rather than a failure at the first handshake.
    pub tls: Arc<rustls::ServerConfig>,
    /// The certificate behind `tls`, swapped when its files change.
    pub certificate: Arc<crate::tls::RotatingCert>,
    pub redirect_http: Option<SocketAddr>,
    pub ops_listen: Option<SocketAddr>,
    /// Plain HTTP, `/.gateway/verify` only, for edge proxies on other hosts.
    pub verify_listen: Option<SocketAddr>,
    /// `https://host[:port]` (no trailing slash) where browsers reach the
    /// gateway's pages: the `Location` of forward-auth's 401s.
    pub public_url: Option<String>,
    pub shutdown_grace: Duration,
    /// On a stop: `/readyz` turns 503 at once and the listener keeps
    /// accepting for this long (a load balancer or Kubernetes takes a
    /// moment to stop sending), then the graceful close starts.
    pub drain_delay: Duration,
    pub max_header_size: usize,
    pub max_body_size: u64,
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/1.1 keep-alive and HTTP/2 alike).
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub hsts: bool,
    pub log_format: Option<LogFormat>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` is believed.
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    /// Origins besides the request's own whose pages may open WebSockets
    /// through the gateway (`https://host[:port]`, lower case).
    pub websocket_origins: Vec<String>,
    /// Which header family `/.gateway/verify` reads the original request
    /// from; `None` takes the one family present and refuses a mix.
    pub forward_auth: Option<ForwardAuthFamily>,
    /// The longest wait between two reads of a request body (proxied or
    /// the gateway's own forms): past it, 408 and the connection closes.
    pub body_timeout: Duration,
    /// Open connections one client (after `trusted_proxies`) may hold.
    pub max_connections_per_client: usize,
}

/// The header family an edge proxy describes the original request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAuthFamily {
    /// nginx `auth_request`: `X-Original-URL` and `X-Original-Method`.
    Nginx,
    /// Traefik ForwardAuth and Caddy `forward_auth`: `X-Forwarded-Method`,
    /// `-Host`, `-Uri`, `-Proto`.
    Traefik,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug)]
pub struct Upstream {
    /// The url as written, for `explain` and messages.
    pub url: String,
    /// Where the entry is in the file.
    pub line: usize,
    /// Several apps: the host this entry serves (lower case, no trailing
    /// dot); `None` serves any.
    pub host: Option<String>,
    /// Several apps: the path prefix this entry serves (`/app`, no
    /// trailing slash); empty serves every path.
    pub path_prefix: String,
    /// Send the path without `path_prefix` (and say it in
    /// `X-Forwarded-Prefix`).
    pub strip_prefix: bool,
    /// `host:port` of the protected app.
    pub authority: Authority,
    /// For `https://` upstreams: roots (the system's or `ca`), an optional
    /// client certificate, ALPN `h2` and `http/1.1`; `None` for `http://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response head arrives.
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Identity {
    pub user_header: HeaderName,
    pub roles_header: HeaderName,
    /// Every header an `[[oidc]]` provider fills from claims: never taken
    /// from a client.
    pub claim_headers: Vec<HeaderName>,
    /// `assertion = true`: a signed JWT goes with the identity headers.
    pub assertion: Option<Assertion>,
}

/// How signed identity assertions are made (see [`crate::assertion`]).
#[derive(Debug, Clone)]
pub struct Assertion {
    pub header: HeaderName,
    /// The PKCS#8 PEM signing key.
    pub key: PathBuf,
    /// The key is made there at start if it does not exist (the default
    /// path in the state folder); a configured key must exist.
    pub generate: bool,
    pub issuer: String,
    /// `None`: the host of the upstream the request goes to.
    pub audience: Option<String>,
    pub lifetime: Duration,
}

/// The signing key's file name in the state folder unless `assertion_key` says.
pub const DEFAULT_ASSERTION_KEY: &str = "authgate-assertion-key.pem";

impl Config {
    /// With users shared in Redis, what the users file is still for
    /// (`check` prints it).
    pub fn seed_only_note(&self) -> Option<String> {
        let (StoreBackend::Redis(_), Some(users_file)) = (&self.store.backend, &self.users_file)
        else {
            return None;
        };
        Some(format!(
            "with [store] backend = \"redis\" users live in Redis; {} only seeds an empty Redis, and the [[test]]s below judge its users, which may differ from Redis's (`authgate user export` prints those)",
            users_file.display()
        ))
    }

    /// What a start and `check` warn of: secret files others may read, a
    /// memory limit too small for the hashing threads, a users file this
    /// process cannot rewrite.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.exposed_secret_files();
        warnings.extend(self.hashing_memory_warning());
        warnings.extend(self.users_file_warning());
        warnings
    }

    /// A warning when this process's cgroup memory limit cannot hold the
    /// gateway and the hashing threads this config asks for (`[login]
    /// hashing_threads`, each with its users' strongest hash's memory).
    pub fn hashing_memory_warning(&self) -> Option<String> {
        use crate::users::password;
        let threads = self.login.hashing_threads.min(password::usable_cores());
        let area = password::strongest_memory_kib(self.users.iter().map(|u| &*u.password_hash));
        password::memory_warning(password::cgroup_memory_limit(), threads, area)
    }

    /// Makes the users file from `[users] seed` when it does not exist yet
    /// (written whole or not at all, mode 0600); true if it did. The seed
    /// is typically read-only (a Secret); the copy is what the password
    /// page, TOTP enrolment and the admin page rewrite.
    pub fn seed_users_file(&self) -> std::io::Result<bool> {
        let (Some(file), Some(seed)) = (&self.users_file, &self.users_seed) else {
            return Ok(false);
        };
        if file.exists() {
            return Ok(false);
        }
        let text = std::fs::read(seed)?;
        crate::files::write_private(file, &text, crate::files::Existing::Keep)
    }

    /// A warning when the users file is one this process cannot rewrite
    /// (and users are not in Redis): password changes, TOTP enrolment and
    /// the admin page's user changes are then refused as managed elsewhere.
    pub fn users_file_warning(&self) -> Option<String> {
        if matches!(self.store.backend, StoreBackend::Redis(_)) {
            return None;
        }
        let file = crate::users::file::UsersFile::new(self.users_file.clone()?);
        let why = file.writable().err()?;
        Some(format!(
            "{why}. The password page, second-factor enrolment and the admin page's user changes will say so instead of saving; to keep them working, put the users file on a writable volume and name the read-only one as [users] seed"
        ))
    }

    /// Secret files of this config that every user of the machine may
    /// read (the TLS key, the assertion key, the Redis password file), each
    /// as a sentence that names it and the `chmod` that fixes it. Not
    /// refused: Kubernetes mounts Secrets 0644 unless told otherwise, and
    /// the container may be the only thing there; but said at start, on
    /// reload and by `check`.
    pub fn exposed_secret_files(&self) -> Vec<String> {
        let mut files = vec![("TLS key", self.server.certificate.key_path().to_owned())];
        if let Some(assertion) = &self.identity.assertion {
            files.push(("assertion signing key", assertion.key.clone()));
        }
        if let StoreBackend::Redis(settings) = &self.store.backend {
            if let Some(file) = &settings.password_file {
                files.push(("Redis password file", file.clone()));
            }
        }
        files
            .into_iter()
            .filter_map(|(what, path)| {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).ok()?.permissions().mode() & 0o777;
                (mode & 0o004 != 0).then(|| {
                    format!(
                        "the {what} {} is readable by every user of this machine (mode {mode:04o}); run `chmod 600 {}` (or 640 with a group the gateway is in; in Kubernetes set the Secret volume's defaultMode to 0400 or 0440)",
                        path.display(),
                        path.display()
                    )
                })
            })
            .collect()
    }

    /// The upstream entry a request for `host` (any port) and the raw
    /// `path` goes to, for `explain` and `[[test]]`.
    pub fn upstream_of_request(&self, host: Option<&str>, path: &str) -> Option<&Upstream> {
        let normalized = crate::policy::path::normalize(path).ok()?;
        let host = host.map(|h| {
            // The name without a port (`[v6]` kept whole).
            let name = match h.strip_prefix('[') {
                Some(rest) => rest.split(']').next().map_or(h, |v6| &h[..v6.len() + 2]),
                None => h.split(':').next().unwrap_or(h),
            };
            name.trim_end_matches('.').to_ascii_lowercase()
        });
        self.upstream_for(host.as_deref(), &normalized)
            .map(|i| &self.upstreams[i])
    }

    /// The upstream a request goes to: among the entries whose host (if
    /// any) is the request's and whose prefix covers the path (whole
    /// segments), the longest prefix, then one naming the host. `None`:
    /// no entry serves it.
    pub fn upstream_for(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.upstreams
            .iter()
            .enumerate()
            .filter(|(_, u)| {
                u.host
                    .as_deref()
                    .is_none_or(|h| host.is_some_and(|r| r.eq_ignore_ascii_case(h)))
            })
            .filter(|(_, u)| {
                u.path_prefix.is_empty()
                    || path == u.path_prefix
                    || path
                        .strip_prefix(u.path_prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(i, u)| (u.path_prefix.len(), u.host.is_some(), std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    }
}

/// Smallest accepted `max_header_size`: below this no browser request fits.
const MIN_HEADER_SIZE: u64 = 1024;

impl Config {
    /// Whether sessions may name this sign-in method besides the users
    /// file: an `[[oidc]]` provider, or `ldap` with `[ldap]`.
    pub fn has_provider(&self, name: &str) -> bool {
        self.oidc.iter().any(|p| p.name == name) || (self.ldap.is_some() && name == Ldap::NAME)
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) => Err(ConfigError {
                problems: vec![Problem {
                    file: path.display().to_string(),
                    position: None,
                    message: format!("cannot read the config file: {e}"),
                }],
            }),
        }
    }

    /// For `explain` and the `[[test]]`s of `check`, which need the policy
    /// and the users but never serve: like [`Config::load`], except that
    /// the files the config names for serving (TLS pair, upstream CA and
    /// client pair, assertion key) may be missing or broken; their
    /// problems come back beside the config, each at its place.
    pub fn load_for_policy(path: &Path) -> Result<(Config, Vec<Problem>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                file: path.display().to_string(),
                position: None,
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        let mut diag = Diagnostics::new(path.display().to_string(), &text);
        let base = path.parent().unwrap_or(Path::new("."));
        let Some(raw) = diag::deserialize::<RawConfig>(&text, &mut diag) else {
            return Err(diag.finish().unwrap_err());
        };
        let mut v = Validator {
            diag,
            base,
            nested: Vec::new(),
            lenient_files: Some(Vec::new()),
        };
        let config = v.config(raw, path);
        let nested = std::mem::take(&mut v.nested);
        let deferred = v.lenient_files.take().unwrap_or_default();
        match v.diag.finish() {
            Err(mut e) => {
                e.problems.extend(nested);
                Err(e)
            }
            Ok(()) if !nested.is_empty() => Err(ConfigError { problems: nested }),
            Ok(()) => {
                let mut files = Diagnostics::new(path.display().to_string(), &text);
                for (span, message) in deferred {
                    files.at(span, message);
                }
                let problems = files.finish().err().map_or_else(Vec::new, |e| e.problems);
                Ok((
                    config.expect("a config with no problems is complete"),
                    problems,
                ))
            }
        }
    }

    /// Validates `text` as if it were the file at `path` (which names the
    /// file in messages and anchors the relative paths in it).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut diag = Diagnostics::new(path.display().to_string(), text);
        let base = path.parent().unwrap_or(Path::new("."));

        let Some(raw) = diag::deserialize::<RawConfig>(text, &mut diag) else {
            return Err(diag.finish().unwrap_err());
        };

        let mut v = Validator {
            diag,
            base,
            nested: Vec::new(),
            lenient_files: None,
        };
        let config = v.config(raw, path);
        let nested = std::mem::take(&mut v.nested);
        match v.diag.finish() {
            Err(mut e) => {
                e.problems.extend(nested);
                Err(e)
            }
            Ok(()) if !nested.is_empty() => Err(ConfigError { problems: nested }),
            Ok(()) => Ok(config.expect("a config with no problems is complete")),
        }
    }
}

/// Whether a `[store] backend` keeps users shared between replicas (in
/// Redis), so that the users file only seeds it.
pub fn shares_users(backend: Option<&str>) -> bool {
    backend == Some("redis")
}

/// Where the config at `path` keeps its users file, read without
/// validating the rest (the `user` commands need no certificate).
pub fn users_file_of(path: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{}: {}", path.display(), e.message()))?;
    let file = table
        .get("users")
        .and_then(|u| u.get("file"))
        .and_then(|f| f.as_str())
        .ok_or_else(|| {
            format!(
                "{} names no users file ([users] file = \"...\")",
                path.display()
            )
        })?;
    Ok(path.parent().unwrap_or(Path::new(".")).join(file))
}

/// The settings of the `redis` backend.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    /// From `password_file`, when the URL carries none.
    pub password: Option<String>,
    /// Where `password` came from, for the mode check (see
    /// `Config::exposed_secret_files`).
    pub password_file: Option<std::path::PathBuf>,
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: only its host part is shown.
        let host = self.url.rsplit('@').next().unwrap_or("");
        f.debug_struct("RedisSettings")
            .field("host", &host)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
