//! The soak (issue 30): the release gateway binary, twice at once (the
//! local SQLite store, and Redis: a redis-server started here), each under
//! the load of a working day for MINUTES minutes:
//! - 64 keep-alive clients, half HTTP/1.1 and half HTTP/2, each with its
//!   own session, one request every 50 ms;
//! - 8 clients that open a new connection (TCP + TLS) for every request,
//!   every 100 ms;
//! - 4 WebSocket clients opening a socket, echoing a message and closing
//!   it, every 500 ms;
//! - 2 clients signing in, using the session, signing out and checking the
//!   session is gone, every second;
//! - the config file rewritten every minute (the gateway reloads it).
//!
//! Each minute it prints, per store, the gateway's RSS at the minute's end
//! and the least and most open file descriptors (from /proc) and tasks
//! (`authgate_tasks`) seen in its once-a-second samples, the requests of
//! the minute and their p99. It fails if any request fails, if a reload
//! is not seen, or if RSS or the descriptors' floor grow by more than
//! 10 % over minute 2's. Loopback only; it stops by itself.
//!
//! Run it with `bench/soak.sh MINUTES`.

mod common;
use common::{cookie, post_sign_in, upstream};

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "soak-password-123";
const KEEP_ALIVE: usize = 64;
const NEW_CONNECTION: usize = 8;
const WEBSOCKETS: usize = 4;
const SIGN_INS: usize = 2;
/// Growth over the value at the end of minute 2 that fails the soak.
const GROWTH_LIMIT: f64 = 1.10;

/// What the clients of one gateway saw in the current minute.
#[derive(Default)]
struct Tally {
    /// Microseconds per request (or per WebSocket exchange, per sign-in).
    latencies: Mutex<Vec<u32>>,
    failed: AtomicU64,
    /// The first failures, said in words.
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, started: Instant, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                self.latencies.lock().unwrap().push(micros);
            }
            Err(why) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut failures = self.failures.lock().unwrap();
                if failures.len() < 20 {
                    failures.push(why);
                }
            }
        }
    }

    /// (requests, p99 in ms) of the minute, and starts the next.
    fn take_minute(&self) -> (usize, f64) {
        let mut latencies = std::mem::take(&mut *self.latencies.lock().unwrap());
        latencies.sort_unstable();
        let p99 = latencies
            .get(latencies.len().saturating_sub(1) * 99 / 100)
            .map_or(0.0, |&us| f64::from(us) / 1000.0);
        (latencies.len(), p99)
    }
}

