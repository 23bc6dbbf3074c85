//! The access policy: path normalization, compiled `[[rule]]`s, and the
//! decision for one request.

mod glob;
pub mod host;
pub mod path;

pub use glob::{split_path, Glob};

use std::collections::HashMap;

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
    /// Line and column of the rule in the config file.
    pub line: usize,
    pub col: usize,
    /// Where its `roles = [..]` stands, for warnings about the roles.
    pub roles_position: Option<(usize, usize)>,
    pub pattern: Glob,
    /// Upper-case methods; `None` matches every method.
    pub methods: Option<Vec<Method>>,
    /// Lower-case host name without port; `None` matches every host.
    pub host: Option<String>,
    pub access: Access,
    /// The route needs a session that passed the second factor.
    pub mfa: bool,
    /// The route needs the password entered within this long.
    pub max_auth_age: Option<std::time::Duration>,
    /// Only sessions from these sign-in methods satisfy the rule: `[[oidc]]`
    /// names, `local` for the users file's; `None`: any.
    pub providers: Option<Vec<String>>,
    /// API tokens are accepted (`tokens = true`, or `[tokens] default`).
    pub tokens: bool,
    /// A token in HTTP Basic (as the password) is accepted too.
    pub basic_auth: bool,
    /// The client's `Authorization` header goes on to the upstream (never
    /// one that carried an API token).
    pub pass_authorization: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The user may, with a fresher sign-in: the password (and code)
    /// entered again.
    Reauth(ReauthReason),
    /// The rule needs a session and the request has none.
    Login,
    Deny(DenyReason),
}

/// Why a signed-in user must sign in again for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReauthReason {
    /// The rule says `mfa = true` and the session did not pass the second factor.
    SecondFactor,
    /// The password was entered longer ago than the rule's `max_auth_age`.
    TooOld,
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
    /// The user signed in another way than the rule's `providers` list.
    OtherProvider,
    /// An API token, where the rule takes none (or not in this form).
    TokenNotAccepted,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoRule => "no rule matches",
            DenyReason::DenyRule => "a deny rule matches",
            DenyReason::MissingRole => "the user has none of the rule's roles",
            DenyReason::OtherProvider => "the user signed in another way than the rule's providers",
            DenyReason::TokenNotAccepted => "the rule takes no API token (in this form)",
        }
    }
}

/// A decision and how it was reached.
#[derive(Debug, Clone, Copy)]
pub struct Judgement<'a> {
    pub decision: Decision,
    /// The rule that decided; `None` when no rule matched.
    pub rule: Option<&'a Rule>,
    /// Set when the stricter decision came from the path's lenient alias
    /// (see [`path::lenient_alias`]) rather than the path itself.
    pub via_alias: bool,
}

impl Decision {
    /// Allow < Login < Deny.
    fn strictness(self) -> u8 {
        match self {
            Decision::Allow => 0,
            Decision::Reauth(_) => 1,
            Decision::Login => 2,
            Decision::Deny(_) => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Reauth(_) => "reauth",
            Decision::Login => "login",
            Decision::Deny(_) => "deny",
        }
    }
}

/// Who is asking: `None` for an anonymous request.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub user: &'a str,
    pub roles: &'a [String],
    /// The session passed the second factor.
    pub mfa: bool,
    /// Since the password was last entered, in ms.
    pub auth_age_ms: u64,
    /// How they signed in: an `[[oidc]]` name, or `local`.
    pub provider: &'a str,
    /// Not a session: an API token, and how it came.
    pub token: Option<TokenForm>,
}

/// How an API token came with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenForm {
    /// `Authorization: Bearer agt_...`
    Bearer,
    /// `Authorization: Basic` with the token as the password.
    Basic,
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

/// The rules, plus an index by first path segment: most rules start with a
/// literal (`/admin/**`, `/api/...`), and only those whose first segment
/// equals the request's can match it. A request therefore tries the rules
/// of its own first segment plus the few that start with a wildcard, in
/// their original order, instead of every rule.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    /// First literal segment -> indexes (ascending) of the rules that could
    /// match a path starting with it: its own and the wildcard-led ones.
    by_first_segment: HashMap<Box<str>, Vec<u32>>,
    /// Indexes of the rules whose pattern starts with a wildcard.
    wildcard_led: Vec<u32>,
}

