//! Test harness: a real upstream HTTP server, a real gateway started
//! in-process on 127.0.0.1:0 with a certificate made for the test, and real
//! HTTPS clients (reqwest for HTTP/1.1 and HTTP/2, raw TLS for bytes that no
//! well-behaved client would send).

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use authgate::{Config, Gateway};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
}

/// A real HTTP/1.1 app. Paths:
/// - `/slow?ms=N`: answers after N ms;
/// - `/download?bytes=N`: streams N zero bytes;
/// - `/upload`: reads the whole body and answers its length;
/// - `/hop`: answers with hop-by-hop headers of its own;
/// - `/plant-cookies`: tries to set the gateway's own cookies, and one of its own;
/// - `/redirect`: a 302 to its own address (also in `Content-Location`,
///   `Refresh` and `Link`); `/redirect-away`: a 302 to another site;
/// - anything else: `hello from upstream`.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

type UpBody = BoxBody<Bytes, Infallible>;

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let seen = seen.clone();
            let connections = connections.clone();
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let seen = seen.clone();
                            async move { Ok::<_, Infallible>(answer(req, &seen, addr).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            }
        });
        Upstream {
            addr,
            seen,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests().pop().expect("the upstream saw a request")
    }

    /// TCP connections the gateway opened to it.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn query_number(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

fn text(body: impl Into<Bytes>) -> UpBody {
    Full::new(body.into()).boxed()
}

async fn answer(
    req: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
    own: SocketAddr,
) -> Response<UpBody> {
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
    });
    match req.uri().path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_number(&req, "ms"))).await;
            Response::new(text("slow answer"))
        }
        "/download" => {
            static CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];
            let total = query_number(&req, "bytes");
            let chunks = total / CHUNK.len() as u64;
            let stream = futures_util::stream::iter(
                (0..chunks).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(&CHUNK)))),
            );
            Response::new(StreamBody::new(stream).boxed())
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => total += frame.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            Response::new(text(total.to_string()))
        }
        "/hop" => Response::builder()
            .header("connection", "x-upstream-secret")
            .header("x-upstream-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("x-kept", "1")
            .body(text("hop"))
            .unwrap(),
        "/plant-cookies" => Response::builder()
            .header("set-cookie", "__Host-authgate=planted; Path=/; Secure")
            .header("set-cookie", "theme=dark; Path=/")
            .header(
                "set-cookie",
                "__HOST-AUTHGATE-login=planted; Path=/; Secure",
            )
            .header(
                "set-cookie",
                "__Host-authgate-anything=planted; Path=/; Secure",
            )
            .header("set-cookie", "lang=en; Path=/")
            .body(text("cookies"))
            .unwrap(),
        "/redirect" => Response::builder()
            .status(302)
            .header("location", format!("http://{own}/landing?from=app"))
            .header("content-location", format!("http://{own}/doc"))
            .header("refresh", format!("3; url=http://{own}/later"))
            .header("link", format!("<http://{own}/other>; rel=next"))
            .body(text("moved"))
            .unwrap(),
        "/redirect-away" => Response::builder()
            .status(302)
            .header("location", "https://idp.example/authorize?x=1")
            .body(text("away"))
            .unwrap(),
        _ => Response::new(text("hello from upstream")),
    }
}

/// Builds a gateway config around a test upstream.
pub struct Setup {
    server: Vec<String>,
    upstream: Vec<String>,
    session: Vec<String>,
    login: Vec<String>,
    upstream_url: Option<String>,
    rules: String,
    users: Option<String>,
    store: Vec<String>,
    lock_wait: Option<Duration>,
    upstream_tables: Option<String>,
    listen: Option<String>,
    certificate: Option<authgate::tls::SelfSigned>,
    users_table: Vec<String>,
}

pub const ALICE_PASSWORD: &str = "alice-password-123";
pub const BOB_PASSWORD: &str = "bob password with spaces";

/// argon2 hashes are slow to make: once per test process.
fn hashes() -> &'static (String, String) {
    static HASHES: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    HASHES.get_or_init(|| {
        (
            authgate::users::password::hash_password(ALICE_PASSWORD),
            authgate::users::password::hash_password(BOB_PASSWORD),
        )
    })
}

/// alice (admin, user), bob (user) and a locked carol (admin) with alice's password.
pub fn default_users() -> String {
    let (alice, bob) = hashes();
    format!(
        "[users.alice]\npassword = \"{alice}\"\nroles = [\"admin\", \"user\"]\n\n\
[users.bob]\npassword = \"{bob}\"\nroles = [\"user\"]\n\n\
[users.carol]\npassword = \"{alice}\"\nroles = [\"admin\"]\nlocked = true\n"
    )
}

pub const DEFAULT_RULES: &str = r#"
[[rule]]
path = "/admin/**"
access = "deny"

