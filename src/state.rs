//! What every request and every background task shares: the [`State`] of
//! a running gateway, and the [`Live`] snapshot of one config a request
//! takes once and finishes under. Below the pipeline, the listeners and
//! the reload that use it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Config, LogFormat, StoreBackend};
use crate::identity::Auth;
use crate::metrics::{Metrics, Readiness};
use crate::proxy::Upstream;

/// Everything a request needs. What a config reload may change is in
/// [`Live`], one snapshot per reload: a request takes the snapshot once and
/// finishes under it, whatever reload comes meanwhile.
pub struct State {
    live: ArcSwap<Live>,
    /// The settings in force that only a restart changes, as they were at start.
    pub fixed: Fixed,
    pub auth: Arc<Auth>,
    /// Open WebSockets, whichever upstream they go to.
    pub tunnels: Arc<crate::proxy::tunnels::Tunnels>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// The certificate new handshakes get (its files are watched).
    pub certificate: Arc<crate::tls::RotatingCert>,
    pub tls: Arc<rustls::ServerConfig>,
    /// Signs identity assertions, when `[identity] assertion = true`.
    pub signer: Option<Arc<crate::assertion::Signer>>,
    /// One reload at a time (SIGHUP and the file watcher may both ask), so
    /// an older read of the file is never put in force after a newer one.
    pub reloading: tokio::sync::Mutex<()>,
}

/// One config's worth of what requests use: rules, upstream clients,
/// identity headers, limits and timeouts.
pub struct Live {
    pub config: Config,
    /// One client per `[[upstream]]` entry, in the config's order.
    pub upstreams: Vec<Upstream>,
    /// The HTTP servers new connections are handed to.
    pub protocols: Protocols,
    /// Where upstream redirects to the upstream itself may be rewritten to.
    pub known_hosts: crate::proxy::KnownHosts,
}

impl Live {
    pub fn new(config: Config, tunnels: &Arc<crate::proxy::tunnels::Tunnels>) -> Live {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| Upstream::new(u, config.server.max_body_size, tunnels.clone()))
            .collect();
        let protocols = Protocols::new(&config.server);
        Live {
            known_hosts: crate::proxy::KnownHosts::of(&config),
            config,
            upstreams,
            protocols,
        }
    }
}

