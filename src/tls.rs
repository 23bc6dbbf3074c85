//! TLS termination: PEM loading and the rustls server config.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot read key file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("certificate and key do not fit together: {0}")]
    Mismatch(rustls::Error),
}

/// Reads a PEM chain: the server's certificate first, then intermediates.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::Certificate {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if chain.is_empty() {
        return Err(error("no PEM certificate in it".into()));
    }
    Ok(chain)
}

/// Reads a PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let error = |reason: String| TlsError::Key {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            error("no PEM private key (PKCS#8, RSA or EC) in it".into())
        }
        other => error(other.to_string()),
    })
}

/// TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`; the certificate is
/// whatever `certificate` holds at each handshake.
pub fn server_config(
    certificate: Arc<RotatingCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Mismatch)?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How often the certificate and key files are looked at.
pub const CERT_POLL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The gateway's certificate and key, read from their files and swapped
/// whole when the files change (cert-manager renewals, a Kubernetes
/// Secret's symlink swap): new handshakes get the new pair, established
/// connections keep theirs, and a pair that does not load or does not fit
/// together is refused with a log line while the old one keeps serving.
#[derive(Debug)]
pub struct RotatingCert {
    current: arc_swap::ArcSwap<rustls::sign::CertifiedKey>,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
}

impl RotatingCert {
    /// The private key's file.
    pub fn key_path(&self) -> &std::path::Path {
        &self.key_path
    }
}

impl rustls::server::ResolvesServerCert for RotatingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What identifies a file's content without reading it: device, inode,
/// size and modification time of what the path leads to (links followed).
pub fn fingerprint(path: &Path) -> Option<(u64, u64, u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.len(), meta.modified().ok()?))
}

impl RotatingCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<RotatingCert, TlsError> {
        Ok(RotatingCert {
            current: arc_swap::ArcSwap::from_pointee(Self::read(cert_path, key_path)?),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        })
    }

    /// When the certificate in force stops being valid (its leaf's
    /// notAfter, Unix seconds); `None` if it cannot be read.
    pub fn expires_at(&self) -> Option<i64> {
        let current = self.current.load();
        let leaf = current.cert.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(parsed.validity().not_after.timestamp())
    }

    /// A throwaway self-signed pair under the configured paths, for the
    /// policy commands when those files are missing or broken: they never
    /// serve, and this is never watched.
    pub fn stand_in(cert_path: &Path, key_path: &Path) -> RotatingCert {
        use rustls::pki_types::pem::PemObject;
        let pair = self_signed();
        let chain = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("rcgen writes a valid PEM certificate");
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())
            .expect("rcgen writes a valid PEM key");
        let provider = rustls::crypto::ring::default_provider();
        let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)
            .expect("rcgen's key fits its certificate");
        RotatingCert {
            current: arc_swap::ArcSwap::from_pointee(certified),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        }
    }

    /// The certificate and key files, as configured (resolved).
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert_path, &self.key_path)
    }

    fn read(cert_path: &Path, key_path: &Path) -> Result<rustls::sign::CertifiedKey, TlsError> {
        let chain = load_certs(cert_path)?;
        let key = load_key(key_path)?;
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(TlsError::Mismatch)
    }

    /// Looks at the files every [`CERT_POLL_EVERY`] and puts a changed,
    /// valid pair in force. Ends when the certificate is dropped.
    pub fn watch(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let mut seen = (fingerprint(&self.cert_path), fingerprint(&self.key_path));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CERT_POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { break };
                let now = (fingerprint(&me.cert_path), fingerprint(&me.key_path));
                if now == seen {
                    continue;
                }
                seen = now;
                match Self::read(&me.cert_path, &me.key_path) {
                    Ok(pair) => {
                        me.current.store(Arc::new(pair));
                        tracing::info!(cert = %me.cert_path.display(), "new certificate in force for new connections");
                    }
                    // A half-written pair shows up as a change too: the next
                    // change (the other file) is looked at again.
                    Err(e) => {
                        tracing::error!(cert = %me.cert_path.display(), error = %e, "the changed certificate or key is not usable; the one in force keeps serving")
                    }
                }
            }
        });
    }
}

/// How the gateway checks an `https://` upstream and, for mutual TLS, who
/// it says it is. There is no switch that skips verification.
pub fn client_config(
    ca: Option<Vec<CertificateDer<'static>>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(certs) => {
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("a CA certificate is not usable: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "the system has no root certificates; name the upstream's CA with ca = \"...\""
                        .into(),
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the client certificate and key do not fit together: {e}")),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, for the demo and tests.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn self_signed() -> SelfSigned {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)
        .expect("rcgen makes a certificate for fixed, valid names");
    SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    }
}
