//! The policy language end to end: `check` warnings and `[[test]]`s,
//! `explain`, and no way around a rule by spelling a path differently.

use std::process::Command;

use crate::support::{authgate, default_users, Setup, ALICE_PASSWORD, BOB_PASSWORD};

/// A config directory with a certificate, the default users and `body`
/// after the `[server]`/`[upstream]`/`[users]` head (which is 9 lines).
fn config_dir(body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.path().join("gw.crt"), cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("gw.key"), cert.key_pem).unwrap();
    std::fs::write(dir.path().join("users.toml"), default_users()).unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[users]\nfile = \"users.toml\"\n\n{body}"),
    )
    .unwrap();
    (dir, path)
}

fn run(command: &mut Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_warns_about_shadowed_rules_unknown_roles_and_empty_roles() {
    let (_dir, path) = config_dir(
        r#"[[rule]]
path = "/app/**"
access = "authenticated"

[[rule]]
path = "/app/admin/**"
methods = ["GET"]
roles = ["admin"]

[[rule]]
path = "/ops/**"
roles = ["operator", "admin"]

[[rule]]
path = "/nobody/**"
roles = []

[[rule]]
path = "/*/reports"
access = "public"
"#,
    );
    let (code, stdout, stderr) = run(authgate().arg("check").arg("-c").arg(&path));
    assert_eq!(code, 0, "warnings alone do not fail: {stderr}");
    let file = path.display().to_string();
    for needle in [
        format!("{file}:14:1: warning: rule #2 can never match: rule #1 (line 10)"),
        format!(
            "{file}:21:9: warning: rule #3: no user in the users file has the role \"operator\""
        ),
        format!("{file}:25:9: warning: rule #4 has `roles = []`"),
    ] {
        assert!(stderr.contains(&needle), "no {needle:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("\"admin\""), "alice has admin: {stderr}");
    assert!(!stderr.contains("rule #5"), "{stderr}");
    assert!(stdout.contains("ok (5 rules"), "{stdout}");
}

#[test]
fn check_runs_policy_tests_and_reports_failures_with_the_rule() {
    let rules = r#"[[rule]]
path = "/admin/**"
roles = ["admin"]

[[rule]]
path = "/**"
access = "authenticated"
"#;
    let passing = format!(
        "{rules}\n[[test]]\nuser = \"bob\"\nmethod = \"GET\"\npath = \"/admin/users\"\nexpect = \"deny\"\n\n[[test]]\nanonymous = true\nmethod = \"GET\"\npath = \"/x\"\nexpect = \"login\"\n\n[[test]]\nuser = \"Alice\"\nmethod = \"get\"\npath = \"//admin\"\nexpect = \"allow\"\n"
    );
    let (_dir, path) = config_dir(&passing);
    let (code, stdout, stderr) = run(authgate().arg("check").arg("-c").arg(&path));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("3 of 3 tests passed"), "{stdout}");

    let failing = format!(
        "{rules}\n[[test]]\nuser = \"bob\"\nmethod = \"GET\"\npath = \"/reports\"\nexpect = \"deny\"\n\n[[test]]\nuser = \"mallory\"\nmethod = \"GET\"\npath = \"/\"\nexpect = \"deny\"\n"
    );
    let (_dir, path) = config_dir(&failing);
    let (code, _, stderr) = run(authgate().arg("check").arg("-c").arg(&path));
    assert_eq!(code, 1);
    let file = path.display().to_string();
    let expected = format!(
        "{file}:18:1: test failed: GET /reports as bob: expected deny, got allow (rule #2 at line 14: path = \"/**\", access = \"authenticated\")"
    );
    assert!(stderr.contains(&expected), "no {expected:?} in:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:24:1: test GET / as mallory: there is no user \"mallory\""
        )),
        "{stderr}"
    );
}

#[test]
fn bad_test_cases_are_config_errors() {
    let (_dir, path) = config_dir(
        "[[rule]]\npath = \"/**\"\naccess = \"public\"\n\n[[test]]\nmethod = \"GET\"\npath = \"/\"\nexpect = \"maybe\"\n",
    );
    let (code, _, stderr) = run(authgate().arg("check").arg("-c").arg(&path));
    assert_eq!(code, 1);
    assert!(stderr.contains(":15:10: a test needs `user"), "{stderr}");
    assert!(
        stderr.contains(":17:10: unknown expect \"maybe\""),
        "{stderr}"
    );
}

