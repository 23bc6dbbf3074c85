//! One provider as the gateway reaches it: an HTTPS client that trusts
//! what its `ca` (or the system) says, its discovery document and its keys,
//! fetched with a timeout and cached; keys fetched again (at most once per
//! [`KEY_REFRESH_EVERY`]) when a token names one the cache lacks, so that
//! key rotation at the provider needs no restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::identity::hold_off::HoldOff;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet};
use openidconnect::{HttpRequest, HttpResponse, IssuerUrl, ProviderMetadataWithLogout};

use crate::config::OidcProvider;

/// Largest answer read from a provider (discovery, keys, tokens).
const MAX_ANSWER: usize = 1 << 20;
/// How long discovery and keys are trusted before they are fetched again.
const FRESH_FOR: Duration = Duration::from_secs(3600);
/// After a failed discovery, how long the provider counts as down before
/// the next sign-in tries again (a down provider is not hammered).
const DOWN_FOR: Duration = Duration::from_secs(5);
/// Keys are fetched again for an unknown `kid` at most this often.
pub const KEY_REFRESH_EVERY: Duration = Duration::from_secs(10);

/// Why a provider could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the provider's answer is unusable: {0}")]
    Unusable(String),
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// What discovery said, as the sign-in uses it.
pub struct Discovered {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub end_session_endpoint: Option<String>,
    pub jwks_uri: String,
    /// Whether the token endpoint takes the secret in a form field rather
    /// than HTTP Basic (`client_secret_post` only).
    pub secret_in_form: bool,
    fetched: Instant,
}

struct Keys {
    set: Arc<CoreJsonWebKeySet>,
    fetched: Instant,
    /// The last fetch an unknown `kid` caused.
    refreshed_for_unknown: Option<Instant>,
}

pub struct Remote {
    /// The `[[oidc]]` entry this was made for; a reload that changes it
    /// makes a new `Remote`.
    pub settings: Arc<OidcProvider>,
    client: Client<Https, Full<Bytes>>,
    discovered: tokio::sync::Mutex<Option<Arc<Discovered>>>,
    /// A provider that failed is not asked again for [`DOWN_FOR`].
    down: HoldOff,
    keys: Mutex<Option<Keys>>,
}

impl Remote {
    pub fn new(settings: Arc<OidcProvider>) -> Remote {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*settings.tls).clone())
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(connector);
        Remote {
            settings,
            client,
            discovered: tokio::sync::Mutex::new(None),
            down: HoldOff::new(DOWN_FOR),
            keys: Mutex::new(None),
        }
    }

    /// One HTTP exchange with the provider, within its `timeout`, reading
    /// at most [`MAX_ANSWER`] bytes.
    pub async fn call(&self, request: HttpRequest) -> Result<HttpResponse, RemoteError> {
        exchange(self.client.clone(), self.settings.timeout, request).await
    }

    /// [`Self::call`] as the library's HTTP client: it owns what it
    /// uses, so its futures borrow nothing.
    fn http(
        &self,
    ) -> impl Fn(HttpRequest) -> BoxFuture<'static, Result<HttpResponse, RemoteError>> {
        let client = self.client.clone();
        let timeout = self.settings.timeout;
        move |request| Box::pin(exchange(client.clone(), timeout, request))
    }

    /// The discovery document (fetched now if not cached or stale, with
    /// the keys it names).
    pub async fn discovered(&self) -> Result<Arc<Discovered>, RemoteError> {
        let mut cached = self.discovered.lock().await;
        if let Some(d) = cached.as_ref().filter(|d| d.fetched.elapsed() < FRESH_FOR) {
            return Ok(d.clone());
        }
        if self.down.active() {
            return Err(RemoteError::Unreachable(
                "it failed moments ago; trying again shortly".into(),
            ));
        }
        match self.discover().await {
            Ok(found) => {
                self.down.succeeded();
                let found = Arc::new(found);
                *cached = Some(found.clone());
                Ok(found)
            }
            Err(e) => {
                self.down.failed();
                tracing::warn!(provider = %self.settings.name, error = %e, "identity provider discovery failed");
                // A stale document is better than none while the provider is down.
                cached.clone().ok_or(e)
            }
        }
    }

    async fn discover(&self) -> Result<Discovered, RemoteError> {
        if let Some(jwks_uri) = &self.settings.jwks_uri {
            // Keys from a set address, without discovery (a `[[bearer]]`
            // whose provider publishes none): nothing else is asked of it.
            return Ok(Discovered {
                authorization_endpoint: String::new(),
                token_endpoint: String::new(),
                end_session_endpoint: None,
                jwks_uri: jwks_uri.clone(),
                secret_in_form: false,
                fetched: Instant::now(),
            });
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| RemoteError::Unusable(format!("issuer: {e}")))?;
        let http = self.http();
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &http)
            .await
            .map_err(|e| match e {
                openidconnect::DiscoveryError::Request(e) => e,
                other => RemoteError::Unusable(error_chain(&other)),
            })?;
        let secret_in_form = metadata
            .token_endpoint_auth_methods_supported()
            .is_some_and(|methods| {
                let names: Vec<String> = methods
                    .iter()
                    .filter_map(|m| serde_json::to_value(m).ok())
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                !names.iter().any(|n| n == "client_secret_basic")
                    && names.iter().any(|n| n == "client_secret_post")
            });
        let token_endpoint = metadata
            .token_endpoint()
            .ok_or_else(|| RemoteError::Unusable("discovery names no token_endpoint".into()))?
            .url()
            .to_string();
        let found = Discovered {
            authorization_endpoint: metadata.authorization_endpoint().url().to_string(),
            token_endpoint,
            end_session_endpoint: metadata
                .additional_metadata()
                .end_session_endpoint
                .as_ref()
                .map(|u| u.url().to_string()),
            jwks_uri: metadata.jwks_uri().url().to_string(),
            secret_in_form,
            fetched: Instant::now(),
        };
        *self.keys.lock().expect("not poisoned") = Some(Keys {
            set: Arc::new(metadata.jwks().clone()),
            fetched: Instant::now(),
            refreshed_for_unknown: None,
        });
        Ok(found)
    }

    /// The provider's keys as cached (fetched again when stale).
    pub async fn keys(
        &self,
        discovered: &Discovered,
    ) -> Result<Arc<CoreJsonWebKeySet>, RemoteError> {
        let fresh = self
            .keys
            .lock()
            .expect("not poisoned")
            .as_ref()
            .filter(|k| k.fetched.elapsed() < FRESH_FOR)
            .map(|k| k.set.clone());
        match fresh {
            Some(set) => Ok(set),
            None => self.fetch_keys(discovered, false).await,
        }
    }

    /// Fetches the keys again because a token named a `kid` the cache
    /// lacks; `None` when that happened less than [`KEY_REFRESH_EVERY`]
    /// ago (a stream of forged `kid`s must not turn into a stream of
    /// fetches).
    pub async fn keys_for_unknown_kid(
        &self,
        discovered: &Discovered,
    ) -> Option<Result<Arc<CoreJsonWebKeySet>, RemoteError>> {
        {
            let mut keys = self.keys.lock().expect("not poisoned");
            if let Some(keys) = keys.as_mut() {
                if keys
                    .refreshed_for_unknown
                    .is_some_and(|at| at.elapsed() < KEY_REFRESH_EVERY)
                {
                    return None;
                }
                keys.refreshed_for_unknown = Some(Instant::now());
            }
        }
        Some(self.fetch_keys(discovered, true).await)
    }

    async fn fetch_keys(
        &self,
        discovered: &Discovered,
        for_unknown: bool,
    ) -> Result<Arc<CoreJsonWebKeySet>, RemoteError> {
        let url = openidconnect::JsonWebKeySetUrl::new(discovered.jwks_uri.clone())
            .map_err(|e| RemoteError::Unusable(format!("jwks_uri: {e}")))?;
        let http = self.http();
        let set: CoreJsonWebKeySet = openidconnect::JsonWebKeySet::fetch_async(&url, &http)
            .await
            .map_err(|e| match e {
                openidconnect::DiscoveryError::Request(e) => e,
                other => RemoteError::Unusable(error_chain(&other)),
            })?;
        let set = Arc::new(set);
        let mut keys = self.keys.lock().expect("not poisoned");
        let refreshed_for_unknown = if for_unknown {
            Some(Instant::now())
        } else {
            keys.as_ref().and_then(|k| k.refreshed_for_unknown)
        };
        *keys = Some(Keys {
            set: set.clone(),
            fetched: Instant::now(),
            refreshed_for_unknown,
        });
        tracing::info!(provider = %self.settings.name, keys = set.keys().len(), "identity provider keys fetched");
        Ok(set)
    }
}

