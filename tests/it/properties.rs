//! Property tests over random paths, rule sets and requests (issue 9).
//! `PROPTEST_CASES=N` runs N cases each instead of the quick default.

use authgate::policy::path::{lenient_alias, normalize};
use authgate::policy::{Access, Decision, Glob, Policy, Principal, Rule, Target};
use http::Method;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::Setup;

fn cases(quick: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(quick)
}

/// Request targets as a client may write them (no spaces: those end the
/// request line).
fn raw_target() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/"),
        Just("."),
        Just(".."),
        Just(";x"),
        Just("%"),
        Just("%2e"),
        Just("%2F"),
        Just("%41"),
        Just("%c3%a9"),
        Just("é"),
        Just("Admin"),
        Just("admin"),
        Just("api"),
        Just("~u"),
    ];
    proptest::collection::vec(piece, 0..10).prop_map(|p| format!("/{}", p.concat()))
}

#[test]
fn the_path_judged_is_the_path_forwarded() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rules = "[[rule]]\npath = \"/**\"\naccess = \"public\"\n";
    let gw = runtime.block_on(Setup::new().rules(rules).start());
    let mut runner = TestRunner::new(Config::with_cases(cases(48)));
    runner
        .run(&raw_target(), |target| {
            let before = gw.upstream.requests().len();
            let answer = runtime.block_on(gw.raw(
                format!("GET {target}?q=%2F HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            ));
            match normalize(&target) {
                Ok(normal) => {
                    prop_assert!(answer.starts_with("HTTP/1.1 200"), "{}: {}", target, answer);
                    prop_assert_eq!(gw.upstream.last().uri, format!("{normal}?q=%2F"));
                }
                Err(_) => {
                    prop_assert!(answer.starts_with("HTTP/1.1 400"), "{}: {}", target, answer);
                    prop_assert_eq!(gw.upstream.requests().len(), before);
                }
            }
            Ok(())
        })
        .unwrap();
}

fn rank(decision: Decision) -> u8 {
    match decision {
        Decision::Allow => 0,
        Decision::Reauth(_) => 1,
        Decision::Login => 2,
        Decision::Deny(_) => 3,
    }
}

fn rule_strategy() -> impl Strategy<Value = (String, Option<Vec<&'static str>>, u8)> {
    let segment = prop_oneof![
        Just("admin"),
        Just("api"),
        Just("env"),
        Just("*"),
        Just("**"),
        Just("a*"),
        Just("x"),
    ];
    (
        proptest::collection::vec(segment, 0..4).prop_map(|s| format!("/{}", s.join("/"))),
        proptest::option::of(proptest::collection::vec(
            prop_oneof![Just("GET"), Just("DELETE"), Just("POST")],
            1..3,
        )),
        0u8..4,
    )
}

fn path_strategy() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("admin"),
        Just("Admin"),
        Just("ADMIN."),
        Just("api"),
        Just("env"),
        Just("env;v=1"),
        Just("x"),
        Just("ax"),
        Just(""),
    ];
    proptest::collection::vec(segment, 0..4).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(Config::with_cases(cases(512)))]

    /// Whatever the rules, the decision for a path is never more permissive
    /// than the decision for the form a lenient upstream would act on.
    #[test]
    fn a_lenient_alias_never_gets_more_than_the_path(
        rules in proptest::collection::vec(rule_strategy(), 1..6),
        path in path_strategy(),
        method in prop_oneof![Just("GET"), Just("get"), Just("HEAD"), Just("delete"), Just("POST")],
        signed_in in any::<bool>(),
        admin in any::<bool>(),
    ) {
        let rules: Vec<Rule> = rules
            .into_iter()
            .enumerate()
            .map(|(index, (pattern, methods, access))| Rule {
                index,
                line: index + 1,
                col: 1,
                roles_position: None,
                pattern: Glob::parse(&pattern).unwrap(),
                methods: methods.map(|m| m.iter().map(|m| Method::from_bytes(m.as_bytes()).unwrap()).collect()),
                host: None,
                access: match access {
                    0 => Access::Public,
                    1 => Access::Authenticated,
                    2 => Access::Deny,
                    _ => Access::Roles(vec!["admin".into()]),
                },
                mfa: false,
                max_auth_age: None,
                providers: None,
                tokens: false,
                basic_auth: false,
                pass_authorization: false,
            })
            .collect();
        let policy = Policy::new(rules);
        let Ok(path) = normalize(&path) else { return Ok(()) };
        let roles = if admin { vec!["admin".to_owned()] } else { vec![] };
        let who = signed_in.then(|| Principal { user: "u", roles: &roles, mfa: false, auth_age_ms: 0, provider: "local", token: None });
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let judged = |p: &str| policy.decide(&Target { method: &method, host: None, path: p }, who).decision;
        let decision = judged(&path);
        if let Some(alias) = lenient_alias(&path) {
            prop_assert!(
                rank(decision) >= rank(judged(&alias)),
                "{} judged {:?}, its alias {} {:?}", path, decision, alias, judged(&alias)
            );
        }
        // Upper-case methods are judged as their lower-case spelling.
        let upper = Method::from_bytes(method.as_str().to_ascii_uppercase().as_bytes()).unwrap();
        let upper_decision = policy.decide(&Target { method: &upper, host: None, path: &path }, who).decision;
        prop_assert_eq!(rank(decision), rank(upper_decision));
    }
}