impl State {
    pub async fn new(
        mut config: Config,
    ) -> Result<State, Box<dyn std::error::Error + Send + Sync>> {
        match config.seed_users_file() {
            Ok(true) => tracing::info!(
                file = ?config.users_file,
                seed = ?config.users_seed,
                "the users file was made from [users] seed"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(file = ?config.users_file, seed = ?config.users_seed, error = %e, "the users file could not be made from [users] seed; the seed's users are in force, and changes cannot be saved")
            }
        }
        // Before the users move out of the config: the memory warning
        // weighs their strongest hash.
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let tunnels = Arc::new(crate::proxy::tunnels::Tunnels::default());
        let metrics = Arc::new(Metrics::default());
        let auth = Arc::new(Auth::new(&mut config, metrics.clone()).await?);
        match auth.names_in_both().await {
            Ok(both) if !both.is_empty() => {
                return Err(format!(
                    "{} both in the users file and in the [ldap] directory: remove one, or set [users] order = [\"local\", \"ldap\"] (or [\"ldap\", \"local\"]) to say which signs in",
                    both.join(", ")
                )
                .into())
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the users file's names could not be compared with the directory's at start; a name in both is refused at sign-in")
            }
        }
        let fixed = Fixed::of(&config);
        let certificate = config.server.certificate.clone();
        let tls = config.server.tls.clone();
        let signer = match &config.identity.assertion {
            Some(settings) => Some(Arc::new(crate::assertion::Signer::open(
                &settings.key,
                settings.generate,
            )?)),
            None => None,
        };
        Ok(State {
            live: ArcSwap::from_pointee(Live::new(config, &tunnels)),
            fixed,
            auth,
            tunnels,
            metrics,
            readiness: Readiness::default(),
            certificate,
            tls,
            signer,
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The snapshot new requests use.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Puts a new snapshot in force for requests that start from now on.
    pub fn replace_live(&self, live: Live) {
        self.auth.set_providers(&live.config);
        self.live.store(Arc::new(live));
    }
}

/// The HTTP servers a TLS connection is handed to, by its ALPN protocol.
pub struct Protocols {
    pub(crate) h1: hyper::server::conn::http1::Builder,
    pub(crate) h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Protocols {
    pub fn new(server: &crate::config::Server) -> Protocols {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            // hyper runs this timer whenever it waits for a head, idle
            // keep-alive included; the connection's watchdog enforces
            // header_timeout and idle_timeout, and this is its backstop.
            .header_read_timeout(server.header_timeout + server.idle_timeout)
            // hyper answers 431 itself past this; it takes no less than 8 KiB,
            // and the pipeline holds smaller limits to the byte.
            .max_buf_size(server.max_header_size.max(8192));
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // h2 takes header blocks up to about 1.25 x this before it gives up on
        // the connection (GOAWAY), and answers 431 itself past it; below it the
        // pipeline answers 431 for anything over max_header_size. So heads a
        // few times the limit still get their 431 rather than a dropped
        // connection, and what one connection can make the gateway buffer stays
        // small.
        let h2_header_list = server.max_header_size.saturating_mul(4).max(256 << 10);
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(h2_header_list).unwrap_or(u32::MAX))
            .max_concurrent_streams(256)
            // PINGs find peers that vanished without a word, even while a long
            // response is streaming; idleness itself is the watchdog's.
            .keep_alive_interval(Some(server.idle_timeout.min(Duration::from_secs(30))))
            .keep_alive_timeout(Duration::from_secs(20))
            // RFC 8441: WebSockets over HTTP/2 (extended CONNECT), which
            // browsers use when the server offers it.
            .enable_connect_protocol();
        Protocols { h1, h2 }
    }
}

/// The settings a running gateway cannot change: its listeners, the
/// connection cap, the TLS files it watches, the log format, where sessions
/// and users are kept and what a session is.
#[derive(Debug, Clone, PartialEq)]
pub struct Fixed {
    pub listen: SocketAddr,
    pub redirect_http: Option<SocketAddr>,
    pub ops_listen: Option<SocketAddr>,
    pub verify_listen: Option<SocketAddr>,
    pub max_connections: usize,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub log_format: Option<LogFormat>,
    pub store: StoreBackend,
    pub cookie_name: String,
    pub cookie_domain: Option<String>,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub users_file: Option<PathBuf>,
    /// The assertion signing key, when assertions are on.
    pub assertion_key: Option<PathBuf>,
    /// The hashing threads are started once.
    pub hashing_threads: usize,
}

impl Fixed {
    pub fn of(config: &Config) -> Fixed {
        let (cert, key) = config.server.certificate.paths();
        Fixed {
            listen: config.server.listen,
            redirect_http: config.server.redirect_http,
            ops_listen: config.server.ops_listen,
            verify_listen: config.server.verify_listen,
            max_connections: config.server.max_connections,
            cert: cert.to_owned(),
            key: key.to_owned(),
            log_format: config.server.log_format,
            store: config.store.backend.clone(),
            cookie_name: config.session.cookie_name.clone(),
            cookie_domain: config.session.cookie_domain.clone(),
            idle_timeout: config.session.idle_timeout,
            absolute_timeout: config.session.absolute_timeout,
            users_file: config.users_file.clone(),
            assertion_key: config.identity.assertion.as_ref().map(|a| a.key.clone()),
            hashing_threads: config.login.hashing_threads,
        }
    }

    /// The config keys whose values differ from the running ones.
    pub fn differences(&self, new: &Fixed) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut differ = |changed: bool, key| {
            if changed {
                keys.push(key);
            }
        };
        differ(self.listen != new.listen, "server.listen");
        differ(
            self.redirect_http != new.redirect_http,
            "server.redirect_http",
        );
        differ(self.ops_listen != new.ops_listen, "server.ops_listen");
        differ(
            self.verify_listen != new.verify_listen,
            "server.verify_listen",
        );
        differ(
            self.max_connections != new.max_connections,
            "server.max_connections",
        );
        differ(self.cert != new.cert, "server.cert");
        differ(self.key != new.key, "server.key");
        differ(self.log_format != new.log_format, "server.log_format");
        differ(self.store != new.store, "store");
        differ(self.cookie_name != new.cookie_name, "session.cookie_name");
        differ(
            self.cookie_domain != new.cookie_domain,
            "session.cookie_domain",
        );
        differ(
            self.idle_timeout != new.idle_timeout,
            "session.idle_timeout",
        );
        differ(
            self.absolute_timeout != new.absolute_timeout,
            "session.absolute_timeout",
        );
        differ(self.users_file != new.users_file, "users.file");
        differ(
            self.assertion_key != new.assertion_key,
            "identity.assertion / assertion_key",
        );
        differ(
            self.hashing_threads != new.hashing_threads,
            "login.hashing_threads",
        );
        keys
    }
}
