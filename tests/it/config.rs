//! Config validation: every problem, each at FILE:LINE:COL.

use authgate::config::StoreBackend;
use authgate::Config;

fn problems(text: &str, dir: &std::path::Path) -> Vec<String> {
    match Config::parse(text, &dir.join("gateway.toml")) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
    }
}

fn dir_with_cert() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.path().join("gw.crt"), cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("gw.key"), cert.key_pem).unwrap();
    dir
}

#[test]
fn a_valid_config_loads_with_defaults() {
    let dir = dir_with_cert();
    let text = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[[rule]]\npath = \"/**\"\naccess = \"public\"\n";
    let config = Config::parse(text, &dir.path().join("gateway.toml")).unwrap();
    assert_eq!(config.server.max_header_size, 64 * 1024);
    assert_eq!(config.server.max_body_size, 1 << 30);
    assert_eq!(config.server.shutdown_grace.as_secs(), 30);
    assert_eq!(config.upstreams[0].timeout.as_secs(), 60);
    assert_eq!(config.policy.rules().len(), 1);
    assert_eq!(config.policy.rules()[0].line, 7);
}

#[test]
fn every_problem_is_reported_with_its_position() {
    let dir = dir_with_cert();
    let text = r#"[server]
listen = "127.0.0.1:0"
cert = "missing.crt"
key = "gw.key"
header_timeout = "10 seconds"
max_body_size = "1GB"
lisen = "typo"

[upstream]
url = "http://127.0.0.1:1"
timeout = "5x"

[[rule]]
path = "/admin/**"
access = "admins-only"

[[rule]]
path = "/**"
acess = "public"
"#;
    let file = dir.path().join("gateway.toml").display().to_string();
    let found = problems(text, dir.path());
    let expect = [
        (3, 8, "cannot read certificate file"),
        (5, 18, "invalid duration"),
        (6, 17, "invalid size"),
        (7, 1, "unknown key `server.lisen`"),
        (11, 11, "invalid duration"),
        (15, 10, "unknown access \"admins-only\""),
        (19, 1, "unknown key `rule.1.acess`"),
    ];
    for (line, col, message) in expect {
        let prefix = format!("{file}:{line}:{col}: ");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(&prefix) && p.contains(message)),
            "no `{prefix}{message}` in:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn wrong_types_and_syntax_errors_name_their_position() {
    let dir = dir_with_cert();
    let file = dir.path().join("gateway.toml").display().to_string();
    let wrong_type = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\nmax_connections = \"many\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let found = problems(wrong_type, dir.path());
    assert!(
        found.iter().any(|p| p.starts_with(&format!("{file}:5:"))),
        "{found:?}"
    );
    let syntax = "[server\nlisten = 1\n";
    let found = problems(syntax, dir.path());
    assert!(
        found.iter().any(|p| p.starts_with(&format!("{file}:1:"))),
        "{found:?}"
    );
}

#[test]
fn rules_need_exactly_one_decision_and_valid_parts() {
    let dir = dir_with_cert();
    let text = r#"[server]
listen = "127.0.0.1:0"
cert = "gw.crt"
key = "gw.key"
[upstream]
url = "http://127.0.0.1:1"
[[rule]]
path = "/a/**"
access = "public"
roles = ["admin"]
[[rule]]
path = "/b/**"
[[rule]]
path = "no-slash"
access = "public"
[[rule]]
path = "/c**"
methods = ["GET", "BAD METHOD"]
access = "deny"
"#;
    let found = problems(text, dir.path()).join("\n");
    for needle in [
        ":10:9: a rule has either `access` or `roles`",
        ":12:8: a rule needs",
        ":14:8: path pattern \"no-slash\" must start with /",
        ":17:8: path pattern \"/c**\"",
        ":18:19: invalid HTTP method",
    ] {
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }
}