[[rule]]
path = "/staff/**"
roles = ["admin"]

[[rule]]
path = "/private/**"
access = "authenticated"

[[rule]]
path = "/**"
access = "public"
"#;

impl Setup {
    pub fn new() -> Setup {
        Setup {
            server: Vec::new(),
            upstream: Vec::new(),
            session: Vec::new(),
            login: Vec::new(),
            upstream_url: None,
            rules: DEFAULT_RULES.to_owned(),
            users: None,
            store: Vec::new(),
            lock_wait: None,
            upstream_tables: None,
            listen: None,
            certificate: None,
            users_table: Vec::new(),
        }
    }

    /// Listens there instead of on a port the system picks (for a peer that
    /// must know the gateway's address before it starts).
    pub fn listen(mut self, addr: &str) -> Setup {
        self.listen = Some(addr.to_owned());
        self
    }

    /// Serves this certificate instead of one made at start.
    pub fn certificate(mut self, certificate: authgate::tls::SelfSigned) -> Setup {
        self.certificate = Some(certificate);
        self
    }

    /// Adds `key = value` to `[users]`.
    pub fn users_line(mut self, line: &str) -> Setup {
        self.users_table.push(line.to_owned());
        self
    }

    /// Adds `key = value` to `[server]`.
    pub fn server(mut self, line: &str) -> Setup {
        self.server.push(line.to_owned());
        self
    }

    /// Adds `key = value` to `[upstream]`.
    pub fn upstream(mut self, line: &str) -> Setup {
        self.upstream.push(line.to_owned());
        self
    }

    /// Adds `key = value` to `[session]`.
    pub fn session(mut self, line: &str) -> Setup {
        self.session.push(line.to_owned());
        self
    }

    /// Adds `key = value` to `[login]`.
    pub fn login(mut self, line: &str) -> Setup {
        self.login.push(line.to_owned());
        self
    }

    /// Adds `key = value` to `[store]` (default: the local file in the test's folder).
    pub fn store(mut self, line: &str) -> Setup {
        self.store.push(line.to_owned());
        self
    }

    /// `[[upstream]]` entries instead of the one `[upstream]` (the test's
    /// own upstream is still started, for `gw.upstream`).
    pub fn upstream_tables(mut self, text: &str) -> Setup {
        self.upstream_tables = Some(text.to_owned());
        self
    }

    /// How long a state-file write waits for another process's lock.
    pub fn lock_wait(mut self, wait: Duration) -> Setup {
        self.lock_wait = Some(wait);
        self
    }

    pub fn users(mut self, text: &str) -> Setup {
        self.users = Some(text.to_owned());
        self
    }

    pub fn upstream_url(mut self, url: &str) -> Setup {
        self.upstream_url = Some(url.to_owned());
        self
    }

    pub fn rules(mut self, rules: &str) -> Setup {
        self.rules = rules.to_owned();
        self
    }

    pub async fn start(self) -> TestGateway {
        match self.try_start().await {
            Ok(gw) => gw,
            Err(e) => panic!("the gateway did not start: {e}"),
        }
    }

    /// Starts the gateway, or says why it did not.
    pub async fn try_start(mut self) -> Result<TestGateway, String> {
        // Tests stop gateways often; the drain delay has a test of its own.
        if !self.server.iter().any(|l| l.starts_with("drain_delay")) {
            self.server.push("drain_delay = \"0s\"".to_owned());
        }
        let upstream = Upstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cert = self
            .certificate
            .take()
            .unwrap_or_else(authgate::tls::self_signed);
        std::fs::write(dir.path().join("gw.crt"), &cert.cert_pem).unwrap();
        std::fs::write(dir.path().join("gw.key"), &cert.key_pem).unwrap();
        std::fs::write(
            dir.path().join("users.toml"),
            self.users.unwrap_or_else(default_users),
        )
        .unwrap();
        let text = format!(
            "[server]\nlisten = \"{}\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n{}\n\n{}\n\n[session]\n{}\n\n[store]\n{}\n\n[users]\nfile = \"users.toml\"\n{}\n\n[login]\n{}\n{}",
            self.listen.as_deref().unwrap_or("127.0.0.1:0"),
            self.server.join("\n"),
            self.upstream_tables.unwrap_or_else(|| format!(
                "[upstream]\nurl = \"{}\"\n{}",
                self.upstream_url.unwrap_or_else(|| upstream.url()),
                self.upstream.join("\n")
            )),
            self.session.join("\n"),
            self.store.join("\n"),
            self.users_table.join("\n"),
            self.login.join("\n"),
            self.rules,
        );
        std::fs::write(dir.path().join("gateway.toml"), &text).unwrap();
        let mut config = Config::parse(&text, &dir.path().join("gateway.toml"))
            .unwrap_or_else(|e| panic!("test config refused:\n{e}\n---\n{text}"));
        if let Some(wait) = self.lock_wait {
            config.store.lock_wait = wait;
        }
        let gateway = Gateway::start(config).await.map_err(|e| e.to_string())?;
        Ok(TestGateway {
            gateway: Some(gateway),
            upstream,
            cert_pem: cert.cert_pem,
            dir,
        })
    }
}

