//! `[server]` and `[upstream]`/`[[upstream]]`: listeners, limits, TLS,
//! and the apps behind the gateway.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Uri;

use super::super::raw;
use super::super::{LogFormat, Server, Upstream, MIN_HEADER_SIZE};
use super::Validator;

impl Validator<'_> {
    pub(super) fn server(&mut self, raw: raw::RawServer) -> Option<Server> {
        let listen = self.socket_addr(&raw.listen);
        let redirect_http = raw.redirect_http.as_ref().map(|t| self.socket_addr(t));
        let ops_listen = raw.ops_listen.as_ref().map(|t| self.socket_addr(t));
        let verify_listen = raw.verify_listen.as_ref().map(|t| self.socket_addr(t));
        let public_url = match &raw.public_url {
            None => Some(None),
            Some(text) => {
                let url = text.get_ref().trim_end_matches('/');
                let ok = url
                    .parse::<http::Uri>()
                    .ok()
                    .filter(|u| u.scheme_str() == Some("https") && u.authority().is_some())
                    .filter(|u| u.path_and_query().is_none_or(|p| p.as_str() == "/"));
                match ok {
                    Some(_) => Some(Some(url.to_owned())),
                    None => {
                        self.diag.at(
                            text.span(),
                            format!("public_url {:?} is not like \"https://auth.example\" (https, a host, no path)", text.get_ref()),
                        );
                        None
                    }
                }
            }
        };
        let tls = self.tls(&raw.cert, &raw.key);
        let shutdown_grace = self.duration(&raw.shutdown_grace, Duration::from_secs(30));
        let drain_delay = self.duration(&raw.drain_delay, Duration::from_secs(5));
        let header_timeout = self.duration(&raw.header_timeout, Duration::from_secs(10));
        let handshake_timeout = self.duration(&raw.handshake_timeout, Duration::from_secs(10));
        let idle_timeout = self.duration(&raw.idle_timeout, Duration::from_secs(60));
        let max_header_size = self.size(&raw.max_header_size, 64 << 10).and_then(|n| {
            if n < MIN_HEADER_SIZE || n > u64::from(u32::MAX) {
                let span = raw
                    .max_header_size
                    .as_ref()
                    .map(|t| t.span())
                    .unwrap_or(0..0);
                self.diag
                    .at(span, "max_header_size must be between 1KiB and 4GiB");
                return None;
            }
            Some(n as usize)
        });
        let max_body_size = self.size(&raw.max_body_size, 1 << 30);
        let max_connections = self.count(
            &raw.max_connections,
            10_000,
            1..=1_000_000,
            "max_connections",
        );
        let max_connections_per_client = self.count(
            &raw.max_connections_per_client,
            256,
            1..=1_000_000,
            "max_connections_per_client",
        );
        let body_timeout = self.duration(&raw.body_timeout, Duration::from_secs(60));
        let forward_auth = match &raw.forward_auth {
            None => Some(None),
            Some(t) => match t.get_ref().as_str() {
                "nginx" => Some(Some(super::super::ForwardAuthFamily::Nginx)),
                "traefik" | "caddy" => Some(Some(super::super::ForwardAuthFamily::Traefik)),
                other => {
                    self.diag.at(
                        t.span(),
                        format!("unknown forward_auth {other:?}: use \"nginx\" (X-Original-URL, X-Original-Method) or \"traefik\" (X-Forwarded-Method, -Host, -Uri; Caddy too)"),
                    );
                    None
                }
            },
        };
        let log_format = match &raw.log_format {
            None => Some(None),
            Some(t) => match t.get_ref().as_str() {
                "human" => Some(Some(LogFormat::Human)),
                "json" => Some(Some(LogFormat::Json)),
                other => {
                    self.diag.at(
                        t.span(),
                        format!("unknown log_format {other:?}: use \"human\" or \"json\""),
                    );
                    None
                }
            },
        };
        let mut nets = Vec::new();
        let mut nets_ok = true;
        for text in raw.trusted_proxies.iter().flatten() {
            match crate::forwarded::parse_net(text.get_ref()) {
                Ok(net) => nets.push(net),
                Err(e) => {
                    self.diag.at(text.span(), format!("trusted_proxies: {e}"));
                    nets_ok = false;
                }
            }
        }
        let mut websocket_origins = Vec::new();
        for text in raw.websocket_origins.iter().flatten() {
            let origin = text.get_ref().trim_end_matches('/').to_ascii_lowercase();
            let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
                matches!(scheme, "https" | "http")
                    && !rest.is_empty()
                    && rest.parse::<http::uri::Authority>().is_ok()
                    && !rest.contains(['/', '@'])
            });
            if valid {
                websocket_origins.push(origin);
            } else {
                self.diag.at(
                    text.span(),
                    format!(
                        "websocket_origins: {:?} is not an origin like \"https://app.example\"",
                        text.get_ref()
                    ),
                );
            }
        }
        Some(Server {
            forward_auth: forward_auth?,
            body_timeout: body_timeout?,
            max_connections_per_client: max_connections_per_client?,
            websocket_origins,
            trusted_proxies: nets_ok.then(|| crate::forwarded::TrustedProxies::new(nets))?,
            listen: listen?,
            tls: tls.as_ref().map(|(config, _)| config.clone())?,
            certificate: tls.map(|(_, certificate)| certificate)?,
            redirect_http: redirect_http.map(|a| a.ok_or(())).transpose().ok()?,
            ops_listen: ops_listen.map(|a| a.ok_or(())).transpose().ok()?,
            verify_listen: verify_listen.map(|a| a.ok_or(())).transpose().ok()?,
            public_url: public_url?,
            shutdown_grace: shutdown_grace?,
            drain_delay: drain_delay?,
            max_header_size: max_header_size?,
            max_body_size: max_body_size?,
            header_timeout: header_timeout?,
            idle_timeout: idle_timeout?,
            handshake_timeout: handshake_timeout?,
            max_connections: max_connections?,
            hsts: raw.hsts.unwrap_or(true),
            log_format: log_format?,
        })
    }

    pub(super) fn upstreams(
        &mut self,
        raw: toml::Spanned<raw::RawUpstreams>,
    ) -> Option<Vec<Upstream>> {
        let span = raw.span();
        match raw.into_inner() {
            raw::RawUpstreams::One(one) => {
                for (key, span) in [
                    ("host", one.host.as_ref().map(|t| t.span())),
                    ("path_prefix", one.path_prefix.as_ref().map(|t| t.span())),
                    ("strip_prefix", one.strip_prefix.as_ref().map(|t| t.span())),
                ] {
                    if let Some(span) = span {
                        self.diag.at(span, format!("{key} is for [[upstream]] entries (several apps); one [upstream] serves every request"));
                    }
                }
                let (line, _) = self.diag.line_col(span.start);
                self.upstream(*one, line).map(|u| vec![u])
            }
            raw::RawUpstreams::Many(list) => {
                if list.is_empty() {
                    self.diag
                        .at(span, "no upstream: give [upstream] or [[upstream]] entries");
                    return None;
                }
                let mut all = Vec::new();
                let mut complete = true;
                for entry in list {
                    let entry_span = entry.span();
                    let (line, _) = self.diag.line_col(entry_span.start);
                    match self.upstream(entry.into_inner(), line) {
                        Some(upstream) => {
                            if let Some(same) = all.iter().find(|u: &&Upstream| {
                                u.host == upstream.host && u.path_prefix == upstream.path_prefix
                            }) {
                                self.diag.at(
                                    entry_span,
                                    format!("this [[upstream]] serves the same host and path_prefix as the one on line {}: it would never be used", same.line),
                                );
                                complete = false;
                            }
                            all.push(upstream);
                        }
                        None => complete = false,
                    }
                }
                complete.then_some(all)
            }
        }
    }

    pub(super) fn upstream(&mut self, raw: raw::RawUpstream, line: usize) -> Option<Upstream> {
        let host = raw.host.as_ref().map(|h| {
            let host = h.get_ref().trim().to_ascii_lowercase();
            host.strip_suffix('.').map(str::to_owned).unwrap_or(host)
        });
        let path_prefix = match &raw.path_prefix {
            None => Some(String::new()),
            Some(p) => {
                let text = p.get_ref().trim_end_matches('/');
                match crate::policy::path::normalize(if text.is_empty() { "/" } else { text }) {
                    Ok(normal) if normal == text || text.is_empty() => Some(text.to_owned()),
                    _ => {
                        self.diag.at(
                            p.span(),
                            "path_prefix must be a normalized path like \"/app\"",
                        );
                        None
                    }
                }
            }
        };
        let strip_prefix = raw.strip_prefix.as_ref().is_some_and(|s| *s.get_ref());
        if strip_prefix && path_prefix.as_deref().is_some_and(str::is_empty) {
            let span = raw.strip_prefix.as_ref().map(|s| s.span()).unwrap_or(0..0);
            self.diag.at(span, "strip_prefix needs a path_prefix");
        }
        let connect_timeout = self.duration(&raw.connect_timeout, Duration::from_secs(5));
        let timeout = self.duration(&raw.timeout, Duration::from_secs(60));
        let authority = match raw.url.get_ref().parse::<Uri>() {
            Err(e) => {
                self.diag
                    .at(raw.url.span(), format!("invalid upstream url: {e}"));
                None
            }
            Ok(uri) if !matches!(uri.scheme_str(), Some("http" | "https")) => {
                self.diag.at(
                    raw.url.span(),
                    "upstream url must start with http:// or https://",
                );
                None
            }
            Ok(uri) if !matches!(uri.path(), "" | "/") || uri.query().is_some() => {
                self.diag.at(
                    raw.url.span(),
                    "upstream url must not have a path or query: the request path is passed on as it is",
                );
                None
            }
            Ok(uri) => match uri.authority() {
                Some(a) if !a.host().is_empty() => Some(a.clone()),
                _ => {
                    self.diag.at(raw.url.span(), "upstream url has no host");
                    None
                }
            },
        };
        let https = raw.url.get_ref().starts_with("https://");
        let tls = self.upstream_tls(&raw, https);
        Some(Upstream {
            url: raw.url.get_ref().clone(),
            line,
            host,
            path_prefix: path_prefix?,
            strip_prefix,
            tls: tls?,
            authority: authority?,
            connect_timeout: connect_timeout?,
            timeout: timeout?,
        })
    }

    /// The client side of TLS to an `https://` upstream: `ca`, and a
    /// client certificate and key for mutual TLS, only with https.
    pub(super) fn upstream_tls(
        &mut self,
        raw: &raw::RawUpstream,
        https: bool,
    ) -> Option<Option<Arc<rustls::ClientConfig>>> {
        if !https {
            for (key, value) in [
                ("ca", &raw.ca),
                ("client_cert", &raw.client_cert),
                ("client_key", &raw.client_key),
            ] {
                if let Some(value) = value {
                    self.diag
                        .at(value.span(), format!("{key} is for an https:// upstream"));
                }
            }
            return Some(None);
        }
        let lenient = self.lenient_files.is_some();
        let ca = match &raw.ca {
            None => None,
            Some(text) => match crate::tls::load_certs(&self.base.join(text.get_ref())) {
                Ok(certs) => Some(certs),
                Err(e) => {
                    self.file_problem(text.span(), e.to_string());
                    return lenient.then_some(None);
                }
            },
        };
        let identity = match (&raw.client_cert, &raw.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let chain = crate::tls::load_certs(&self.base.join(cert.get_ref()))
                    .map_err(|e| self.file_problem(cert.span(), e.to_string()))
                    .ok();
                let private = crate::tls::load_key(&self.base.join(key.get_ref()))
                    .map_err(|e| self.file_problem(key.span(), e.to_string()))
                    .ok();
                match (chain, private) {
                    (Some(chain), Some(private)) => Some((chain, private)),
                    _ if lenient => return Some(None),
                    _ => return None,
                }
            }
            (Some(one), None) | (None, Some(one)) => {
                self.diag
                    .at(one.span(), "client_cert and client_key go together");
                return None;
            }
        };
        match crate::tls::client_config(ca, identity) {
            Ok(config) => Some(Some(Arc::new(config))),
            Err(e) => {
                self.diag.at(raw.url.span(), e);
                None
            }
        }
    }
}