/// `authgate check --online`: what discovery and the keys of a provider
/// say, in a line, or why they could not be had.
pub async fn probe(settings: Arc<OidcProvider>) -> Result<String, String> {
    let remote = Remote::new(settings);
    let discovered = remote.discovered().await.map_err(|e| e.to_string())?;
    let keys = remote.keys(&discovered).await.map_err(|e| e.to_string())?;
    let kids: Vec<String> = keys
        .keys()
        .iter()
        .map(|k| {
            use openidconnect::JsonWebKey;
            k.key_id()
                .map_or_else(|| "(no kid)".to_owned(), |kid| kid.to_string())
        })
        .collect();
    Ok(format!(
        "discovery ok: authorization {}, token {}, end_session {}; {} key(s) [{}]",
        discovered.authorization_endpoint,
        discovered.token_endpoint,
        discovered
            .end_session_endpoint
            .as_deref()
            .unwrap_or("(none)"),
        kids.len(),
        kids.join(", ")
    ))
}

/// The key of `set` for a token's `kid` and `alg`, if there is exactly one.
pub fn key_for<'k>(
    set: &'k CoreJsonWebKeySet,
    kid: Option<&str>,
    alg: &openidconnect::core::CoreJwsSigningAlgorithm,
) -> Option<&'k CoreJsonWebKey> {
    use openidconnect::{JsonWebKey, JsonWebKeyAlgorithm, JwsSigningAlgorithm};
    let fits = |key: &&CoreJsonWebKey| {
        let kid_ok = match kid {
            Some(kid) => key.key_id().is_some_and(|k| **k == *kid),
            None => true,
        };
        let use_ok = key.key_use().is_none_or(|u| {
            serde_json::to_value(u)
                .ok()
                .and_then(|v| v.as_str().map(|s| s == "sig"))
                .unwrap_or(false)
        });
        let alg_ok = match key.signing_alg() {
            JsonWebKeyAlgorithm::Algorithm(a) => a == alg,
            JsonWebKeyAlgorithm::Unspecified => alg.key_type().as_ref() == Some(key.key_type()),
            JsonWebKeyAlgorithm::Unsupported => false,
        };
        kid_ok && use_ok && alg_ok
    };
    let mut found = set.keys().iter().filter(fits);
    let key = found.next()?;
    found.next().is_none().then_some(key)
}

async fn exchange(
    client: Client<Https, Full<Bytes>>,
    timeout: Duration,
    request: HttpRequest,
) -> Result<HttpResponse, RemoteError> {
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| RemoteError::Unreachable(error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| RemoteError::Unusable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body.to_vec()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| RemoteError::Timeout(timeout))?
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