pub struct TestGateway {
    gateway: Option<Gateway>,
    pub upstream: Upstream,
    pub cert_pem: String,
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("not shut down")
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway().addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr())
    }

    /// A client that negotiates HTTP/2 or HTTP/1.1 by ALPN.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    pub fn h1_client(&self) -> reqwest::Client {
        self.client_builder().http1_only().build().unwrap()
    }

    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        https_client_builder(&self.cert_pem)
    }

    /// A raw TLS connection offering only `http/1.1`.
    pub async fn tls(&self) -> TlsStream<TcpStream> {
        tls_connect(self.addr(), &self.cert_pem, &[b"http/1.1"]).await
    }

    /// Sends raw bytes over TLS and returns everything the gateway answers
    /// until it closes the connection (or 5 s pass).
    pub async fn raw(&self, request: &[u8]) -> String {
        let mut tls = self.tls().await;
        tls.write_all(request).await.unwrap();
        read_until_close(&mut tls, Duration::from_secs(5)).await
    }

    pub fn users_file(&self) -> std::path::PathBuf {
        self.dir.path().join("users.toml")
    }

    /// The config file the gateway was started from (for the CLI).
    pub fn config_file(&self) -> std::path::PathBuf {
        self.dir.path().join("gateway.toml")
    }

    pub fn take_gateway(&mut self) -> Gateway {
        self.gateway.take().unwrap()
    }

    /// Opens the sign-in form; returns its CSRF token (also the value of
    /// the login cookie the form set).
    pub async fn login_form(&self, client: &reqwest::Client) -> String {
        let response = client
            .get(self.url("/.gateway/login"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        set_cookie(&response, "__Host-authgate-login").expect("the form sets its CSRF cookie")
    }

    /// Posts the sign-in form with the given token (as cookie and field).
    pub async fn post_login(
        &self,
        client: &reqwest::Client,
        token: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = vec![("csrf", token)];
        form.extend_from_slice(fields);
        self.login_request(client, Some(token), &form)
            .send()
            .await
            .unwrap()
    }

    /// A sign-in POST with exactly these form fields and, if given, the
    /// login cookie; callers add headers (another cookie, `Origin`, ...).
    pub fn login_request(
        &self,
        client: &reqwest::Client,
        cookie_token: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let request = client.post(self.url("/.gateway/login")).form(form);
        match cookie_token {
            Some(token) => request.header("cookie", format!("__Host-authgate-login={token}")),
            None => request,
        }
    }

    /// One sign-in attempt with a fresh form: the gateway's answer.
    pub async fn try_sign_in(&self, user: &str, password: &str) -> reqwest::Response {
        let client = self.client();
        let token = self.login_form(&client).await;
        self.post_login(
            &client,
            &token,
            &[("username", user), ("password", password)],
        )
        .await
    }

    /// Runs `authgate sessions ARGS` against this gateway's config:
    /// (success, stdout, stderr).
    pub fn sessions_cli(&self, args: &[&str]) -> (bool, String, String) {
        let output = authgate()
            .arg("sessions")
            .args(args)
            .arg("-c")
            .arg(self.config_file())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Signs in and returns the session cookie's value.
    pub async fn sign_in(&self, user: &str, password: &str) -> String {
        let client = self.client();
        let token = self.login_form(&client).await;
        let response = self
            .post_login(
                &client,
                &token,
                &[("username", user), ("password", password)],
            )
            .await;
        assert_eq!(response.status(), 303, "sign-in as {user} failed");
        set_cookie(&response, "__Host-authgate").expect("a session cookie")
    }

    /// A GET with the session cookie.
    pub async fn get_as(&self, session: &str, path: &str) -> reqwest::Response {
        self.client()
            .get(self.url(path))
            .header("cookie", format!("__Host-authgate={session}"))
            .send()
            .await
            .unwrap()
    }
}

/// The value a response's `Set-Cookie` gives the cookie `name`.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (k, rest) = v.split_once('=')?;
            (k == name).then(|| rest.split(';').next().unwrap_or("").to_owned())
        })
}

/// The whole `Set-Cookie` line for `name`.
pub fn set_cookie_line(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.split('=').next() == Some(name))
        .map(str::to_owned)
}

pub fn https_client_builder(cert_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
}

