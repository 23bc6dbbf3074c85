//! An OpenID provider the test controls, for the refusal cases: real HTTPS
//! on 127.0.0.1:0, real discovery, a JWKS of ES256 keys the test rotates,
//! an authorization endpoint that approves at once, and a token endpoint
//! that checks the code, the PKCE verifier and the redirect URI and hands
//! out an ID token the test may tamper with. The whole flow against a
//! certified provider is in `oidc.rs`, against `oidc-provider`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const CLIENT_ID: &str = "authgate-test";
pub const CLIENT_SECRET: &str = "test-client-secret";

/// A signing key and the JWK that publishes it.
pub struct Key {
    pub kid: String,
    pair: rcgen::KeyPair,
}

impl Key {
    pub fn new(kid: &str) -> Key {
        Key {
            kid: kid.to_owned(),
            pair: rcgen::KeyPair::generate().unwrap(),
        }
    }

    pub fn jwk(&self) -> Value {
        let raw = self.pair.public_key_raw();
        assert_eq!(raw[0], 4, "an uncompressed P-256 point");
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
        })
    }

    /// A compact ES256 JWS of `claims` with `header` merged into the usual one.
    pub fn sign(&self, claims: &Value, header: &Value) -> String {
        let mut h = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        merge(&mut h, header);
        let key =
            jsonwebtoken::EncodingKey::from_ec_pem(self.pair.serialize_pem().as_bytes()).unwrap();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::ES256)
                .unwrap();
        format!("{input}.{signature}")
    }
}

