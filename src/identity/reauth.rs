//! A fresh sign-in within a session (`/.gateway/reauth`), for a route's
//! `max_auth_age` or `mfa = true`: the password again, and the code of a
//! user who has a second factor.

use http::{Method, Response, StatusCode};

use super::forms::{checked_form, see_other};
use super::totp::{form_next, CodeCheck};
use super::{Auth, Call};
use crate::pages::sign_in as pages;
use crate::response::{Body, GatewayError};
use crate::session;

impl Auth {
    /// `/.gateway/reauth?next=`: the password (and the code, for a user
    /// with TOTP) entered again within a session; success refreshes the
    /// session's sign-in time without a new session. A user with a passkey
    /// is offered it too ([`Self::reauth_passkey`]): with TOTP or not, a
    /// route that asks for a second factor is then met.
    pub(super) async fn reauth(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let Call {
            config, peer, host, ..
        } = *call;
        let query_next = self.query_next(request.uri().query());
        let signed_in = self
            .require_session(request.headers(), request.method(), "/.gateway/reauth")
            .await?;
        // A provider's user signs in again there.
        if let Some(provider) = signed_in.proved_elsewhere() {
            return Err(GatewayError::Reauth {
                next: query_next,
                navigating: true,
                second_factor: false,
                enroll: false,
                provider: Some(provider.clone()),
            });
        }
        let user = self.with_second_factor(&signed_in.user);
        call.logged_user = Some(user.name.clone());
        let token = self.csrf_token(&signed_in.session.key);
        let with_code = user.totp.is_some();
        if request.method() != Method::POST {
            return Ok(pages::reauth(
                StatusCode::OK,
                signed_in.viewer(config),
                &token,
                &query_next,
                with_code,
                !user.passkeys.is_empty(),
                None,
            )
            .into());
        }
        let form = checked_form(request, host, &token).await?;
        let next = self.next_of(form_next(&form));
        let attempt = self.code_attempt(config, &user, peer).await?;
        let matched = self
            .own_password_matches(&user, form.get("password"))
            .await?;
        let code_ok = !with_code
            || (matched
                && matches!(
                    self.check_code(&user, form.get("code"), peer).await?,
                    CodeCheck::Accepted
                ));
        if !matched || !code_ok {
            attempt.failed();
            crate::security_event!(warn, event = "reauth_failed", user = %user.name, ip = %peer, "a fresh sign-in failed");
            return Ok(pages::reauth(
                StatusCode::UNAUTHORIZED,
                signed_in.viewer(config),
                &token,
                &next,
                with_code,
                !user.passkeys.is_empty(),
                Some(super::GENERIC_FAILURE),
            )
            .into());
        }
        attempt.succeeded();
        let live = self
            .store
            .sessions
            .reauthenticate(&signed_in.session.key, with_code, session::now_ms())
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        if !live {
            return Ok(see_other("/.gateway/login"));
        }
        crate::security_event!(info, event = "reauthenticated", user = %user.name, ip = %peer, second_factor = with_code, "fresh sign-in");
        Ok(see_other(&next))
    }
}
