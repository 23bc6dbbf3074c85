//! From raw values to the typed [`Config`]: one method per section, each
//! recording a problem for every bad value and carrying on, so that one
//! load reports them all.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::Uri;

use super::raw::{self, RawConfig, Text};
use super::{
    units, Admin, Config, Identity, LogFormat, Login, PolicyTest, Problem, Server, Session, Store,
    StoreBackend, Upstream, MAX_ABSOLUTE_TIMEOUT, MIN_HEADER_SIZE,
};
use crate::diag::Diagnostics;
use crate::policy::{Access, Glob, Policy, Rule};

/// Turns raw values into typed ones, recording a problem for each bad value
/// and carrying on so that one run reports them all.
pub(super) struct Validator<'a> {
    pub(super) diag: Diagnostics<'a>,
    pub(super) base: &'a Path,
    /// Problems found in other files (the users file) while validating this one.
    pub(super) nested: Vec<Problem>,
    /// For the policy commands: problems with the files the config names
    /// for serving (TLS pair, upstream CA and client pair, assertion key)
    /// are kept here, with their place, instead of failing the load, and a
    /// stand-in is used (see [`Config::load_for_policy`]).
    pub(super) lenient_files: Option<Vec<(std::ops::Range<usize>, String)>>,
}

/// RFC 6265 §4.1.1: a cookie name is an HTTP token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Validator<'_> {
    /// A problem with a file the config names for serving.
    fn file_problem(&mut self, span: std::ops::Range<usize>, message: String) {
        match &mut self.lenient_files {
            Some(deferred) => deferred.push((span, message)),
            None => self.diag.at(span, message),
        }
    }

    pub(super) fn config(&mut self, raw: RawConfig, path: &Path) -> Option<Config> {
        let server = self.server(raw.server.into_inner());
        let upstreams = self.upstreams(raw.upstream);
        let session = self.session(raw.session);
        let store = self.store(raw.store);
        // Without a users file nobody can sign in: only public rules let anyone through.
        let (users_file, users_seed, users) = match &raw.users {
            Some(section) => {
                let section = section.get_ref();
                let file = self.base.join(section.file.get_ref());
                let seed = section
                    .seed
                    .as_ref()
                    .map(|s| (s, self.base.join(s.get_ref())));
                // Until the file is made from the seed, its users are the seed's.
                let users = match &seed {
                    Some((key, seed)) if !file.exists() => self.users(key, seed),
                    _ => self.users(&section.file, &file),
                };
                (Some(file), seed.map(|(_, path)| path), users)
            }
            None => (None, None, Some(crate::users::Users::default())),
        };
        let login = self.login(raw.login);
        let identity = self.identity(raw.identity, store.as_ref(), path);
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
            upstreams: upstreams?,
            session: session?,
            store: store?,
            users: users?,
            users_file,
            users_seed,
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
        let verify_listen = raw.verify_listen.as_ref().map(|t| self.socket_addr(t));
        let public_url = match &raw.public_url {
            None => Some(None),
            Some(text) => {
                let url = text.get_ref().trim_end_matches('/');
                let ok = url
                    .parse::<http::Uri>()
                    .ok()
                    .filter(|u| u.scheme_str() == Some("https") && u.authority().is_some())
                    .filter(|u| u.path_and_query().is_none_or(|p| p.as_str() == "/"));
                match ok {
                    Some(_) => Some(Some(url.to_owned())),
                    None => {
                        self.diag.at(
                            text.span(),
                            format!("public_url {:?} is not like \"https://auth.example\" (https, a host, no path)", text.get_ref()),
                        );
                        None
                    }
                }
            }
        };
        let tls = self.tls(&raw.cert, &raw.key);
        let shutdown_grace = self.duration(&raw.shutdown_grace, Duration::from_secs(30));
        let drain_delay = self.duration(&raw.drain_delay, Duration::from_secs(5));
        let header_timeout = self.duration(&raw.header_timeout, Duration::from_secs(10));
        let handshake_timeout = self.duration(&raw.handshake_timeout, Duration::from_secs(10));
        let idle_timeout = self.duration(&raw.idle_timeout, Duration::from_secs(60));
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
        let max_connections = self.count(
            &raw.max_connections,
            10_000,
            1..=1_000_000,
            "max_connections",
        );
        let max_connections_per_client = self.count(
            &raw.max_connections_per_client,
            256,
            1..=1_000_000,
            "max_connections_per_client",
        );
        let body_timeout = self.duration(&raw.body_timeout, Duration::from_secs(60));
        let forward_auth = match &raw.forward_auth {
            None => Some(None),
            Some(t) => match t.get_ref().as_str() {
                "nginx" => Some(Some(super::ForwardAuthFamily::Nginx)),
                "traefik" | "caddy" => Some(Some(super::ForwardAuthFamily::Traefik)),
                other => {
                    self.diag.at(
                        t.span(),
                        format!("unknown forward_auth {other:?}: use \"nginx\" (X-Original-URL, X-Original-Method) or \"traefik\" (X-Forwarded-Method, -Host, -Uri; Caddy too)"),
                    );
                    None
                }
            },
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
        let mut nets = Vec::new();
        let mut nets_ok = true;
        for text in raw.trusted_proxies.iter().flatten() {
            match crate::proxy::forwarded::parse_net(text.get_ref()) {
                Ok(net) => nets.push(net),
                Err(e) => {
                    self.diag.at(text.span(), format!("trusted_proxies: {e}"));
                    nets_ok = false;
                }
            }
        }
        let mut websocket_origins = Vec::new();
        for text in raw.websocket_origins.iter().flatten() {
            let origin = text.get_ref().trim_end_matches('/').to_ascii_lowercase();
            let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "https" | "http")
                    && !rest.is_empty()
                    && rest.parse::<http::uri::Authority>().is_ok()
                    && !rest.contains(['/', '@'])
            });
            if valid {
                websocket_origins.push(origin);
            } else {
                self.diag.at(
                    text.span(),
                    format!(
                        "websocket_origins: {:?} is not an origin like \"https://app.example\"",
                        text.get_ref()
                    ),
                );
            }
        }
        Some(Server {
            forward_auth: forward_auth?,
            body_timeout: body_timeout?,
            max_connections_per_client: max_connections_per_client?,
            websocket_origins,
            trusted_proxies: nets_ok.then(|| crate::proxy::forwarded::TrustedProxies::new(nets))?,
            listen: listen?,
            tls: tls.as_ref().map(|(config, _)| config.clone())?,
            certificate: tls.map(|(_, certificate)| certificate)?,
            redirect_http: redirect_http.map(|a| a.ok_or(())).transpose().ok()?,
            ops_listen: ops_listen.map(|a| a.ok_or(())).transpose().ok()?,
            verify_listen: verify_listen.map(|a| a.ok_or(())).transpose().ok()?,
            public_url: public_url?,
            shutdown_grace: shutdown_grace?,
            drain_delay: drain_delay?,
            max_header_size: max_header_size?,
            max_body_size: max_body_size?,
            header_timeout: header_timeout?,
            idle_timeout: idle_timeout?,
            handshake_timeout: handshake_timeout?,
            max_connections: max_connections?,
            hsts: raw.hsts.unwrap_or(true),
            log_format: log_format?,
        })
    }

    fn upstreams(&mut self, raw: toml::Spanned<raw::RawUpstreams>) -> Option<Vec<Upstream>> {
        let span = raw.span();
        match raw.into_inner() {
            raw::RawUpstreams::One(one) => {
                for (key, span) in [
                    ("host", one.host.as_ref().map(|t| t.span())),
                    ("path_prefix", one.path_prefix.as_ref().map(|t| t.span())),
                    ("strip_prefix", one.strip_prefix.as_ref().map(|t| t.span())),
                ] {
                    if let Some(span) = span {
                        self.diag.at(span, format!("{key} is for [[upstream]] entries (several apps); one [upstream] serves every request"));
                    }
                }
                let (line, _) = self.diag.line_col(span.start);
                self.upstream(*one, line).map(|u| vec![u])
            }
            raw::RawUpstreams::Many(list) => {
                if list.is_empty() {
                    self.diag
                        .at(span, "no upstream: give [upstream] or [[upstream]] entries");
                    return None;
                }
                let mut all = Vec::new();
                let mut complete = true;
                for entry in list {
                    let entry_span = entry.span();
                    let (line, _) = self.diag.line_col(entry_span.start);
                    match self.upstream(entry.into_inner(), line) {
                        Some(upstream) => {
                            if let Some(same) = all.iter().find(|u: &&Upstream| {
                                u.host == upstream.host && u.path_prefix == upstream.path_prefix
                            }) {
                                self.diag.at(
                                    entry_span,
                                    format!("this [[upstream]] serves the same host and path_prefix as the one on line {}: it would never be used", same.line),
                                );
                                complete = false;
                            }
                            all.push(upstream);
                        }
                        None => complete = false,
                    }
                }
                complete.then_some(all)
            }
        }
    }

    fn upstream(&mut self, raw: raw::RawUpstream, line: usize) -> Option<Upstream> {
        let host = raw.host.as_ref().map(|h| {
            let host = h.get_ref().trim().to_ascii_lowercase();
            host.strip_suffix('.').map(str::to_owned).unwrap_or(host)
        });
        let path_prefix = match &raw.path_prefix {
            None => Some(String::new()),
            Some(p) => {
                let text = p.get_ref().trim_end_matches('/');
                match crate::policy::path::normalize(if text.is_empty() { "/" } else { text }) {
                    Ok(normal) if normal == text || text.is_empty() => Some(text.to_owned()),
                    _ => {
                        self.diag.at(
                            p.span(),
                            "path_prefix must be a normalized path like \"/app\"",
                        );
                        None
                    }
                }
            }
        };
        let strip_prefix = raw.strip_prefix.as_ref().is_some_and(|s| *s.get_ref());
        if strip_prefix && path_prefix.as_deref().is_some_and(str::is_empty) {
            let span = raw.strip_prefix.as_ref().map(|s| s.span()).unwrap_or(0..0);
            self.diag.at(span, "strip_prefix needs a path_prefix");
        }
        let connect_timeout = self.duration(&raw.connect_timeout, Duration::from_secs(5));
        let timeout = self.duration(&raw.timeout, Duration::from_secs(60));
        let authority = match raw.url.get_ref().parse::<Uri>() {
            Err(e) => {
                self.diag
                    .at(raw.url.span(), format!("invalid upstream url: {e}"));
                None
            }
            Ok(uri) if !matches!(uri.scheme_str(), Some("http" | "https")) => {
                self.diag.at(
                    raw.url.span(),
                    "upstream url must start with http:// or https://",
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
        let https = raw.url.get_ref().starts_with("https://");
        let tls = self.upstream_tls(&raw, https);
        Some(Upstream {
            url: raw.url.get_ref().clone(),
            line,
            host,
            path_prefix: path_prefix?,
            strip_prefix,
            tls: tls?,
            authority: authority?,
            connect_timeout: connect_timeout?,
            timeout: timeout?,
        })
    }

    /// The client side of TLS to an `https://` upstream: `ca`, and a
    /// client certificate and key for mutual TLS, only with https.
    fn upstream_tls(
        &mut self,
        raw: &raw::RawUpstream,
        https: bool,
    ) -> Option<Option<Arc<rustls::ClientConfig>>> {
        if !https {
            for (key, value) in [
                ("ca", &raw.ca),
                ("client_cert", &raw.client_cert),
                ("client_key", &raw.client_key),
            ] {
                if let Some(value) = value {
                    self.diag
                        .at(value.span(), format!("{key} is for an https:// upstream"));
                }
            }
            return Some(None);
        }
        let lenient = self.lenient_files.is_some();
        let ca = match &raw.ca {
            None => None,
            Some(text) => match crate::tls::load_certs(&self.base.join(text.get_ref())) {
                Ok(certs) => Some(certs),
                Err(e) => {
                    self.file_problem(text.span(), e.to_string());
                    return lenient.then_some(None);
                }
            },
        };
        let identity = match (&raw.client_cert, &raw.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let chain = crate::tls::load_certs(&self.base.join(cert.get_ref()))
                    .map_err(|e| self.file_problem(cert.span(), e.to_string()))
                    .ok();
                let private = crate::tls::load_key(&self.base.join(key.get_ref()))
                    .map_err(|e| self.file_problem(key.span(), e.to_string()))
                    .ok();
                match (chain, private) {
                    (Some(chain), Some(private)) => Some((chain, private)),
                    _ if lenient => return Some(None),
                    _ => return None,
                }
            }
            (Some(one), None) | (None, Some(one)) => {
                self.diag
                    .at(one.span(), "client_cert and client_key go together");
                return None;
            }
        };
        match crate::tls::client_config(ca, identity) {
            Ok(config) => Some(Some(Arc::new(config))),
            Err(e) => {
                self.diag.at(raw.url.span(), e);
                None
            }
        }
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
        let cookie_domain = match &raw.cookie_domain {
            None => Some(None),
            Some(text) => {
                let domain = text
                    .get_ref()
                    .trim()
                    .trim_start_matches('.')
                    .to_ascii_lowercase();
                let valid = domain.contains('.')
                    && !domain.ends_with('.')
                    && domain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if valid {
                    Some(Some(domain))
                } else {
                    self.diag.at(
                        text.span(),
                        format!(
                            "cookie_domain {:?} is not a domain name like \"example.com\"",
                            text.get_ref()
                        ),
                    );
                    None
                }
            }
        };
        let cookie_name = match &raw.cookie_name {
            None if raw.cookie_domain.is_some() => {
                Some(super::DEFAULT_DOMAIN_COOKIE_NAME.to_owned())
            }
            None => Some(super::DEFAULT_COOKIE_NAME.to_owned()),
            Some(name) if raw.cookie_domain.is_some() && name.get_ref().starts_with("__Host-") => {
                self.diag.at(
                    name.span(),
                    format!(
                        "cookie_name {:?} cannot go with cookie_domain: browsers refuse a __Host- cookie that has a Domain; name it with __Secure- (the default with a cookie_domain is \"{}\")",
                        name.get_ref(),
                        super::DEFAULT_DOMAIN_COOKIE_NAME
                    ),
                );
                None
            }
            Some(name) if is_cookie_name(name.get_ref()) => Some(name.get_ref().clone()),
            Some(name) => {
                self.diag.at(
                    name.span(),
                    format!("invalid cookie name {:?}", name.get_ref()),
                );
                None
            }
        };
        let max_per_user = self.count(&raw.max_per_user, 100, 1..=100_000, "max_per_user");
        Some(Session {
            max_per_user: max_per_user?,
            cookie_name: cookie_name?,
            cookie_domain: cookie_domain?,
            idle_timeout: idle?,
            absolute_timeout: absolute.filter(|a| *a <= MAX_ABSOLUTE_TIMEOUT)?,
        })
    }

    fn store(&mut self, raw: raw::RawStore) -> Option<Store> {
        let backend = match raw
            .backend
            .as_ref()
            .map(|b| (b.get_ref().as_str(), b.span()))
        {
            None | Some(("local", _)) => {
                let path = match &raw.path {
                    Some(p) => self.base.join(p.get_ref()),
                    None => self.base.join(super::DEFAULT_STATE_FILE),
                };
                let span = raw.path.as_ref().or(raw.backend.as_ref()).map(|t| t.span());
                self.state_folder(&path, span);
                StoreBackend::Local { path }
            }
            Some(("memory", _)) => {
                if let Some(path) = &raw.path {
                    self.diag.at(
                        path.span(),
                        "path is for backend = \"local\"; the memory store keeps no file",
                    );
                    return None;
                }
                StoreBackend::Memory
            }
            Some(("redis", span)) => {
                if let Some(path) = &raw.path {
                    self.diag.at(
                        path.span(),
                        "path is for backend = \"local\"; Redis keeps no file here",
                    );
                    return None;
                }
                let Some(url) = &raw.url else {
                    self.diag.at(span, "backend = \"redis\" needs url = \"redis://host:6379/0\" (rediss:// for TLS)");
                    return None;
                };
                if let Err(e) =
                    redis::IntoConnectionInfo::into_connection_info(url.get_ref().as_str())
                {
                    self.diag.at(url.span(), format!("invalid Redis url: {e}"));
                    return None;
                }
                let password_file = raw
                    .password_file
                    .as_ref()
                    .map(|f| self.base.join(f.get_ref()));
                let password = match &raw.password_file {
                    None => None,
                    Some(file) => {
                        let path = self.base.join(file.get_ref());
                        match std::fs::read_to_string(&path) {
                            Ok(text) => Some(text.trim_end_matches(['\r', '\n']).to_owned()),
                            Err(e) => {
                                self.diag.at(
                                    file.span(),
                                    format!(
                                        "cannot read the Redis password file {}: {e}",
                                        path.display()
                                    ),
                                );
                                return None;
                            }
                        }
                    }
                };
                let timeout = self.duration(&raw.timeout, Duration::from_millis(250))?;
                StoreBackend::Redis(super::RedisSettings {
                    password_file,
                    url: url.get_ref().clone(),
                    key_prefix: raw
                        .key_prefix
                        .as_ref()
                        .map_or_else(|| "authgate:".to_owned(), |p| p.get_ref().clone()),
                    password,
                    timeout,
                })
            }
            Some((other, span)) => {
                self.diag.at(
                    span,
                    format!(
                        "unknown store backend {other:?}: use \"local\", \"memory\" or \"redis\""
                    ),
                );
                return None;
            }
        };
        if !matches!(backend, StoreBackend::Redis(_)) {
            for (key, value) in [
                ("url", &raw.url),
                ("password_file", &raw.password_file),
                ("key_prefix", &raw.key_prefix),
                ("timeout", &raw.timeout),
            ] {
                if let Some(value) = value {
                    self.diag
                        .at(value.span(), format!("{key} is for backend = \"redis\""));
                }
            }
        }
        Some(Store {
            backend,
            lock_wait: Duration::from_secs(5),
        })
    }

    /// The state file's folder must exist and take new files (the state
    /// file and its write-ahead log are made there).
    fn state_folder(&mut self, file: &Path, span: Option<std::ops::Range<usize>>) {
        let folder = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let problem = if !folder.is_dir() {
            Some(format!(
                "the state file's folder {} does not exist; make it (in a container, mount a volume there)",
                folder.display()
            ))
        } else {
            tempfile::Builder::new()
                .prefix(".authgate-check")
                .tempfile_in(folder)
                .err()
                .map(|e| {
                    format!(
                        "the state file's folder {} is not writable ({e}); the gateway keeps its sessions there",
                        folder.display()
                    )
                })
        };
        // A problem of the files for serving, like a missing TLS pair:
        // `check` reports it apart and still runs the policy's tests, and
        // `explain` needs no state folder at all.
        if let Some(message) = problem {
            match span {
                Some(span) => self.file_problem(span, message),
                None if self.lenient_files.is_some() => {
                    self.file_problem(0..0, message);
                }
                None => self.diag.file(message),
            }
        }
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
        let mut words_ok = true;
        for (key, text, limit) in [("title", &raw.title, 80), ("notice", &raw.notice, 500)] {
            if let Some(text) = text {
                let value = text.get_ref();
                let control = value
                    .chars()
                    .any(|c| c.is_control() && !(key == "notice" && c == '\n'));
                if value.chars().count() > limit || control {
                    self.diag.at(
                        text.span(),
                        format!("{key} must be plain text of at most {limit} characters"),
                    );
                    words_ok = false;
                }
            }
        }
        if !words_ok {
            return None;
        }
        let words = super::LoginWords {
            title: raw.title.map(|t| t.into_inner()),
            notice: raw.notice.map(|t| t.into_inner()),
        };
        let hashing_threads = self.count(&raw.hashing_threads, 2, 1..=64, "hashing_threads");
        Some(Login {
            hashing_threads: hashing_threads?,
            words,
            max_failures: max_failures?,
            failure_window: window?,
            require_totp: raw
                .require_totp
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.into_inner())
                .collect(),
        })
    }

    fn identity(
        &mut self,
        raw: raw::RawIdentity,
        store: Option<&Store>,
        path: &Path,
    ) -> Option<Identity> {
        let user_header = self.header_name(&raw.user_header, "x-auth-user");
        let roles_header = self.header_name(&raw.roles_header, "x-auth-roles");
        let enabled = raw.assertion.as_ref().is_some_and(|a| *a.get_ref());
        let assertion = if enabled {
            let header = self.header_name(&raw.assertion_header, "x-auth-assertion");
            let lifetime = self.duration(&raw.assertion_lifetime, Duration::from_secs(60));
            let lifetime = match lifetime {
                Some(d) if d < Duration::from_secs(1) || d > Duration::from_secs(3600) => {
                    let span = raw
                        .assertion_lifetime
                        .as_ref()
                        .map(|t| t.span())
                        .unwrap_or(0..0);
                    self.diag
                        .at(span, "assertion_lifetime must be between 1s and 1h");
                    None
                }
                other => other,
            };
            let key = match (&raw.assertion_key, store.map(|s| &s.backend)) {
                (Some(key), _) => {
                    let file = self.base.join(key.get_ref());
                    match crate::assertion::Signer::open(&file, false) {
                        Ok(_) => Some((file, false)),
                        Err(e) => {
                            self.file_problem(key.span(), e.to_string());
                            self.lenient_files.is_some().then_some((file, false))
                        }
                    }
                }
                (None, Some(StoreBackend::Redis(_))) => {
                    let span = raw.assertion.as_ref().map(|a| a.span()).unwrap_or(0..0);
                    self.diag.at(
                        span,
                        "with the Redis store, set assertion_key: every replica must sign with the same key (make one with `authgate keygen PATH`)",
                    );
                    None
                }
                (None, Some(StoreBackend::Local { path: state })) => Some((
                    state
                        .parent()
                        .unwrap_or(Path::new("."))
                        .join(super::DEFAULT_ASSERTION_KEY),
                    true,
                )),
                (None, _) => Some((
                    path.parent()
                        .unwrap_or(Path::new("."))
                        .join(super::DEFAULT_ASSERTION_KEY),
                    true,
                )),
            };
            let (key, generate) = key?;
            Some(super::Assertion {
                header: header?,
                key,
                generate,
                issuer: raw
                    .assertion_issuer
                    .map_or_else(|| "authgate".to_owned(), |i| i.into_inner()),
                audience: raw.assertion_audience.map(|a| a.into_inner()),
                lifetime: lifetime?,
            })
        } else {
            None
        };
        if !enabled && (raw.assertion_key.is_some() || raw.assertion_header.is_some()) {
            let span = raw
                .assertion_key
                .as_ref()
                .or(raw.assertion_header.as_ref())
                .map(|t| t.span())
                .unwrap_or(0..0);
            self.diag.at(
                span,
                "assertion settings without `assertion = true` do nothing",
            );
            return None;
        }
        Some(Identity {
            user_header: user_header?,
            roles_header: roles_header?,
            assertion: if enabled { Some(assertion?) } else { None },
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
                "reauth" => Some("reauth"),
                other => {
                    self.diag.at(
                        raw.expect.span(),
                        format!("unknown expect {other:?}: use \"allow\", \"deny\", \"login\" or \"reauth\""),
                    );
                    None
                }
            };
            let auth_age = self.duration(&raw.auth_age, Duration::ZERO);
            match (user, method, expect, auth_age) {
                (Some(user), Some(method), Some(expect), Some(auth_age)) => {
                    tests.push(PolicyTest {
                        line,
                        col,
                        user,
                        method,
                        path: raw.path.into_inner(),
                        host: raw.host.map(|h| h.into_inner()),
                        expect,
                        upstream: raw.upstream.map(|u| u.into_inner()),
                        auth_age,
                        mfa: raw.mfa.map(|m| m.into_inner()),
                    })
                }
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
        let host = raw.host.map(|h| {
            let host = h.get_ref().trim().to_ascii_lowercase();
            host.strip_suffix('.').map(str::to_owned).unwrap_or(host)
        });
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
        let max_auth_age = match &raw.max_auth_age {
            None => Some(None),
            Some(text) => self
                .duration(&raw.max_auth_age, Duration::ZERO)
                .and_then(|d| {
                    if d.is_zero() {
                        self.diag
                            .at(text.span(), "max_auth_age must be more than 0");
                        None
                    } else {
                        Some(Some(d))
                    }
                }),
        };
        let mfa = raw.mfa.map(|m| m.into_inner()).unwrap_or(false);
        let needs_session = matches!(access, Some(Access::Authenticated | Access::Roles(_)));
        if (mfa || raw.max_auth_age.is_some()) && access.is_some() && !needs_session {
            self.diag.at(
                raw.path.span(),
                "`mfa` and `max_auth_age` need a rule that asks for a session (access = \"authenticated\" or roles)",
            );
            return None;
        }
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
            mfa,
            max_auth_age: max_auth_age?,
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

    /// A whole number within `range`, or `default` when the key is absent.
    fn count(
        &mut self,
        value: &Option<toml::Spanned<i64>>,
        default: usize,
        range: std::ops::RangeInclusive<i64>,
        key: &str,
    ) -> Option<usize> {
        let Some(n) = value else {
            return Some(default);
        };
        if range.contains(n.get_ref()) {
            return usize::try_from(*n.get_ref()).ok();
        }
        self.diag.at(
            n.span(),
            format!(
                "{key} must be between {} and {}",
                range.start(),
                range.end()
            ),
        );
        None
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

    fn tls(
        &mut self,
        cert: &Text,
        key: &Text,
    ) -> Option<(Arc<rustls::ServerConfig>, Arc<crate::tls::RotatingCert>)> {
        let cert_path = self.base.join(cert.get_ref());
        let key_path = self.base.join(key.get_ref());
        let certificate = match crate::tls::RotatingCert::load(&cert_path, &key_path) {
            Ok(certificate) => Arc::new(certificate),
            Err(e) => {
                let span = match e {
                    crate::tls::TlsError::Certificate { .. } => cert.span(),
                    _ => key.span(),
                };
                self.file_problem(span, e.to_string());
                // Both files' problems at once, as before.
                if matches!(e, crate::tls::TlsError::Certificate { .. }) {
                    if let Err(e) = crate::tls::load_key(&key_path) {
                        self.file_problem(key.span(), e.to_string());
                    }
                }
                self.lenient_files.as_ref()?;
                // A stand-in for the policy commands, which never serve.
                Arc::new(crate::tls::RotatingCert::stand_in(&cert_path, &key_path))
            }
        };
        crate::tls::server_config(certificate.clone())
            .map_err(|e| self.diag.at(key.span(), e.to_string()))
            .ok()
            .map(|tls| (tls, certificate))
    }
}
