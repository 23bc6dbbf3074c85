//! What `authgate check` and `authgate explain` do with a loaded policy:
//! static warnings, the `[[test]]` cases, and the story of one decision;
//! and `check --replay`'s judging of a logged day again.

pub mod replay;

use http::Method;

use crate::config::{Config, PolicyTest};
use crate::policy::{path, Access, Decision, DenyReason, Judgement, Principal, Rule, Target};
use crate::users::Users;

/// Something `check` reports at a place in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Rules that can never match, roles no user has, `roles = []`.
pub fn lint(config: &Config, users: &Users) -> Vec<Finding> {
    let rules = config.policy.rules();
    let mut findings = Vec::new();
    for (j, later) in rules.iter().enumerate() {
        if let Some(earlier) = rules[..j].iter().find(|earlier| shadows(earlier, later)) {
            findings.push(Finding {
                line: later.line,
                col: later.col,
                message: format!(
                    "rule #{} can never match: rule #{} (line {}) comes first and matches every request it would",
                    later.index + 1,
                    earlier.index + 1,
                    earlier.line
                ),
            });
        }
        let pattern = later.pattern.as_str();
        if pattern.len() > 1 && pattern.ends_with('/') && later.access != Access::Deny {
            findings.push(Finding {
                line: later.line,
                col: later.col,
                message: format!(
                    "rule #{}: {pattern:?} ends in `/`, and a path is also judged without its trailing slash (many apps serve both alike), the stricter decision winning; so this rule may not be the one that decides `{pattern}`: write {:?}",
                    later.index + 1,
                    format!("{pattern}**")
                ),
            });
        }
        if let Access::Roles(roles) = &later.access {
            let (line, col) = later.roles_position.unwrap_or((later.line, later.col));
            if roles.is_empty() {
                findings.push(Finding {
                    line,
                    col,
                    message: format!(
                        "rule #{} has `roles = []`: nobody has any of no roles, so signed-in users always get 403",
                        later.index + 1
                    ),
                });
            }
            for role in roles {
                if !users.iter().any(|u| u.roles.contains(role)) {
                    findings.push(Finding {
                        line,
                        col,
                        message: format!(
                            "rule #{}: no user in the users file has the role {role:?}",
                            later.index + 1
                        ),
                    });
                }
            }
        }
    }
    findings
}

/// Whether `earlier` matches every request `later` matches.
fn shadows(earlier: &Rule, later: &Rule) -> bool {
    let methods = match (&earlier.methods, &later.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => l.iter().all(|m| e.contains(m)),
    };
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(e), Some(l)) => e.eq_ignore_ascii_case(l),
        (Some(_), None) => false,
    };
    methods && host && earlier.pattern.covers(&later.pattern)
}

/// Runs every `[[test]]`; returns the failures.
pub fn run_tests(config: &Config, users: &Users) -> Vec<Finding> {
    config
        .tests
        .iter()
        .filter_map(|test| {
            let outcome = evaluate(
                config,
                users,
                test.user.as_deref(),
                &test.method,
                &test.path,
                test.host.as_deref(),
                Freshness {
                    auth_age: test.auth_age,
                    mfa: test.mfa,
                },
            );
            let routed = config
                .upstream_of_request(test.host.as_deref(), &test.path)
                .map(|u| u.url.as_str());
            let message = match outcome {
                Err(problem) => format!("test {}: {problem}", case(test)),
                Ok(_)
                    if test
                        .upstream
                        .as_deref()
                        .is_some_and(|want| Some(want) != routed) =>
                {
                    format!(
                        "test failed: {}: expected upstream {}, got {}",
                        case(test),
                        test.upstream.as_deref().unwrap_or_default(),
                        routed.unwrap_or("none (404)")
                    )
                }
                Ok(outcome) if outcome.decision.as_str() == test.expect => return None,
                Ok(outcome) => format!(
                    "test failed: {}: expected {}, got {} ({})",
                    case(test),
                    test.expect,
                    outcome.decision.as_str(),
                    outcome.rule_text()
                ),
            };
            Some(Finding {
                line: test.line,
                col: test.col,
                message,
            })
        })
        .collect()
}

fn case(test: &PolicyTest) -> String {
    let who = test
        .user
        .as_deref()
        .map_or("anonymous".to_owned(), |u| format!("as {u}"));
    let host = test
        .host
        .as_deref()
        .map_or(String::new(), |h| format!(" on host {h}"));
    format!("{} {}{host} {who}", test.method, test.path)
}

/// A decision with what led to it.
pub struct Outcome {
    pub normalized: String,
    pub decision: Decision,
    pub rule: Option<(usize, usize, String)>,
    pub via_alias: Option<String>,
    pub why: String,
}

impl Outcome {
    fn rule_text(&self) -> String {
        match &self.rule {
            Some((index, line, text)) => format!("rule #{index} at line {line}: {text}"),
            None => "no rule matched".into(),
        }
    }
}

