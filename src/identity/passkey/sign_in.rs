//! Signing in with a passkey: the step after the password, and a
//! passkey alone (a discoverable credential that names its account and
//! has verified its user).

use http::{Method, Response, StatusCode};
use sha2::Digest;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PublicKeyCredential,
};

use super::{json, passkey_form, refusal, DISCOVERING, NOT_ACCEPTED, PROVING, START_AGAIN};
use crate::identity::forms::see_other;
use crate::identity::{Auth, Call};
use crate::metrics::Login;
use crate::pages::sign_in as pages;
use crate::response::{Body, GatewayError};
use crate::session;
use crate::users::passkey::{self as stored, UserPasskey};
use crate::users::User;

impl Auth {
    /// `GET /.gateway/login/passkey`: the passkey step of a pending
    /// sign-in; `POST` (`csrf`, `credential`) checks the assertion.
    /// Without a pending sign-in, `POST` is a sign-in with a passkey
    /// alone (`ceremony` names its challenge).
    pub(in crate::identity) async fn login_passkey(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let pending = self
            .pending_of(request.headers())
            .await?
            .filter(|p| !p.enroll);
        if request.method() != Method::POST {
            let Some(pending) = pending else {
                return Ok(see_other("/.gateway/login"));
            };
            call.logged_user = Some(pending.user.name.clone());
            let token = self.csrf_token(&pending.key);
            return Ok(pages::login_passkey(&token, pending.user.totp.is_some()).into());
        }
        let user_agent = crate::identity::forms::user_agent_of(request.headers());
        let Some(pending) = pending else {
            return self.passkey_only(call, request, &user_agent).await;
        };
        call.logged_user = Some(pending.user.name.clone());
        let token = self.csrf_token(&pending.key);
        let form = passkey_form(request, call.host, Some(&token)).await?;
        let user = pending.user.clone();
        if let Err(refused) = self.prove(call, &user, &pending.key, &form).await? {
            return Ok(refused);
        }
        // Used once: the pending sign-in is gone whatever happens next.
        if !self.take_pending(&pending.key).await? {
            return Ok(refusal(StatusCode::CONFLICT, START_AGAIN));
        }
        let vouched = pending.vouched.map(|v| (v, None));
        let id = self
            .begin_session(call, &user, &user_agent, true, vouched)
            .await?;
        let mut response = json(StatusCode::OK, serde_json::json!({ "next": pending.next }));
        self.set_session_cookie(&mut response, &id);
        self.clear_pending_cookie(&mut response);
        Ok(response)
    }

    /// Checks the answer in `form` to the passkey challenge kept under
    /// `key` (a pending sign-in's, or a session's for a fresh sign-in),
    /// taking an attempt from the throttle, and saves the passkey's use.
    /// `Ok(Err)`: the answer to send, when it does not pass.
    async fn prove(
        &self,
        call: &Call<'_>,
        user: &User,
        key: &crate::session::Key,
        form: &crate::identity::forms::Form,
    ) -> Result<Result<(), Response<Body>>, GatewayError> {
        let rp = self.relying_party(call.host)?;
        let attempt = self.passkey_attempt(call, &user.key).await?;
        let Some(state) = self
            .take_ceremony::<PasskeyAuthentication>(PROVING, key, &rp)
            .await?
        else {
            attempt.given_back();
            return Ok(Err(refusal(StatusCode::CONFLICT, START_AGAIN)));
        };
        let Ok(credential) = serde_json::from_str::<PublicKeyCredential>(form.get("credential"))
        else {
            attempt.failed();
            return Ok(Err(refusal(StatusCode::BAD_REQUEST, NOT_ACCEPTED)));
        };
        let result = match rp
            .webauthn
            .finish_passkey_authentication(&credential, &state)
        {
            Ok(result) => result,
            Err(e) => {
                attempt.failed();
                self.metrics.record_login(Login::BadCredentials);
                self.assertion_refused(&user.name, call.peer, &e);
                return Ok(Err(refusal(StatusCode::UNAUTHORIZED, NOT_ACCEPTED)));
            }
        };
        let Some(passkey) = passkey_of(user, &result) else {
            attempt.failed();
            return Ok(Err(refusal(StatusCode::UNAUTHORIZED, NOT_ACCEPTED)));
        };
        if let Err(refused) = self.note_use(user, passkey, &result, call.peer).await {
            attempt.failed();
            return Ok(Err(refused));
        }
        attempt.succeeded();
        Ok(Ok(()))
    }