/// Paths deeper than this are not split on the stack; they are rare enough
/// that a heap allocation for them costs nothing overall.
const INLINE_SEGMENTS: usize = 32;

impl Policy {
    pub fn new(rules: Vec<Rule>) -> Policy {
        let wildcard_led: Vec<u32> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.pattern.first_literal().is_none())
            .map(|(i, _)| i as u32)
            .collect();
        let mut by_first_segment: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            if let Some(first) = rule.pattern.first_literal() {
                by_first_segment
                    .entry(first.into())
                    .or_default()
                    .push(i as u32);
            }
        }
        for list in by_first_segment.values_mut() {
            list.extend_from_slice(&wildcard_led);
            list.sort_unstable();
        }
        Policy {
            rules,
            by_first_segment,
            wildcard_led,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule that matches decides; no match is deny. The path's
    /// lenient alias, if it has one, is judged too and the stricter
    /// decision wins.
    pub fn decide(&self, target: &Target, who: Option<Principal>) -> Judgement<'_> {
        let strict = self.decide_path(target, target.path, who);
        let Some(alias) = path::lenient_alias(target.path) else {
            return strict;
        };
        let lenient = self.decide_path(target, &alias, who);
        if lenient.decision.strictness() > strict.decision.strictness() {
            Judgement {
                via_alias: true,
                ..lenient
            }
        } else {
            strict
        }
    }

    fn decide_path(&self, target: &Target, path: &str, who: Option<Principal>) -> Judgement<'_> {
        let mut inline = [""; INLINE_SEGMENTS];
        let mut count = 0;
        let mut spilled: Vec<&str> = Vec::new();
        for segment in split_path(path) {
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

        let candidates = segments
            .first()
            .and_then(|first| self.by_first_segment.get(*first))
            .unwrap_or(&self.wildcard_led);
        let rule = candidates
            .iter()
            .map(|&i| &self.rules[i as usize])
            .find(|r| r.matches(target, segments));
        let Some(rule) = rule else {
            return Judgement {
                decision: Decision::Deny(DenyReason::NoRule),
                rule: None,
                via_alias: false,
            };
        };
        let decision = match (&rule.access, who) {
            (Access::Public, _) => Decision::Allow,
            (Access::Deny, _) => Decision::Deny(DenyReason::DenyRule),
            (Access::Authenticated | Access::Roles(_), None) => Decision::Login,
            (Access::Authenticated | Access::Roles(_), Some(p)) if !rule.accepts(p.token) => {
                Decision::Deny(DenyReason::TokenNotAccepted)
            }
            (Access::Authenticated | Access::Roles(_), Some(p))
                if rule
                    .providers
                    .as_ref()
                    .is_some_and(|listed| !listed.iter().any(|l| l == p.provider)) =>
            {
                Decision::Deny(DenyReason::OtherProvider)
            }
            (Access::Authenticated, Some(p)) => rule.freshness(p),
            (Access::Roles(wanted), Some(p)) => {
                if wanted.iter().any(|w| p.roles.contains(w)) {
                    rule.freshness(p)
                } else {
                    Decision::Deny(DenyReason::MissingRole)
                }
            }
        };
        Judgement {
            decision,
            rule: Some(rule),
            via_alias: false,
        }
    }
}

/// Whether a rule listing `listed` (upper case) covers a request's
/// `method`: compared without case, since Django, Werkzeug and others act
/// on `delete` as on `DELETE`; and GET covers HEAD, as nginx's
/// `limit_except` does (a HEAD is a GET without the body).
fn method_covers(listed: &Method, method: &Method) -> bool {
    let wanted = listed.as_str();
    let asked = method.as_str();
    wanted.eq_ignore_ascii_case(asked)
        || (*listed == Method::GET && asked.eq_ignore_ascii_case("HEAD"))
}

/// Host names compare without case and without one trailing dot
/// (`Admin.Example.` is `admin.example`).
pub fn same_host(asked: &str, rule: &str) -> bool {
    let asked = asked.strip_suffix('.').unwrap_or(asked);
    let rule = rule.strip_suffix('.').unwrap_or(rule);
    asked.eq_ignore_ascii_case(rule)
}

impl Rule {
    /// For a user the rule lets in: whether their sign-in is enough.
    /// Whether a request that came this way (`None`: a session) may be
    /// judged by this rule at all.
    fn accepts(&self, token: Option<TokenForm>) -> bool {
        match token {
            None => true,
            Some(TokenForm::Bearer) => self.tokens,
            Some(TokenForm::Basic) => self.basic_auth,
        }
    }