#[test]
fn bad_upstreams_addresses_and_keys_are_refused() {
    let dir = dir_with_cert();
    std::fs::write(
        dir.path().join("other.key"),
        authgate::tls::self_signed().key_pem,
    )
    .unwrap();
    let text = r#"[server]
listen = "localhost"
cert = "gw.crt"
key = "other.key"
max_header_size = "100B"
[upstream]
url = "https://app.internal/base"
"#;
    let found = problems(text, dir.path()).join("\n");
    for needle in [
        ":2:10: invalid address",
        ":4:7: certificate and key do not fit together",
        ":5:19: max_header_size must be between",
        ":7:7: upstream url must not have a path",
    ] {
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.path().join("certs/gateway.crt"), cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("certs/gateway.key"), cert.key_pem).unwrap();
    std::fs::write(
        dir.path().join("users.toml"),
        crate::support::default_users(),
    )
    .unwrap();
    let text = include_str!("../../gateway.toml");
    let config = Config::parse(text, &dir.path().join("gateway.toml"))
        .unwrap_or_else(|e| panic!("the shipped gateway.toml is refused:\n{e}"));
    assert_eq!(config.policy.rules().len(), 4);
    assert_eq!(config.session.cookie_name, "__Host-authgate");
    assert_eq!(config.session.idle_timeout.as_secs(), 30 * 60);
    assert_eq!(config.login.max_failures, 5);
    assert_eq!(config.tests.len(), 7);
    let failures = authgate::review::run_tests(&config, &config.users);
    assert!(failures.is_empty(), "the shipped tests fail: {failures:?}");
    let warnings = authgate::review::lint(&config, &config.users);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        config.store.backend,
        StoreBackend::Local {
            path: dir.path().join("authgate-state.db")
        }
    );

    // The image keeps the state in its volume: the Dockerfile rewrites the
    // shipped `path` line, and refuses to build if the line is not there.
    let dockerfile = include_str!("../../Dockerfile");
    assert!(dockerfile.contains("\nVOLUME /var/lib/authgate\n"));
    let line = "# path = \"authgate-state.db\"";
    assert!(text.lines().any(|l| l.starts_with(line)), "{line}");
    assert!(dockerfile.contains(&format!(
        "s|^{line}.*|path = \"/var/lib/authgate/authgate-state.db\"|"
    )));
}

#[test]
fn session_login_and_users_sections_are_validated() {
    let dir = dir_with_cert();
    std::fs::write(
        dir.path().join("users.toml"),
        "[users.bob]\npassword = \"plaintext-oops\"\nroles = [\"user\"]\n",
    )
    .unwrap();
    let text = r#"[server]
listen = "127.0.0.1:0"
cert = "gw.crt"
key = "gw.key"
[upstream]
url = "http://127.0.0.1:1"
[session]
idle_timeout = "9h"
absolute_timeout = "13h"
store = "memory"
[users]
file = "users.toml"
[login]
max_failures = 0
failure_window = "soon"
"#;
    let found = problems(text, dir.path()).join("\n");
    for needle in [
        "gateway.toml:9:20: absolute_timeout must not be over 12h",
        // `[session] store` became `[store] backend` (issue 10).
        "gateway.toml:10:1: unknown key `session.store`",
        "gateway.toml:14:16: max_failures must be between",
        "gateway.toml:15:18: invalid duration",
        "users.toml:2:12: user \"bob\": the password must be an argon2id hash",
    ] {
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }
    assert!(!found.contains("plaintext-oops"));

    std::fs::remove_file(dir.path().join("users.toml")).unwrap();
    let found = problems(text, dir.path()).join("\n");
    assert!(
        found.contains("gateway.toml:12:8: cannot read users file"),
        "{found}"
    );
}

