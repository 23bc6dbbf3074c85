//! The two judgments every proxied request and every forward-auth call
//! make, in this order: who is asking ([`authenticate`]), and what the
//! rules say of what they ask for ([`authorize`]).

use http::HeaderMap;

use crate::identity::{Presented, SignedIn};
use crate::policy::{Decision, Target};
use crate::session;
use crate::state::State;

/// The request's session, if its cookie leads to a live one (its idle
/// deadline moves on).
pub async fn authenticate(state: &State, headers: &HeaderMap) -> Presented {
    state
        .auth
        .authenticate(headers, session::now_ms(), true)
        .await
}

/// What the rules in force say of `target` for `signed_in` (or nobody).
pub fn authorize(
    policy: &crate::policy::Policy,
    signed_in: Option<&SignedIn>,
    target: &Target,
) -> Decision {
    let principal = signed_in.map(|s| s.principal(session::now_ms()));
    policy.decide(target, principal).decision
}
