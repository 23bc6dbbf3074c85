//! Policy decision time for 10, 100 and 1,000 rules. Run with
//! `cargo bench --bench policy`.
//!
//! The rules mix literal prefixes, `*` segments, method and host limits and
//! role rules, as a large real policy would. Three requests per size: one
//! decided by the first rule, one by the last (every rule tried), and the
//! last again spelled with capitals, which makes the policy judge its
//! lenient alias too.

use std::hint::black_box;
use std::time::Instant;

use authgate::policy::{Access, Glob, Policy, Principal, Rule, Target};
use http::Method;

/// `shared`: every rule starts with `/app/`, so the first-segment index
/// cannot narrow anything down (the worst case); else each has its own prefix.
fn policy(size: usize, shared: bool) -> Policy {
    let rules = (0..size)
        .map(|i| {
            let p = if shared {
                format!("app/{i}")
            } else {
                format!("app{i}")
            };
            let (pattern, access) = match i % 4 {
                0 => (
                    format!("/{p}/admin/**"),
                    Access::Roles(vec!["admin".into(), format!("team{i}")]),
                ),
                1 => (format!("/{p}/*/reports/**"), Access::Authenticated),
                2 => (format!("/{p}/static/*.css"), Access::Public),
                _ => (format!("/{p}/v*/items/**"), Access::Deny),
            };
            Rule {
                index: i,
                line: i + 1,
                col: 1,
                roles_position: None,
                pattern: Glob::parse(&pattern).unwrap(),
                methods: (i % 3 == 0).then(|| vec![Method::GET, Method::POST]),
                host: (i % 5 == 0).then(|| "intranet.example".into()),
                access,
                mfa: false,
                max_auth_age: None,
                providers: None,
                tokens: false,
                basic_auth: false,
                pass_authorization: false,
            }
        })
        .chain(std::iter::once(Rule {
            index: size,
            line: size + 1,
            col: 1,
            roles_position: None,
            pattern: Glob::parse("/**").unwrap(),
            methods: None,
            host: None,
            access: Access::Authenticated,
            mfa: false,
            max_auth_age: None,
            providers: None,
            tokens: false,
            basic_auth: false,
            pass_authorization: false,
        }))
        .collect();
    Policy::new(rules)
}

fn time(policy: &Policy, path: &str, roles: &[String]) -> f64 {
    let method = Method::GET;
    let target = Target {
        method: &method,
        host: Some("intranet.example"),
        path,
    };
    let who = Principal {
        user: "bob",
        roles,
        mfa: false,
        auth_age_ms: 0,
        provider: "local",
        token: None,
    };
    let rounds = 2_000_000 / policy.rules().len().max(10);
    let started = Instant::now();
    for _ in 0..rounds {
        black_box(policy.decide(black_box(&target), Some(who)));
    }
    started.elapsed().as_nanos() as f64 / rounds as f64
}

fn main() {
    let roles = vec!["user".to_owned()];
    println!("policy decision time (ns), a signed-in user with one role");
    println!(
        "{:>28}   first rule   last rule   last rule, alias judged too",
        ""
    );
    for shared in [false, true] {
        for size in [10, 100, 1000] {
            let policy = policy(size, shared);
            let (first_path, last_path, alias_path) = if shared {
                ("/app/0/admin/users", "/app/none/else", "/App/None/else")
            } else {
                ("/app0/admin/users", "/somewhere/else", "/Somewhere/Else")
            };
            let first = time(&policy, first_path, &roles);
            let last = time(&policy, last_path, &roles);
            let alias = time(&policy, alias_path, &roles);
            let kind = if shared {
                "one shared prefix"
            } else {
                "own prefixes"
            };
            println!("{size:>5} rules, {kind:<17}   {first:>10.0}   {last:>9.0}   {alias:>10.0}");
        }
    }
}
