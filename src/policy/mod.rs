//! The access policy: path normalization, compiled `[[rule]]`s, and the
//! decision for one request.

mod glob;
pub mod path;

pub use glob::{split_path, Glob};

use http::Method;

/// What a rule grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Public,
    Authenticated,
    Deny,
    /// Any one of these roles.
    Roles(Vec<String>),
}

/// One `[[rule]]`, compiled at load.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Position among the rules, from 0, as `explain` and `check` report it.
    pub index: usize,
    /// Line of the rule in the config file.
    pub line: usize,
    pub pattern: Glob,
    /// Upper-case methods; `None` matches every method.
    pub methods: Option<Vec<Method>>,
    /// Lower-case host name without port; `None` matches every host.
    pub host: Option<String>,
    pub access: Access,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The rule needs a session and the request has none.
    Login,
    Deny(DenyReason),
}

/// Why a request was denied: each is logged and counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No rule matched: the policy denies by default.
    NoRule,
    /// The matching rule says `access = "deny"`.
    DenyRule,
    /// The user has none of the roles the rule asks for.
    MissingRole,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoRule => "no rule matches",
            DenyReason::DenyRule => "a deny rule matches",
            DenyReason::MissingRole => "the user has none of the rule's roles",
        }
    }
}

/// Who is asking: `None` for an anonymous request.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub user: &'a str,
    pub roles: &'a [String],
}

/// The parts of a request the policy looks at.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub method: &'a Method,
    /// Host without port, if the request named one (compared case-insensitively).
    pub host: Option<&'a str>,
    /// The normalized path.
    pub path: &'a str,
}

#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// Paths deeper than this are not split on the stack; they are rare enough
/// that a heap allocation for them costs nothing overall.
const INLINE_SEGMENTS: usize = 32;

impl Policy {
    pub fn new(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule that matches decides; no match is deny.
    pub fn decide(&self, target: &Target, who: Option<Principal>) -> (Decision, Option<&Rule>) {
        let mut inline = [""; INLINE_SEGMENTS];
        let mut count = 0;
        let mut spilled: Vec<&str> = Vec::new();
        for segment in split_path(target.path) {
            if count < INLINE_SEGMENTS {
                inline[count] = segment;
            } else {
                if spilled.is_empty() {
                    spilled.extend_from_slice(&inline);
                }
                spilled.push(segment);
            }
            count += 1;
        }
        let segments: &[&str] = if count <= INLINE_SEGMENTS {
            &inline[..count]
        } else {
            &spilled
        };

        let Some(rule) = self.rules.iter().find(|r| r.matches(target, segments)) else {
            return (Decision::Deny(DenyReason::NoRule), None);
        };
        let decision = match (&rule.access, who) {
            (Access::Public, _) => Decision::Allow,
            (Access::Deny, _) => Decision::Deny(DenyReason::DenyRule),
            (Access::Authenticated | Access::Roles(_), None) => Decision::Login,
            (Access::Authenticated, Some(_)) => Decision::Allow,
            (Access::Roles(wanted), Some(p)) => {
                if wanted.iter().any(|w| p.roles.contains(w)) {
                    Decision::Allow
                } else {
                    Decision::Deny(DenyReason::MissingRole)
                }
            }
        };
        (decision, Some(rule))
    }
}

impl Rule {
    fn matches(&self, target: &Target, segments: &[&str]) -> bool {
        if let Some(methods) = &self.methods {
            if !methods.contains(target.method) {
                return false;
            }
        }
        if let Some(host) = &self.host {
            if !target.host.is_some_and(|h| h.eq_ignore_ascii_case(host)) {
                return false;
            }
        }
        self.pattern.matches(segments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(index: usize, path: &str, access: Access) -> Rule {
        Rule {
            index,
            line: index + 1,
            pattern: Glob::parse(path).unwrap(),
            methods: None,
            host: None,
            access,
        }
    }

    fn target<'a>(method: &'a Method, path: &'a str) -> Target<'a> {
        Target {
            method,
            host: None,
            path,
        }
    }

    #[test]
    fn first_match_wins_and_no_match_denies() {
        let policy = Policy::new(vec![
            rule(0, "/admin/**", Access::Deny),
            rule(1, "/public/**", Access::Public),
            rule(2, "/admin/open", Access::Public),
        ]);
        let get = Method::GET;
        let (d, r) = policy.decide(&target(&get, "/admin/open"), None);
        assert_eq!(d, Decision::Deny(DenyReason::DenyRule));
        assert_eq!(r.unwrap().index, 0);
        let (d, _) = policy.decide(&target(&get, "/public/a"), None);
        assert_eq!(d, Decision::Allow);
        let (d, r) = policy.decide(&target(&get, "/elsewhere"), None);
        assert_eq!(d, Decision::Deny(DenyReason::NoRule));
        assert!(r.is_none());
    }

    #[test]
    fn methods_and_host_narrow_a_rule() {
        let mut read_only = rule(0, "/**", Access::Public);
        read_only.methods = Some(vec![Method::GET, Method::HEAD]);
        read_only.host = Some("docs.example".into());
        let policy = Policy::new(vec![read_only]);
        let on_host = |m: &'static Method, host| Target {
            method: m,
            host,
            path: "/x",
        };
        assert_eq!(
            policy
                .decide(&on_host(&Method::GET, Some("docs.example")), None)
                .0,
            Decision::Allow
        );
        assert_eq!(
            policy
                .decide(&on_host(&Method::POST, Some("docs.example")), None)
                .0,
            Decision::Deny(DenyReason::NoRule)
        );
        assert_eq!(
            policy
                .decide(&on_host(&Method::GET, Some("other.example")), None)
                .0,
            Decision::Deny(DenyReason::NoRule)
        );
        assert_eq!(
            policy.decide(&on_host(&Method::GET, None), None).0,
            Decision::Deny(DenyReason::NoRule)
        );
    }

    #[test]
    fn sessions_and_roles() {
        let policy = Policy::new(vec![
            rule(0, "/admin/**", Access::Roles(vec!["admin".into()])),
            rule(1, "/**", Access::Authenticated),
        ]);
        let get = Method::GET;
        let roles = vec!["user".to_owned()];
        let bob = Principal {
            user: "bob",
            roles: &roles,
        };
        assert_eq!(policy.decide(&target(&get, "/x"), None).0, Decision::Login);
        assert_eq!(
            policy.decide(&target(&get, "/admin"), None).0,
            Decision::Login
        );
        assert_eq!(
            policy.decide(&target(&get, "/x"), Some(bob)).0,
            Decision::Allow
        );
        assert_eq!(
            policy.decide(&target(&get, "/admin/x"), Some(bob)).0,
            Decision::Deny(DenyReason::MissingRole)
        );
    }

    #[test]
    fn deep_paths_are_matched_whole() {
        let policy = Policy::new(vec![rule(0, "/a/**/end", Access::Public)]);
        let deep = "/a".to_owned() + &"/x".repeat(100) + "/end";
        let get = Method::GET;
        assert_eq!(policy.decide(&target(&get, &deep), None).0, Decision::Allow);
        let deeper = deep.clone() + "/more";
        assert_eq!(
            policy.decide(&target(&get, &deeper), None).0,
            Decision::Deny(DenyReason::NoRule)
        );
    }
}
