//! TLS termination: key formats, protocol versions, ALPN, the HTTP redirect.

use std::path::Path;

use authgate::{Config, Gateway};
use tokio::io::AsyncWriteExt;

use crate::support::{read_until_close, tls_connect_with, Setup, Upstream};

async fn gateway_with_fixture(cert: &str, key: &str) -> (Gateway, String, Upstream) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let upstream = Upstream::start().await;
    let text = format!(
        // A memory store: nothing is written into the source tree.
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"{cert}\"\nkey = \"{key}\"\n[store]\nbackend = \"memory\"\n[upstream]\nurl = \"{}\"\n[[rule]]\npath = \"/**\"\naccess = \"public\"\n",
        upstream.url()
    );
    let config = Config::parse(&text, &fixtures.join("gateway.toml")).unwrap();
    let pem = std::fs::read_to_string(fixtures.join(cert)).unwrap();
    (Gateway::start(config).await.unwrap(), pem, upstream)
}

#[tokio::test]
async fn serves_with_pkcs8_rsa_and_sec1_keys() {
    for (cert, key) in [
        ("rsa.crt", "rsa-pkcs1.key"),
        ("ec.crt", "ec-sec1.key"),
        ("ec.crt", "ec-pkcs8.key"),
    ] {
        let (gateway, pem, _upstream) = gateway_with_fixture(cert, key).await;
        let client = crate::support::https_client_builder(&pem).build().unwrap();
        let response = client
            .get(format!("https://{}/", gateway.addr()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        assert_eq!(response.status(), 200, "{key}");
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn speaks_tls_1_2_and_1_3_and_offers_h2_then_http1() {
    let gw = Setup::new().start().await;
    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let tls = tls_connect_with(gw.addr(), &gw.cert_pem, &[b"h2", b"http/1.1"], &[version])
            .await
            .unwrap();
        let (_, session) = tls.get_ref();
        assert_eq!(session.protocol_version(), Some(expected));
        assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    }
    let mut tls = tls_connect_with(
        gw.addr(),
        &gw.cert_pem,
        &[b"http/1.1"],
        &[&rustls::version::TLS13],
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_close(&mut tls, std::time::Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn plain_http_listener_redirects_to_https_with_308() {
    let gw = Setup::new()
        .server("redirect_http = \"127.0.0.1:0\"")
        .start()
        .await;
    let plain = gw.gateway().redirect_addr().unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{plain}/some/page?x=1"))
        .header("host", "app.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        format!("https://app.example:{}/some/page?x=1", gw.addr().port()).as_str()
    );
    let bad = client
        .get(format!("http://{plain}/"))
        .header("host", "evil.example/@x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(gw.upstream.requests().is_empty());
}

/// A ClientHello offering at most `version` (0x0302 = TLS 1.1, 0x0303 =
/// TLS 1.2), built by hand: no TLS library here will send an old one. It
/// offers suites and groups the gateway supports, so that the version is the
/// only thing that can make it fail.
fn client_hello(version: u16) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    let suites: [u16; 4] = [0xc02f, 0xc02b, 0xc030, 0xcca8]; // ECDHE AES-GCM, ChaCha20
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let extensions: [&[u8]; 3] = [
        &[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17], // groups: x25519, P-256
        &[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00],                         // point formats
        &[
            0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
        ], // signature algorithms
    ];
    let length: usize = extensions.iter().map(|e| e.len()).sum();
    body.extend_from_slice(&(length as u16).to_be_bytes());
    for extension in extensions {
        body.extend_from_slice(extension);
    }
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

async fn first_record(addr: std::net::SocketAddr, hello: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    answer.truncate(n);
    answer
}

#[tokio::test]
async fn tls_1_1_and_older_are_refused() {
    let gw = Setup::new().start().await;
    // The same hello offering TLS 1.2 is answered with a ServerHello ...
    let modern = first_record(gw.addr(), &client_hello(0x0303)).await;
    assert_eq!(modern.first(), Some(&0x16), "answer: {modern:?}");
    // ... offering at most TLS 1.1, with a fatal protocol_version alert.
    let old = first_record(gw.addr(), &client_hello(0x0302)).await;
    assert!(old.len() >= 7, "answer: {old:?}");
    assert_eq!((old[0], old[5], old[6]), (0x15, 2, 70), "answer: {old:?}");
}

/// The certificate a new handshake gets, trusting any of `roots` (PEM).
async fn served_certificate(addr: std::net::SocketAddr, roots: &str) -> Vec<u8> {
    let tls = tls_connect_with(addr, roots, &[b"http/1.1"], &[&rustls::version::TLS13])
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Replaces a file the way cert-manager and kubelet do: a new file renamed over.
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_serves_new_handshakes_and_a_broken_one_is_refused() {
    let log = crate::logs::captured();
    let gw = Setup::new().start().await;
    let first = gw.cert_pem.clone();
    let second = authgate::tls::self_signed();
    let roots = format!("{first}{}", second.cert_pem);
    assert_eq!(served_certificate(gw.addr(), &roots).await, der_of(&first));

    // A connection made before the renewal goes on with the old pair.
    let mut old = crate::support::tls_connect(gw.addr(), &first, &[b"http/1.1"]).await;

    let dir = gw.dir.path();
    replace(&dir.join("gw.key"), &second.key_pem);
    replace(&dir.join("gw.crt"), &second.cert_pem);
    crate::admin::within(std::time::Duration::from_secs(3), || async {
        served_certificate(gw.addr(), &roots).await == der_of(&second.cert_pem)
    })
    .await;
    old.write_all(
        format!(
            "GET /x HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            gw.addr()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = read_until_close(&mut old, std::time::Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A key that does not fit the certificate: refused, the second pair stays.
    let third = authgate::tls::self_signed();
    replace(&dir.join("gw.crt"), &third.cert_pem);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        served_certificate(gw.addr(), &roots).await,
        der_of(&second.cert_pem)
    );
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let crt = dir.join("gw.crt").display().to_string();
    assert!(
        logged.lines().any(
            |l| l.contains("is not usable; the one in force keeps serving")
                && l.contains(&serde_json::to_string(&crt).unwrap())
        ),
        "the refused pair was not logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_volume_swap_renews_the_certificate() {
    let gw = Setup::new().start().await;
    let dir = gw.dir.path();
    let first = gw.cert_pem.clone();
    let second = authgate::tls::self_signed();
    let roots = format!("{first}{}", second.cert_pem);
    // gw.crt and gw.key become links into a Secret-style volume ...
    let key = std::fs::read_to_string(dir.join("gw.key")).unwrap();
    crate::support::kube_publish(dir, "..v1", &[("gw.crt", &first), ("gw.key", &key)]);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(served_certificate(gw.addr(), &roots).await, der_of(&first));
    // ... and cert-manager's renewal swaps both at once.
    crate::support::kube_publish(
        dir,
        "..v2",
        &[("gw.crt", &second.cert_pem), ("gw.key", &second.key_pem)],
    );
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    crate::admin::within(std::time::Duration::from_secs(3), || async {
        served_certificate(gw.addr(), &roots).await == der_of(&second.cert_pem)
    })
    .await;
}