#[test]
fn the_store_section_names_a_backend_and_a_folder_the_gateway_can_write() {
    let dir = dir_with_cert();
    let head = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let config_file = dir.path().join("gateway.toml");

    // The default: a local file next to the config.
    let config = Config::parse(head, &config_file).unwrap();
    assert_eq!(
        config.store.backend,
        StoreBackend::Local {
            path: dir.path().join("authgate-state.db")
        }
    );
    let relative = format!("{head}[store]\npath = \"state/s.db\"\n");
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let config = Config::parse(&relative, &config_file).unwrap();
    assert_eq!(
        config.store.backend,
        StoreBackend::Local {
            path: dir.path().join("state/s.db")
        }
    );
    let memory = format!("{head}[store]\nbackend = \"memory\"\n");
    assert_eq!(
        Config::parse(&memory, &config_file).unwrap().store.backend,
        StoreBackend::Memory
    );

    for (store, needle) in [
        (
            "backend = \"postgres\"",
            "gateway.toml:8:11: unknown store backend \"postgres\"",
        ),
        (
            "path = \"missing/state.db\"",
            "gateway.toml:8:8: the state file's folder",
        ),
        // Not even root may make files in /proc.
        (
            "path = \"/proc/authgate-state.db\"",
            "gateway.toml:8:8: the state file's folder /proc is not writable",
        ),
        (
            "backend = \"memory\"\npath = \"x.db\"",
            "gateway.toml:9:8: path is for backend = \"local\"",
        ),
    ] {
        let found = problems(&format!("{head}[store]\n{store}\n"), dir.path()).join("\n");
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }
    // Redis: a URL that parses, a password file that can be read.
    std::fs::write(dir.path().join("redis.pass"), "s3cret\n").unwrap();
    let redis = format!("{head}[store]\nbackend = \"redis\"\nurl = \"redis://10.0.0.5:6380/2\"\npassword_file = \"redis.pass\"\nkey_prefix = \"app1:\"\ntimeout = \"100ms\"\n");
    let StoreBackend::Redis(settings) = Config::parse(&redis, &config_file).unwrap().store.backend
    else {
        panic!("a Redis store");
    };
    assert_eq!(settings.password.as_deref(), Some("s3cret"));
    assert_eq!(settings.key_prefix, "app1:");
    assert_eq!(settings.timeout, std::time::Duration::from_millis(100));
    assert!(
        !format!("{settings:?}").contains("s3cret"),
        "never in a log"
    );
    for (store, needle) in [
        (
            "backend = \"redis\"",
            "gateway.toml:8:11: backend = \"redis\" needs url",
        ),
        (
            "backend = \"redis\"\nurl = \"http://x\"",
            "gateway.toml:9:7: invalid Redis url",
        ),
        (
            "backend = \"redis\"\nurl = \"redis://x\"\npassword_file = \"nope\"",
            "gateway.toml:10:17: cannot read the Redis password file",
        ),
        (
            "url = \"redis://x\"",
            "gateway.toml:8:7: url is for backend = \"redis\"",
        ),
    ] {
        let found = problems(&format!("{head}[store]\n{store}\n"), dir.path()).join("\n");
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }

    let found = problems(
        &format!("{head}[store]\npath = \"missing/state.db\"\n"),
        dir.path(),
    )
    .join("\n");
    assert!(found.contains("does not exist"), "{found}");
}

#[test]
fn trusted_proxies_are_cidrs_or_addresses_and_a_bad_one_is_named() {
    let dir = dir_with_cert();
    let good = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.7\"]\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let config = Config::parse(good, &dir.path().join("gateway.toml")).unwrap();
    let trusted = &config.server.trusted_proxies;
    for ip in ["10.200.0.1", "fd00::1", "192.0.2.7", "::ffff:10.0.0.1"] {
        assert!(trusted.trusts(ip.parse().unwrap()), "{ip}");
    }
    assert!(!trusted.trusts("192.0.2.8".parse().unwrap()));
    let bad = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\", \"lb.internal\"]\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let found = problems(bad, dir.path()).join("\n");
    for needle in [":5:34: trusted_proxies", ":5:49: trusted_proxies"] {
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }
}

