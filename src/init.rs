//! `authgate init [DIR]`: a ready setup in a folder, for the step after the
//! demo. It writes the shipped, commented `gateway.toml` pointed at the
//! given upstream, a self-signed ECDSA P-256 certificate for the given host
//! (key 0600), a users file with a first admin and the state folder, and
//! refuses to overwrite anything that is there.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The shipped example config, the template of every `init`.
const TEMPLATE: &str = include_str!("../gateway.toml");

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} exists already; init writes only into an empty place (nothing was changed)")]
    Exists(PathBuf),
    #[error("the upstream {0:?} is not an http:// or https:// URL without a path")]
    BadUpstream(String),
    #[error("the host name {0:?} is not valid for a certificate")]
    BadHost(String),
    #[error(transparent)]
    User(#[from] crate::users::file::UserFileError),
    #[error("cannot give {path} to the owner {owner} (--owner needs root, or the owner's own uid): {error}")]
    Owner {
        path: PathBuf,
        owner: String,
        error: std::io::Error,
    },
    #[error("cannot write {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// What `init` wrote.
pub struct Written {
    pub config: PathBuf,
    pub admin: String,
}

/// The files `init` makes, relative to its folder.
pub const FILES: [&str; 5] = [
    "gateway.toml",
    "users.toml",
    "certs/gateway.crt",
    "certs/gateway.key",
    "state",
];

/// Writes the setup into `dir` (made if missing). `password_hash` is the
/// admin's argon2id hash.
/// `owner`: a uid and gid the written files are given to (a container's
/// user reading a bind-mounted folder, `10001:10001` for the image).
pub fn init(
    dir: &Path,
    upstream: &str,
    host: &str,
    admin: &str,
    password_hash: &str,
    owner: Option<(u32, u32)>,
) -> Result<Written, InitError> {
    let uri: http::Uri = upstream
        .parse()
        .map_err(|_| InitError::BadUpstream(upstream.to_owned()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || uri.authority().is_none()
        || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
    {
        return Err(InitError::BadUpstream(upstream.to_owned()));
    }
    for name in FILES {
        let path = dir.join(name);
        if path.exists() {
            return Err(InitError::Exists(path));
        }
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| InitError::Io { path, error }
    };
    let names = vec![
        host.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|_| InitError::BadHost(host.to_owned()))?;
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|_| InitError::BadHost(host.to_owned()))?;
    // Named for the host and valid for a year from today, so an expiry
    // alert (authgate_certificate_expiry_seconds) fires before it ends.
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host);
    let (year, month, day) = today();
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year + 1, month, day.min(28));
    let cert = params
        .self_signed(&key)
        .map_err(|_| InitError::BadHost(host.to_owned()))?;

    std::fs::create_dir_all(dir.join("certs")).map_err(io(&dir.join("certs")))?;
    create_private_dir(&dir.join("state"))?;
    write_new(&dir.join("certs/gateway.crt"), &cert.pem(), false)?;
    write_new(&dir.join("certs/gateway.key"), &key.serialize_pem(), true)?;
    crate::users::file::UsersFile::new(dir.join("users.toml")).apply(
        &crate::users::file::Change::Add {
            name: admin.to_owned(),
            password_hash: password_hash.to_owned(),
            roles: vec!["admin".to_owned(), "user".to_owned()],
            service: false,
        },
        "init",
    )?;
    let upstream = upstream.trim_end_matches('/');
    let config = TEMPLATE
        .replacen(
            "url = \"http://127.0.0.1:3000\"",
            &format!("url = \"{upstream}\""),
            1,
        )
        .lines()
        .map(|line| {
            if line.starts_with("# path = \"authgate-state.db\"") {
                "path = \"state/authgate-state.db\"  # relative to this file's folder"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            // The template's tests speak of alice and bob; this setup has one admin.
            "user = \"alice\"",
            &format!("user = {:?}", crate::users::canonical(admin)),
        );
    let config = strip_bob_tests(&config);
    write_new(&dir.join("gateway.toml"), &config, false)?;
    if let Some((uid, gid)) = owner {
        for name in FILES {
            let path = dir.join(name);
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|error| {
                InitError::Owner {
                    path: path.clone(),
                    owner: format!("{uid}:{gid}"),
                    error,
                }
            })?;
        }
    }
    Ok(Written {
        config: dir.join("gateway.toml"),
        admin: admin.to_owned(),
    })
}

/// Today's date (UTC) as year, month, day.
fn today() -> (i32, u8, u8) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let number = |range: std::ops::Range<usize>| -> i32 { now[range].parse().unwrap_or(1) };
    let small = |range| u8::try_from(number(range)).unwrap_or(1);
    (number(0..4), small(5..7), small(8..10))
}

/// The template's `[[test]]`s for bob name a user this setup does not have.
fn strip_bob_tests(config: &str) -> String {
    config
        .split("\n[[test]]")
        .enumerate()
        .filter(|(i, part)| *i == 0 || !part.contains("user = \"bob\""))
        .map(|(i, part)| {
            if i == 0 {
                part.to_owned()
            } else {
                format!("\n[[test]]{part}")
            }
        })
        .collect()
}

fn create_private_dir(path: &Path) -> Result<(), InitError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|error| InitError::Io {
            path: path.to_owned(),
            error,
        })
}

/// Creates `path` (never replacing one), 0600 if `private`.
fn write_new(path: &Path, text: &str, private: bool) -> Result<(), InitError> {
    use std::os::unix::fs::OpenOptionsExt;
    let error = |error| InitError::Io {
        path: path.to_owned(),
        error,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)
}
