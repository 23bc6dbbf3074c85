//! Passkeys (WebAuthn, through webauthn-rs): adding and removing them
//! from the account page, the second step of a sign-in after the
//! password, and signing in with a passkey alone.
//!
//! Each ceremony's challenge is random (webauthn-rs makes it), lives
//! [`CEREMONY_FOR_MS`] and is used once, so an assertion can never be
//! replayed. Adding a passkey and the step after the password keep it in
//! the store's records (which replicas share) under the session or the
//! pending sign-in it belongs to, taken by the first answer. A sign-in
//! with a passkey alone, which anyone may begin, keeps nothing: the
//! ceremony goes to the page sealed with the gateway's secret (with its
//! deadline) and comes back with the answer; the first verified answer
//! claims it in the records. The relying party is the
//! request's host (or `[session] cookie_domain`), the origin
//! `https://` + the host the browser named; both must be the ones the
//! ceremony began with. webauthn-rs checks the origin, the RP ID hash,
//! the signature, user verification (its passkey policy asks for it
//! every time) and that the signature counter moved on; the new counter
//! and backup flags are then saved only if no other sign-in saved the
//! passkey meanwhile ([`Change::UsePasskey`]).
//!
//! Every try takes an attempt from the same throttle as passwords, and
//! every event (added, removed, used, refused) is a security event.

mod sign_in;

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticationResult, Passkey, PasskeyRegistration, RegisterPublicKeyCredential, Url, Webauthn,
    WebauthnBuilder, WebauthnError,
};

use super::forms::{see_other, Form};
use super::{csrf, Auth, Call};
use crate::metrics::Login;
use crate::response::{own_response, Body, GatewayError};
use crate::session::{self, Key};
use crate::store::counters::Attempt;
use crate::users::file::{Change, UserFileError};
use crate::users::passkey::{self as stored, UserPasskey};
use crate::users::User;

/// How long a ceremony (its challenge) waits for the authenticator.
pub const CEREMONY_FOR_MS: u64 = 5 * 60 * 1000;
/// The largest passkey form: a registration with its attestation fits.
const MAX_PASSKEY_FORM_BYTES: usize = 16 * 1024;

const REGISTERING: &str = "passkey-register";
const PROVING: &str = "passkey-second-factor";
const DISCOVERING: &str = "passkey-sign-in";

/// A ceremony as the records keep it: webauthn-rs's state and the
/// relying party it began under.
#[derive(Serialize, Deserialize)]
struct Ceremony<S> {
    state: S,
    rp_id: String,
    origin: String,
}

/// The relying party of one request.
struct RelyingParty {
    webauthn: Webauthn,
    rp_id: String,
    origin: String,
}

/// An answer for the page's script: JSON with `status`.
fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    own_response(status, "application/json; charset=utf-8", body.to_string())
}

fn refusal(status: StatusCode, words: &str) -> Response<Body> {
    json(status, serde_json::json!({ "error": words }))
}

const NOT_ACCEPTED: &str = "That passkey was not accepted.";
const START_AGAIN: &str = "That took too long or was used already. Try again.";

impl Auth {
    /// The relying party for a request that named `host`.
    fn relying_party(&self, host: Option<&HeaderValue>) -> Result<RelyingParty, GatewayError> {
        let host = host
            .and_then(|h| h.to_str().ok())
            .ok_or(GatewayError::BadForm)?;
        let origin = Url::parse(&format!("https://{host}")).map_err(|_| GatewayError::BadForm)?;
        let rp_id = match &self.cookie_domain {
            Some(domain) => domain.trim_start_matches('.').to_owned(),
            None => origin.host_str().ok_or(GatewayError::BadForm)?.to_owned(),
        };
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .and_then(|b| b.rp_name("authgate").build())
            .map_err(|_| GatewayError::BadForm)?;
        Ok(RelyingParty {
            webauthn,
            rp_id,
            origin: origin.as_str().trim_end_matches('/').to_owned(),
        })
    }

