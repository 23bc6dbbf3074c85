//! `authgate init`: a ready setup in a folder.

/// `UID` or `UID:GID` (the group defaults to the same number).
pub fn parse_owner(text: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = text.split_once(':').unwrap_or((text, text));
    match (uid.parse(), gid.parse()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(format!("{text:?} is not UID or UID:GID (numbers)")),
    }
}

/// `authgate init`'s arguments.
#[derive(clap::Args)]
pub struct InitArgs {
    /// The folder to write into.
    #[arg(default_value = ".")]
    pub dir: std::path::PathBuf,
    /// The app to protect.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub upstream: String,
    /// The name the certificate is for.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// The first admin's name; the password is read from stdin when it
    /// is not a terminal, else made and printed once.
    #[arg(long, default_value = "admin")]
    pub admin: String,
    /// Give the written files to this user (UID or UID:GID), e.g. the
    /// image's 10001:10001 for a folder a container mounts.
    #[arg(long, value_parser = parse_owner)]
    pub owner: Option<(u32, u32)>,
}

pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    let (dir, upstream, host, admin, owner) = (
        args.dir.as_path(),
        args.upstream.as_str(),
        args.host.as_str(),
        args.admin.as_str(),
        args.owner,
    );
    use std::io::IsTerminal;
    // A piped password is the admin's; else one is made and shown once.
    let typed = if std::io::stdin().is_terminal() {
        None
    } else {
        Some(super::piped_password()?).filter(|p| !p.is_empty())
    };
    let password = match &typed {
        Some(password) => {
            crate::users::file::check_new_password(password)?;
            password.clone()
        }
        None => crate::users::password::random_password(),
    };
    let hash = crate::users::password::hash_password(&password);
    let written = crate::init::init(dir, upstream, host, admin, &hash, owner)?;
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