    fn freshness(&self, who: Principal) -> Decision {
        if self.mfa && !who.mfa {
            Decision::Reauth(ReauthReason::SecondFactor)
        } else if self
            .max_auth_age
            .is_some_and(|max| u128::from(who.auth_age_ms) > max.as_millis())
        {
            Decision::Reauth(ReauthReason::TooOld)
        } else {
            Decision::Allow
        }
    }

    /// The rule as one line of TOML, for `explain` and `check`.
    pub fn describe(&self) -> String {
        let mut text = format!("path = {:?}", self.pattern.as_str());
        if let Some(methods) = &self.methods {
            let list: Vec<String> = methods
                .iter()
                .map(|m| format!("{:?}", m.as_str()))
                .collect();
            text += &format!(", methods = [{}]", list.join(", "));
        }
        if let Some(host) = &self.host {
            text += &format!(", host = {host:?}");
        }
        match &self.access {
            Access::Public => text += ", access = \"public\"",
            Access::Authenticated => text += ", access = \"authenticated\"",
            Access::Deny => text += ", access = \"deny\"",
            Access::Roles(roles) => {
                let list: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
                text += &format!(", roles = [{}]", list.join(", "));
            }
        }
        if self.mfa {
            text += ", mfa = true";
        }
        if let Some(age) = self.max_auth_age {
            text += &format!(", max_auth_age = {:?}", crate::units::format_duration(age));
        }
        text
    }