/// How fresh the session asked about is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Freshness {
    /// Since the password was entered.
    pub auth_age: std::time::Duration,
    /// Whether it passed the second factor; `None`: as the user has one
    /// (a user with TOTP cannot sign in without it).
    pub mfa: Option<bool>,
}

/// Decides a request the way the gateway would for a session of `user`
/// (`None`: anonymous). A path the gateway refuses is a `deny` here.
pub fn evaluate(
    config: &Config,
    users: &Users,
    user: Option<&str>,
    method: &Method,
    raw_path: &str,
    host: Option<&str>,
    fresh: Freshness,
) -> Result<Outcome, String> {
    let account = match user {
        Some(name) => Some(
            users
                .get(name)
                .ok_or_else(|| format!("there is no user {name:?} in the users file"))?,
        ),
        None => None,
    };
    let normalized = match path::normalize(raw_path) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Outcome {
                normalized: raw_path.to_owned(),
                decision: Decision::Deny(DenyReason::NoRule),
                rule: None,
                via_alias: None,
                why: format!("the gateway refuses this path with 400 before any rule: {e}"),
            })
        }
    };
    if normalized == "/.gateway" || normalized.starts_with("/.gateway/") {
        return Ok(Outcome {
            normalized,
            decision: Decision::Deny(DenyReason::NoRule),
            rule: None,
            via_alias: None,
            why: "paths under /.gateway/ are the gateway's own and never reach the upstream".into(),
        });
    }
    let host_name = host.map(|h| h.split(':').next().unwrap_or(h));
    let target = Target {
        method,
        host: host_name,
        path: &normalized,
    };
    let principal = account.map(|u| Principal {
        user: &u.key,
        roles: &u.roles,
        mfa: fresh.mfa.unwrap_or(u.totp.is_some()),
        auth_age_ms: fresh.auth_age.as_millis() as u64,
        provider: "local",
        token: None,
    });
    let judgement: Judgement = config.policy.decide(&target, principal);
    let why = explain_why(&judgement, account.map(|u| (&*u.name, u.roles.as_slice())));
    let via_alias = judgement
        .via_alias
        .then(|| path::lenient_alias(&normalized))
        .flatten();
    Ok(Outcome {
        rule: judgement.rule.map(|r| (r.index + 1, r.line, r.describe())),
        normalized,
        decision: judgement.decision,
        via_alias,
        why,
    })
}

fn explain_why(judgement: &Judgement, user: Option<(&str, &[String])>) -> String {
    let Some(rule) = judgement.rule else {
        return "no rule matches: the policy denies by default".into();
    };
    match (judgement.decision, &rule.access, user) {
        (Decision::Deny(DenyReason::DenyRule), _, _) => "the rule says access = \"deny\"".into(),
        (Decision::Deny(DenyReason::MissingRole), Access::Roles(wanted), Some((name, roles))) => {
            format!(
                "{name} has the roles [{}], none of the rule's [{}]",
                roles.join(", "),
                wanted.join(", ")
            )
        }
        (Decision::Login, _, _) => "the rule needs a session and the request has none".into(),
        (Decision::Reauth(crate::policy::ReauthReason::SecondFactor), _, _) => {
            "the rule says mfa = true and the session did not pass the second factor: sign in again with the code (or enroll one)".into()
        }
        (Decision::Reauth(crate::policy::ReauthReason::TooOld), _, _) => format!(
            "the password was entered longer ago than the rule's max_auth_age ({}): enter it again",
            rule.max_auth_age
                .map(crate::units::format_duration)
                .unwrap_or_default()
        ),
        (Decision::Allow, Access::Public, _) => "the rule is public".into(),
        (Decision::Allow, Access::Authenticated, Some((name, _))) => {
            format!("{name} is signed in and the rule asks for nothing more")
        }
        (Decision::Allow, Access::Roles(wanted), Some((name, roles))) => {
            let held: Vec<&str> = wanted
                .iter()
                .filter(|w| roles.contains(w))
                .map(String::as_str)
                .collect();
            format!("{name} has the role {}", held.join(", "))
        }
        (decision, _, _) => format!("the rule decides {}", decision.as_str()),
    }
}

/// The text `authgate explain` prints.
pub fn explanation(
    outcome: &Outcome,
    method: &Method,
    raw_path: &str,
    user: Option<&str>,
    host: Option<&str>,
) -> String {
    let who = user.map_or("anonymous".to_owned(), |u| format!("as {u}"));
    let host = host.map_or(String::new(), |h| format!(" on host {h}"));
    let mut text = format!(
        "request:   {method} {raw_path}{host} {who}\npath:      {}\ndecision:  {}\nrule:      ",
        outcome.normalized,
        outcome.decision.as_str()
    );
    match &outcome.rule {
        Some((index, line, rule)) => text += &format!("#{index} (line {line}): {rule}\n"),
        None => text += "none\n",
    }
    if let Some(alias) = &outcome.via_alias {
        text += &format!(
            "alias:     judged as {alias} too (how servers that ignore case, `;` parameters or trailing dots read it); the stricter decision wins\n"
        );
    }
    text += &format!("why:       {}\n", outcome.why);
    text
}