/// Every key of each table the config accepts, read from the serde
/// structs that mirror the file key for key (`src/config/raw.rs`).
fn accepted_keys() -> Vec<(String, Vec<String>)> {
    let source = include_str!("../../src/config/raw.rs");
    let table_of = |name: &str| -> Option<&'static str> {
        Some(match name {
            "RawConfig" | "RawUpstreams" => return None,
            "RawServer" => "server",
            "RawUpstream" => "upstream",
            "RawSession" => "session",
            "RawStore" => "store",
            "RawUsers" => "users",
            "RawLogin" => "login",
            "RawIdentity" => "identity",
            "RawAdmin" => "admin",
            "RawRule" => "rule",
            "RawTest" => "test",
            "RawOidc" => "oidc",
            "RawLdap" => "ldap",
            "RawTokens" => "tokens",
            "RawBearer" => "bearer",
            other => {
                panic!("raw.rs has a struct {other} this test does not know: name its table here")
            }
        })
    };
    let mut tables = Vec::new();
    for block in source.split("pub struct ").skip(1) {
        let name = block.split([' ', '{', '(']).next().unwrap();
        let Some(table) = table_of(name) else {
            continue;
        };
        let body = block
            .split('{')
            .nth(1)
            .unwrap()
            .split("\n}")
            .next()
            .unwrap();
        let keys = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub ")?.split(':').next())
            .map(str::to_owned)
            .collect();
        tables.push((table.to_owned(), keys));
    }
    tables
}

