//! `[[bearer]]`: OpenID providers whose JWT access tokens count as API
//! tokens (a client-credentials grant, a workload identity).

use std::sync::Arc;
use std::time::Duration;

use super::super::{raw, Bearer, OidcProvider};
use super::Validator;

impl Validator<'_> {
    /// `taken`: the `[[oidc]]` names (and `ldap`), which a `[[bearer]]`
    /// may not reuse.
    pub(super) fn bearer(
        &mut self,
        raw: Vec<toml::Spanned<raw::RawBearer>>,
        taken: &[&str],
    ) -> Option<Vec<Arc<Bearer>>> {
        let mut list: Vec<Arc<Bearer>> = Vec::new();
        let mut complete = true;
        for spanned in raw {
            let span = spanned.span();
            let raw = spanned.into_inner();
            let name = raw.name.get_ref().clone();
            let name_ok = super::oidc::provider_name_ok(&name)
                && !taken.contains(&name.as_str())
                && !list.iter().any(|b| b.name == name);
            if !name_ok {
                self.diag.at(
                    raw.name.span(),
                    format!("a [[bearer]] name is 1 to 32 of a-z, 0-9 and '-', not \"local\" and not another [[oidc]] or [[bearer]]'s (found {name:?})"),
                );
            }
            let issuer = self.https_url(&raw.issuer, "issuer").map(str::to_owned);
            let jwks_uri = match &raw.jwks {
                None => Some(None),
                Some(text) => self.https_url(text, "jwks").map(|u| Some(u.to_owned())),
            };
            if raw.audience.get_ref().is_empty() {
                self.diag
                    .at(raw.audience.span(), "audience must not be empty");
            }
            let (role_map, default_roles, roles_ok) =
                self.role_map(&raw.role_map, &raw.default_roles);
            let timeout = self.duration(&raw.timeout, Duration::from_secs(5));
            let tls = self.roots(&raw.ca, span.clone());
            let claim = |text: &Option<raw::Text>| text.as_ref().map(|t| t.get_ref().clone());
            let (Some(issuer), Some(jwks_uri), Some(timeout), Some(tls), true, true, false) = (
                issuer,
                jwks_uri,
                timeout,
                tls,
                name_ok,
                roles_ok,
                raw.audience.get_ref().is_empty(),
            ) else {
                complete = false;
                continue;
            };
            let provider = OidcProvider {
                name: name.clone(),
                title: String::new(),
                issuer,
                client_id: String::new(),
                client_secret: None,
                client_key: None,
                scopes: Vec::new(),
                username_claim: None,
                roles_claim: None,
                role_map: Vec::new(),
                default_roles: Vec::new(),
                allowed_users: Vec::new(),
                allowed_domains: Vec::new(),
                require_email_verified: false,
                headers: Vec::new(),
                mfa_amr: Vec::new(),
                acr_values: None,
                tls,
                timeout,
                redirect_uri: None,
                jwks_uri,
            };
            list.push(Arc::new(Bearer {
                name,
                audience: raw.audience.get_ref().clone(),
                subject_claim: claim(&raw.subject_claim).unwrap_or_else(|| "sub".into()),
                roles_claim: claim(&raw.roles_claim),
                role_map,
                default_roles,
                provider: Arc::new(provider),
            }));
        }
        complete.then_some(list)
    }
}