    async fn begin_ceremony<S: Serialize>(
        &self,
        kind: &'static str,
        key: &Key,
        rp: &RelyingParty,
        state: S,
    ) -> Result<(), GatewayError> {
        let ceremony = Ceremony {
            state,
            rp_id: rp.rp_id.clone(),
            origin: rp.origin.clone(),
        };
        let text = serde_json::to_string(&ceremony).expect("a ceremony serializes");
        self.store
            .records
            .put(kind, key, text, CEREMONY_FOR_MS)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)
    }

    /// Takes the ceremony of `key` (once: a second request finds none),
    /// if it began under `rp`.
    async fn take_ceremony<S: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
        key: &Key,
        rp: &RelyingParty,
    ) -> Result<Option<S>, GatewayError> {
        let Some(text) = self
            .store
            .records
            .take(kind, key)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?
        else {
            return Ok(None);
        };
        let Ok(ceremony) = serde_json::from_str::<Ceremony<S>>(&text) else {
            return Ok(None);
        };
        if ceremony.rp_id != rp.rp_id || ceremony.origin != rp.origin {
            return Ok(None);
        }
        Ok(Some(ceremony.state))
    }

    /// Notes a refused passkey: a security event, for the admin page too.
    fn passkey_refused(&self, user: &str, peer: IpAddr, why: &str) {
        crate::security_event!(warn, event = "passkey_refused", user = %user, ip = %peer, reason = why, "a passkey was refused");
        self.audit
            .remember("passkey_refused", &peer.to_string(), user, why.to_owned());
    }

    /// Why webauthn-rs refused an assertion, in a few words; a counter
    /// that did not move on is said so (a cloned authenticator).
    fn assertion_refused(&self, user: &str, peer: IpAddr, error: &WebauthnError) {
        let why = match error {
            WebauthnError::CredentialPossibleCompromise => {
                "the signature counter went backwards (a cloned authenticator?)"
            }
            WebauthnError::InvalidRPOrigin => "another origin",
            WebauthnError::InvalidRPIDHash => "another relying party",
            WebauthnError::UserNotVerified => "no user verification",
            _ => "the assertion did not verify",
        };
        self.passkey_refused(user, peer, why);
    }

    /// Saves a passkey's use: its new counter and backup flags, and when.
    /// `Err` when another sign-in saved it meanwhile (the same counter
    /// used twice), or the store cannot be reached.
    async fn note_use(
        &self,
        user: &User,
        passkey: &UserPasskey,
        result: &AuthenticationResult,
        peer: IpAddr,
    ) -> Result<(), Response<Body>> {
        let mut updated: Passkey = passkey.credential.clone();
        updated.update_credential(result);
        let change = Change::UsePasskey {
            name: user.key.to_string(),
            id: passkey.record.id.clone(),
            before: passkey.record.credential.clone(),
            after: stored::credential_text(&updated),
            used: session::now_ms() / 1000,
        };
        match self
            .change_users(change, &format!("user {}", user.name))
            .await
        {
            Ok(()) => {}
            // A users file the gateway may not write: the counter stays
            // as it was, which refuses nothing that moves on from it.
            Err(UserFileError::ReadOnly { .. }) => {}
            Err(UserFileError::StoreUnavailable) => {
                return Err(refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Signing in is unavailable for a moment. Try again.",
                ))
            }
            Err(_) => {
                self.passkey_refused(&user.name, peer, "used by another sign-in at once");
                return Err(refusal(StatusCode::UNAUTHORIZED, NOT_ACCEPTED));
            }
        }
        crate::security_event!(info, event = "passkey_used", user = %user.name, ip = %peer, passkey = %passkey.record.name, "signed in with a passkey");
        self.audit.remember(
            "passkey_used",
            &peer.to_string(),
            &user.name,
            passkey.record.name.clone(),
        );
        Ok(())
    }

    /// Takes an attempt from the sign-in throttle for `account`.
    async fn passkey_attempt(
        &self,
        call: &Call<'_>,
        account: &str,
    ) -> Result<Attempt<'_>, GatewayError> {
        use crate::store::counters::Refused;
        match self.reserve(&call.config.login, account, call.peer).await {
            Ok(attempt) => Ok(attempt),
            Err(Refused::Throttled(throttled)) => {
                self.metrics.record_login(Login::Throttled);
                crate::security_event!(warn, event = "login_throttled", user = %super::password::truncate(account), ip = %call.peer, "passkey sign-in throttled");
                Err(GatewayError::Throttled {
                    retry_after_secs: throttled.retry_after_secs,
                })
            }
            Err(Refused::Unavailable) => Err(GatewayError::StoreUnavailable),
        }
    }

    /// `POST /.gateway/passkeys/options` (`csrf`, `password`): the
    /// options to create a passkey with.
    pub(in crate::identity) async fn passkey_register_options(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let (signed_in, user, form) = self.passkey_owner(call, request).await?;
        if let Some(refused) = self.cannot_keep_passkeys(&signed_in) {
            return Ok(refused);
        }
        // The password again: a session left open is not enough to add
        // a way in.
        let attempt = self.passkey_attempt(call, &user.key).await?;
        if !self
            .own_password_matches(&user, form.get("password"))
            .await?
        {
            attempt.failed();
            self.passkey_refused(&user.name, call.peer, "wrong password to add one");
            return Ok(refusal(StatusCode::UNAUTHORIZED, "The password is wrong."));
        }
        // The password again is no whole sign-in: the count stays.
        attempt.given_back();
        if user.passkeys.len() >= stored::MAX_PER_USER {
            return Ok(refusal(
                StatusCode::CONFLICT,
                "You have as many passkeys as an account may hold: remove one first.",
            ));
        }
        let rp = self.relying_party(call.host)?;
        let exclude = user
            .passkeys
            .iter()
            .map(|p| p.credential.cred_id().clone())
            .collect();
        let (options, state) = rp
            .webauthn
            .start_passkey_registration(
                stored::user_handle(&user.key),
                &user.name,
                &user.name,
                Some(exclude),
            )
            .map_err(|_| GatewayError::BadForm)?;
        // A discoverable credential where the authenticator can keep one,
        // so that the same passkey also signs in without the password.
        let mut options = serde_json::json!(options);
        if let Some(selection) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(|s| s.as_object_mut())
        {
            selection.insert("residentKey".into(), "preferred".into());
        }
        let state: PasskeyRegistration = state;
        self.begin_ceremony(REGISTERING, &signed_in.session.key, &rp, state)
            .await?;
        Ok(json(StatusCode::OK, options))
    }

    /// `POST /.gateway/passkeys` (`csrf`, `action`): `add` (`name`,
    /// `credential`: the new credential) answers JSON for the page's
    /// script; `remove` (`id`) goes back to the account page.
    pub(in crate::identity) async fn passkeys(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let (signed_in, user, form) = self.passkey_owner(call, request).await?;
        if let Some(refused) = self.cannot_keep_passkeys(&signed_in) {
            return Ok(refused);
        }
        let failed = "The passkey could not be saved. Nothing was changed.";
        match form.get("action") {
            "remove" => {
                let change = Change::RemovePasskey {
                    name: user.key.to_string(),
                    id: form.get("target").to_owned(),
                };
                if !user
                    .passkeys
                    .iter()
                    .any(|p| p.record.id == form.get("target"))
                {
                    return Err(GatewayError::NotFound);
                }
                let removed = "The passkey could not be removed. Nothing was changed.";
                if let Err((status, words)) = self
                    .save_own(change, &user, "a passkey's removal", removed)
                    .await
                {
                    return Ok(crate::response::page(status, "Passkeys", words));
                }
                Ok(see_other("/.gateway/account"))
            }
            "add" => {
                let rp = self.relying_party(call.host)?;
                let Some(state) = self
                    .take_ceremony::<PasskeyRegistration>(REGISTERING, &signed_in.session.key, &rp)
                    .await?
                else {
                    return Ok(refusal(StatusCode::CONFLICT, START_AGAIN));
                };
                let Ok(credential) =
                    serde_json::from_str::<RegisterPublicKeyCredential>(form.get("credential"))
                else {
                    return Ok(refusal(StatusCode::BAD_REQUEST, NOT_ACCEPTED));
                };
                let passkey = match rp.webauthn.finish_passkey_registration(&credential, &state) {
                    Ok(passkey) => passkey,
                    Err(e) => {
                        self.assertion_refused(&user.name, call.peer, &e);
                        return Ok(refusal(StatusCode::BAD_REQUEST, NOT_ACCEPTED));
                    }
                };
                let id = stored::id_of(&passkey);
                let taken = self
                    .users()
                    .iter()
                    .any(|u| u.passkeys.iter().any(|p| p.record.id == id));
                if taken {
                    self.passkey_refused(
                        &user.name,
                        call.peer,
                        "its credential ID is registered already",
                    );
                    return Ok(refusal(StatusCode::CONFLICT, NOT_ACCEPTED));
                }
                let name = match form.get("name").trim() {
                    "" => format!("Passkey {}", user.passkeys.len() + 1),
                    name => name.to_owned(),
                };
                let added = match UserPasskey::registered(&name, passkey, session::now_ms() / 1000)
                {
                    Ok(added) => added,
                    Err(words) => return Ok(refusal(StatusCode::BAD_REQUEST, &words)),
                };
                let change = Change::AddPasskey {
                    name: user.key.to_string(),
                    passkey: added.record,
                    provider: user.provider.as_deref().map(str::to_owned),
                };
                if let Err((status, words)) =
                    self.save_own(change, &user, "a passkey", failed).await
                {
                    return Ok(refusal(status, words));
                }
                Ok(json(StatusCode::OK, serde_json::json!({ "added": name })))
            }
            _ => Err(GatewayError::BadForm),
        }
    }

    /// The signed-in person a passkey form is about (with the second
    /// factors kept for them) and the form, checked for CSRF.
    async fn passkey_owner(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<(super::SignedIn, Arc<User>, Form), GatewayError> {
        if request.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let signed_in = self
            .require_session(request.headers(), request.method(), "/.gateway/account")
            .await?;
        call.logged_user = Some(signed_in.user.name.clone());
        let token = self.csrf_token(&signed_in.session.key);
        let form = passkey_form(request, call.host, Some(&token)).await?;
        let user = self.with_second_factor(&signed_in.user);
        Ok((signed_in, user, form))
    }

    /// Why this person cannot keep passkeys here, as the answer: their
    /// sign-in service keeps their second factor, or the users file is
    /// read-only.
    fn cannot_keep_passkeys(&self, signed_in: &super::SignedIn) -> Option<Response<Body>> {
        if signed_in.proved_elsewhere().is_some() {
            return Some(refusal(
                StatusCode::CONFLICT,
                "Your sign-in service keeps your second factor: add a passkey there.",
            ));
        }
        self.users_managed_elsewhere()
            .map(|_| refusal(StatusCode::CONFLICT, super::forms::MANAGED_ELSEWHERE))
    }
}

/// A passkey form: from this site, within [`MAX_PASSKEY_FORM_BYTES`], and
/// carrying `token` (none: refused).
async fn passkey_form(
    request: crate::body::GatewayRequest,
    host: Option<&HeaderValue>,
    token: Option<&str>,
) -> Result<Form, GatewayError> {
    if !csrf::same_origin(request.headers(), host) {
        return Err(GatewayError::CsrfRejected);
    }
    let form = super::forms::read_form_within(request, MAX_PASSKEY_FORM_BYTES).await?;
    match token {
        Some(token) if csrf::matches(token, form.get("csrf")) => Ok(form),
        _ => Err(GatewayError::CsrfRejected),
    }
}

/// The script of the passkey buttons (`/.gateway/passkey.js`).
pub fn script() -> Response<Body> {
    let mut response = own_response(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        crate::pages::PASSKEY_SCRIPT,
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
