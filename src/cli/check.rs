//! `authgate check` and `authgate explain`: the config, its files and the
//! policy, judged without serving.

use std::process::ExitCode;

use crate::Config;

/// `online`: also reach every `[[oidc]]` provider (discovery and keys) and
/// `[ldap]` (a bind as the search account, and a search for `ldap_user`).
pub fn check(
    path: &std::path::Path,
    replay: Option<&std::path::Path>,
    online: bool,
    ldap_user: Option<&str>,
) -> ExitCode {
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
    if let crate::config::StoreBackend::Local { path: state } = &config.store.backend {
        if state.exists() {
            if let Err(e) = crate::store::list_on_record(&config.store, None) {
                file_problems.push(crate::config::Problem {
                    file: file.to_string(),
                    position: None,
                    message: e.to_string(),
                });
            }
        }
    }
    if online {
        file_problems.extend(probe_providers(&config, ldap_user));
    }
    for problem in &file_problems {
        eprintln!("{problem}");
    }
    let warnings = crate::review::lint(&config, &config.users);
    for w in &warnings {
        eprintln!("{file}:{}:{}: warning: {}", w.line, w.col, w.message);
    }
    let config_warnings = config.warnings();
    for warning in &config_warnings {
        eprintln!("{file}: warning: {warning}");
    }
    if let Some(note) = config.seed_only_note() {
        eprintln!("{file}: note: {note}");
    }
    let failures = crate::review::run_tests(&config, &config.users);
    for f in &failures {
        eprintln!("{file}:{}:{}: {}", f.line, f.col, f.message);
    }
    let summary = format!(
        "{} rules, {} users, {} of {} tests passed, {} warning(s)",
        config.policy.rules().len(),
        config.users.len(),
        config.tests.len() - failures.len(),
        config.tests.len(),
        warnings.len() + config_warnings.len()
    );
    if let Some(log) = replay {
        match std::fs::read_to_string(log) {
            Ok(text) => {
                let report = crate::review::replay::replay(&config, &config.users, &text);
                print!(
                    "{}",
                    crate::review::replay::render(&report, &log.display().to_string())
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

/// Reaches each identity provider, printing what it found; a problem for
/// each that cannot be reached or answers unusably.
fn probe_providers(config: &Config, ldap_user: Option<&str>) -> Vec<crate::config::Problem> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return vec![crate::config::Problem {
                file: config.source.display().to_string(),
                position: None,
                message: format!("cannot start the network client: {e}"),
            }]
        }
    };
    let mut problems = Vec::new();
    if let Some(settings) = &config.ldap {
        match runtime.block_on(probe_directory(settings, ldap_user)) {
            Ok(found) => println!("ldap {}: {found}", settings.url),
            Err(e) => problems.push(crate::config::Problem {
                file: config.source.display().to_string(),
                position: None,
                message: format!("[ldap] {}: {e}", settings.url),
            }),
        }
    }
    for provider in &config.oidc {
        match runtime.block_on(crate::identity::oidc::probe(provider.clone())) {
            Ok(found) => println!("oidc {}: {found}", provider.name),
            Err(e) => problems.push(crate::config::Problem {
                file: config.source.display().to_string(),
                position: None,
                message: format!("[[oidc]] {} ({}): {e}", provider.name, provider.issuer),
            }),
        }
    }
    problems
}

/// Binds as the search account and looks `user` up (no password), saying
/// what the gateway would make of them.
async fn probe_directory(
    settings: &std::sync::Arc<crate::config::Ldap>,
    user: Option<&str>,
) -> Result<String, crate::identity::ldap::Down> {
    let directory = crate::identity::ldap::Directory::new(settings.clone(), Default::default());
    let Some(name) = user else {
        directory.find("authgate-check-online").await?;
        return Ok("the search account binds and searches (name a user with --ldap-user NAME to see what they get)".into());
    };
    Ok(match directory.find(name).await? {
        None => format!(
            "no entry for {name:?} under {} matches the user filter",
            settings.user_base
        ),
        Some(person) => {
            let headers: Vec<String> = person
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                .collect();
            format!(
                "{name:?} is {} (name here: {}{})\n  groups: {}\n  roles: {}\n  headers: {}",
                person.dn,
                person.name,
                if person.disabled {
                    ", DISABLED: cannot sign in"
                } else {
                    ""
                },
                if person.groups.is_empty() {
                    "none".to_owned()
                } else {
                    person.groups.join("; ")
                },
                if person.roles.is_empty() {
                    "none".to_owned()
                } else {
                    person.roles.join(", ")
                },
                if headers.is_empty() {
                    "none".to_owned()
                } else {
                    headers.join(", ")
                },
            )
        }
    })
}

/// `authgate explain`'s arguments.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["user", "anonymous"])))]
pub struct ExplainArgs {
    /// Decide for a session of this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Decide for a request without a session.
    #[arg(long)]
    pub anonymous: bool,
    /// The host the request names.
    #[arg(long)]
    pub host: Option<String>,
    /// How long ago the user entered the password, e.g. 20m (for rules
    /// with max_auth_age) [default: just now].
    #[arg(long)]
    pub auth_age: Option<String>,
    /// Whether the session passed the second factor (for rules with
    /// mfa = true) [default: whether the user has one].
    #[arg(long)]
    pub mfa: Option<bool>,
    /// GET, POST, ...
    pub method: String,
    /// The path as a client would send it, e.g. /x/../admin
    pub path: String,
}

pub fn explain(path: &std::path::Path, args: &ExplainArgs) -> anyhow::Result<()> {
    let (user, host, method, request_path) = (
        args.user.as_deref(),
        args.host.as_deref(),
        args.method.as_str(),
        args.path.as_str(),
    );
    let (auth_age, mfa) = (args.auth_age.as_deref(), args.mfa);
    // The policy and the users are enough: missing TLS files do not matter here.
    let (config, _) = Config::load_for_policy(path).map_err(|e| {
        for problem in &e.problems {
            eprintln!("{problem}");
        }
        anyhow::anyhow!("{} has {} problem(s)", path.display(), e.problems.len())
    })?;
    let fresh = crate::review::Freshness {
        auth_age: auth_age
            .map(crate::units::parse_duration)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--auth-age: {e}"))?
            .unwrap_or_default(),
        mfa,
    };
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| anyhow::anyhow!("{method:?} is not an HTTP method"))?;
    let outcome = crate::review::evaluate(
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
        crate::review::explanation(&outcome, &method, request_path, user, host)
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