    /// The options of a challenge to `passkeys`, kept under `key`.
    async fn challenge(
        &self,
        call: &Call<'_>,
        key: &crate::session::Key,
        passkeys: &[UserPasskey],
    ) -> Result<Response<Body>, GatewayError> {
        let rp = self.relying_party(call.host)?;
        let passkeys: Vec<Passkey> = passkeys.iter().map(|p| p.credential.clone()).collect();
        if passkeys.is_empty() {
            return Ok(refusal(StatusCode::CONFLICT, "You have no passkey."));
        }
        let (options, state) = rp
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|_| GatewayError::BadForm)?;
        self.begin_ceremony(PROVING, key, &rp, state).await?;
        Ok(json(
            StatusCode::OK,
            serde_json::json!({ "options": options }),
        ))
    }

    /// `POST /.gateway/reauth/passkey/options` (`csrf`) and `POST
    /// /.gateway/reauth/passkey` (`csrf`, `credential`, `next`): the fresh
    /// sign-in a route asks for (`mfa`, `max_auth_age`), with a passkey
    /// that verifies its user: password and second factor at once, the
    /// session going on under the same ID.
    pub(in crate::identity) async fn reauth_passkey(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
        options: bool,
    ) -> Result<Response<Body>, GatewayError> {
        if request.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let signed_in = self
            .require_session(request.headers(), request.method(), "/.gateway/reauth")
            .await?;
        call.logged_user = Some(signed_in.user.name.clone());
        if signed_in.proved_elsewhere().is_some() {
            return Err(GatewayError::NotFound);
        }
        let user = self.with_second_factor(&signed_in.user);
        let key = signed_in.session.key;
        let form = passkey_form(request, call.host, Some(&self.csrf_token(&key))).await?;
        if options {
            return self.challenge(call, &key, &user.passkeys).await;
        }
        if let Err(refused) = self.prove(call, &user, &key, &form).await? {
            return Ok(refused);
        }
        let live = self
            .store
            .sessions
            .reauthenticate(&key, true, session::now_ms())
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        if !live {
            return Ok(refusal(StatusCode::CONFLICT, START_AGAIN));
        }
        crate::security_event!(info, event = "reauthenticated", user = %user.name, ip = %call.peer, second_factor = true, "fresh sign-in with a passkey");
        let next = self.next_of(crate::identity::totp::form_next(&form));
        Ok(json(StatusCode::OK, serde_json::json!({ "next": next })))
    }

    /// `POST /.gateway/login/passkey/options` (`csrf`): the options for
    /// the passkey step of a pending sign-in (its passkeys), or without
    /// one for a sign-in with a passkey alone (any discoverable passkey,
    /// and a `ceremony` ID to send back).
    pub(in crate::identity) async fn login_passkey_options(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        if request.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        if let Some(pending) = self
            .pending_of(request.headers())
            .await?
            .filter(|p| !p.enroll)
        {
            let token = self.csrf_token(&pending.key);
            passkey_form(request, call.host, Some(&token)).await?;
            return self
                .challenge(call, &pending.key, &pending.user.passkeys)
                .await;
        }
        if !call.config.login.local {
            return Err(GatewayError::NotFound);
        }
        let token = self.login_token(request.headers()).map(str::to_owned);
        passkey_form(request, call.host, token.as_deref()).await?;
        let rp = self.relying_party(call.host)?;
        let (options, state) = rp
            .webauthn
            .start_discoverable_authentication()
            .map_err(|_| GatewayError::BadForm)?;
        // Nothing is kept for a page that may never answer: the ceremony
        // goes to the page sealed, with its deadline, and comes back.
        let ceremony = super::Ceremony::<DiscoverableAuthentication> {
            state,
            rp_id: rp.rp_id.clone(),
            origin: rp.origin.clone(),
        };
        let text = serde_json::json!({
            "ceremony": ceremony,
            "until": session::now_ms() + super::CEREMONY_FOR_MS,
        });
        let sealed = self.csrf.seal(DISCOVERING, &text.to_string());
        Ok(json(
            StatusCode::OK,
            serde_json::json!({ "options": options, "ceremony": sealed }),
        ))
    }

    /// A sign-in with a passkey alone: the passkey names its account (its
    /// user handle and credential ID), and must have verified the user
    /// (a PIN, a fingerprint): that is both factors at once.
    async fn passkey_only(
        &self,
        call: &mut Call<'_>,
        request: crate::body::GatewayRequest,
        user_agent: &str,
    ) -> Result<Response<Body>, GatewayError> {
        if !call.config.login.local {
            return Err(GatewayError::NotFound);
        }
        let earlier = self
            .authenticate(request.headers(), session::now_ms(), false)
            .await;
        let token = self.login_token(request.headers()).map(str::to_owned);
        let form = passkey_form(request, call.host, token.as_deref()).await?;
        let rp = self.relying_party(call.host)?;
        let Some(state) = self.open_ceremony(form.get("ceremony"), &rp) else {
            return Ok(refusal(StatusCode::CONFLICT, START_AGAIN));
        };
        let credential = serde_json::from_str::<PublicKeyCredential>(form.get("credential")).ok();
        let named = credential.as_ref().and_then(|c| {
            let (handle, id) = rp.webauthn.identify_discoverable_authentication(c).ok()?;
            let id = data_encoding::BASE64URL_NOPAD.encode(id);
            let users = self.users();
            let user = users
                .iter()
                .find(|u| !u.passkeys.is_empty() && stored::user_handle(&u.key) == handle)?
                .clone();
            let passkey = user.passkeys.iter().find(|p| p.record.id == id)?.clone();
            Some((user, passkey))
        });
        // Unknown passkeys count against the client under one name.
        let account = named
            .as_ref()
            .map_or("(passkey)".into(), |(u, _)| u.key.clone());
        let attempt = self.passkey_attempt(call, &account).await?;
        let (Some(credential), Some((user, passkey))) = (credential, named) else {
            attempt.failed();
            self.metrics.record_login(Login::BadCredentials);
            self.passkey_refused("-", call.peer, "an unknown passkey");
            return Ok(refusal(StatusCode::UNAUTHORIZED, NOT_ACCEPTED));
        };
        call.logged_user = Some(user.name.clone());
        let result = rp.webauthn.finish_discoverable_authentication_v2(
            &credential,
            state,
            &passkey.credential,
        );
        let result = match result {
            Ok(result) if result.user_verified() => result,
            Ok(_) => {
                attempt.failed();
                self.passkey_refused(&user.name, call.peer, "no user verification");
                return Ok(refusal(StatusCode::UNAUTHORIZED, NOT_ACCEPTED));
            }
            Err(e) => {
                attempt.failed();
                self.metrics.record_login(Login::BadCredentials);
                self.assertion_refused(&user.name, call.peer, &e);
                return Ok(refusal(StatusCode::UNAUTHORIZED, NOT_ACCEPTED));
            }
        };
        // Used once: the first verified answer to a ceremony claims it.
        let used = sha2::Sha256::digest(form.get("ceremony").as_bytes()).into();
        let first = self
            .store
            .records
            .claim(DISCOVERING, &used, super::CEREMONY_FOR_MS)
            .await
            .map_err(|_| GatewayError::StoreUnavailable)?;
        if !first {
            attempt.failed();
            self.passkey_refused(&user.name, call.peer, "an answer used already");
            return Ok(refusal(StatusCode::UNAUTHORIZED, NOT_ACCEPTED));
        }
        if user.locked {
            attempt.failed();
            self.metrics.record_login(Login::Locked);
            self.passkey_refused(&user.name, call.peer, "the account is locked");
            return Ok(refusal(StatusCode::UNAUTHORIZED, NOT_ACCEPTED));
        }
        // A directory's user: the directory says who they are today.
        let vouched = match user.provider.as_deref() {
            None => None,
            Some(crate::config::Ldap::NAME) => {
                match self.directory_person(call.config, &user).await {
                    Ok(Some(vouched)) => Some(vouched),
                    Ok(None) => {
                        attempt.failed();
                        self.passkey_refused(
                            &user.name,
                            call.peer,
                            "not in the directory (or disabled)",
                        );
                        return Ok(refusal(StatusCode::UNAUTHORIZED, NOT_ACCEPTED));
                    }
                    Err(e) => {
                        attempt.given_back();
                        return Err(e);
                    }
                }
            }
            Some(_) => {
                attempt.failed();
                return Ok(refusal(StatusCode::UNAUTHORIZED, NOT_ACCEPTED));
            }
        };
        if let Err(refused) = self.note_use(&user, &passkey, &result, call.peer).await {
            attempt.failed();
            return Ok(refused);
        }
        attempt.succeeded();
        if let Some(old) = earlier.signed_in {
            self.store.sessions.end_now(&old.session.key);
        }
        let next = self.next_of(crate::identity::totp::form_next(&form));
        let (session_user, vouched) = match vouched {
            Some(v) => (v.user.clone(), Some((v, None))),
            None => (user.clone(), None),
        };
        let id = self
            .begin_session(call, &session_user, user_agent, true, vouched)
            .await?;
        let mut response = json(StatusCode::OK, serde_json::json!({ "next": next }));
        self.set_session_cookie(&mut response, &id);
        Ok(response)
    }
}

impl Auth {
    /// The state of a sealed passkey-alone ceremony that began under `rp`
    /// and whose time has not ended.
    fn open_ceremony(
        &self,
        sealed: &str,
        rp: &super::RelyingParty,
    ) -> Option<DiscoverableAuthentication> {
        #[derive(serde::Deserialize)]
        struct Sealed {
            ceremony: super::Ceremony<DiscoverableAuthentication>,
            until: u64,
        }
        let text = self.csrf.open(DISCOVERING, sealed)?;
        let Sealed { ceremony, until } = serde_json::from_str(&text).ok()?;
        let current = ceremony.rp_id == rp.rp_id && ceremony.origin == rp.origin;
        (current && session::now_ms() < until).then_some(ceremony.state)
    }
}

/// The stored passkey an assertion's result names.
fn passkey_of<'u>(user: &'u User, result: &AuthenticationResult) -> Option<&'u UserPasskey> {
    let id = data_encoding::BASE64URL_NOPAD.encode(result.cred_id().as_ref());
    user.passkeys.iter().find(|p| p.record.id == id)
}
