//! `gateway.toml`: the raw file ([`raw`]) validated into the [`Config`] the
//! rest of the gateway uses. Every problem names `FILE:LINE:COL`, and one load
//! reports all the problems it can find rather than the first.

pub(crate) mod diag;
mod raw;
pub mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::{Authority, Uri};

use diag::Diagnostics;
pub use diag::{ConfigError, Problem};
use raw::{RawConfig, Text};

use crate::policy::{Access, Glob, Policy, Rule};

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from; relative paths inside it were resolved against its folder.
    pub source: PathBuf,
    pub server: Server,
    pub upstream: Upstream,
    pub session: Session,
    /// The users file as loaded at start.
    pub users: crate::users::Users,
    /// Where the users file is, for reloads and rewrites (none configured: no users).
    pub users_file: Option<PathBuf>,
    pub login: Login,
    pub identity: Identity,
    pub admin: Admin,
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
}

#[derive(Debug)]
pub struct Session {
    pub cookie_name: String,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
}

#[derive(Debug)]
pub struct Login {
    /// Failures allowed per account within `failure_window` (per client IP: 4x).
    pub max_failures: u32,
    pub failure_window: Duration,
}

#[derive(Debug)]
pub struct Admin {
    pub role: String,
}

/// SPEC §2: a session never lives longer than this, whatever the config says.
pub const MAX_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug)]
pub struct Server {
    pub listen: SocketAddr,
    /// Built once at load, so a certificate that does not match its key is a
    /// config error rather than a failure at the first handshake.
    pub tls: Arc<rustls::ServerConfig>,
    pub redirect_http: Option<SocketAddr>,
    pub ops_listen: Option<SocketAddr>,
    pub shutdown_grace: Duration,
    pub max_header_size: usize,
    pub max_body_size: u64,
    pub header_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub hsts: bool,
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug)]
pub struct Upstream {
    /// `http://host:port` of the protected app.
    pub authority: Authority,
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response head arrives.
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Identity {
    pub user_header: HeaderName,
    pub roles_header: HeaderName,
}

/// Smallest accepted `max_header_size`: below this no browser request fits.
const MIN_HEADER_SIZE: u64 = 1024;

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

/// Turns raw values into typed ones, recording a problem for each bad value
/// and carrying on so that one run reports them all.
struct Validator<'a> {
    diag: Diagnostics<'a>,
    base: &'a Path,
    /// Problems found in other files (the users file) while validating this one.
    nested: Vec<Problem>,
}