pub async fn tls_connect(addr: SocketAddr, cert_pem: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    tls_connect_with(
        addr,
        cert_pem,
        alpn,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
    .await
    .unwrap()
}

pub async fn tls_connect_with(
    addr: SocketAddr,
    cert_pem: &str,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<TlsStream<TcpStream>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

pub async fn read_until_close<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    limit: Duration,
) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Fetches the sign-in form at `base` (`https://host:port`) and posts
/// `user` and `password` with its token, as a browser does; for gateways
/// that are not a [`TestGateway`] (the binary, a second gateway).
pub async fn post_login_at(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    try_post_login_at(client, base, user, password)
        .await
        .unwrap()
}

/// [`post_login_at`] for a gateway that may be gone (killed, say).
pub async fn try_post_login_at(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> reqwest::Result<reqwest::Response> {
    let form = client.get(format!("{base}/.gateway/login")).send().await?;
    let token = set_cookie(&form, "__Host-authgate-login").unwrap_or_default();
    client
        .post(format!("{base}/.gateway/login"))
        .header("cookie", format!("__Host-authgate-login={token}"))
        .form(&[
            ("csrf", token.as_str()),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
}

/// [`post_login_at`] that must succeed; returns the session cookie's value.
pub async fn sign_in_at(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> String {
    let response = post_login_at(client, base, user, password).await;
    assert_eq!(response.status(), 303, "sign-in as {user}");
    set_cookie(&response, "__Host-authgate").expect("a session cookie")
}

/// The built `authgate` binary, with no config or log filter from the environment.
pub fn authgate() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"));
    command
        .env_remove("AUTHGATE_CONFIG")
        .env_remove("AUTHGATE_LOG");
    command
}

/// Writes a config next to a fresh certificate, for the binary's tests.
/// Runs `command` with `input` on its stdin; what it printed and how it ended.
pub fn output_with_stdin(mut command: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `authgate check -c config`: whether it passed, and what it said on stderr.
pub fn check(config: &Path) -> (bool, String) {
    let out = authgate()
        .args(["check", "-c"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn write_config(dir: &Path, upstream: &str, extra_server: &str) -> std::path::PathBuf {
    // SIGTERM tests stop at once; the drain delay has a test of its own.
    let drain = if extra_server.contains("drain_delay") {
        ""
    } else {
        "drain_delay = \"0s\"\n"
    };
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.join("gw.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("gw.key"), &cert.key_pem).unwrap();
    std::fs::write(dir.join("users.toml"), default_users()).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n{drain}{extra_server}\n\n[upstream]\nurl = \"{upstream}\"\n\n[users]\nfile = \"users.toml\"\n{DEFAULT_RULES}"
        ),
    )
    .unwrap();
    path
}

/// Publishes `files` into `dir` as the kubelet publishes a ConfigMap or
/// Secret volume: into a new folder `version`, then `..data` is pointed at
/// it by renaming a new link over the old one, and each `dir/NAME` is (made)
/// a link to `..data/NAME`.
pub fn kube_publish(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let link = |target: &str, at: &str| {
        let temp = dir.join(format!("{at}.tmp-link"));
        std::os::unix::fs::symlink(target, &temp).unwrap();
        std::fs::rename(&temp, dir.join(at)).unwrap();
    };
    std::fs::create_dir(dir.join(version)).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(version).join(name), text).unwrap();
    }
    link(version, "..data");
    for (name, _) in files {
        if !dir.join(name).is_symlink() {
            link(&format!("..data/{name}"), name);
        }
    }
}

/// A loopback port nothing listens on now, for servers that cannot be
/// told to take port 0 (redis-server, nginx).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `text` with its first uncommented `key = ...` line (any section) set
/// to `key = value`: a shipped config's addresses become the test's own
/// (a free port, its upstream) whatever they were.
pub fn set_key(text: &str, key: &str, value: &str) -> String {
    let mut done = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let is_key = line
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='));
            if !done && is_key {
                done = true;
                format!("{key} = {value}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(done, "no `{key} =` line to set");
    lines.join("\n") + "\n"
}

/// Reads stderr lines until one contains `needle`; returns it.
pub fn wait_for_line(lines: &mut impl Iterator<Item = String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in lines.by_ref() {
        if line.contains(needle) {
            return line;
        }
        assert!(Instant::now() < deadline, "no line with {needle:?}");
    }
    panic!("output ended before a line with {needle:?}");
}

pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts the binary with `args` then `config`, its stderr as lines.
pub fn spawn_run(
    args: &[&str],
    config: &std::path::Path,
) -> (Running, impl Iterator<Item = String>) {
    let mut command = authgate();
    command.args(args).arg(config);
    spawn_lines(command)
}

/// Starts `command`, its stderr as lines.
pub fn spawn_lines(mut command: Command) -> (Running, impl Iterator<Item = String>) {
    let mut child = Running(command.stderr(Stdio::piped()).spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx.into_iter())
}

pub async fn wait_for_exit(child: &mut Running) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
