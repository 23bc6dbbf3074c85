//! The `authgate` command line: parses the arguments and calls the
//! command's code in `authgate::cli`, one file per command.

// The library forbids unsafe code; the one exception here is a libc call.
#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use authgate::cli;
use authgate::cli::sessions::SessionsCommand;
use authgate::cli::users::UserCommand;
use authgate::config::LogFormat;

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
        /// Also reach every [[oidc]] provider (fetch its discovery document
        /// and keys, and say what they hold) and [ldap] (bind as the search
        /// account and search).
        #[arg(long)]
        online: bool,
        /// With --online: look this user up in [ldap] (no password) and
        /// print their DN, groups and the roles they would get.
        #[arg(long, value_name = "NAME", requires = "online")]
        ldap_user: Option<String>,
    },
    /// Show how the policy decides one request.
    Explain(cli::check::ExplainArgs),
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
    /// Make, list or revoke API tokens in the configured store.
    #[command(subcommand)]
    Token(cli::tokens::TokenCommand),
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
    Init(cli::init::InitArgs),
    /// Start a demo app with the gateway in front of it.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
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
        Command::Init(_) => Some("init"),
        Command::Demo { .. } => Some("demo"),
        _ => None,
    };
    if let (Some(name), Some(_)) = (configless, &cli.config) {
        eprintln!("authgate: `authgate {name}` reads no config; -c/--config means nothing to it");
        return ExitCode::from(2);
    }
    let outcome = match command {
        Command::Run => cli::serve::run(&config_path, flag_format, trim_allocator),
        Command::Check {
            replay,
            online,
            ldap_user,
        } => {
            return cli::check::check(
                &config_path,
                replay.as_deref(),
                online,
                ldap_user.as_deref(),
            )
        }
        Command::Explain(args) => cli::check::explain(&config_path, &args),
        Command::Demo { listen } => cli::serve::demo(listen, flag_format, trim_allocator),
        Command::HashPassword => cli::users::hash_password(),
        Command::Init(args) => cli::init::init(&args),
        Command::Keygen { path } => authgate::assertion::generate(&path)
            .map(|kid| {
                println!("wrote {} (kid {kid})", path.display());
                // The public half, for a provider that knows the gateway by it.
                if let Ok(key) = authgate::assertion::JwtKey::load(&path) {
                    println!("public JWK: {}", key.jwk());
                }
            })
            .map_err(anyhow::Error::from),
        Command::Healthcheck { url } => {
            return cli::healthcheck::healthcheck(&config_path, url.as_deref())
        }
        Command::User(command) => cli::users::user(&config_path, command),
        Command::Sessions(command) => cli::sessions::sessions(&config_path, command),
        Command::Token(command) => cli::tokens::tokens(&config_path, command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authgate: {e:#}");
            ExitCode::FAILURE
        }
    }
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