#[test]
fn explain_shows_path_decision_rule_and_why() {
    let (_dir, path) = config_dir(
        "[[rule]]\npath = \"/admin/**\"\nroles = [\"admin\"]\n\n[[rule]]\npath = \"/public/**\"\naccess = \"public\"\n\n[[rule]]\npath = \"/**\"\naccess = \"authenticated\"\n",
    );
    let explain = |args: &[&str]| run(authgate().arg("explain").arg("-c").arg(&path).args(args));

    let (code, out, _) = explain(&["--user", "bob", "GET", "/x/../admin/users"]);
    assert_eq!(code, 0);
    for needle in [
        "path:      /admin/users",
        "decision:  deny",
        "rule:      #1 (line 10): path = \"/admin/**\", roles = [\"admin\"]",
        "why:       bob has the roles [user], none of the rule's [admin]",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }

    let (_, out, _) = explain(&["--user", "bob", "GET", "/ADMIN;x/users"]);
    assert!(
        out.contains("decision:  deny") && out.contains("alias:     judged as /admin/users"),
        "{out}"
    );

    let (_, out, _) = explain(&["--anonymous", "GET", "/reports"]);
    assert!(
        out.contains("decision:  login") && out.contains("line 18"),
        "{out}"
    );
    let (_, out, _) = explain(&[
        "--user",
        "alice",
        "--host",
        "gw.example",
        "DELETE",
        "/admin/x",
    ]);
    assert!(
        out.contains("decision:  allow") && out.contains("why:       alice has the role admin"),
        "{out}"
    );
    let (_, out, _) = explain(&["--anonymous", "GET", "/a%2Fb"]);
    assert!(
        out.contains("decision:  deny") && out.contains("400"),
        "{out}"
    );

    let (code, _, err) = explain(&["--user", "mallory", "GET", "/"]);
    assert_eq!(code, 1);
    assert!(err.contains("no user \"mallory\""), "{err}");
    let (code, _, _) = explain(&["GET", "/"]);
    assert_ne!(code, 0, "--user or --anonymous is required");
}

const ROLE_RULES: &str = r#"
[[rule]]
path = "/admin/**"
roles = ["admin"]

[[rule]]
path = "/public/**"
access = "public"

[[rule]]
path = "/api/**"
access = "authenticated"

[[rule]]
path = "/**"
access = "authenticated"
"#;

/// Every spelling of /admin a server might resolve to it.
const ADMIN_SPELLINGS: [&str; 18] = [
    "//admin",
    "/./admin",
    "/x/../admin",
    "/%61dmin",
    "/%2e%2e/admin",
    "/x/%2e%2e/admin",
    "/public/..%2fadmin",
    "/admin%2Fusers",
    "/admin;jsessionid=1",
    "/public/..;/admin",
    "/ADMIN",
    "/Admin/users",
    "/admin.",
    "/admin%20",
    "/admin./users",
    "/api/x/../../admin",
    "/api/%2e%2e/admin",
    "/admin..;x/y",
];

#[tokio::test]
async fn no_spelling_of_a_protected_path_reaches_it_as_a_lower_privileged_user() {
    let gw = Setup::new().rules(ROLE_RULES).start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    for path in ADMIN_SPELLINGS {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nCookie: __Host-authgate={bob}\r\nConnection: close\r\n\r\n");
        let answer = gw.raw(request.as_bytes()).await;
        let status = &answer[9..12];
        assert!(
            status == "400" || status == "403",
            "{path}: {}",
            answer.lines().next().unwrap_or("")
        );
    }
    assert!(
        gw.upstream.requests().is_empty(),
        "{:?}",
        gw.upstream.requests()
    );
    // alice may: the normalized path is what the upstream gets.
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(gw.get_as(&alice, "/x/../admin/users").await.status(), 200);
    assert_eq!(gw.upstream.last().uri, "/admin/users");
}

#[tokio::test]
async fn no_spelling_of_a_session_path_reaches_it_anonymously() {
    let rules = "[[rule]]\npath = \"/admin/**\"\naccess = \"authenticated\"\n\n[[rule]]\npath = \"/**\"\naccess = \"public\"\n";
    let gw = Setup::new().rules(rules).start().await;
    for path in ADMIN_SPELLINGS {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let answer = gw.raw(request.as_bytes()).await;
        let status = &answer[9..12];
        assert!(
            status == "400" || status == "401",
            "{path}: {}",
            answer.lines().next().unwrap_or("")
        );
    }
    assert!(
        gw.upstream.requests().is_empty(),
        "{:?}",
        gw.upstream.requests()
    );
}

