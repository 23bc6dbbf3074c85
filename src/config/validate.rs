//! From raw values to the typed [`Config`]: one method per section, each
//! recording a problem for every bad value and carrying on, so that one
//! load reports them all. `[server]` and the upstreams are in
//! `validate/listeners.rs`, the rules and their tests in
//! `validate/rules.rs`; the sessions, store, users, login and identity
//! sections and the value parsers every section uses are here.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;

use super::raw::{self, RawConfig, Text};
use super::{
    Admin, Config, Identity, Login, Problem, Session, Store, StoreBackend, MAX_ABSOLUTE_TIMEOUT,
};
use crate::diag::Diagnostics;

mod bearer;
mod ldap;
mod listeners;
mod oidc;
mod rules;
mod tokens;

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
        let mut identity = self.identity(raw.identity, store.as_ref(), path);
        let own_headers: Vec<&str> = identity
            .iter()
            .flat_map(|i| [i.user_header.as_str(), i.roles_header.as_str()])
            .collect();
        let oidc = self.oidc(raw.oidc, &own_headers);
        let order = raw.users.as_ref().and_then(|u| u.get_ref().order.as_ref());
        let ldap = self.ldap(raw.ldap, order, &own_headers);
        if let (Some(identity), Some(providers), Some(directory)) = (&mut identity, &oidc, &ldap) {
            let filled = providers
                .iter()
                .flat_map(|p| &p.headers)
                .chain(directory.iter().flat_map(|d| &d.headers));
            for (name, _) in filled {
                if !identity.claim_headers.contains(name) {
                    identity.claim_headers.push(name.clone());
                }
            }
        }
        if let (Some(providers), Some(Some(_))) = (&oidc, &ldap) {
            if providers
                .iter()
                .any(|p| p.name == crate::config::Ldap::NAME)
            {
                self.diag.file(
                    "an [[oidc]] is called \"ldap\", the name of the [ldap] directory; rename it",
                );
            }
        }
        let admin = Some(Admin {
            role: raw
                .admin
                .role
                .map_or_else(|| "admin".to_owned(), |r| r.into_inner()),
        });
        let mut names: Vec<&str> = oidc.iter().flatten().map(|p| p.name.as_str()).collect();
        if let Some(Some(_)) = &ldap {
            names.push(crate::config::Ldap::NAME);
        }
        let (tokens, tokens_by_default) = self.tokens(&raw.tokens);
        let bearer = self.bearer(raw.bearer, &names);
        names.extend(bearer.iter().flatten().map(|b| b.name.as_str()));
        let policy = self.policy(raw.rules, &names, tokens_by_default);
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
            oidc: oidc?,
            ldap: ldap?,
            tokens: tokens?,
            bearer: bearer?,
            policy: policy?,
            tests: tests?,
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
            local: raw.local.is_none_or(|l| l.into_inner()),
            hashing_threads: hashing_threads?,
            words,
            max_failures: max_failures?,
            failure_window: window?,
            // Both names mean the same: either second factor meets them.
            require_second_factor: raw
                .require_totp
                .into_iter()
                .chain(raw.require_second_factor)
                .flatten()
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
            claim_headers: Vec::new(),
            user_header: user_header?,
            roles_header: roles_header?,
            assertion: if enabled { Some(assertion?) } else { None },
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
        crate::units::parse_duration(text.get_ref())
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
        crate::units::parse_size(text.get_ref())
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
