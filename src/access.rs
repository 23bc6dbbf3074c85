//! The two judgments every proxied request and every forward-auth call
//! make, in this order: who is asking ([`authenticate`]), and what the
//! rules say of what they ask for ([`authorize`]).

use std::net::IpAddr;

use http::HeaderMap;

use crate::identity::tokens::TokenCheck;

use crate::identity::{Presented, SignedIn};
use crate::policy::{Decision, Target};
use crate::session;
use crate::state::State;

/// The request's session, if its cookie leads to a live one (its idle
/// deadline moves on); without one, its API token from `client`, if any.
pub async fn authenticate(state: &State, headers: &HeaderMap, client: IpAddr) -> Presented {
    let now = session::now_ms();
    let mut presented = state.auth.authenticate(headers, now, true).await;
    if presented.signed_in.is_none() {
        match state.auth.token(headers, client, now).await {
            TokenCheck::Absent => {}
            TokenCheck::Valid(signed_in) => presented.signed_in = Some(signed_in),
            TokenCheck::Refused => presented.token_refused = Some(None),
            TokenCheck::Throttled(retry) => presented.token_refused = Some(Some(retry)),
        }
    }
    presented
}

/// What the rules in force say of `target` for `signed_in` (or nobody).
pub fn authorize(
    policy: &crate::policy::Policy,
    signed_in: Option<&SignedIn>,
    target: &Target,
) -> Decision {
    authorize_with_rule(policy, signed_in, target).0
}

/// [`authorize`], and whether the deciding rule lets the client's
/// `Authorization` header go on to the upstream (`pass_authorization`).
pub fn authorize_with_rule(
    policy: &crate::policy::Policy,
    signed_in: Option<&SignedIn>,
    target: &Target,
) -> (Decision, bool) {
    let principal = signed_in.map(|s| s.principal(session::now_ms()));
    let judgement = policy.decide(target, principal);
    let pass = judgement.rule.is_some_and(|r| r.pass_authorization);
    (judgement.decision, pass)
}
