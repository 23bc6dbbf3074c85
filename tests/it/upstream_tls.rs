//! An `https://` upstream (issue 12, point 6): verified against a CA from
//! the config, named by SNI, HTTP/2 or HTTP/1.1 by ALPN, and mutual TLS
//! with a client certificate. Certificates are made by rcgen per test.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::support::Setup;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `names` from `ca`: (cert PEM, key PEM).
fn issue(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// An HTTPS app: answers with the HTTP version it was spoken to in, and
/// whether the client showed a certificate. `client_ca`: require one.
async fn https_app(server: &Ca, alpn: &[&[u8]], client_ca: Option<&Ca>) -> String {
    let (cert, key) = issue(server, &["127.0.0.1", "localhost"]);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client_cert = tls.get_ref().1.peer_certificates().is_some();
                let sni: Arc<str> = tls.get_ref().1.server_name().unwrap_or("-").into();
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let sni = sni.clone();
                    async move {
                        let body = format!(
                            "version={:?} client_cert={client_cert} sni={sni} user={}",
                            req.version(),
                            req.headers()
                                .get("x-auth-user")
                                .map_or("-", |v| v.to_str().unwrap())
                        );
                        Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from(
                            body,
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    url
}

async fn body_of(gw: &crate::support::TestGateway) -> (u16, String) {
    let response = gw.client().get(gw.url("/app")).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_verified_against_its_ca_and_spoken_to_by_alpn() {
    let server_ca = ca("app CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("app-ca.pem");
    std::fs::write(&ca_file, &server_ca.pem).unwrap();

    for (alpn, version) in [
        (&[&b"h2"[..], b"http/1.1"][..], "HTTP/2.0"),
        (&[&b"http/1.1"[..]][..], "HTTP/1.1"),
    ] {
        // By name: the name is checked against the certificate and sent as SNI.
        let url = https_app(&server_ca, alpn, None)
            .await
            .replace("127.0.0.1", "localhost");
        let gw = Setup::new()
            .upstream_url(&url)
            .upstream(&format!("ca = \"{}\"", ca_file.display()))
            .start()
            .await;
        let (status, body) = body_of(&gw).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with(&format!("version={version}")), "{body}");
        assert!(body.contains("sni=localhost"), "{body}");
    }

    // Another CA's certificate: refused, 502.
    let stranger = ca("someone else");
    let url = https_app(&stranger, &[b"http/1.1"], None).await;
    let gw = Setup::new()
        .upstream_url(&url)
        .upstream(&format!("ca = \"{}\"", ca_file.display()))
        .start()
        .await;
    assert_eq!(body_of(&gw).await.0, 502);
}

#[test]
fn tls_keys_are_for_https_upstreams_and_come_in_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.path().join("gw.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("gw.key"), &cert.key_pem).unwrap();
    let head =
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\n";
    for (upstream, needle) in [
        (
            "url = \"http://127.0.0.1:1\"\nca = \"gw.crt\"",
            ":7:6: ca is for an https:// upstream",
        ),
        (
            "url = \"https://127.0.0.1:1\"\nclient_cert = \"gw.crt\"",
            ":7:15: client_cert and client_key go together",
        ),
        (
            "url = \"https://127.0.0.1:1\"\nca = \"missing.pem\"",
            ":7:6: cannot read certificate file",
        ),
        (
            "url = \"ftp://127.0.0.1:1\"",
            ":6:7: upstream url must start with http:// or https://",
        ),
    ] {
        let text = format!("{head}{upstream}\n");
        let found = match authgate::Config::parse(&text, &dir.path().join("gateway.toml")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }
    let good = format!("{head}url = \"https://127.0.0.1:1\"\nca = \"gw.crt\"\nclient_cert = \"gw.crt\"\nclient_key = \"gw.key\"\n");
    let config = authgate::Config::parse(&good, &dir.path().join("gateway.toml")).unwrap();
    assert!(config.upstreams[0].tls.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_the_upstream_with_a_client_certificate() {
    let server_ca = ca("app CA");
    let client_ca = ca("gateway clients");
    let url = https_app(&server_ca, &[b"http/1.1"], Some(&client_ca)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app-ca.pem"), &server_ca.pem).unwrap();
    let (cert, key) = issue(&client_ca, &["authgate"]);
    std::fs::write(dir.path().join("client.pem"), cert).unwrap();
    std::fs::write(dir.path().join("client.key"), key).unwrap();
    let file = |name: &str| dir.path().join(name).display().to_string();

    let with_cert = Setup::new()
        .upstream_url(&url)
        .upstream(&format!("ca = \"{}\"", file("app-ca.pem")))
        .upstream(&format!("client_cert = \"{}\"", file("client.pem")))
        .upstream(&format!("client_key = \"{}\"", file("client.key")))
        .start()
        .await;
    let (status, body) = body_of(&with_cert).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("client_cert=true"), "{body}");

    let without = Setup::new()
        .upstream_url(&url)
        .upstream(&format!("ca = \"{}\"", file("app-ca.pem")))
        .start()
        .await;
    assert_eq!(
        body_of(&without).await.0,
        502,
        "the app wants a certificate"
    );
}