/// A child process killed when this is dropped, a panic included.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One gateway process under soak.
struct Soaked {
    store: &'static str,
    /// Holds the config, users file and state until the end.
    _dir: tempfile::TempDir,
    config: PathBuf,
    config_text: String,
    child: Killed,
    base: String,
    ops: SocketAddr,
    cert_pem: String,
    reloads: Arc<AtomicU64>,
    tally: Arc<Tally>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of its own on a free loopback port, nothing saved.
fn redis() -> (Killed, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
        .expect("redis-server (Debian package redis-server) is needed for the soak");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// A WebSocket upstream that echoes every message.
async fn echo_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() && socket.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    url
}

async fn start(store: &'static str, redis_port: Option<u16>, app: &str, ws: &str) -> Soaked {
    let dir = tempfile::tempdir().unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.path().join("gw.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("gw.key"), &cert.key_pem).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("gw.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let hash = authgate::users::password::hash_password(PASSWORD);
    std::fs::write(
        dir.path().join("users.toml"),
        format!("[users.soak]\npassword = \"{hash}\"\nroles = [\"user\"]\n"),
    )
    .unwrap();
    let store_table = match redis_port {
        Some(port) => format!("backend = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\n"),
        None => "backend = \"local\"\n".to_owned(),
    };
    let config_text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n\
         [[upstream]]\nurl = \"{app}\"\npath_prefix = \"/\"\n\
         [[upstream]]\nurl = \"{ws}\"\npath_prefix = \"/ws\"\n\
         [session]\nmax_per_user = 1000\n[store]\n{store_table}[users]\nfile = \"users.toml\"\n\
         [[rule]]\npath = \"/**\"\naccess = \"authenticated\"\n"
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, &config_text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["--log-format", "json", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Killed)
        .unwrap();
    let stderr = child.0.stderr.take().unwrap();
    let reloads = Arc::new(AtomicU64::new(0));
    let (addrs, serving) = std::sync::mpsc::channel();
    let seen_reloads = reloads.clone();
    // Reads every line (the access lines too, or the pipe would fill):
    // the listen addresses, reloads, and warnings or errors to show.
    std::thread::spawn(move || {
        let mut shown = 0;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("config reloaded") {
                seen_reloads.fetch_add(1, Ordering::Relaxed);
            }
            if line.contains("authgate is serving") {
                let field = |name: &str| -> SocketAddr {
                    let after = line.split(&format!("\"{name}\":\"")).nth(1).unwrap();
                    after.split('"').next().unwrap().parse().unwrap()
                };
                let _ = addrs.send((field("listen"), field("ops_listen")));
            }
            let loud = line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"");
            if loud && shown < 20 {
                shown += 1;
                eprintln!("[{store}] {line}");
            }
        }
    });
    let (listen, ops) = serving
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the {store} gateway did not start"));
    Soaked {
        store,
        _dir: dir,
        config,
        config_text,
        child,
        base: format!("https://{listen}"),
        ops,
        cert_pem: cert.cert_pem,
        reloads,
        tally: Arc::new(Tally::default()),
    }
}

fn client(cert_pem: &str, version: Option<http::Version>, reuse: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    builder = match version {
        Some(http::Version::HTTP_11) => builder.http1_only(),
        Some(_) => builder.http2_prior_knowledge(),
        None => builder,
    };
    if !reuse {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().unwrap()
}

/// A new session for `client`.
async fn sign_in(client: &reqwest::Client, base: &str) -> Result<String, String> {
    let (_, answer) = post_sign_in(client, base, "soak", PASSWORD).await;
    if answer.status() != 303 {
        return Err(format!("sign-in answered {}", answer.status()));
    }
    Ok(cookie(&answer, "__Host-authgate"))
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    session: &str,
    want: u16,
) -> Result<String, String> {
    let response = client
        .get(url)
        .header("cookie", format!("__Host-authgate={session}"))
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if status != want {
        return Err(format!("GET {url}: {status}, not {want}"));
    }
    Ok(body)
}

/// Requests every `every` until `stop`, on one client and one session.
async fn requester(
    soaked: Arc<Soaked>,
    (client, session): (reqwest::Client, String),
    every: Duration,
    stop: Arc<AtomicBool>,
) {
    let url = format!("{}/app/page", soaked.base);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let started = Instant::now();
        let outcome = get(&client, &url, &session, 200).await.and_then(|body| {
            (body == "ok")
                .then_some(())
                .ok_or(format!("the app's answer was {body:?}"))
        });
        soaked.tally.record(started, outcome);
    }
}

/// Opens a WebSocket through the gateway, echoes one message, closes it.
async fn websocket_once(soaked: &Soaked, session: &str, n: u64) -> Result<(), String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let addr: SocketAddr = soaked.base["https://".len()..].parse().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(soaked.cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let request = http::Request::builder()
        .uri(format!("wss://{addr}/ws/echo"))
        .header("host", addr.to_string())
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .header("cookie", format!("__Host-authgate={session}"))
        .body(())
        .unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    let text = format!("message {n}");
    socket
        .send(Message::text(text.clone()))
        .await
        .map_err(|e| e.to_string())?;
    match socket.next().await {
        Some(Ok(Message::Text(echo))) if echo.as_str() == text => {}
        other => return Err(format!("WebSocket echo: {other:?}")),
    }
    socket.close(None).await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn websockets(soaked: Arc<Soaked>, session: String, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            websocket_once(&soaked, &session, n),
        )
        .await
        .unwrap_or_else(|_| Err("WebSocket: no echo within 10 s".to_owned()));
        soaked.tally.record(started, outcome);
    }
}

