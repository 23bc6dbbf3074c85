//! `authgate check --replay ACCESS_LOG`: the requests a config would decide
//! differently from how they were decided when logged, grouped by the rule
//! that now decides them, with counts: what a rule edit would break,
//! before it is applied.
//!
//! It reads the gateway's own access lines, human or JSON (`request` lines
//! of `authgate::access` carrying `method`, `path`, `host`, `user` and the
//! `decision` then made), and judges each again with the config being
//! checked and each user's current roles. Lines from before the access log
//! named decisions, and lines of the gateway's own pages, are counted and
//! skipped.

use std::collections::BTreeMap;
use std::fmt::Write;

use http::Method;

use super::{evaluate, Freshness};
use crate::config::Config;
use crate::users::Users;

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub user: Option<String>,
    pub decision: Option<String>,
}

/// What replaying a log found.
#[derive(Debug, Default)]
pub struct Report {
    /// Access lines read.
    pub requests: usize,
    /// Lines without a decision (the gateway's own pages, older logs).
    pub skipped: usize,
    /// By the rule that decides now (or none), then old -> new decision.
    pub changes: BTreeMap<(String, String, String), Change>,
}

#[derive(Debug, Default)]
pub struct Change {
    pub count: usize,
    pub by_user: BTreeMap<String, usize>,
    pub example: String,
}

/// The `key=value` pairs of a human access line, values unquoted.
fn human_fields(line: &str) -> Option<BTreeMap<String, String>> {
    let rest = line.split_once("authgate::access: ")?.1;
    let rest = rest.strip_prefix("request")?;
    let mut fields = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some('r') => value.push('\r'),
                        Some('t') => value.push('\t'),
                        Some(other) => value.push(other),
                        None => break,
                    },
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        fields.insert(key.trim().to_owned(), value);
    }
    Some(fields)
}

/// The fields of a JSON access line (flattened, or under `fields`).
fn json_fields(line: &str) -> Option<BTreeMap<String, String>> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("target")?.as_str()? != "authgate::access" {
        return None;
    }
    let fields = value.get("fields").unwrap_or(&value).as_object()?;
    Some(
        fields
            .iter()
            .map(|(k, v)| {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                (k.clone(), text)
            })
            .collect(),
    )
}

/// The request an access line logged; `None` for other lines.
pub fn parse_line(line: &str) -> Option<Logged> {
    let fields = if line.trim_start().starts_with('{') {
        json_fields(line)?
    } else {
        human_fields(line)?
    };
    let named = |key: &str| {
        fields
            .get(key)
            .filter(|v| !v.is_empty() && v.as_str() != "-")
            .cloned()
    };
    Some(Logged {
        method: named("method")?,
        path: named("path")?,
        host: named("host"),
        user: named("user"),
        decision: named("decision"),
    })
}

/// Judges every logged request again with `config`.
pub fn replay(config: &Config, users: &Users, log: &str) -> Report {
    let mut report = Report::default();
    for line in log.lines() {
        let Some(logged) = parse_line(line) else {
            continue;
        };
        report.requests += 1;
        let Some(before) = &logged.decision else {
            report.skipped += 1;
            continue;
        };
        let Ok(method) = Method::from_bytes(logged.method.as_bytes()) else {
            report.skipped += 1;
            continue;
        };
        // A user who is gone now is judged as anonymous.
        let user = logged.user.as_deref().filter(|u| users.get(u).is_some());
        let Ok(outcome) = evaluate(
            config,
            users,
            user,
            &method,
            &logged.path,
            logged.host.as_deref(),
            Freshness::default(),
        ) else {
            report.skipped += 1;
            continue;
        };
        let after = outcome.decision.as_str();
        if after == before {
            continue;
        }
        let rule = match &outcome.rule {
            Some((index, line, text)) => format!("rule #{index} (line {line}): {text}"),
            None => "no rule (denied by default)".to_owned(),
        };
        let change = report
            .changes
            .entry((rule, before.clone(), after.to_owned()))
            .or_default();
        change.count += 1;
        *change
            .by_user
            .entry(logged.user.clone().unwrap_or_else(|| "anonymous".into()))
            .or_default() += 1;
        if change.example.is_empty() {
            change.example = format!("{} {}", logged.method, logged.path);
        }
    }
    report
}

/// The report as `check` prints it.
pub fn render(report: &Report, file: &str) -> String {
    let changed: usize = report.changes.values().map(|c| c.count).sum();
    let mut out = format!(
        "{file}: replayed {} logged request(s) ({} without a decision, skipped): {changed} would be decided differently\n",
        report.requests, report.skipped
    );
    let mut last_rule = None;
    for ((rule, before, after), change) in &report.changes {
        if last_rule != Some(rule) {
            let _ = writeln!(out, "{rule}");
            last_rule = Some(rule);
        }
        let users: Vec<String> = change
            .by_user
            .iter()
            .map(|(u, n)| format!("{u} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  {before} -> {after}: {} request(s) ({}), e.g. {}",
            change.count,
            users.join(", "),
            change.example
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_log_formats_are_read() {
        let human = r#"2026-11-29T20:00:00.1Z  INFO authgate::access: request method=GET path="/a b" status=403 host=app.example decision=deny user=bob client=127.0.0.1 duration_ms=0.2 request_id=ab"#;
        let json = r#"{"timestamp":"x","level":"INFO","message":"request","method":"GET","path":"/a b","status":403,"host":"app.example","decision":"deny","user":"bob","target":"authgate::access"}"#;
        let nested = r#"{"fields":{"message":"request","method":"GET","path":"/a b","status":403,"host":"app.example","decision":"deny","user":"bob"},"target":"authgate::access"}"#;
        let want = Logged {
            method: "GET".into(),
            path: "/a b".into(),
            host: Some("app.example".into()),
            user: Some("bob".into()),
            decision: Some("deny".into()),
        };
        for line in [human, json, nested] {
            assert_eq!(parse_line(line).as_ref(), Some(&want), "{line}");
        }
        assert_eq!(parse_line("2026 INFO authgate: authgate is serving"), None);
        let anonymous = r#"x INFO authgate::access: request method=GET path=/.gateway/login status=200 host=- decision=- user=- client=1"#;
        let logged = parse_line(anonymous).unwrap();
        assert_eq!((logged.user, logged.decision), (None, None));
    }
}
