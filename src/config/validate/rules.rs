//! The `[[rule]]`s and the `[[test]]`s that check them.

use std::time::Duration;

use super::super::raw;
use super::super::PolicyTest;
use super::Validator;
use crate::policy::{Access, Glob, Policy, Rule};

impl Validator<'_> {
    /// `providers`: the `[[oidc]]` names a rule's `providers` may list
    /// (besides `local`).
    pub(super) fn policy(
        &mut self,
        raw: Vec<toml::Spanned<raw::RawRule>>,
        providers: &[&str],
        tokens_by_default: bool,
    ) -> Option<Policy> {
        let mut rules = Vec::with_capacity(raw.len());
        let mut complete = true;
        for (index, spanned) in raw.into_iter().enumerate() {
            let (line, col) = self.diag.line_col(spanned.span().start);
            let roles_position = spanned
                .get_ref()
                .roles
                .as_ref()
                .map(|r| self.diag.line_col(r.span().start));
            match self
                .rule(
                    index,
                    line,
                    spanned.into_inner(),
                    providers,
                    tokens_by_default,
                )
                .map(|mut rule| {
                    rule.col = col;
                    rule.roles_position = roles_position;
                    rule
                }) {
                Some(rule) => rules.push(rule),
                None => complete = false,
            }
        }
        complete.then(|| Policy::new(rules))
    }

    pub(super) fn tests(
        &mut self,
        raw: Vec<toml::Spanned<raw::RawTest>>,
    ) -> Option<Vec<PolicyTest>> {
        let mut tests = Vec::with_capacity(raw.len());
        let mut complete = true;
        for spanned in raw {
            let (line, col) = self.diag.line_col(spanned.span().start);
            let raw = spanned.into_inner();
            let user = match (&raw.user, &raw.anonymous) {
                (Some(user), None) => Some(Some(user.get_ref().clone())),
                (None, Some(anonymous)) if *anonymous.get_ref() => Some(None),
                (None, Some(anonymous)) => {
                    self.diag.at(
                        anonymous.span(),
                        "`anonymous = false` says nothing: name a `user` instead",
                    );
                    None
                }
                (Some(user), Some(_)) => {
                    self.diag.at(
                        user.span(),
                        "a test has either `user` or `anonymous = true`, not both",
                    );
                    None
                }
                (None, None) => {
                    self.diag.at(
                        raw.method.span(),
                        "a test needs `user = \"NAME\"` or `anonymous = true`",
                    );
                    None
                }
            };
            let method = match http::Method::from_bytes(
                raw.method.get_ref().to_ascii_uppercase().as_bytes(),
            ) {
                Ok(m) => Some(m),
                Err(_) => {
                    self.diag.at(
                        raw.method.span(),
                        format!("invalid HTTP method {:?}", raw.method.get_ref()),
                    );
                    None
                }
            };
            let expect = match raw.expect.get_ref().as_str() {
                "allow" => Some("allow"),
                "deny" => Some("deny"),
                "login" => Some("login"),
                "reauth" => Some("reauth"),
                other => {
                    self.diag.at(
                        raw.expect.span(),
                        format!("unknown expect {other:?}: use \"allow\", \"deny\", \"login\" or \"reauth\""),
                    );
                    None
                }
            };
            let auth_age = self.duration(&raw.auth_age, Duration::ZERO);
            match (user, method, expect, auth_age) {
                (Some(user), Some(method), Some(expect), Some(auth_age)) => {
                    tests.push(PolicyTest {
                        line,
                        col,
                        user,
                        method,
                        path: raw.path.into_inner(),
                        host: raw.host.map(|h| h.into_inner()),
                        expect,
                        upstream: raw.upstream.map(|u| u.into_inner()),
                        auth_age,
                        mfa: raw.mfa.map(|m| m.into_inner()),
                    })
                }
                _ => complete = false,
            }
        }
        complete.then_some(tests)
    }

    pub(super) fn rule(
        &mut self,
        index: usize,
        line: usize,
        raw: raw::RawRule,
        known: &[&str],
        tokens_by_default: bool,
    ) -> Option<Rule> {
        let pattern = match Glob::parse(raw.path.get_ref()) {
            Ok(g) => Some(g),
            Err(e) => {
                self.diag.at(raw.path.span(), e);
                None
            }
        };
        let mut methods_ok = true;
        let methods = raw.methods.map(|list| {
            list.iter()
                .filter_map(|m| {
                    let upper = m.get_ref().to_ascii_uppercase();
                    match http::Method::from_bytes(upper.as_bytes()) {
                        Ok(method) if !upper.is_empty() => Some(method),
                        _ => {
                            self.diag
                                .at(m.span(), format!("invalid HTTP method {:?}", m.get_ref()));
                            methods_ok = false;
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        });
        let host = raw.host.map(|h| {
            let host = h.get_ref().trim().to_ascii_lowercase();
            host.strip_suffix('.').map(str::to_owned).unwrap_or(host)
        });
        let access = match (&raw.access, &raw.roles) {
            (Some(_), Some(roles)) => {
                self.diag.at(
                    roles.span(),
                    "a rule has either `access` or `roles`, not both",
                );
                None
            }
            (None, None) => {
                self.diag.at(
                    raw.path.span(),
                    "a rule needs `access = \"public\" | \"authenticated\" | \"deny\"` or `roles = [..]`",
                );
                None
            }
            (Some(access), None) => match access.get_ref().as_str() {
                "public" => Some(Access::Public),
                "authenticated" => Some(Access::Authenticated),
                "deny" => Some(Access::Deny),
                other => {
                    self.diag.at(
                        access.span(),
                        format!("unknown access {other:?}: use \"public\", \"authenticated\" or \"deny\""),
                    );
                    None
                }
            },
            (None, Some(roles)) => Some(Access::Roles(
                roles
                    .get_ref()
                    .iter()
                    .map(|r| r.get_ref().clone())
                    .collect(),
            )),
        };
        let max_auth_age = match &raw.max_auth_age {
            None => Some(None),
            Some(text) => self
                .duration(&raw.max_auth_age, Duration::ZERO)
                .and_then(|d| {
                    if d.is_zero() {
                        self.diag
                            .at(text.span(), "max_auth_age must be more than 0");
                        None
                    } else {
                        Some(Some(d))
                    }
                }),
        };
        let mfa = raw.mfa.map(|m| m.into_inner()).unwrap_or(false);
        let needs_session = matches!(access, Some(Access::Authenticated | Access::Roles(_)));
        if (mfa || raw.max_auth_age.is_some()) && access.is_some() && !needs_session {
            self.diag.at(
                raw.path.span(),
                "`mfa` and `max_auth_age` need a rule that asks for a session (access = \"authenticated\" or roles)",
            );
            return None;
        }
        if !methods_ok {
            return None;
        }
        let providers = match &raw.providers {
            None => Some(None),
            Some(list) => {
                let mut ok = true;
                for name in list {
                    if name.get_ref() != "local" && !known.contains(&name.get_ref().as_str()) {
                        self.diag.at(
                            name.span(),
                            format!(
                                "{:?} is not an [[oidc]] name (nor \"local\", the users file's own users)",
                                name.get_ref()
                            ),
                        );
                        ok = false;
                    }
                }
                if list.is_empty() {
                    self.diag.at(
                        raw.path.span(),
                        "`providers = []` lets nobody in; leave it out or name a provider",
                    );
                    ok = false;
                }
                if !needs_session && access.is_some() {
                    self.diag.at(
                        raw.path.span(),
                        "`providers` needs a rule that asks for a session (access = \"authenticated\" or roles)",
                    );
                    ok = false;
                }
                ok.then(|| Some(list.iter().map(|n| n.get_ref().clone()).collect()))
            }
        };
        let flag = |b: &Option<toml::Spanned<bool>>| b.as_ref().map(|b| (*b.get_ref(), b.span()));
        let (tokens, basic_auth) = (flag(&raw.tokens), flag(&raw.basic_auth));
        let steps_up = mfa || raw.max_auth_age.is_some();
        let mut tokens_ok = true;
        for (on, span) in [tokens.clone(), basic_auth.clone()].into_iter().flatten() {
            if on && !needs_session && access.is_some() {
                self.diag.at(span, "`tokens` and `basic_auth` need a rule that asks for a session (access = \"authenticated\" or roles)");
                tokens_ok = false;
            } else if on && steps_up {
                self.diag.at(span, "a token cannot pass a second factor or sign in again: `tokens` and `basic_auth` cannot go with `mfa` or `max_auth_age`");
                tokens_ok = false;
            }
        }
        if !tokens_ok {
            return None;
        }
        let basic_auth = basic_auth.is_some_and(|(on, _)| on);
        let tokens = match tokens {
            Some((on, _)) => on || basic_auth,
            None => basic_auth || (tokens_by_default && needs_session && !steps_up),
        };
        Some(Rule {
            index,
            line,
            col: 1,
            roles_position: None,
            pattern: pattern?,
            methods,
            host,
            access: access?,
            mfa,
            max_auth_age: max_auth_age?,
            providers: providers?,
            tokens,
            basic_auth,
            pass_authorization: raw.pass_authorization.is_some_and(|b| b.into_inner()),
        })
    }
}