/// Sign in, use the session, sign out, and the session is gone.
async fn sign_in_and_out(soaked: &Soaked) -> Result<(), String> {
    let client = client(&soaked.cert_pem, None, true);
    let session = sign_in(&client, &soaked.base).await?;
    let app = format!("{}/app/page", soaked.base);
    get(&client, &app, &session, 200).await?;
    let page = get(
        &client,
        &format!("{}/.gateway/logout", soaked.base),
        &session,
        200,
    )
    .await?;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or("no csrf field on the sign-out page")?;
    let out = client
        .post(format!("{}/.gateway/logout", soaked.base))
        .header("cookie", format!("__Host-authgate={session}"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .map_err(|e| format!("sign-out: {e}"))?;
    if out.status() != 303 {
        return Err(format!("sign-out answered {}", out.status()));
    }
    let after = client
        .get(&app)
        .header("cookie", format!("__Host-authgate={session}"))
        .send()
        .await
        .map_err(|e| format!("GET after sign-out: {e}"))?;
    if after.status() == 200 {
        return Err("a signed-out session still served".to_owned());
    }
    Ok(())
}

async fn signer(soaked: Arc<Soaked>, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let started = Instant::now();
        let outcome = sign_in_and_out(&soaked).await;
        soaked.tally.record(started, outcome);
    }
}

/// RSS (KiB) and open descriptors of `pid`.
fn process(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

async fn tasks(ops: SocketAddr) -> u64 {
    let text = reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("authgate_tasks ")?.parse().ok())
        .unwrap_or(0)
}

/// One minute's figures of one gateway.
struct Minute {
    rss_kib: u64,
    fds: usize,
}

fn rewrite(config: &Path, text: &str, minute: u64) {
    let next = format!("# soak: rewritten in minute {minute}\n{text}");
    let temporary = config.with_extension("new");
    std::fs::write(&temporary, next).unwrap();
    std::fs::rename(&temporary, config).unwrap();
}

#[tokio::main]
async fn main() {
    let minutes: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2);
    let (redis_child, redis_port) = redis();
    let app = upstream().await;
    let ws = echo_upstream().await;
    let stores = [
        Arc::new(start("local", None, &app, &ws).await),
        Arc::new(start("redis", Some(redis_port), &app, &ws).await),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for soaked in &stores {
        // Signed in one after another: sign-ins in flight for one account
        // count against its throttle until they succeed.
        let signed_in = |version, reuse| {
            let client = client(&soaked.cert_pem, version, reuse);
            let base = soaked.base.clone();
            async move {
                let session = sign_in(&client, &base).await.expect("first sign-in");
                (client, session)
            }
        };
        for i in 0..KEEP_ALIVE + NEW_CONNECTION {
            let version = if i % 2 == 0 {
                http::Version::HTTP_11
            } else {
                http::Version::HTTP_2
            };
            let (reuse, every) = if i < KEEP_ALIVE {
                (true, Duration::from_millis(50))
            } else {
                (false, Duration::from_millis(100))
            };
            let pair = signed_in(Some(version), reuse).await;
            clients.push(tokio::spawn(requester(
                soaked.clone(),
                pair,
                every,
                stop.clone(),
            )));
        }
        for _ in 0..WEBSOCKETS {
            let (_, session) = signed_in(None, true).await;
            clients.push(tokio::spawn(websockets(
                soaked.clone(),
                session,
                stop.clone(),
            )));
        }
        for _ in 0..SIGN_INS {
            clients.push(tokio::spawn(signer(soaked.clone(), stop.clone())));
        }
    }
    println!(
        "soak: {minutes} min; per store {KEEP_ALIVE} keep-alive clients (HTTP/1.1 and HTTP/2), \
         {NEW_CONNECTION} new-connection clients, {WEBSOCKETS} WebSocket and {SIGN_INS} sign-in/sign-out loops; \
         a config reload every minute"
    );
    println!(
        "{:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "minute", "store", "RSS MiB", "fds", "tasks", "requests", "p99 ms", "failed"
    );
    let mut history: Vec<Vec<Minute>> = vec![Vec::new(), Vec::new()];
    let mut problems: Vec<String> = Vec::new();
    let began = Instant::now();
    for minute in 1..=minutes {
        let before: Vec<u64> = stores
            .iter()
            .map(|s| s.reloads.load(Ordering::Relaxed))
            .collect();
        for soaked in &stores {
            rewrite(&soaked.config, &soaked.config_text, minute);
        }
        // Descriptors and tasks come and go with every new connection and
        // WebSocket: sampled each second, the minute's floor is what stays
        // (a leak raises it), its ceiling is shown beside it.
        let mut floors = vec![(usize::MAX, 0usize, u64::MAX, 0u64); stores.len()];
        let end = began + Duration::from_secs(60 * minute);
        while Instant::now() + Duration::from_secs(1) < end {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for (i, soaked) in stores.iter().enumerate() {
                let (_, fds) = process(soaked.child.0.id());
                let tasks = tasks(soaked.ops).await;
                let f = &mut floors[i];
                *f = (f.0.min(fds), f.1.max(fds), f.2.min(tasks), f.3.max(tasks));
            }
        }
        tokio::time::sleep_until(end.into()).await;
        for (i, soaked) in stores.iter().enumerate() {
            let (rss, _) = process(soaked.child.0.id());
            let (fds, fds_most, tasks, tasks_most) = floors[i];
            let (requests, p99) = soaked.tally.take_minute();
            let failed = soaked.tally.failed.load(Ordering::Relaxed);
            println!(
                "{minute:>6} {:>6} {:>9.1} {:>9} {:>9} {requests:>9} {p99:>8.1} {failed:>7}",
                soaked.store,
                rss as f64 / 1024.0,
                format!("{fds}-{fds_most}"),
                format!("{tasks}-{tasks_most}"),
            );
            if soaked.reloads.load(Ordering::Relaxed) <= before[i] {
                problems.push(format!(
                    "{}: the reload of minute {minute} was not seen",
                    soaked.store
                ));
            }
            history[i].push(Minute { rss_kib: rss, fds });
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(15), client).await {
            problems.push(format!("a client stopped early: {e}"));
        }
    }
    for (i, soaked) in stores.iter().enumerate() {
        let failures = soaked.tally.failures.lock().unwrap();
        if !failures.is_empty() {
            problems.push(format!(
                "{}: {} requests failed, the first: {:?}",
                soaked.store,
                soaked.tally.failed.load(Ordering::Relaxed),
                &failures[..failures.len().min(5)]
            ));
        }
        let Some(base) = history[i].get(1) else {
            continue;
        };
        for (m, later) in history[i].iter().enumerate().skip(2) {
            if later.rss_kib as f64 > base.rss_kib as f64 * GROWTH_LIMIT {
                problems.push(format!(
                    "{}: RSS {} KiB in minute {} is over 110 % of minute 2's {} KiB",
                    soaked.store,
                    later.rss_kib,
                    m + 1,
                    base.rss_kib
                ));
            }
            if later.fds as f64 > base.fds as f64 * GROWTH_LIMIT {
                problems.push(format!(
                    "{}: {} descriptors in minute {} is over 110 % of minute 2's {}",
                    soaked.store,
                    later.fds,
                    m + 1,
                    base.fds
                ));
            }
        }
    }
    drop(stores);
    drop(redis_child);
    if problems.is_empty() {
        println!("soak passed: no request failed, RSS and descriptors within 10 % of minute 2's");
    } else {
        for problem in &problems {
            println!("FAILED: {problem}");
        }
        std::process::exit(1);
    }
}
