//! `authgate healthcheck`: is the running gateway alive, for container
//! health checks.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;

use super::*;

/// How long `healthcheck` waits for the whole answer.
pub const HEALTHCHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn healthcheck(config_path: &std::path::Path, url: Option<&str>) -> ExitCode {
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
pub fn ops_url(config_path: &std::path::Path) -> anyhow::Result<String> {
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
pub async fn get_status(url: &str) -> anyhow::Result<http::StatusCode> {
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
