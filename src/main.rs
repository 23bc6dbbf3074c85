//! The `authgate` command line: parses arguments, sets up logging and
//! signals, and calls into the library.

// The library forbids unsafe code; the one exception here is a libc call.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use authgate::config::LogFormat;
use authgate::Config;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "A login, sessions and role rules in front of web apps that have none"
)]
struct Cli {
    /// Config file [env: AUTHGATE_CONFIG; default: ./gateway.toml]
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,

    /// Log format on stderr; overrides `server.log_format`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the config, the users file and the policy, and run every [[test]].
    Check {
        /// Also judge every request of this access log (the gateway's own,
        /// human or JSON) with this config, and print those whose decision
        /// would change, grouped by rule.
        #[arg(long, value_name = "ACCESS_LOG")]
        replay: Option<PathBuf>,
    },
    /// Show how the policy decides one request.
    #[command(group(clap::ArgGroup::new("who").required(true).args(["user", "anonymous"])))]
    Explain {
        /// Decide for a session of this user.
        #[arg(long)]
        user: Option<String>,
        /// Decide for a request without a session.
        #[arg(long)]
        anonymous: bool,
        /// The host the request names.
        #[arg(long)]
        host: Option<String>,
        /// How long ago the user entered the password, e.g. 20m (for rules
        /// with max_auth_age) [default: just now].
        #[arg(long)]
        auth_age: Option<String>,
        /// Whether the session passed the second factor (for rules with
        /// mfa = true) [default: whether the user has one].
        #[arg(long)]
        mfa: Option<bool>,
        /// GET, POST, ...
        method: String,
        /// The path as a client would send it, e.g. /x/../admin
        path: String,
    },
    /// Read a password from stdin (no echo on a terminal) and print its argon2id hash.
    HashPassword,
    /// Change the users file (atomically, keeping its comments); a running
    /// gateway applies the change within a second.
    #[command(subcommand)]
    User(UserCommand),
    /// List or end sessions in the configured store; a running gateway
    /// applies a revocation within a second.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Ask a running gateway's ops listener whether it is alive: exit 0 if
    /// `/healthz` answers 200, else 1. For container health checks (no curl
    /// needed in the image).
    Healthcheck {
        /// What to ask [default: http://OPS_LISTEN/healthz from the config's
        /// `[server] ops_listen`, a wildcard address asked on loopback].
        #[arg(long)]
        url: Option<String>,
    },
    /// Make a new ES256 (P-256) key for signed identity assertions and
    /// write it to PATH (PKCS#8 PEM, mode 0600; an existing file is
    /// replaced, which is how a running gateway's key is rotated).
    Keygen {
        /// Where to write the key.
        path: PathBuf,
    },
    /// Write a ready setup into DIR (default: this folder): a commented
    /// gateway.toml, a self-signed ECDSA certificate, a users file with a
    /// first admin and the state folder. Overwrites nothing.
    Init {
        /// The folder to write into.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The app to protect.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        upstream: String,
        /// The name the certificate is for.
        #[arg(long, default_value = "localhost")]
        host: String,
        /// The first admin's name; the password is read from stdin when it
        /// is not a terminal, else made and printed once.
        #[arg(long, default_value = "admin")]
        admin: String,
        /// Give the written files to this user (UID or UID:GID), e.g. the
        /// image's 10001:10001 for a folder a container mounts.
        #[arg(long, value_parser = parse_owner)]
        owner: Option<(u32, u32)>,
    },
    /// Start a demo app with the gateway in front of it.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from stdin.
    Add {
        name: String,
        /// A role (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// Set a user's password, read from stdin.
    Passwd { name: String },
    /// Replace a user's roles.
    Roles {
        name: String,
        #[arg(required = true)]
        roles: Vec<String>,
    },
    /// Lock a user out: sign-in refused, every session ended.
    Lock { name: String },
    /// Let a locked user sign in again.
    Unlock { name: String },
    /// Remove a user; their sessions end.
    Del { name: String },
    /// Remove a user's second factor (TOTP secret and recovery codes), for
    /// a lost phone; they enroll again at /.gateway/totp.
    TotpReset { name: String },
    /// List the users.
    List,
    /// Print the users as a users.toml (from Redis when the store is Redis).
    Export,
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// One line per session: handle, user, started, last seen, IP, browser.
    List {
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
    },
    /// End sessions: one (by the handle `list` shows), a user's, or all.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["user", "all", "handle"])))]
    Revoke {
        /// Every session of this user.
        #[arg(long)]
        user: Option<String>,
        /// Every session.
        #[arg(long)]
        all: bool,
        /// The session with this handle.
        handle: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("AUTHGATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("gateway.toml"));
    let flag_format = cli.log_format.map(|f| match f {
        LogFormatArg::Human => LogFormat::Human,
        LogFormatArg::Json => LogFormat::Json,
    });
    let command = cli.command.unwrap_or(Command::Run);
    let configless = match &command {
        Command::HashPassword => Some("hash-password"),
        Command::Keygen { .. } => Some("keygen"),
        Command::Init { .. } => Some("init"),
        Command::Demo { .. } => Some("demo"),
        _ => None,
    };
    if let (Some(name), Some(_)) = (configless, &cli.config) {
        eprintln!("authgate: `authgate {name}` reads no config; -c/--config means nothing to it");
        return ExitCode::from(2);
    }
    let outcome = match command {
        Command::Run => run(&config_path, flag_format),
        Command::Check { replay } => return check(&config_path, replay.as_deref()),
        Command::Explain {
            user,
            anonymous: _,
            host,
            auth_age,
            mfa,
            method,
            path,
        } => explain(
            &config_path,
            user.as_deref(),
            host.as_deref(),
            &method,
            &path,
            (auth_age.as_deref(), mfa),
        ),
        Command::Demo { listen } => demo(listen, flag_format),
        Command::HashPassword => hash_password(),
        Command::Init {
            dir,
            upstream,
            host,
            admin,
            owner,
        } => init(&dir, &upstream, &host, &admin, owner),
        Command::Keygen { path } => authgate::assertion::generate(&path)
            .map(|kid| println!("wrote {} (kid {kid})", path.display()))
            .map_err(anyhow::Error::from),
        Command::Healthcheck { url } => return healthcheck(&config_path, url.as_deref()),
        Command::User(command) => user(&config_path, command),
        Command::Sessions(command) => sessions(&config_path, command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path, replay: Option<&std::path::Path>) -> ExitCode {
    // The policy's tests run even when the files for serving (the TLS
    // pair, ...) are missing; those are reported as problems of their own.
    let (config, file_problems) = match Config::load_for_policy(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            for problem in &e.problems {
                eprintln!("{problem}");
            }
            eprintln!("{}: {} problem(s)", path.display(), e.problems.len());
            return ExitCode::FAILURE;
        }
    };
    let file = path.display();
    let mut file_problems = file_problems;
    // A state file that is there but damaged stops `run`: say it as run does.
    if let authgate::config::StoreBackend::Local { path: state } = &config.store.backend {
        if state.exists() {
            if let Err(e) = authgate::store::list_on_record(&config.store, None) {
                file_problems.push(authgate::config::Problem {
                    file: file.to_string(),
                    position: None,
                    message: e.to_string(),
                });
            }
        }
    }
    for problem in &file_problems {
        eprintln!("{problem}");
    }
    let warnings = authgate::policy::check::lint(&config, &config.users);
    for w in &warnings {
        eprintln!("{file}:{}:{}: warning: {}", w.line, w.col, w.message);
    }
    let mut exposed = config.exposed_secret_files();
    exposed.extend(config.hashing_memory_warning());
    exposed.extend(config.users_file_warning());
    for warning in &exposed {
        eprintln!("{file}: warning: {warning}");
    }
    if let (authgate::config::StoreBackend::Redis(_), Some(users_file)) =
        (&config.store.backend, &config.users_file)
    {
        eprintln!(
            "{file}: note: with [store] backend = \"redis\" users live in Redis; {} only seeds an empty Redis, and the [[test]]s below judge its users, which may differ from Redis's (`authgate user export` prints those)",
            users_file.display()
        );
    }
    let failures = authgate::policy::check::run_tests(&config, &config.users);
    for f in &failures {
        eprintln!("{file}:{}:{}: {}", f.line, f.col, f.message);
    }
    let summary = format!(
        "{} rules, {} users, {} of {} tests passed, {} warning(s)",
        config.policy.rules().len(),
        config.users.len(),
        config.tests.len() - failures.len(),
        config.tests.len(),
        warnings.len() + exposed.len()
    );
    if let Some(log) = replay {
        match std::fs::read_to_string(log) {
            Ok(text) => {
                let report = authgate::policy::replay::replay(&config, &config.users, &text);
                print!(
                    "{}",
                    authgate::policy::replay::render(&report, &log.display().to_string())
                );
            }
            Err(e) => {
                eprintln!("cannot read the access log {}: {e}", log.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if failures.is_empty() && file_problems.is_empty() {
        println!("{file}: ok ({summary})");
        ExitCode::SUCCESS
    } else if failures.is_empty() {
        eprintln!(
            "{file}: {} problem(s) with the files it names; the policy is fine ({summary})",
            file_problems.len()
        );
        ExitCode::FAILURE
    } else {
        eprintln!("{file}: {} test(s) failed ({summary})", failures.len());
        ExitCode::FAILURE
    }
}

fn explain(
    path: &std::path::Path,
    user: Option<&str>,
    host: Option<&str>,
    method: &str,
    request_path: &str,
    (auth_age, mfa): (Option<&str>, Option<bool>),
) -> anyhow::Result<()> {
    // The policy and the users are enough: missing TLS files do not matter here.
    let (config, _) = Config::load_for_policy(path).map_err(|e| {
        for problem in &e.problems {
            eprintln!("{problem}");
        }
        anyhow::anyhow!("{} has {} problem(s)", path.display(), e.problems.len())
    })?;
    let fresh = authgate::policy::check::Freshness {
        auth_age: auth_age
            .map(authgate::config::units::parse_duration)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--auth-age: {e}"))?
            .unwrap_or_default(),
        mfa,
    };
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| anyhow::anyhow!("{method:?} is not an HTTP method"))?;
    let outcome = authgate::policy::check::evaluate(
        &config,
        &config.users,
        user,
        &method,
        request_path,
        host,
        fresh,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    print!(
        "{}",
        authgate::policy::check::explanation(&outcome, &method, request_path, user, host)
    );
    match config.upstream_of_request(host, request_path) {
        Some(u) if config.upstreams.len() > 1 => {
            println!("upstream: {} ([[upstream]] on line {})", u.url, u.line)
        }
        Some(u) => println!("upstream: {}", u.url),
        None => println!("upstream: none serves this host and path (404)"),
    }
    Ok(())
}

fn load_or_report(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| {
        for problem in &e.problems {
            eprintln!("{problem}");
        }
        anyhow::anyhow!(
            "{} has {} problem(s); not starting",
            path.display(),
            e.problems.len()
        )
    })
}

/// Hands the memory the allocator keeps after a sign-in burst (the
/// hashing threads' working areas, the connections' freed buffers) back to
/// the system; measured by `bench/signin_memory.sh`.
fn trim_allocator() {
    // SAFETY: mi_collect takes no pointers; it walks mimalloc's own heaps
    // and arenas under their locks and may be called from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

fn run(path: &std::path::Path, flag_format: Option<LogFormat>) -> anyhow::Result<()> {
    if !path.exists() {
        anyhow::bail!(
            "there is no config at {}. To start: `authgate demo` runs a demo app behind the gateway with two users; `authgate init DIR --upstream URL --host NAME` writes a setup of your own (then `authgate run -c DIR/gateway.toml`); -c PATH or AUTHGATE_CONFIG names a config elsewhere",
            path.display()
        );
    }
    // The stop signals are caught before anything else: a SIGTERM that
    // comes while the config and the sessions load is a stop (exit 0 once
    // started), not the default kill.
    let runtime = runtime_unlogged()?;
    let stop = {
        let _inside = runtime.enter();
        StopSignals::install()?
    };
    let config = load_or_report(path)?;
    authgate::auth::password::set_after_burst(trim_allocator);
    let _log = init_logging(
        flag_format
            .or(config.server.log_format)
            .unwrap_or(LogFormat::Human),
    );
    log_runtime();
    runtime.block_on(async { authgate::run(config, stop.received()).await })?;
    Ok(())
}

fn demo(listen: SocketAddr, flag_format: Option<LogFormat>) -> anyhow::Result<()> {
    let _log = init_logging(flag_format.unwrap_or(LogFormat::Human));
    authgate::auth::password::set_after_burst(trim_allocator);
    let runtime = runtime()?;
    let stop = {
        let _inside = runtime.enter();
        StopSignals::install()?
    };
    runtime.block_on(async {
        let app = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let app_addr = app.local_addr()?;
        tokio::spawn(authgate::demo::serve_app(app));
        let dir = authgate::demo::private_dir().context("cannot make the demo's folder")?;
        let demo = authgate::demo::write_config(dir.path(), listen, app_addr)
            .context("cannot write the demo config")?;
        let config = load_or_report(&demo.config)?;
        let gateway = authgate::Gateway::start(config).await?;
        println!();
        println!("  authgate demo: open https://{}/", gateway.addr());
        println!("  (a self-signed certificate: your browser will ask you to accept it)");
        println!();
        println!(
            "  sign in as   alice / {}   (roles admin, user: sees everything)",
            demo.alice_password
        );
        println!(
            "          or   bob   / {}   (role user: no /admin/)",
            demo.bob_password
        );
        println!(
            "  a second factor (TOTP): https://{}/.gateway/totp once signed in",
            gateway.addr()
        );
        println!();
        println!(
            "  demo app behind it: http://{app_addr}/   config: {}",
            demo.config.display()
        );
        println!("  stop with Ctrl-C");
        println!();
        stop.received().await;
        gateway.shutdown().await;
        // The folder and its secrets go with `dir`.
        drop(dir);
        Ok(())
    })
}

/// `UID` or `UID:GID` (the group defaults to the same number).
fn parse_owner(text: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = text.split_once(':').unwrap_or((text, text));
    match (uid.parse(), gid.parse()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(format!("{text:?} is not UID or UID:GID (numbers)")),
    }
}

fn init(
    dir: &std::path::Path,
    upstream: &str,
    host: &str,
    admin: &str,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    let typed = if std::io::stdin().is_terminal() {
        None
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        Some(line.trim_end_matches(['\n', '\r']).to_owned()).filter(|p| !p.is_empty())
    };
    let password = match &typed {
        Some(password) => {
            authgate::users::file::check_new_password(password)?;
            password.clone()
        }
        None => authgate::demo::random_password(),
    };
    let hash = authgate::auth::password::hash_password(&password);
    let written = authgate::init::init(dir, upstream, host, admin, &hash, owner)?;
    println!("wrote {}", written.config.display());
    println!(
        "  certificate: {}/certs/gateway.crt (self-signed for {host})",
        dir.display()
    );
    if typed.is_none() {
        println!(
            "  sign in as {} / {password}   (shown this once)",
            written.admin
        );
    } else {
        println!("  sign in as {} with the password you gave", written.admin);
    }
    println!(
        "next: authgate check -c {0}   then   authgate run -c {0}",
        written.config.display()
    );
    Ok(())
}

/// How long `healthcheck` waits for the whole answer.
const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn healthcheck(config_path: &std::path::Path, url: Option<&str>) -> ExitCode {
    let url = match url {
        Some(url) => url.to_owned(),
        None => match ops_url(config_path) {
            Ok(url) => url,
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                return ExitCode::FAILURE;
            }
        },
    };
    let asked = runtime().and_then(|rt| {
        rt.block_on(async {
            tokio::time::timeout(HEALTHCHECK_TIMEOUT, get_status(&url))
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {HEALTHCHECK_TIMEOUT:?}"))?
        })
    });
    match asked {
        Ok(status) if status == http::StatusCode::OK => {
            println!("healthy: {url} answered {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("unhealthy: {url} answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `http://OPS_LISTEN/healthz` from the config, read only for that key.
fn ops_url(config_path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read the config file {}", config_path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", config_path.display()))?;
    let listen = table
        .get("server")
        .and_then(|s| s.get("ops_listen"))
        .and_then(|v| v.as_str())
        .with_context(|| {
            format!(
                "{} has no [server] ops_listen: set one, or pass --url",
                config_path.display()
            )
        })?;
    let mut addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("ops_listen {listen:?} is not an address"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(format!("http://{addr}/healthz"))
}

/// The status of a plain-HTTP GET of `url`.
async fn get_status(url: &str) -> anyhow::Result<http::StatusCode> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// URLs (the ops listener is plain HTTP)"
    );
    let authority = uri.authority().context("the URL names no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((authority.host().trim_matches(['[', ']']), port))
        .await
        .context("cannot connect")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    Ok(response.status())
}

/// The shared store a config names, if it names Redis (then the whole
/// config must be valid); `None` for a users file.
fn shared_store(config_path: &std::path::Path) -> anyhow::Result<Option<Config>> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read the config file {}", config_path.display()))?;
    let table: toml::Table = text.parse().unwrap_or_default();
    let redis = table
        .get("store")
        .and_then(|s| s.get("backend"))
        .and_then(|b| b.as_str())
        == Some("redis");
    if !redis {
        return Ok(None);
    }
    load_or_report(config_path).map(Some)
}

/// `authgate user ...` against Redis, the user store of replicas.
fn user_in_redis(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    use authgate::config::StoreBackend;
    use authgate::users::file::{check_new_password, check_role, Change};
    let StoreBackend::Redis(settings) = &config.store.backend else {
        unreachable!("only called for a Redis config")
    };
    let new_hash = || -> anyhow::Result<String> {
        let password = read_password("New password: ")?;
        check_new_password(&password)?;
        Ok(authgate::auth::password::hash_password(&password))
    };
    let change = match &command {
        UserCommand::List | UserCommand::Export => None,
        UserCommand::Add { name, roles } => {
            for role in roles {
                check_role(role)?;
            }
            Some(Change::Add {
                name: name.clone(),
                password_hash: new_hash()?,
                roles: roles.clone(),
            })
        }
        UserCommand::Passwd { name } => Some(Change::SetPassword {
            name: name.clone(),
            password_hash: new_hash()?,
        }),
        UserCommand::Roles { name, roles } => Some(Change::SetRoles {
            name: name.clone(),
            roles: roles.clone(),
        }),
        UserCommand::Lock { name } => Some(Change::Lock(name.clone())),
        UserCommand::Unlock { name } => Some(Change::Unlock(name.clone())),
        UserCommand::Del { name } => Some(Change::Delete(name.clone())),
        UserCommand::TotpReset { name } => Some(Change::ResetTotp(name.clone())),
    };
    runtime()?.block_on(async {
        let redis = connect_redis(config, settings).await?;
        let unavailable = || anyhow::anyhow!("Redis stopped answering");
        if redis
            .seed_unless_a_replica_does(&config.users)
            .await
            .map_err(|_| unavailable())?
        {
            eprintln!("(Redis was empty: it got the users of the users file first)");
        }
        match change {
            Some(change) => {
                redis.apply(&change).await?;
                println!("done in Redis; every gateway applies it within a second");
            }
            None => {
                let users = redis.users().await.map_err(|_| unavailable())?;
                print_users(&users, matches!(command, UserCommand::Export));
            }
        }
        Ok(())
    })
}

/// The Redis a config names, for the command line.
async fn connect_redis(
    config: &Config,
    settings: &authgate::store::redis::Settings,
) -> anyhow::Result<authgate::store::redis::Redis> {
    Ok(authgate::store::redis::Redis::connect(
        settings,
        config.session.idle_timeout,
        config.session.absolute_timeout,
        Default::default(),
    )
    .await?)
}

fn print_users(users: &authgate::users::Users, as_toml: bool) {
    if as_toml {
        print!("{}", users.to_toml());
        return;
    }
    let mut list: Vec<_> = users.iter().collect();
    list.sort_by(|a, b| a.key.cmp(&b.key));
    for u in list {
        let state = if u.locked { "  (locked)" } else { "" };
        let totp = if u.totp.is_some() { "  (totp)" } else { "" };
        println!("{}\t{}{state}{totp}", u.name, u.roles.join(","));
    }
}

fn user(config_path: &std::path::Path, command: UserCommand) -> anyhow::Result<()> {
    use authgate::users::file::{check_new_password, check_role, Change, UsersFile};
    if let Some(config) = shared_store(config_path)? {
        return user_in_redis(&config, command);
    }
    let file = UsersFile::new(
        authgate::config::users_file_of(config_path).map_err(|e| anyhow::anyhow!(e))?,
    );
    let new_hash = || -> anyhow::Result<String> {
        let password = read_password("New password: ")?;
        check_new_password(&password)?;
        Ok(authgate::auth::password::hash_password(&password))
    };
    let (change, done) = match command {
        UserCommand::List | UserCommand::Export => {
            let (_, users) = file.load()?;
            print_users(&users, matches!(command, UserCommand::Export));
            return Ok(());
        }
        UserCommand::Add { name, roles } => {
            for role in &roles {
                check_role(role)?;
            }
            let password_hash = new_hash()?;
            let done = format!("added {name}");
            (
                Change::Add {
                    name,
                    password_hash,
                    roles,
                },
                done,
            )
        }
        UserCommand::Passwd { name } => {
            let password_hash = new_hash()?;
            let done = format!("changed the password of {name}");
            (
                Change::SetPassword {
                    name,
                    password_hash,
                },
                done,
            )
        }
        UserCommand::Roles { name, roles } => {
            let done = format!("set the roles of {name} to {}", roles.join(","));
            (Change::SetRoles { name, roles }, done)
        }
        UserCommand::Lock { name } => (Change::Lock(name.clone()), format!("locked {name}")),
        UserCommand::Unlock { name } => (Change::Unlock(name.clone()), format!("unlocked {name}")),
        UserCommand::Del { name } => (Change::Delete(name.clone()), format!("removed {name}")),
        UserCommand::TotpReset { name } => (
            Change::ResetTotp(name.clone()),
            format!("removed the second factor of {name}"),
        ),
    };
    file.apply(&change, "cli")?;
    println!("{done} ({})", file.path().display());
    Ok(())
}

fn sessions(config_path: &std::path::Path, command: SessionsCommand) -> anyhow::Result<()> {
    use authgate::store::local::commands::Revoke;
    let config = load_or_report(config_path)?;
    let canonical = |name: &str| authgate::users::canonical(name);
    if let authgate::config::StoreBackend::Redis(settings) = &config.store.backend {
        return sessions_in_redis(&config, settings, command);
    }
    match command {
        SessionsCommand::List { user } => {
            let key = user.as_deref().map(canonical);
            print_sessions(&authgate::store::list_on_record(
                &config.store,
                key.as_deref(),
            )?);
        }
        SessionsCommand::Revoke { user, all, handle } => {
            let what = match (user, all, handle) {
                (Some(user), _, _) => Revoke::User(canonical(&user)),
                (None, true, _) => Revoke::All,
                (None, false, Some(handle)) => Revoke::Handle(handle),
                (None, false, None) => unreachable!("clap requires one of them"),
            };
            let ended = authgate::store::revoke_on_record(&config.store, &what)?;
            if let Revoke::Handle(handle) = &what {
                if ended == 0 {
                    anyhow::bail!(
                        "no session has the handle {handle:?} (see `authgate sessions list`)"
                    );
                }
            }
            println!("ended {ended} session(s); a running gateway ends them within a second");
        }
    }
    Ok(())
}

fn print_sessions(sessions: &[authgate::session::SessionInfo]) {
    for s in sessions {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            authgate::session::handle(&s.key),
            s.user,
            authgate::auth::rfc3339(s.created_ms),
            authgate::auth::rfc3339(s.last_seen_ms),
            s.ip,
            s.user_agent.replace(['\t', '\n', '\r'], " "),
        );
    }
}

/// `authgate sessions ...` against Redis: every replica sees the change at
/// its next lookup (within a second).
fn sessions_in_redis(
    config: &Config,
    settings: &authgate::store::redis::Settings,
    command: SessionsCommand,
) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let redis = connect_redis(config, settings).await?;
        let unavailable = |_| anyhow::anyhow!("Redis stopped answering");
        match command {
            SessionsCommand::List { user } => {
                let key = user.as_deref().map(authgate::users::canonical);
                print_sessions(&redis.list(key.as_deref()).await.map_err(unavailable)?);
            }
            SessionsCommand::Revoke { user, all, handle } => {
                let ended = if let Some(user) = user {
                    let key = authgate::users::canonical(&user);
                    redis.end_all_for_user(&key).await.map_err(unavailable)?
                } else if all {
                    let mut ended = 0;
                    for s in redis.list(None).await.map_err(unavailable)? {
                        ended +=
                            usize::from(redis.end(&s.key).await.map_err(unavailable)?.is_some());
                    }
                    ended
                } else {
                    let handle = handle.expect("clap requires one of them");
                    let Some(key) = redis.find_handle(&handle).await.map_err(unavailable)? else {
                        anyhow::bail!(
                            "no session has the handle {handle:?} (see `authgate sessions list`)"
                        );
                    };
                    usize::from(redis.end(&key).await.map_err(unavailable)?.is_some())
                };
                println!("ended {ended} session(s); every gateway ends them within a second");
            }
        }
        Ok(())
    })
}

fn hash_password() -> anyhow::Result<()> {
    let password = read_password("Password: ")?;
    // The same minimum as `user add` and the password page.
    authgate::users::file::check_new_password(&password)?;
    println!("{}", authgate::auth::password::hash_password(&password));
    Ok(())
}

/// One password from stdin: without echo when stdin is a terminal, else
/// the first line as it is (only the line ending is removed).
fn read_password(prompt: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).context("cannot read the password")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned()
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(password)
}

/// The async runtime: work-stealing across the CPUs this process may use,
/// or, given only one, tokio's single-threaded scheduler, which does the
/// same work without the cross-thread queues and wake-ups (measured by
/// `bench/run.sh`, whose proxy gets one CPU).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = runtime_unlogged()?;
    log_runtime();
    Ok(runtime)
}

/// The runtime's shape, in the log.
fn log_runtime() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let scheduler = if cpus == 1 {
        "current_thread"
    } else {
        "multi_thread"
    };
    tracing::info!(cpus, scheduler, "async runtime");
}

/// One thread per core, or the current thread alone on one core; built
/// before logging is set up where the stop signals must be caught first.
fn runtime_unlogged() -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Logs go to stderr in batches (see `authgate::logging`); the guard
/// flushes what is left when it is dropped.
fn init_logging(format: LogFormat) -> authgate::logging::FlushGuard {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let (writer, guard) = authgate::logging::batched_stderr();
    let filter = EnvFilter::try_from_env("AUTHGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    if format == LogFormat::Human && !ansi {
        authgate::logging::write_access_directly(&writer);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_timer(authgate::logging::Clock)
        .with_writer(writer);
    match format {
        LogFormat::Human => builder.fmt_fields(authgate::logging::HumanFields).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}

/// SIGTERM and SIGINT, caught from the moment they are installed (inside
/// the runtime).
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals {
                terminate: signal(SignalKind::terminate())
                    .context("cannot install a SIGTERM handler")?,
                interrupt: signal(SignalKind::interrupt())
                    .context("cannot install a SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    /// Resolves at the first SIGTERM or SIGINT.
    async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("signal received: shutting down");
    }
}
