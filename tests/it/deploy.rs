//! Running it like infrastructure (issue 13): `authgate healthcheck`, the
//! image's config and user, and the example manifests checked against the
//! config they ship.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::{authgate, spawn_run, wait_for_line, Running, Upstream};

/// A plain HTTP server answering every request with the status in `status`.
async fn ops_stand_in(status: Arc<AtomicU16>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let code = status.load(Ordering::SeqCst);
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(code)
                                .body(Full::new(bytes::Bytes::from_static(b"x")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (port, task)
}

fn healthcheck(args: &[&str], config: &Path) -> (bool, String) {
    let out = authgate()
        .arg("healthcheck")
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_asks_the_ops_listener_the_config_names() {
    let status = Arc::new(AtomicU16::new(200));
    let (port, server) = ops_stand_in(status.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    // A wildcard address is asked on loopback.
    std::fs::write(
        &config,
        format!("[server]\nops_listen = \"0.0.0.0:{port}\"\n"),
    )
    .unwrap();
    let (ok, text) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || healthcheck(&[], &config)
    })
    .await
    .unwrap();
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/healthz")),
        "{text}"
    );

    status.store(503, Ordering::SeqCst);
    let (ok, text) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || healthcheck(&[], &config)
    })
    .await
    .unwrap();
    assert!(!ok, "a 503 passed: {text}");
    assert!(text.contains("503"), "{text}");

    server.abort();
    let _ = server.await;
    let (ok, text) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || healthcheck(&[], &config)
    })
    .await
    .unwrap();
    assert!(!ok, "nothing listening passed: {text}");

    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let (ok, text) = healthcheck(&[], &config);
    assert!(!ok);
    assert!(text.contains("no [server] ops_listen"), "{text}");
}

/// The `-e` expressions of the Dockerfile's `sed -i` over the shipped config.
fn dockerfile_edits(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.contains("sed -i") && l.contains("/etc/authgate/gateway.toml"))
        .expect("the Dockerfile edits the shipped config with sed");
    line.split("-e '")
        .skip(1)
        .map(|part| part.split('\'').next().unwrap().to_owned())
        .collect()
}

/// The value of the first `INSTRUCTION` line of the Dockerfile's last stage.
fn instruction<'a>(dockerfile: &'a str, name: &str) -> &'a str {
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    last_stage
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in the run stage"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_config_serves_from_a_read_only_folder_and_checks_itself() {
    let dockerfile = include_str!("../../Dockerfile");
    // Non-root, the config where AUTHGATE_CONFIG says, the state in the volume.
    let user = instruction(dockerfile, "USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert_eq!(
        instruction(dockerfile, "ENV"),
        "AUTHGATE_CONFIG=/etc/authgate/gateway.toml"
    );
    assert_eq!(instruction(dockerfile, "VOLUME"), "/var/lib/authgate");
    let joined = dockerfile.replace("\\\n", " ");
    let health = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    assert!(
        health.contains(r#"CMD ["/usr/local/bin/authgate", "healthcheck"]"#),
        "{health}"
    );

    // The shipped config with the image's edits, in a folder laid out as the
    // image's: /etc/authgate (read-only) and the volume.
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc");
    let volume = root.path().join("var-lib-authgate");
    std::fs::create_dir_all(etc.join("certs")).unwrap();
    std::fs::create_dir(&volume).unwrap();
    let config = etc.join("gateway.toml");
    std::fs::write(&config, include_str!("../../gateway.toml")).unwrap();
    let mut sed = std::process::Command::new("sed");
    sed.arg("-i");
    for edit in dockerfile_edits(dockerfile) {
        sed.arg("-e").arg(edit);
    }
    assert!(sed.arg(&config).status().unwrap().success());
    let edited = std::fs::read_to_string(&config).unwrap();
    assert!(
        edited.contains("\nops_listen = \"127.0.0.1:9090\"\n"),
        "{edited}"
    );
    assert!(edited.contains("\npath = \"/var/lib/authgate/authgate-state.db\"\n"));
    // Loopback and free ports for the test; the volume where it is mounted here.
    let upstream = Upstream::start().await;
    let edited = edited
        .replace("/var/lib/authgate", volume.to_str().unwrap())
        .replace("\"0.0.0.0:8443\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9090\"", "\"127.0.0.1:0\"")
        .replace("http://127.0.0.1:3000", &upstream.url());
    std::fs::write(&config, edited).unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(etc.join("certs/gateway.crt"), &cert.cert_pem).unwrap();
    std::fs::write(etc.join("certs/gateway.key"), &cert.key_pem).unwrap();
    std::fs::write(etc.join("users.toml"), crate::support::default_users()).unwrap();
    let before = listing(&etc);

    let (mut child, mut lines) = spawn_run(&["run", "-c"], &config);
    let serving = wait_for_line(&mut lines, "authgate is serving");
    let ops = serving
        .split("ops_listen=Some(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no ops address in {serving:?}"))
        .to_owned();
    let listen = serving
        .split("listen=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_owned();
    let url = format!("http://{ops}/healthz");
    let (ok, text) = healthcheck(&["--url", &url], &config);
    assert!(ok, "{text}");

    // It serves; its state file is in the volume, and the config folder is untouched.
    let client = crate::support::https_client_builder(&cert.cert_pem)
        .build()
        .unwrap();
    let base = format!("https://{listen}");
    let page = client
        .get(format!("{base}/.gateway/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(volume.join("authgate-state.db").exists());
    assert_eq!(
        listing(&etc),
        before,
        "the gateway wrote into its config folder"
    );

    crate::support::sigterm(&child.0);
    assert!(crate::support::wait_for_exit(&mut child).await.success());
    let (ok, _) = healthcheck(&["--url", &url], &config);
    assert!(!ok, "a stopped gateway passed its health check");
    drop::<Running>(child);
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir);
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = entry.metadata().unwrap();
        names.push(format!(
            "{} {} {:?}",
            path.display(),
            meta.len(),
            meta.modified().unwrap()
        ));
        if meta.is_dir() {
            names.extend(walk(&path));
        }
    }
    names
}
