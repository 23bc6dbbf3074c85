//! How a provider's sign-in ends: back-channel logout (OpenID Connect
//! Back-Channel Logout 1.0), where the provider tells the gateway a person
//! signed out there, and RP-initiated logout, where the gateway's sign-out
//! sends the browser on to the provider's `end_session_endpoint`.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::{
    sha256, subject_key, token, url_with_query, Failure, JTI_KIND, LOGOUT_TOKEN_MAX_AGE,
    SUBJECT_KIND,
};
use crate::config::OidcProvider;
use crate::identity::Auth;
use crate::response::{own_response, Body, GatewayError};
use crate::session::Vouched;

impl Auth {
    /// `POST /.gateway/oidc/{name}/backchannel-logout`: the provider says
    /// a person signed out there; their sessions from it end here.
    pub(super) async fn backchannel_logout(
        &self,
        settings: &Arc<OidcProvider>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let form = crate::identity::forms::read_form(request).await?;
        let answer = |status: StatusCode, description: &str| {
            let body =
                serde_json::json!({"error": "invalid_request", "error_description": description})
                    .to_string();
            let mut response = own_response(status, "application/json; charset=utf-8", body);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        };
        let logout_token = form.get("logout_token");
        if logout_token.is_empty() {
            return Ok(answer(StatusCode::BAD_REQUEST, "no logout_token"));
        }
        let remote = self.providers.remote(settings);
        let discovered = match remote.discovered().await {
            Ok(d) => d,
            Err(_) => {
                return Ok(answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the provider's keys cannot be fetched",
                ))
            }
        };
        let claims = match self
            .verified(
                &remote,
                &discovered,
                logout_token,
                None,
                LOGOUT_TOKEN_MAX_AGE,
            )
            .await
        {
            Ok(claims) => claims,
            Err(Failure::Refused(_, _, detail)) => {
                crate::security_event!(warn, event = "backchannel_logout_refused", provider = %settings.name, reason = detail.as_deref().unwrap_or(""), "a back-channel logout was refused");
                return Ok(answer(
                    StatusCode::BAD_REQUEST,
                    detail.as_deref().unwrap_or("refused"),
                ));
            }
            Err(_) => {
                return Ok(answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the provider's keys cannot be fetched",
                ))
            }
        };
        if let Err(why) = token::check_logout(&claims) {
            crate::security_event!(warn, event = "backchannel_logout_refused", provider = %settings.name, reason = %why, "a back-channel logout was refused");
            return Ok(answer(StatusCode::BAD_REQUEST, &why.to_string()));
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
        };
        let jti_key = sha256(&format!("{}\n{}", settings.name, text("jti")));
        match self
            .store
            .records
            .claim(
                JTI_KIND,
                &jti_key,
                (LOGOUT_TOKEN_MAX_AGE as u64 + 60) * 1000,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                crate::security_event!(warn, event = "backchannel_logout_refused", provider = %settings.name, reason = "replayed", "a back-channel logout token came again");
                return Ok(answer(
                    StatusCode::BAD_REQUEST,
                    "this logout token was already used",
                ));
            }
            Err(_) => return Err(GatewayError::StoreUnavailable),
        }
        let ended = self
            .end_provider_sessions(&settings.name, text("sub"), text("sid"))
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        crate::security_event!(warn, event = "backchannel_logout", provider = %settings.name, sessions_ended = ended, "the identity provider ended a sign-in");
        self.audit().remember(
            "backchannel_logout",
            &format!("provider {}", settings.name),
            text("sub"),
            format!("{ended} session(s) ended"),
        );
        let mut response = own_response(StatusCode::OK, "text/plain; charset=utf-8", "");
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }

    /// Ends the sessions of `provider` with this `sid` (any subject), or
    /// of this `sub` (any `sid`); how many.
    async fn end_provider_sessions(
        &self,
        provider: &str,
        subject: &str,
        sid: &str,
    ) -> Result<usize, crate::store::Unavailable> {
        let user = if subject.is_empty() {
            None
        } else {
            self.store
                .records
                .get(SUBJECT_KIND, &subject_key(provider, subject))
                .await?
        };
        let sessions = self.store.sessions.list(user.as_deref()).await?;
        let mut ended = 0;
        for info in sessions {
            let Some(vouched) = &info.vouched else {
                continue;
            };
            let same_provider = vouched.provider() == provider;
            let by_sid = !sid.is_empty() && vouched.sid.as_deref() == Some(sid);
            let by_sub = sid.is_empty() && !subject.is_empty() && &*vouched.subject == subject;
            if same_provider && (by_sid || by_sub) && self.store.sessions.end(&info.key).await? {
                ended += 1;
            }
        }
        self.store
            .sessions
            .stats()
            .ended(crate::store::stats::Ended::Revoked, ended);
        Ok(ended)
    }

    /// Where the sign-out sends a provider's user, when the provider
    /// offers RP-initiated logout: its `end_session_endpoint` with the
    /// ID token as `id_token_hint`, and back to the sign-in page after.
    pub(in crate::identity) async fn provider_logout_url(
        &self,
        config: &crate::config::Config,
        vouched: &Vouched,
        host: Option<&HeaderValue>,
    ) -> Option<String> {
        let settings = config.oidc.iter().find(|p| p.name == vouched.provider())?;
        let discovered = self.providers.remote(settings).discovered().await.ok()?;
        let endpoint = discovered.end_session_endpoint.as_ref()?;
        let mut url = url_with_query(endpoint);
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("id_token_hint", &vouched.id_token)
            .append_pair("client_id", &settings.client_id);
        if let Some(host) = host.and_then(|h| h.to_str().ok()) {
            q.append_pair(
                "post_logout_redirect_uri",
                &format!("https://{host}/.gateway/login"),
            );
        }
        url.push_str(&q.finish());
        Some(url)
    }
}
