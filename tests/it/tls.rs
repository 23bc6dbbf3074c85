//! TLS termination: key formats, protocol versions, ALPN, the HTTP redirect.

use std::path::Path;

use authgate::{Config, Gateway};
use tokio::io::AsyncWriteExt;

use crate::support::{read_until_close, tls_connect_with, Setup, Upstream};

async fn gateway_with_fixture(cert: &str, key: &str) -> (Gateway, String, Upstream) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let upstream = Upstream::start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"{cert}\"\nkey = \"{key}\"\n[upstream]\nurl = \"{}\"\n[[rule]]\npath = \"/**\"\naccess = \"public\"\n",
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
