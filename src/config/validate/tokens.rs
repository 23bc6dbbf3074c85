//! `[tokens]`: how long API tokens may live, whether every rule that asks
//! for a session takes them, and whether a password change ends them.

use std::time::Duration;

use super::super::{raw, Tokens};
use super::Validator;

/// A token's life when none is asked for.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

impl Validator<'_> {
    /// The `[tokens]` settings, and whether every rule that asks for a
    /// session accepts tokens (`default = true`).
    pub(super) fn tokens(&mut self, raw: &raw::RawTokens) -> (Option<Tokens>, bool) {
        let max_lifetime = self.duration(&raw.max_lifetime, Duration::from_secs(365 * 24 * 3600));
        if let (Some(max), Some(text)) = (max_lifetime, &raw.max_lifetime) {
            if max < Duration::from_secs(60) {
                self.diag
                    .at(text.span(), "max_lifetime must be at least 1m");
            }
        }
        let tokens = max_lifetime.map(|max_lifetime| Tokens {
            max_lifetime,
            default_lifetime: DEFAULT_LIFETIME.min(max_lifetime),
            end_on_password_change: raw
                .end_on_password_change
                .as_ref()
                .is_some_and(|b| *b.get_ref()),
        });
        let by_default = raw.default.as_ref().is_some_and(|b| *b.get_ref());
        (tokens, by_default)
    }
}
