//! What a request with an API token costs next to one with a session
//! cookie (issue 29: within 5 %), and one with a provider's JWT once its
//! key is cached (within 10 %), measured side by side in one run: the
//! same gateway, upstream and client, rounds taken in turn so that the
//! machine's noise falls on all. The provider is the tests' own (real
//! HTTPS, discovery, ES256 keys; `tests/it/oidc_fake.rs`). Prints the
//! process CPU and wall time per request of each and the ratios. Run
//! with `cargo bench --bench tokens`.

#[path = "../tests/it/oidc_fake.rs"]
#[allow(dead_code)]
mod oidc_fake;

mod common;
use common::{cookie, cpu, post_sign_in, upstream};

use std::time::{Duration, Instant};

use authgate::{Config, Gateway};

const PASSWORD: &str = "bench-password-123";
const CLIENTS: usize = 8;
const PER_ROUND: usize = 4_000;
const ROUNDS: usize = 6;

/// `PER_ROUND` requests over `CLIENTS` keep-alive connections, each with
/// `header`: (CPU, wall) per request.
async fn round(base: &str, cert: &str, header: (&'static str, String)) -> (Duration, Duration) {
    let clients: Vec<reqwest::Client> = (0..CLIENTS)
        .map(|_| {
            reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
                .http1_only()
                .build()
                .unwrap()
        })
        .collect();
    // Warm the connections.
    for client in &clients {
        let r = client
            .get(format!("{base}/api/x"))
            .header(header.0, &header.1)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", header.0);
    }
    let cpu_before = cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in clients {
        let url = format!("{base}/api/x");
        let header = header.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..PER_ROUND / CLIENTS {
                let r = client
                    .get(&url)
                    .header(header.0, &header.1)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let n = PER_ROUND as u32;
    ((cpu() - cpu_before) / n, started.elapsed() / n)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let provider = oidc_fake::FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("idp-ca.pem"), &provider.cert_pem).unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.path().join("gw.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("gw.key"), &cert.key_pem).unwrap();
    let hash = authgate::users::password::hash_password(PASSWORD);
    std::fs::write(
        dir.path().join("users.toml"),
        format!("[users.alice]\npassword = \"{hash}\"\nroles = [\"user\"]\n"),
    )
    .unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"{}\"\n[users]\nfile = \"users.toml\"\n[[rule]]\npath = \"/**\"\naccess = \"authenticated\"\ntokens = true\n[[bearer]]\nname = \"idp\"\nissuer = \"{}\"\naudience = \"https://api.bench\"\nca = \"idp-ca.pem\"\n",
        upstream().await,
        provider.issuer(),
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    // Quiet: the access lines of 40,000 requests would measure stderr.
    let config = Config::parse(&text, &path).unwrap();
    let gateway = Gateway::start(config).await.unwrap();
    let base = format!("https://{}", gateway.addr());
    let token = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["token", "create", "alice", "--name", "bench", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (_, answer) = post_sign_in(&client, &base, "alice", PASSWORD).await;
    let session = cookie(&answer, "__Host-authgate");
    // The running gateway reads the command line's token within 0.4 s.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = provider.sign(
        &serde_json::json!({
            "iss": provider.issuer(), "aud": "https://api.bench", "sub": "robot",
            "iat": now, "exp": now + 3600,
        }),
        &serde_json::json!({}),
    );

    let mut jwt_cpu = Vec::new();
    let mut jwt_wall = Vec::new();
    let mut cookie_cpu = Vec::new();
    let mut token_cpu = Vec::new();
    let mut cookie_wall = Vec::new();
    let mut token_wall = Vec::new();
    // Each round takes the three in another order, so that none always
    // follows the same one.
    let headers = [
        ("cookie", format!("__Host-authgate={session}")),
        ("authorization", format!("Bearer {token}")),
        ("authorization", format!("Bearer {jwt}")),
    ];
    for r in 0..ROUNDS {
        for i in 0..3 {
            let which = (r + i) % 3;
            let (c, w) = round(&base, &cert.cert_pem, headers[which].clone()).await;
            match which {
                0 => {
                    cookie_cpu.push(c);
                    cookie_wall.push(w);
                }
                1 => {
                    token_cpu.push(c);
                    token_wall.push(w);
                }
                _ => {
                    jwt_cpu.push(c);
                    jwt_wall.push(w);
                }
            }
        }
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (cc, tc) = (median(cookie_cpu), median(token_cpu));
    let (cw, tw) = (median(cookie_wall), median(token_wall));
    println!("requests: {CLIENTS} keep-alive clients, {PER_ROUND} a round, {ROUNDS} rounds each, medians");
    println!(
        "session cookie: {:6.1} us CPU, {:6.1} us wall per request",
        cc.as_secs_f64() * 1e6,
        cw.as_secs_f64() * 1e6
    );
    println!(
        "API token:      {:6.1} us CPU, {:6.1} us wall per request",
        tc.as_secs_f64() * 1e6,
        tw.as_secs_f64() * 1e6
    );
    let (jc, jw) = (median(jwt_cpu), median(jwt_wall));
    println!(
        "provider JWT:   {:6.1} us CPU, {:6.1} us wall per request",
        jc.as_secs_f64() * 1e6,
        jw.as_secs_f64() * 1e6
    );
    println!(
        "token / cookie: {:.3}x CPU, {:.3}x wall (target: within 1.05x)",
        tc.as_secs_f64() / cc.as_secs_f64(),
        tw.as_secs_f64() / cw.as_secs_f64()
    );
    println!(
        "JWT / cookie:   {:.3}x CPU, {:.3}x wall (target: within 1.10x)",
        jc.as_secs_f64() / cc.as_secs_f64(),
        jw.as_secs_f64() / cw.as_secs_f64()
    );
}
