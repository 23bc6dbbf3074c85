//! `gateway.toml`: the raw file ([`raw`]) validated into the [`Config`] the
//! rest of the gateway uses. Every problem names `FILE:LINE:COL`, and one load
//! reports all the problems it can find rather than the first.

mod diag;
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
    pub identity: Identity,
    pub policy: Policy,
}

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

        let deserializer = match toml::Deserializer::parse(text) {
            Ok(d) => d,
            Err(e) => {
                report_toml_error(&mut diag, &e);
                return Err(diag.finish().unwrap_err());
            }
        };
        let mut unknown = Vec::new();
        let raw: Result<RawConfig, _> =
            serde_ignored::deserialize(deserializer, |p| unknown.push(path_segments(&p)));
        for key in &unknown {
            let message = format!("unknown key `{}`", key.join("."));
            match diag::key_span(text, key) {
                Some(span) => diag.at(span, message),
                None => diag.file(message),
            }
        }
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                report_toml_error(&mut diag, &e);
                return Err(diag.finish().unwrap_err());
            }
        };

        let mut v = Validator { diag, base };
        let config = v.config(raw, path);
        v.diag.finish()?;
        Ok(config.expect("a config with no problems is complete"))
    }
}

fn report_toml_error(diag: &mut Diagnostics, e: &toml::de::Error) {
    let message = e.message().trim().to_owned();
    match e.span() {
        Some(span) => diag.at(span, message),
        None => diag.file(message),
    }
}

fn path_segments(path: &serde_ignored::Path) -> Vec<String> {
    use serde_ignored::Path as P;
    match path {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut v = path_segments(parent);
            v.push(index.to_string());
            v
        }
        P::Map { parent, key } => {
            let mut v = path_segments(parent);
            // `Spanned<T>` shows up in the path as a private map key.
            if !key.starts_with("$__serde_spanned") {
                v.push(key.clone());
            }
            v
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            path_segments(parent)
        }
    }
}

/// Turns raw values into typed ones, recording a problem for each bad value
/// and carrying on so that one run reports them all.
struct Validator<'a> {
    diag: Diagnostics<'a>,
    base: &'a Path,
}

impl Validator<'_> {
    fn config(&mut self, raw: RawConfig, path: &Path) -> Option<Config> {
        let server = self.server(raw.server.into_inner());
        let upstream = self.upstream(raw.upstream.into_inner());
        let identity = self.identity(raw.identity);
        let policy = self.policy(raw.rules);
        Some(Config {
            source: path.to_owned(),
            server: server?,
            upstream: upstream?,
            identity: identity?,
            policy: policy?,
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
            let line = self.diag.line_of(spanned.span().start);
            match self.rule(index, line, spanned.into_inner()) {
                Some(rule) => rules.push(rule),
                None => complete = false,
            }
        }
        complete.then(|| Policy::new(rules))
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
