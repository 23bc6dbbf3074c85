//! `[[oidc]]`: the identity providers people may sign in with.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;

use super::super::raw::{self, Text};
use super::super::{OidcProvider, Secret};
use super::Validator;

/// Claims the gateway reads for itself; a provider's `headers` may copy
/// them, but `username_claim` and `roles_claim` must name something else
/// than these token mechanics.
const TOKEN_MECHANICS: &[&str] = &["iss", "aud", "azp", "exp", "iat", "nbf", "nonce", "at_hash"];

/// Headers the gateway sets, removes or reads itself: a claim cannot fill them.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "cookie",
    "authorization",
    "proxy-authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-real-ip",
];

/// Names a provider cannot take: `local` is the users file's in rules.
const RESERVED_NAMES: &[&str] = &["local"];

/// A provider's name as URLs, rules and logs carry it (`[[oidc]]` and
/// `[[bearer]]` alike): 1 to 32 of `a-z`, `0-9` and `-`, not reserved.
pub(super) fn provider_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !RESERVED_NAMES.contains(&name)
}

impl Validator<'_> {
    pub(super) fn oidc(
        &mut self,
        raw: Vec<toml::Spanned<raw::RawOidc>>,
        identity_headers: &[&str],
    ) -> Option<Vec<Arc<OidcProvider>>> {
        let mut providers = Vec::with_capacity(raw.len());
        let mut complete = true;
        for spanned in raw {
            let raw = spanned.into_inner();
            let name = raw.name.get_ref();
            if providers
                .iter()
                .any(|p: &Arc<OidcProvider>| p.name == *name)
            {
                self.diag.at(
                    raw.name.span(),
                    format!("a second [[oidc]] is called {name:?}; each needs its own name"),
                );
                complete = false;
                continue;
            }
            match self.provider(raw, identity_headers) {
                Some(provider) => providers.push(Arc::new(provider)),
                None => complete = false,
            }
        }
        complete.then_some(providers)
    }

    fn provider(&mut self, raw: raw::RawOidc, identity_headers: &[&str]) -> Option<OidcProvider> {
        let name = raw.name.get_ref().clone();
        let name_ok = provider_name_ok(&name);
        if !name_ok {
            self.diag.at(
                raw.name.span(),
                format!("an [[oidc]] name is 1 to 32 of a-z, 0-9 and '-', and not \"local\" (found {name:?})"),
            );
        }
        let title = match &raw.title {
            Some(t)
                if t.get_ref().is_empty()
                    || t.get_ref().chars().count() > 80
                    || t.get_ref().chars().any(char::is_control) =>
            {
                self.diag
                    .at(t.span(), "title must be plain text of 1 to 80 characters");
                None
            }
            Some(t) => Some(t.get_ref().clone()),
            None => Some(format!("Sign in with {name}")),
        };
        let issuer = self.https_url(&raw.issuer, "issuer").map(|i| {
            // Discovery appends its path to the issuer; a trailing slash
            // is part of the issuer's identity, so it stays as written.
            i.to_owned()
        });
        let client_id = if raw.client_id.get_ref().is_empty() {
            self.diag
                .at(raw.client_id.span(), "client_id must not be empty");
            None
        } else {
            Some(raw.client_id.get_ref().clone())
        };
        let client_secret = match &raw.client_secret_file {
            None => Some(None),
            Some(file) => self.secret_file(file, "the client secret"),
        };
        let client_key = match (&raw.client_auth, &raw.client_key) {
            (Some(auth), key) if auth.get_ref() == "private_key_jwt" => match key {
                Some(key) if raw.client_secret_file.is_none() => {
                    let path = self.base.join(key.get_ref());
                    match crate::assertion::JwtKey::load(&path) {
                        Ok(loaded) => Some(Some(Arc::new(loaded))),
                        Err(e) => {
                            let why = match e {
                                crate::assertion::KeyError::Read { path, reason }
                                | crate::assertion::KeyError::NotP256 { path, reason }
                                | crate::assertion::KeyError::Write { path, reason } => {
                                    format!("the client key {path} is not a usable P-256 PKCS#8 key ({reason}); `authgate keygen PATH` makes one")
                                }
                            };
                            self.file_problem(key.span(), why);
                            self.lenient_files.as_ref().map(|_| None)
                        }
                    }
                }
                Some(key) => {
                    self.diag.at(
                        key.span(),
                        "private_key_jwt signs with client_key; leave client_secret_file out",
                    );
                    None
                }
                None => {
                    self.diag.at(auth.span(), "private_key_jwt needs client_key = \"PATH\" (a P-256 key; `authgate keygen PATH` makes one)");
                    None
                }
            },
            (Some(auth), _) if auth.get_ref() != "client_secret" => {
                self.diag.at(
                    auth.span(),
                    format!(
                        "client_auth is \"client_secret\" or \"private_key_jwt\" (found {:?})",
                        auth.get_ref()
                    ),
                );
                None
            }
            (_, Some(key)) => {
                self.diag.at(
                    key.span(),
                    "client_key is for client_auth = \"private_key_jwt\"",
                );
                None
            }
            _ => Some(None),
        };
        let scopes: Vec<String> = match &raw.scopes {
            None => ["openid", "profile", "email"].map(str::to_owned).to_vec(),
            Some(list) => list.iter().map(|s| s.get_ref().clone()).collect(),
        };
        let scopes_ok = scopes.iter().any(|s| s == "openid")
            && scopes.iter().all(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            });
        if !scopes_ok {
            let span = raw
                .scopes
                .as_ref()
                .and_then(|l| l.first())
                .map_or(raw.name.span(), |s| s.span());
            self.diag.at(
                span,
                "scopes must include \"openid\" and be words without spaces or quotes",
            );
        }
        let mut claims_ok = true;
        for claim in [&raw.username_claim, &raw.roles_claim]
            .into_iter()
            .flatten()
        {
            let value = claim.get_ref();
            if value.is_empty() || TOKEN_MECHANICS.contains(&value.as_str()) {
                self.diag.at(
                    claim.span(),
                    format!("{value:?} is not a claim that names a person or their groups"),
                );
                claims_ok = false;
            }
        }
        let mut roles_ok = true;
        if let (Some(map), None) = (&raw.role_map, &raw.roles_claim) {
            self.diag.at(
                map.span(),
                "role_map maps the values of roles_claim; set roles_claim too",
            );
            roles_ok = false;
        }
        let (role_map, default_roles, roles_fine) =
            self.role_map(&raw.role_map, &raw.default_roles);
        roles_ok &= roles_fine;
        let allowed_users = raw
            .allowed_users
            .iter()
            .flatten()
            .map(|u| crate::users::canonical(u.get_ref()))
            .collect();
        let mut domains_ok = true;
        let allowed_domains = raw
            .allowed_domains
            .iter()
            .flatten()
            .map(|d| {
                let domain = d
                    .get_ref()
                    .trim()
                    .trim_start_matches('@')
                    .to_ascii_lowercase();
                if domain.is_empty() || domain.contains(['@', '/', ' ']) {
                    self.diag.at(
                        d.span(),
                        format!("{:?} is not an email domain", d.get_ref()),
                    );
                    domains_ok = false;
                }
                domain
            })
            .collect();
        let (headers, headers_ok) = self.filled_headers(&raw.headers, identity_headers);
        let tls = self.roots(&raw.ca, raw.issuer.span());
        let timeout = self.duration(&raw.timeout, Duration::from_secs(5));
        if let (Some(t), Some(text)) = (timeout, &raw.timeout) {
            if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&t) {
                self.diag
                    .at(text.span(), "timeout must be between 100ms and 60s");
                return None;
            }
        }
        let redirect_uri = match &raw.redirect_uri {
            None => Some(None),
            Some(text) => {
                let wanted = format!("/.gateway/oidc/{name}/callback");
                match self.https_url(text, "redirect_uri") {
                    Some(url)
                        if url
                            .split_once("://")
                            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                            == Some(wanted.as_str()) =>
                    {
                        Some(Some(url.to_owned()))
                    }
                    Some(_) => {
                        self.diag.at(text.span(), format!("redirect_uri must end in {wanted}, where the gateway answers the provider"));
                        None
                    }
                    None => None,
                }
            }
        };
        if !(name_ok && scopes_ok && claims_ok && roles_ok && domains_ok && headers_ok) {
            return None;
        }
        Some(OidcProvider {
            name,
            title: title?,
            issuer: issuer?,
            client_id: client_id?,
            client_secret: client_secret?,
            client_key: client_key?,
            scopes,
            username_claim: raw.username_claim.map(|c| c.into_inner()),
            roles_claim: raw.roles_claim.map(|c| c.into_inner()),
            role_map,
            default_roles,
            allowed_users,
            allowed_domains,
            require_email_verified: raw.require_email_verified.is_some_and(|b| b.into_inner()),
            headers,
            mfa_amr: raw
                .mfa_amr
                .into_iter()
                .flatten()
                .map(|a| a.into_inner())
                .collect(),
            acr_values: raw.acr_values.map(|a| a.into_inner()),
            tls: tls?,
            timeout: timeout?,
            redirect_uri: redirect_uri?,
            jwks_uri: None,
        })
    }

    /// An `https://` URL with a host, as written.
    pub(super) fn https_url<'t>(&mut self, text: &'t Text, key: &str) -> Option<&'t str> {
        let value = text.get_ref();
        let host_ok = value
            .strip_prefix("https://")
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""))
            .is_some_and(|authority| !authority.is_empty());
        let parsed = value.parse::<http::Uri>().is_ok();
        if host_ok && parsed && !value.contains(['?', '#']) {
            Some(value)
        } else {
            self.diag.at(
                text.span(),
                format!(
                    "{key} must be an https:// URL without query or fragment (found {value:?})"
                ),
            );
            None
        }
    }

    /// `role_map` (a value -> roles) and `default_roles`, each role
    /// checked; false when one is not a role.
    #[allow(clippy::type_complexity)]
    pub(super) fn role_map(
        &mut self,
        map: &Option<toml::Spanned<std::collections::BTreeMap<String, Vec<Text>>>>,
        defaults: &Option<Vec<Text>>,
    ) -> (Vec<(String, Vec<String>)>, Vec<String>, bool) {
        let mut ok = true;
        let mut role = |v: &mut Validator, text: &Text| -> Option<String> {
            let role = text.get_ref().trim();
            match crate::users::file::check_role(role) {
                Ok(()) => Some(role.to_owned()),
                Err(e) => {
                    v.diag.at(text.span(), e.to_string());
                    ok = false;
                    None
                }
            }
        };
        let mut role_map = Vec::new();
        for (value, roles) in map.iter().flat_map(|m| m.get_ref()) {
            let roles: Vec<String> = roles.iter().filter_map(|r| role(self, r)).collect();
            role_map.push((value.clone(), roles));
        }
        let default_roles = defaults
            .iter()
            .flatten()
            .filter_map(|r| role(self, r))
            .collect();
        (role_map, default_roles, ok)
    }

    /// A secret read from `file` (trimmed; it must not be empty).
    pub(super) fn secret_file(&mut self, file: &Text, what: &str) -> Option<Option<Secret>> {
        let path = self.base.join(file.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Some(Some(Secret(text.trim().to_owned()))),
            Ok(_) => {
                self.file_problem(
                    file.span(),
                    format!("{} is empty; it must hold {what}", path.display()),
                );
                self.lenient_files.as_ref().map(|_| None)
            }
            Err(e) => {
                self.file_problem(
                    file.span(),
                    format!("cannot read {what} from {}: {e}", path.display()),
                );
                self.lenient_files.as_ref().map(|_| None)
            }
        }
    }

    /// `headers = { "X-Name" = "source" }`: headers a sign-in method fills
    /// (from claims, from attributes); false when one is refused.
    pub(super) fn filled_headers(
        &mut self,
        map: &Option<toml::Spanned<std::collections::BTreeMap<String, Text>>>,
        identity_headers: &[&str],
    ) -> (Vec<(HeaderName, String)>, bool) {
        let mut headers = Vec::new();
        let mut ok = true;
        for (header, source) in map.iter().flat_map(|m| m.get_ref()) {
            match HeaderName::from_bytes(header.as_bytes()) {
                Ok(name) if identity_headers.contains(&name.as_str()) => {
                    self.diag.at(
                        source.span(),
                        format!("{header} is the gateway's own identity header; pick another name"),
                    );
                    ok = false;
                }
                Ok(name) if RESERVED_HEADERS.contains(&name.as_str()) => {
                    self.diag.at(
                        source.span(),
                        format!("{header} is a header the gateway sets or removes itself; pick another name"),
                    );
                    ok = false;
                }
                Ok(name) => headers.push((name, source.get_ref().clone())),
                Err(_) => {
                    self.diag
                        .at(source.span(), format!("invalid header name {header:?}"));
                    ok = false;
                }
            }
        }
        (headers, ok)
    }

    /// How a server's certificate is checked: the PEM roots in `ca`, or
    /// the system's. Problems are put at `span` when not about the file.
    pub(super) fn roots(
        &mut self,
        ca: &Option<Text>,
        span: std::ops::Range<usize>,
    ) -> Option<Arc<rustls::ClientConfig>> {
        let ca = match ca {
            None => None,
            Some(text) => match crate::tls::load_certs(&self.base.join(text.get_ref())) {
                Ok(certs) => Some(certs),
                Err(e) => {
                    self.file_problem(text.span(), e.to_string());
                    self.lenient_files.as_ref()?;
                    None
                }
            },
        };
        match crate::tls::client_config(ca, None) {
            // The connector sets ALPN itself (HTTP/1.1).
            Ok(config) => Some(Arc::new(config)),
            Err(e) => {
                self.diag.at(span, e);
                None
            }
        }
    }
}