#[test]
fn the_shipped_gateway_toml_shows_every_key_the_config_accepts() {
    let shipped = include_str!("../../gateway.toml");
    let lines: Vec<&str> = shipped.lines().collect();
    let header = |l: &str| l.starts_with('[') && l.trim_end().ends_with(']');
    let mut missing = Vec::new();
    for (table, keys) in accepted_keys() {
        // The table's lines: from its first header to the next other
        // header, with the comment block right above its first header.
        let starts: Vec<usize> = lines
            .iter()
            .enumerate()
            // An optional table or array of tables (`[ldap]`, `[[oidc]]`) may be shown
            // commented out, as a whole example.
            .filter(|(_, l)| {
                **l == format!("[{table}]")
                    || **l == format!("[[{table}]]")
                    || **l == format!("# [[{table}]]")
                    || **l == format!("# [{table}]")
            })
            .map(|(i, _)| i)
            .collect();
        let first = *starts
            .first()
            .unwrap_or_else(|| panic!("gateway.toml has no [{table}]"));
        let mut from = first;
        while from > 0 && lines[from - 1].trim().is_empty() {
            from -= 1;
        }
        while from > 0 && lines[from - 1].starts_with('#') {
            from -= 1;
        }
        let mut region: Vec<&str> = lines[from..first].to_vec();
        for &start in &starts {
            region.extend(
                lines[start + 1..]
                    .iter()
                    .take_while(|l| !header(l))
                    .copied(),
            );
        }
        for key in keys {
            let shown = region.iter().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.trim_start().starts_with(['=', ':']))
            });
            if !shown {
                missing.push(format!("[{table}] {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "gateway.toml (\"every key, with its default\") does not show: {missing:?}"
    );
}

/// Every bad value of an `[[oidc]]` entry is named at its place, in one load.
#[test]
fn oidc_entries_are_checked_value_by_value() {
    let dir = dir_with_cert();
    std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
    let head = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let good = format!(
        "{head}[[oidc]]\nname = \"acme\"\nissuer = \"https://sso.example\"\nclient_id = \"gw\"\nclient_secret_file = \"secret\"\nroles_claim = \"groups\"\nrole_map = {{ ops = [\"admin\"] }}\nheaders = {{ X-Email = \"email\" }}\n[[rule]]\npath = \"/**\"\naccess = \"authenticated\"\nproviders = [\"acme\", \"local\"]\n"
    );
    let config = Config::parse(&good, &dir.path().join("gateway.toml")).unwrap();
    let acme = &config.oidc[0];
    assert_eq!(acme.title, "Sign in with acme");
    assert_eq!(acme.scopes, ["openid", "profile", "email"]);
    assert_eq!(acme.client_secret.as_ref().unwrap().0, "s3cret");
    assert!(
        !format!("{acme:?}").contains("s3cret"),
        "Debug never shows the secret"
    );
    assert_eq!(config.identity.claim_headers, ["x-email"]);

    let bad = format!(
        "{head}[[oidc]]\nname = \"Acme SSO\"\nissuer = \"http://sso.example\"\nclient_id = \"\"\nclient_secret_file = \"missing\"\nscopes = [\"profile\"]\nrole_map = {{ ops = [\"bad role!\"] }}\nheaders = {{ X-Auth-User = \"email\", Host = \"email\" }}\nusername_claim = \"nonce\"\n[[oidc]]\nname = \"b\"\nissuer = \"https://b.example\"\nclient_id = \"gw\"\n[[oidc]]\nname = \"b\"\nissuer = \"https://b.example\"\nclient_id = \"gw\"\n[[rule]]\npath = \"/**\"\naccess = \"authenticated\"\nproviders = [\"nobody\"]\n"
    );
    let found = problems(&bad, dir.path()).join("\n");
    for needle in [
        ":8:8: an [[oidc]] name",
        ":9:10: issuer must be an https:// URL",
        ":10:13: client_id must not be empty",
        ":11:22: cannot read the client secret",
        ":12:11: scopes must include \"openid\"",
        ":13:12: role_map maps the values of roles_claim",
        ":13:21: invalid role \"bad role!\"",
        ":14:27: X-Auth-User is the gateway's own identity header",
        ":14:43: Host is a header the gateway sets",
        ":15:18: \"nonce\" is not a claim",
        ":21:8: a second [[oidc]] is called \"b\"",
        ":27:14: \"nobody\" is not an [[oidc]] name",
    ] {
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }
}

/// `client_auth = "private_key_jwt"` signs with `client_key` (a P-256 key),
/// and nothing else goes with it.
#[test]
fn private_key_jwt_needs_a_key_and_no_secret() {
    let dir = dir_with_cert();
    authgate::assertion::generate(&dir.path().join("client.pem")).unwrap();
    std::fs::write(dir.path().join("secret"), "s").unwrap();
    let head = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[[oidc]]\nname = \"acme\"\nissuer = \"https://sso.example\"\nclient_id = \"gw\"\n";
    let good = format!("{head}client_auth = \"private_key_jwt\"\nclient_key = \"client.pem\"\n");
    let config = Config::parse(&good, &dir.path().join("gateway.toml")).unwrap();
    assert!(config.oidc[0].client_key.is_some() && config.oidc[0].client_secret.is_none());
    for (extra, needle) in [
        ("client_auth = \"private_key_jwt\"\n", "needs client_key"),
        ("client_auth = \"private_key_jwt\"\nclient_key = \"client.pem\"\nclient_secret_file = \"secret\"\n", "leave client_secret_file out"),
        ("client_auth = \"magic\"\n", "client_auth is \"client_secret\" or \"private_key_jwt\""),
        ("client_key = \"client.pem\"\n", "client_key is for client_auth"),
        ("client_auth = \"private_key_jwt\"\nclient_key = \"gw.crt\"\n", "not a usable P-256 PKCS#8 key"),
    ] {
        let found = problems(&format!("{head}{extra}"), dir.path()).join("\n");
        assert!(found.contains(needle), "no {needle:?} for {extra:?} in:\n{found}");
    }
}

/// Every bad value of `[ldap]` (and `[users] order`) is named at its
/// place, in one load; a good one comes out with its defaults.
#[test]
fn ldap_is_checked_value_by_value() {
    let dir = dir_with_cert();
    std::fs::write(dir.path().join("bind"), "pw\n").unwrap();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let head = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let good = format!(
        "{head}[ldap]\nurl = \"ldaps://ldap.example:636\"\nbind_dn = \"cn=gw,dc=example\"\nbind_password_file = \"bind\"\nuser_base = \"ou=people,dc=example\"\nrole_map = {{ \"CN=Ops,dc=example\" = [\"admin\"] }}\nheaders = {{ X-Email = \"mail\" }}\n[[rule]]\npath = \"/**\"\naccess = \"authenticated\"\nproviders = [\"ldap\"]\n"
    );
    let config = Config::parse(&good, &dir.path().join("gateway.toml")).unwrap();
    let ldap = config.ldap.as_ref().unwrap();
    assert_eq!(ldap.user_filter, "(&(objectClass=person)(uid={username}))");
    assert_eq!(ldap.username_attribute, "uid");
    assert_eq!(ldap.timeout, std::time::Duration::from_secs(3));
    assert_eq!(ldap.recheck, std::time::Duration::from_secs(300));
    assert_eq!(
        ldap.role_map,
        [("cn=ops,dc=example".to_owned(), vec!["admin".to_owned()])]
    );
    assert_eq!(ldap.bind.as_ref().unwrap().1 .0, "pw");
    assert!(
        !format!("{ldap:?}").contains("\"pw\""),
        "Debug never shows the password"
    );
    assert_eq!(config.identity.claim_headers, ["x-email"]);

    let bad = format!(
        "{head}[users]\nfile = \"users.toml\"\norder = [\"ldap\"]\n[ldap]\nurl = \"ldap://ldap.example\"\nbind_dn = \"not a dn\"\nbind_password_file = \"bind\"\nuser_base = \"ou=people,dc=example\"\nuser_filter = \"(uid=alice)\"\ngroup_filter = \"(member={{dn}})\"\nheaders = {{ X-Auth-User = \"mail\" }}\ntimeout = \"5m\"\nconnections = 0\n"
    );
    let found = problems(&bad, dir.path()).join("\n");
    for needle in [
        ":9:10: order is [\"local\", \"ldap\"]",
        ":11:7: plain ldap:// sends passwords in the clear",
        ":12:11: \"not a dn\" is not a DN",
        ":15:15: \"(uid=alice)\" is not a search filter with {username}",
        ":16:16: group_filter searches under group_base",
        ":17:27: X-Auth-User is the gateway's own identity header",
        ":18:11: timeout must be between 100ms and 1m",
        ":19:15: connections must be between 1 and 64",
    ] {
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }
    // ldaps:// with start_tls, and insecure where it does not belong.
    for (lines, needle) in [
        (
            "url = \"ldaps://x\"\nstart_tls = true",
            "start_tls is for ldap:// URLs",
        ),
        (
            "url = \"ldaps://x\"\ninsecure = true",
            "insecure = true is for plain ldap://",
        ),
        ("url = \"https://x\"", "url must be ldaps://HOST[:PORT]"),
    ] {
        let text = format!("{head}[ldap]\n{lines}\nuser_base = \"dc=x\"\n");
        let found = problems(&text, dir.path()).join("\n");
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }
}

#[test]
fn tokens_settings_and_rule_flags_are_checked() {
    let dir = dir_with_cert();
    std::fs::write(dir.path().join("users.toml"), "").unwrap();
    let head = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let good = format!(
        "{head}[tokens]\nmax_lifetime = \"30d\"\ndefault = true\n[[rule]]\npath = \"/a/**\"\naccess = \"authenticated\"\n[[rule]]\npath = \"/b/**\"\naccess = \"authenticated\"\nmfa = true\n[[rule]]\npath = \"/c/**\"\nroles = [\"x\"]\nbasic_auth = true\npass_authorization = true\n[[rule]]\npath = \"/d/**\"\naccess = \"authenticated\"\ntokens = false\n"
    );
    let config = Config::parse(&good, &dir.path().join("gateway.toml")).unwrap();
    let day = std::time::Duration::from_secs(24 * 3600);
    assert_eq!(config.tokens.max_lifetime, 30 * day);
    assert_eq!(
        config.tokens.default_lifetime,
        30 * day,
        "90 days, or the most if shorter"
    );
    let rules = config.policy.rules();
    // `default = true` reaches the rules that ask for a session, not one with mfa.
    assert!(rules[0].tokens && !rules[0].basic_auth);
    assert!(!rules[1].tokens);
    assert!(rules[2].tokens && rules[2].basic_auth && rules[2].pass_authorization);
    assert!(!rules[3].tokens, "a rule may say no");

    let bad = format!(
        "{head}[tokens]\nmax_lifetime = \"10s\"\n[[rule]]\npath = \"/p/**\"\naccess = \"public\"\ntokens = true\n[[rule]]\npath = \"/m/**\"\naccess = \"authenticated\"\nmfa = true\nbasic_auth = true\n"
    );
    let found = problems(&bad, dir.path()).join("\n");
    for needle in [
        ":8:16: max_lifetime must be at least 1m",
        ":12:10: `tokens` and `basic_auth` need a rule that asks for a session",
        ":17:14: a token cannot pass a second factor",
    ] {
        assert!(found.contains(needle), "no {needle:?} in:\n{found}");
    }
}