#[tokio::test]
async fn spoofed_identity_never_survives_any_decision_on_either_protocol() {
    let gw = Setup::new().rules(ROLE_RULES).start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    /// (who, with which session) -> path -> the identity the upstream must see
    type Case<'a> = (
        Option<(&'a str, &'a str)>,
        &'a str,
        Option<(&'a str, &'a str)>,
    );
    let cases: [Case; 5] = [
        (None, "/public/page", None),
        (
            Some(("bob", bob.as_str())),
            "/public/page",
            Some(("bob", "user")),
        ),
        (
            Some(("bob", bob.as_str())),
            "/api/things",
            Some(("bob", "user")),
        ),
        (
            Some(("alice", alice.as_str())),
            "/admin/users",
            Some(("alice", "admin,user")),
        ),
        (
            Some(("alice", alice.as_str())),
            "/api/things",
            Some(("alice", "admin,user")),
        ),
    ];
    for client in [gw.h1_client(), gw.client()] {
        for (who, path, expected) in &cases {
            let mut request = client
                .get(gw.url(path))
                .header("x-auth-user", "root")
                .header("x-auth-user", "root2")
                .header("X-Auth-Roles", "admin")
                .header("x_auth_user", "root")
                .header("x_auth_roles", "admin")
                .header("x-auth-email", "root@example")
                .header("connection", "x-auth-user, x-auth-roles")
                .header("x-original-url", "/admin/secret")
                .header("x-rewrite-url", "/admin/secret")
                .header("x-http-method-override", "DELETE")
                .header("x-http-method", "DELETE")
                .header("x-method-override", "DELETE");
            if let Some((_, session)) = who {
                request = request.header("cookie", format!("__Host-authgate={session}"));
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{path} as {who:?}");
            let seen = gw.upstream.last();
            assert_eq!(seen.method, "GET");
            assert_eq!(seen.uri, *path);
            let values = |name: &str| -> Vec<String> {
                seen.headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned())
                    .collect()
            };
            match expected {
                Some((user, roles)) => {
                    assert_eq!(values("x-auth-user"), [*user], "{path}");
                    assert_eq!(values("x-auth-roles"), [*roles], "{path}");
                }
                None => {
                    assert!(
                        values("x-auth-user").is_empty() && values("x-auth-roles").is_empty(),
                        "{path}"
                    );
                }
            }
            for (name, _) in seen.headers.iter() {
                let n = name.as_str();
                assert!(
                    !(n.starts_with("x_auth")
                        || n == "x-auth-email"
                        || n.contains("original-url")
                        || n.contains("rewrite-url")
                        || n.contains("method")),
                    "{n} reached the upstream on {path}"
                );
            }
        }
    }
    // Override headers do not change a decision either.
    let denied = gw
        .client()
        .get(gw.url("/admin/users"))
        .header("cookie", format!("__Host-authgate={bob}"))
        .header("x-original-url", "/public/page")
        .header("x-http-method-override", "HEAD")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
}

#[tokio::test]
async fn gateway_routes_are_answered_by_the_gateway_whatever_the_rules_say() {
    let rules = "[[rule]]\npath = \"/.gateway/**\"\naccess = \"deny\"\n\n[[rule]]\npath = \"/**\"\naccess = \"public\"\n";
    let gw = Setup::new().rules(rules).start().await;
    let client = gw.client();
    assert_eq!(
        client
            .get(gw.url("/.gateway/login"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(gw.url("/.gateway/whoami"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(gw.url("/.gateway/nothing-here"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client
            .get(gw.url("/public/../.gateway/x"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let public = Setup::new()
        .rules("[[rule]]\npath = \"/.gateway/**\"\naccess = \"public\"\n")
        .start()
        .await;
    assert_eq!(
        public
            .client()
            .get(public.url("/.gateway/anything"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(gw.upstream.requests().is_empty() && public.upstream.requests().is_empty());
}

#[test]
fn check_warns_about_a_rule_for_a_path_with_a_trailing_slash() {
    let (_dir, path) = config_dir(
        r#"[[rule]]
path = "/docs/"
access = "public"

[[rule]]
path = "/**"
access = "authenticated"

[[test]]
anonymous = true
method = "GET"
path = "/docs/"
expect = "login"
"#,
    );
    let (code, stdout, stderr) = run(authgate().arg("check").arg("-c").arg(&path));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(":10:1: warning: rule #1: \"/docs/\" ends in `/`")
            && stderr.contains("\"/docs/**\""),
        "{stderr}"
    );
    assert!(stdout.contains("1 of 1 tests passed"), "{stdout}");
}