    fn matches(&self, target: &Target, segments: &[&str]) -> bool {
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| method_covers(m, target.method)) {
                return false;
            }
        }
        if let Some(host) = &self.host {
            if !target.host.is_some_and(|h| same_host(h, host)) {
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
            col: 1,
            roles_position: None,
            pattern: Glob::parse(path).unwrap(),
            methods: None,
            host: None,
            access,
            mfa: false,
            max_auth_age: None,
            providers: None,
            tokens: false,
            basic_auth: false,
            pass_authorization: false,
        }
    }

    /// A rule's `providers` lets in only sessions from those sign-in
    /// methods; others are denied (not sent to sign in: they are signed in).
    #[test]
    fn providers_limit_who_a_rule_lets_in() {
        let mut sso_only = rule(0, "/sso/**", Access::Authenticated);
        sso_only.providers = Some(vec!["acme".to_owned()]);
        let mut local_only = rule(1, "/local/**", Access::Roles(vec!["user".to_owned()]));
        local_only.providers = Some(vec!["local".to_owned()]);
        let policy = Policy::new(vec![sso_only, local_only]);
        let get = Method::GET;
        let roles = vec!["user".to_owned()];
        let from = |provider| Principal {
            user: "bob",
            roles: &roles,
            mfa: false,
            auth_age_ms: 0,
            provider,
            token: None,
        };
        let decide = |path, who| policy.decide(&target(&get, path), who).decision;
        assert_eq!(decide("/sso/a", Some(from("acme"))), Decision::Allow);
        assert_eq!(
            decide("/sso/a", Some(from("local"))),
            Decision::Deny(DenyReason::OtherProvider)
        );
        assert_eq!(
            decide("/sso/a", Some(from("other"))),
            Decision::Deny(DenyReason::OtherProvider)
        );
        assert_eq!(decide("/sso/a", None), Decision::Login);
        assert_eq!(decide("/local/a", Some(from("local"))), Decision::Allow);
        assert_eq!(
            decide("/local/a", Some(from("acme"))),
            Decision::Deny(DenyReason::OtherProvider)
        );
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
        let j = policy.decide(&target(&get, "/admin/open"), None);
        assert_eq!(j.decision, Decision::Deny(DenyReason::DenyRule));
        assert_eq!(j.rule.unwrap().index, 0);
        let j = policy.decide(&target(&get, "/public/a"), None);
        assert_eq!(j.decision, Decision::Allow);
        let j = policy.decide(&target(&get, "/elsewhere"), None);
        assert_eq!(j.decision, Decision::Deny(DenyReason::NoRule));
        assert!(j.rule.is_none());
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
                .decision,
            Decision::Allow
        );
        assert_eq!(
            policy
                .decide(&on_host(&Method::POST, Some("docs.example")), None)
                .decision,
            Decision::Deny(DenyReason::NoRule)
        );
        assert_eq!(
            policy
                .decide(&on_host(&Method::GET, Some("other.example")), None)
                .decision,
            Decision::Deny(DenyReason::NoRule)
        );
        assert_eq!(
            policy.decide(&on_host(&Method::GET, None), None).decision,
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
            mfa: false,
            auth_age_ms: 0,
            provider: "local",
            token: None,
        };
        assert_eq!(
            policy.decide(&target(&get, "/x"), None).decision,
            Decision::Login
        );
        assert_eq!(
            policy.decide(&target(&get, "/admin"), None).decision,
            Decision::Login
        );
        assert_eq!(
            policy.decide(&target(&get, "/x"), Some(bob)).decision,
            Decision::Allow
        );
        assert_eq!(
            policy.decide(&target(&get, "/admin/x"), Some(bob)).decision,
            Decision::Deny(DenyReason::MissingRole)
        );
    }

    #[test]
    fn deep_paths_are_matched_whole() {
        let policy = Policy::new(vec![rule(0, "/a/**/end", Access::Public)]);
        let deep = "/a".to_owned() + &"/x".repeat(100) + "/end";
        let get = Method::GET;
        assert_eq!(
            policy.decide(&target(&get, &deep), None).decision,
            Decision::Allow
        );
        let deeper = deep.clone() + "/more";
        assert_eq!(
            policy.decide(&target(&get, &deeper), None).decision,
            Decision::Deny(DenyReason::NoRule)
        );
    }

    #[test]
    fn lenient_spellings_of_a_protected_path_get_the_stricter_decision() {
        let policy = Policy::new(vec![
            rule(0, "/admin/**", Access::Roles(vec!["admin".into()])),
            rule(1, "/public/**", Access::Public),
            rule(2, "/**", Access::Authenticated),
        ]);
        let get = Method::GET;
        let roles = vec!["user".to_owned()];
        let bob = Principal {
            user: "bob",
            roles: &roles,
            mfa: false,
            auth_age_ms: 0,
            provider: "local",
            token: None,
        };
        for path in [
            "/ADMIN",
            "/Admin/x",
            "/admin;jsessionid=1",
            "/admin.",
            "/admin%20/x",
            "/admin../",
        ] {
            let j = policy.decide(&target(&get, path), Some(bob));
            assert_eq!(
                j.decision,
                Decision::Deny(DenyReason::MissingRole),
                "{path}"
            );
            assert!(j.via_alias, "{path}");
            assert_eq!(j.rule.unwrap().index, 0);
        }
        // Anonymous: the alias asks for a login where the path was public.
        let open = Policy::new(vec![
            rule(0, "/admin/**", Access::Roles(vec!["admin".into()])),
            rule(1, "/**", Access::Public),
        ]);
        let j = open.decide(&target(&get, "/ADMIN"), None);
        assert_eq!(j.decision, Decision::Login);
        // A lenient spelling never loosens: /PUBLIC is not public.
        let j = policy.decide(&target(&get, "/PUBLIC/x"), None);
        assert_eq!(j.decision, Decision::Login);
        assert!(!j.via_alias);
    }

    #[test]
    fn the_first_segment_index_keeps_first_match_order() {
        let get = Method::GET;
        let policy = Policy::new(vec![
            rule(0, "/*/secret", Access::Deny),
            rule(1, "/a/**", Access::Public),
            rule(2, "/**", Access::Deny),
        ]);
        assert_eq!(
            policy.decide(&target(&get, "/a/secret"), None).decision,
            Decision::Deny(DenyReason::DenyRule)
        );
        assert_eq!(
            policy.decide(&target(&get, "/a/open"), None).decision,
            Decision::Allow
        );
        let j = policy.decide(&target(&get, "/b/open"), None);
        assert_eq!(
            (j.decision, j.rule.unwrap().index),
            (Decision::Deny(DenyReason::DenyRule), 2)
        );
        let j = policy.decide(&target(&get, "/"), None);
        assert_eq!(j.rule.unwrap().index, 2);
        let literal_root = Policy::new(vec![rule(0, "/", Access::Public)]);
        assert_eq!(
            literal_root.decide(&target(&get, "/"), None).decision,
            Decision::Allow
        );
        assert_eq!(
            literal_root.decide(&target(&get, "/x"), None).decision,
            Decision::Deny(DenyReason::NoRule)
        );
    }
}