/// `patch`'s keys over `into`'s; a `null` removes the key.
pub fn merge(into: &mut Value, patch: &Value) {
    if let (Some(into), Some(patch)) = (into.as_object_mut(), patch.as_object()) {
        for (k, v) in patch {
            if v.is_null() {
                into.remove(k);
            } else {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// What the authorization endpoint was asked, per code.
#[derive(Clone, Debug)]
pub struct Grant {
    pub query: HashMap<String, String>,
    pub used: bool,
}

pub struct State {
    pub keys: Vec<Key>,
    /// The key ID tokens are signed with (by index into `keys`).
    pub signing: usize,
    /// Who the provider says signs in.
    pub user: String,
    /// Merged over the ID token's claims (`null` removes one).
    pub claims: Value,
    /// Merged over the ID token's header.
    pub header: Value,
    /// Replaces the whole ID token, when set.
    pub raw_token: Option<String>,
    /// The authorization endpoint answers with this `error` instead of a code.
    pub error: Option<(String, String)>,
    pub grants: HashMap<String, Grant>,
    pub jwks_fetches: usize,
    pub discovery_fetches: usize,
    /// The provider answers nothing but 503 while set.
    pub down: bool,
    /// The provider answers nothing at all (for this long) while set.
    pub hang: Option<std::time::Duration>,
}

pub struct FakeProvider {
    pub addr: SocketAddr,
    pub cert_pem: String,
    pub state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeProvider {
    pub async fn start() -> FakeProvider {
        let cert = authgate::tls::self_signed();
        let tls = {
            use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
            let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            keys: vec![Key::new("k1")],
            signing: 0,
            user: "dana".to_owned(),
            claims: json!({}),
            header: json!({}),
            raw_token: None,
            error: None,
            grants: HashMap::new(),
            jwks_fetches: 0,
            discovery_fetches: 0,
            down: false,
            hang: None,
        }));
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (tls, state) = (tls.clone(), state.clone());
                    tokio::spawn(async move {
                        let Ok(stream) = tls.accept(tcp).await else {
                            return;
                        };
                        let service = service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(answer(req, &state, addr).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        FakeProvider {
            addr,
            cert_pem: cert.cert_pem,
            state,
            task,
        }
    }

    pub fn issuer(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The `[[oidc]]` entry for this provider (`extra` lines added), with
    /// its CA and secret written into `dir`.
    pub fn config(&self, dir: &std::path::Path, name: &str, extra: &str) -> String {
        std::fs::write(dir.join(format!("{name}-ca.pem")), &self.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{name}-secret")), CLIENT_SECRET).unwrap();
        let timeout = if extra.contains("timeout =") {
            ""
        } else {
            "timeout = \"2s\"\n"
        };
        format!(
            "[[oidc]]\nname = \"{name}\"\ntitle = \"Sign in with {name}\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{name}-secret\"\nca = \"{name}-ca.pem\"\n{timeout}{extra}\n",
            self.issuer()
        )
    }

    /// The usual claims of an ID token for `grant`.
    pub fn claims(&self, grant: Option<&Grant>) -> Value {
        let state = self.state.lock().unwrap();
        standard_claims(&state, &self.issuer(), grant)
    }

    /// A token signed with the current key.
    pub fn sign(&self, claims: &Value, header: &Value) -> String {
        let state = self.state.lock().unwrap();
        state.keys[state.signing].sign(claims, header)
    }

    /// A new key, published and used from now on; the old ones stay
    /// published unless `retire`.
    pub fn rotate(&self, kid: &str, retire: bool) {
        let mut state = self.state.lock().unwrap();
        if retire {
            state.keys.clear();
        }
        state.keys.push(Key::new(kid));
        state.signing = state.keys.len() - 1;
    }

    pub fn set(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().unwrap());
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.lock().unwrap().jwks_fetches
    }
}

fn now() -> i64 {
    (authgate::session::now_ms() / 1000) as i64
}

fn standard_claims(state: &State, issuer: &str, grant: Option<&Grant>) -> Value {
    let mut claims = json!({
        "iss": issuer,
        "aud": CLIENT_ID,
        "sub": format!("sub-{}", state.user),
        "preferred_username": state.user,
        "email": format!("{}@example.com", state.user),
        "email_verified": true,
        "groups": ["staff"],
        "amr": ["pwd"],
        "sid": "sid-1",
        "iat": now(),
        "auth_time": now(),
        "exp": now() + 300,
    });
    if let Some(nonce) = grant.and_then(|g| g.query.get("nonce")) {
        claims["nonce"] = json!(nonce);
    }
    merge(&mut claims, &state.claims);
    claims
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn query_map(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

async fn answer(
    req: Request<Incoming>,
    state: &Mutex<State>,
    addr: SocketAddr,
) -> Response<Full<Bytes>> {
    let issuer = format!("https://{addr}");
    let path = req.uri().path().to_owned();
    let query = query_map(req.uri().query().unwrap_or(""));
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let hang = state.lock().unwrap().hang;
    if let Some(hang) = hang {
        tokio::time::sleep(hang).await;
    }
    let mut state = state.lock().unwrap();
    if state.down {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "down".into());
    }
    match path.as_str() {
        "/.well-known/openid-configuration" => {
            state.discovery_fetches += 1;
            let doc = json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "end_session_endpoint": format!("{issuer}/logout"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            });
            reply(StatusCode::OK, "application/json", doc.to_string())
        }
        "/jwks" => {
            state.jwks_fetches += 1;
            let keys: Vec<Value> = state.keys.iter().map(Key::jwk).collect();
            reply(
                StatusCode::OK,
                "application/json",
                json!({"keys": keys}).to_string(),
            )
        }
        "/authorize" => {
            let redirect = query.get("redirect_uri").cloned().unwrap_or_default();
            let st = query.get("state").cloned().unwrap_or_default();
            let location = match &state.error {
                Some((error, description)) => format!(
                    "{redirect}?{}",
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("error", error)
                        .append_pair("error_description", description)
                        .append_pair("state", &st)
                        .finish()
                ),
                None => {
                    let code = authgate::session::new_id();
                    state.grants.insert(
                        code.clone(),
                        Grant {
                            query: query.clone(),
                            used: false,
                        },
                    );
                    format!("{redirect}?code={code}&state={st}")
                }
            };
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", location)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
        "/token" => {
            let form = query_map(&String::from_utf8_lossy(&body));
            let invalid = |what: &str| {
                reply(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    json!({"error": "invalid_grant", "error_description": what}).to_string(),
                )
            };
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            );
            if authorization.as_deref() != Some(expected.as_str()) {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    json!({"error": "invalid_client"}).to_string(),
                );
            }
            let Some(grant) = form.get("code").and_then(|c| state.grants.get_mut(c)) else {
                return invalid("unknown code");
            };
            if grant.used {
                return invalid("code already used");
            }
            grant.used = true;
            let grant = grant.clone();
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if grant.query.get("code_challenge") != Some(&challenge)
                || grant.query.get("code_challenge_method").map(String::as_str) != Some("S256")
            {
                return invalid("PKCE verifier does not match");
            }
            if form.get("redirect_uri") != grant.query.get("redirect_uri") {
                return invalid("redirect_uri differs");
            }
            let token = match &state.raw_token {
                Some(raw) => raw.clone(),
                None => {
                    let claims = standard_claims(&state, &issuer, Some(&grant));
                    state.keys[state.signing].sign(&claims, &state.header)
                }
            };
            reply(
                StatusCode::OK,
                "application/json",
                json!({"access_token": "opaque", "token_type": "Bearer", "id_token": token})
                    .to_string(),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "no such page".into()),
    }
}
