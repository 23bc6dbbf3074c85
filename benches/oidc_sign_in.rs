//! What a sign-in through an OpenID provider costs (issue 26), next to a
//! local password sign-in measured in the same run: the wall time from the
//! provider's answer (the callback) to the first proxied request, and the
//! CPU the whole process spends per sign-in. The provider is the tests'
//! own (real HTTPS, discovery, ES256 keys; `tests/it/oidc_fake.rs`), in
//! this process, so its token signing is in the CPU figure too. Run with
//! `cargo bench --bench oidc_sign_in`.

#[path = "../tests/it/oidc_fake.rs"]
#[allow(dead_code)]
mod oidc_fake;

mod common;
use common::{cookie, cpu, post_sign_in, upstream};

use std::time::{Duration, Instant};

use authgate::{Config, Gateway};
use oidc_fake::FakeProvider;

/// Below the 30 provider sign-ins one client may start a minute.
const ROUNDS: usize = 25;
const PASSWORD: &str = "bench-password-123";

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
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
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
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
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"{}\"\n[store]\nbackend = \"memory\"\n[users]\nfile = \"users.toml\"\n[login]\nmax_failures = 1000\n[[rule]]\npath = \"/**\"\naccess = \"authenticated\"\n{}",
        upstream().await,
        provider.config(dir.path(), "fake", "")
    );
    let config = Config::parse(&text, &dir.path().join("gateway.toml")).unwrap();
    let gateway = Gateway::start(config).await.unwrap();
    let base = format!("https://{}", gateway.addr());
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(provider.cert_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Local: the password form's POST, then the first proxied request.
    let mut local = Vec::with_capacity(ROUNDS);
    let cpu_before = cpu();
    for _ in 0..ROUNDS {
        let (started, signed_in) = post_sign_in(&client, &base, "alice", PASSWORD).await;
        assert_eq!(signed_in.status(), 303);
        first_request(&client, &base, &cookie(&signed_in, "__Host-authgate")).await;
        local.push(started.elapsed());
    }
    let local_cpu = (cpu() - cpu_before) / ROUNDS as u32;

    // Through the provider: from the callback to the first proxied request.
    let mut oidc = Vec::with_capacity(ROUNDS);
    let cpu_before = cpu();
    for _ in 0..ROUNDS {
        let start = client
            .get(format!("{base}/.gateway/oidc/fake/start?next=/"))
            .send()
            .await
            .unwrap();
        let pre_login = cookie(&start, "__Host-authgate-oidc");
        let authorize = start.headers()["location"].to_str().unwrap().to_owned();
        let callback = client.get(authorize).send().await.unwrap().headers()["location"]
            .to_str()
            .unwrap()
            .to_owned();
        let started = Instant::now();
        let signed_in = client
            .get(callback)
            .header("cookie", format!("__Host-authgate-oidc={pre_login}"))
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), 303);
        first_request(&client, &base, &cookie(&signed_in, "__Host-authgate")).await;
        oidc.push(started.elapsed());
    }
    let oidc_cpu = (cpu() - cpu_before) / ROUNDS as u32;

    let (local, oidc) = (median(local), median(oidc));
    println!("local sign-in: POST /.gateway/login to first proxied request: median {local:?}, CPU {local_cpu:?} per sign-in");
    println!(
        "provider sign-in: callback to first proxied request: median {oidc:?} ({:.2}x local), CPU {oidc_cpu:?} per whole sign-in (start, provider, callback; {:.2}x local)",
        oidc.as_secs_f64() / local.as_secs_f64(),
        oidc_cpu.as_secs_f64() / local_cpu.as_secs_f64()
    );
}

async fn first_request(client: &reqwest::Client, base: &str, session: &str) {
    let answer = client
        .get(format!("{base}/app"))
        .header("cookie", format!("__Host-authgate={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}