/// RFC 6265 §4.1.1: a cookie name is an HTTP token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Validator<'_> {
    fn config(&mut self, raw: RawConfig, path: &Path) -> Option<Config> {
        let server = self.server(raw.server.into_inner());
        let upstream = self.upstream(raw.upstream.into_inner());
        let session = self.session(raw.session);
        // Without a users file nobody can sign in: only public rules let anyone through.
        let (users_file, users) = match &raw.users {
            Some(section) => {
                let file = self.base.join(section.get_ref().file.get_ref());
                let users = self.users(&section.get_ref().file, &file);
                (Some(file), users)
            }
            None => (None, Some(crate::users::Users::default())),
        };
        let login = self.login(raw.login);
        let identity = self.identity(raw.identity);
        let admin = Some(Admin {
            role: raw
                .admin
                .role
                .map_or_else(|| "admin".to_owned(), |r| r.into_inner()),
        });
        let policy = self.policy(raw.rules);
        let tests = self.tests(raw.tests);
        Some(Config {
            source: path.to_owned(),
            server: server?,
            upstream: upstream?,
            session: session?,
            users: users?,
            users_file,
            login: login?,
            identity: identity?,
            admin: admin?,
            policy: policy?,
            tests: tests?,
        })
    }

    fn server(&mut self, raw: raw::RawServer) -> Option<Server> {
        let listen = self.socket_addr(&raw.listen);
        let redirect_http = raw.redirect_http.as_ref().map(|t| self.socket_addr(t));
        let ops_listen = raw.ops_listen.as_ref().map(|t| self.socket_addr(t));
        let tls = self.tls(&raw.cert, &raw.key);
        let shutdown_grace = self.duration(&raw.shutdown_grace, Duration::from_secs(30));
        let header_timeout = self.duration(&raw.header_timeout, Duration::from_secs(10));
        let handshake_timeout = self.duration(&raw.handshake_timeout, Duration::from_secs(10));
        let max_header_size = self.size(&raw.max_header_size, 64 << 10).and_then(|n| {
            if n < MIN_HEADER_SIZE || n > u64::from(u32::MAX) {
                let span = raw
                    .max_header_size
                    .as_ref()
                    .map(|t| t.span())
                    .unwrap_or(0..0);
                self.diag
                    .at(span, "max_header_size must be between 1KiB and 4GiB");
                return None;
            }
            Some(n as usize)
        });
        let max_body_size = self.size(&raw.max_body_size, 1 << 30);
        let max_connections = match &raw.max_connections {
            None => Some(10_000),
            Some(n) if (1..=1_000_000).contains(n.get_ref()) => Some(*n.get_ref() as usize),
            Some(n) => {
                self.diag
                    .at(n.span(), "max_connections must be between 1 and 1000000");
                None
            }
        };
        let log_format = match &raw.log_format {
            None => Some(None),
            Some(t) => match t.get_ref().as_str() {
                "human" => Some(Some(LogFormat::Human)),
                "json" => Some(Some(LogFormat::Json)),
                other => {
                    self.diag.at(
                        t.span(),
                        format!("unknown log_format {other:?}: use \"human\" or \"json\""),
                    );
                    None
                }
            },
        };
        Some(Server {
            listen: listen?,
            tls: tls?,
            redirect_http: redirect_http.map(|a| a.ok_or(())).transpose().ok()?,
            ops_listen: ops_listen.map(|a| a.ok_or(())).transpose().ok()?,
            shutdown_grace: shutdown_grace?,
            max_header_size: max_header_size?,
            max_body_size: max_body_size?,
            header_timeout: header_timeout?,
            handshake_timeout: handshake_timeout?,
            max_connections: max_connections?,
            hsts: raw.hsts.unwrap_or(true),
            log_format: log_format?,
        })
    }

    fn upstream(&mut self, raw: raw::RawUpstream) -> Option<Upstream> {
        let connect_timeout = self.duration(&raw.connect_timeout, Duration::from_secs(5));
        let timeout = self.duration(&raw.timeout, Duration::from_secs(60));
        let authority = match raw.url.get_ref().parse::<Uri>() {
            Err(e) => {
                self.diag
                    .at(raw.url.span(), format!("invalid upstream url: {e}"));
                None
            }
            Ok(uri) if uri.scheme_str() != Some("http") => {
                self.diag.at(
                    raw.url.span(),
                    "upstream url must start with http:// (the gateway talks plain HTTP to an app beside it)",
                );
                None
            }
            Ok(uri) if !matches!(uri.path(), "" | "/") || uri.query().is_some() => {
                self.diag.at(
                    raw.url.span(),
                    "upstream url must not have a path or query: the request path is passed on as it is",
                );
                None
            }
            Ok(uri) => match uri.authority() {
                Some(a) if !a.host().is_empty() => Some(a.clone()),
                _ => {
                    self.diag.at(raw.url.span(), "upstream url has no host");
                    None
                }
            },
        };
        Some(Upstream {
            authority: authority?,
            connect_timeout: connect_timeout?,
            timeout: timeout?,
        })
    }

    fn session(&mut self, raw: raw::RawSession) -> Option<Session> {
        let idle = self.duration(&raw.idle_timeout, Duration::from_secs(30 * 60));
        let absolute = self.duration(&raw.absolute_timeout, Duration::from_secs(8 * 3600));
        if let (Some(a), Some(text)) = (absolute, &raw.absolute_timeout) {
            if a > MAX_ABSOLUTE_TIMEOUT {
                self.diag
                    .at(text.span(), "absolute_timeout must not be over 12h");
            }
        }
        if let (Some(i), Some(a), Some(text)) = (idle, absolute, &raw.idle_timeout) {
            if i > a {
                self.diag.at(
                    text.span(),
                    "idle_timeout must not be longer than absolute_timeout",
                );
            }
        }
        let cookie_name = match &raw.cookie_name {
            None => Some("__Host-authgate".to_owned()),
            Some(name) if is_cookie_name(name.get_ref()) => Some(name.get_ref().clone()),
            Some(name) => {
                self.diag.at(
                    name.span(),
                    format!("invalid cookie name {:?}", name.get_ref()),
                );
                None
            }
        };
        if let Some(store) = &raw.store {
            if store.get_ref() != "memory" {
                self.diag.at(
                    store.span(),
                    format!(
                        "unknown session store {:?}: only \"memory\" is available",
                        store.get_ref()
                    ),
                );
            }
        }
        Some(Session {
            cookie_name: cookie_name?,
            idle_timeout: idle?,
            absolute_timeout: absolute.filter(|a| *a <= MAX_ABSOLUTE_TIMEOUT)?,
        })
    }

    fn users(&mut self, key: &Text, file: &Path) -> Option<crate::users::Users> {
        match std::fs::read_to_string(file) {
            Err(e) => {
                self.diag.at(
                    key.span(),
                    format!("cannot read users file {}: {e}", file.display()),
                );
                None
            }
            Ok(text) => match crate::users::Users::parse(&text, file) {
                Ok(users) => Some(users),
                Err(e) => {
                    self.nested.extend(e.problems);
                    None
                }
            },
        }
    }

    fn login(&mut self, raw: raw::RawLogin) -> Option<Login> {
        let window = self.duration(&raw.failure_window, Duration::from_secs(15 * 60));
        let max_failures = match &raw.max_failures {
            None => Some(5),
            Some(n) if (1..=1000).contains(n.get_ref()) => Some(*n.get_ref() as u32),
            Some(n) => {
                self.diag
                    .at(n.span(), "max_failures must be between 1 and 1000");
                None
            }
        };
        Some(Login {
            max_failures: max_failures?,
            failure_window: window?,
        })
    }

    fn identity(&mut self, raw: raw::RawIdentity) -> Option<Identity> {
        let user_header = self.header_name(&raw.user_header, "x-auth-user");
        let roles_header = self.header_name(&raw.roles_header, "x-auth-roles");
        Some(Identity {
            user_header: user_header?,
            roles_header: roles_header?,
        })
    }

    fn policy(&mut self, raw: Vec<toml::Spanned<raw::RawRule>>) -> Option<Policy> {
        let mut rules = Vec::with_capacity(raw.len());
        let mut complete = true;
        for (index, spanned) in raw.into_iter().enumerate() {
            let (line, col) = self.diag.line_col(spanned.span().start);
            let roles_position = spanned
                .get_ref()
                .roles
                .as_ref()
                .map(|r| self.diag.line_col(r.span().start));
            match self
                .rule(index, line, spanned.into_inner())
                .map(|mut rule| {
                    rule.col = col;
                    rule.roles_position = roles_position;
                    rule
                }) {
                Some(rule) => rules.push(rule),
                None => complete = false,
            }
        }
        complete.then(|| Policy::new(rules))
    }

    fn tests(&mut self, raw: Vec<toml::Spanned<raw::RawTest>>) -> Option<Vec<PolicyTest>> {
        let mut tests = Vec::with_capacity(raw.len());
        let mut complete = true;
        for spanned in raw {
            let (line, col) = self.diag.line_col(spanned.span().start);
            let raw = spanned.into_inner();
            let user = match (&raw.user, &raw.anonymous) {
                (Some(user), None) => Some(Some(user.get_ref().clone())),
                (None, Some(anonymous)) if *anonymous.get_ref() => Some(None),
                (None, Some(anonymous)) => {
                    self.diag.at(
                        anonymous.span(),
                        "`anonymous = false` says nothing: name a `user` instead",
                    );
                    None
                }
                (Some(user), Some(_)) => {
                    self.diag.at(
                        user.span(),
                        "a test has either `user` or `anonymous = true`, not both",
                    );
                    None
                }
                (None, None) => {
                    self.diag.at(
                        raw.method.span(),
                        "a test needs `user = \"NAME\"` or `anonymous = true`",
                    );
                    None
                }
            };
            let method = match http::Method::from_bytes(
                raw.method.get_ref().to_ascii_uppercase().as_bytes(),
            ) {
                Ok(m) => Some(m),
                Err(_) => {
                    self.diag.at(
                        raw.method.span(),
                        format!("invalid HTTP method {:?}", raw.method.get_ref()),
                    );
                    None
                }
            };
            let expect = match raw.expect.get_ref().as_str() {
                "allow" => Some("allow"),
                "deny" => Some("deny"),
                "login" => Some("login"),
                other => {
                    self.diag.at(
                        raw.expect.span(),
                        format!("unknown expect {other:?}: use \"allow\", \"deny\" or \"login\""),
                    );
                    None
                }
            };
            match (user, method, expect) {
                (Some(user), Some(method), Some(expect)) => tests.push(PolicyTest {
                    line,
                    col,
                    user,
                    method,
                    path: raw.path.into_inner(),
                    host: raw.host.map(|h| h.into_inner()),
                    expect,
                }),
                _ => complete = false,
            }
        }
        complete.then_some(tests)
    }

    fn rule(&mut self, index: usize, line: usize, raw: raw::RawRule) -> Option<Rule> {
        let pattern = match Glob::parse(raw.path.get_ref()) {
            Ok(g) => Some(g),
            Err(e) => {
                self.diag.at(raw.path.span(), e);
                None
            }
        };
        let mut methods_ok = true;
        let methods = raw.methods.map(|list| {
            list.iter()
                .filter_map(|m| {
                    let upper = m.get_ref().to_ascii_uppercase();
                    match http::Method::from_bytes(upper.as_bytes()) {
                        Ok(method) if !upper.is_empty() => Some(method),
                        _ => {
                            self.diag
                                .at(m.span(), format!("invalid HTTP method {:?}", m.get_ref()));
                            methods_ok = false;
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        });
        let host = raw.host.map(|h| h.get_ref().trim().to_ascii_lowercase());
        let access = match (&raw.access, &raw.roles) {
            (Some(_), Some(roles)) => {
                self.diag.at(
                    roles.span(),
                    "a rule has either `access` or `roles`, not both",
                );
                None
            }
            (None, None) => {
                self.diag.at(
                    raw.path.span(),
                    "a rule needs `access = \"public\" | \"authenticated\" | \"deny\"` or `roles = [..]`",
                );
                None
            }
            (Some(access), None) => match access.get_ref().as_str() {
                "public" => Some(Access::Public),
                "authenticated" => Some(Access::Authenticated),
                "deny" => Some(Access::Deny),
                other => {
                    self.diag.at(
                        access.span(),
                        format!("unknown access {other:?}: use \"public\", \"authenticated\" or \"deny\""),
                    );
                    None
                }
            },
            (None, Some(roles)) => Some(Access::Roles(
                roles
                    .get_ref()
                    .iter()
                    .map(|r| r.get_ref().clone())
                    .collect(),
            )),
        };
        if !methods_ok {
            return None;
        }
        Some(Rule {
            index,
            line,
            col: 1,
            roles_position: None,
            pattern: pattern?,
            methods,
            host,
            access: access?,
        })
    }

    fn socket_addr(&mut self, text: &Text) -> Option<SocketAddr> {
        match text.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.diag.at(
                    text.span(),
                    format!(
                        "invalid address {:?}: expected IP:PORT, e.g. \"0.0.0.0:8443\"",
                        text.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn duration(&mut self, text: &Option<Text>, default: Duration) -> Option<Duration> {
        let Some(text) = text else {
            return Some(default);
        };
        units::parse_duration(text.get_ref())
            .map_err(|e| self.diag.at(text.span(), e))
            .ok()
    }

    fn size(&mut self, text: &Option<Text>, default: u64) -> Option<u64> {
        let Some(text) = text else {
            return Some(default);
        };
        units::parse_size(text.get_ref())
            .map_err(|e| self.diag.at(text.span(), e))
            .ok()
    }

    fn header_name(&mut self, text: &Option<Text>, default: &'static str) -> Option<HeaderName> {
        let Some(text) = text else {
            return Some(HeaderName::from_static(default));
        };
        HeaderName::from_bytes(text.get_ref().as_bytes())
            .map_err(|_| {
                self.diag.at(
                    text.span(),
                    format!("invalid header name {:?}", text.get_ref()),
                )
            })
            .ok()
    }

    fn tls(&mut self, cert: &Text, key: &Text) -> Option<Arc<rustls::ServerConfig>> {
        let cert_path = self.base.join(cert.get_ref());
        let key_path = self.base.join(key.get_ref());
        let chain = crate::tls::load_certs(&cert_path)
            .map_err(|e| self.diag.at(cert.span(), e.to_string()))
            .ok();
        let private_key = crate::tls::load_key(&key_path)
            .map_err(|e| self.diag.at(key.span(), e.to_string()))
            .ok();
        let (chain, private_key) = (chain?, private_key?);
        crate::tls::server_config(chain, private_key)
            .map_err(|e| self.diag.at(key.span(), e.to_string()))
            .ok()
    }
}

#[cfg(test)]
mod tests;
