//! Signing in against a directory (issue 27): a real OpenLDAP `slapd`
//! ([`crate::slapd`]) over ldaps:// and StartTLS, beside local users.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::admin::{api, csrf_of, within};
use crate::metrics::{sample, scrape};
use crate::slapd::{Slapd, BASE, CAROL_PASSWORD, DAVE_PASSWORD};
use crate::support::{default_users, Setup, TestGateway, ALICE_PASSWORD, BOB_PASSWORD};

/// The users file without its carol, whose name the directory has.
fn local_users() -> String {
    default_users()
        .split("[users.carol]")
        .next()
        .unwrap()
        .to_owned()
}

const ROLE_MAP: &str = "group_base = \"ou=groups,dc=example,dc=org\"\nrole_map = { \"admins\" = [\"admin\"], \"cn=staff,ou=groups,dc=example,dc=org\" = [\"staff\"] }\nheaders = { \"X-Auth-Email\" = \"mail\" }";

/// A setup with the local users alice and bob.
fn setup() -> Setup {
    Setup::new().users(&local_users())
}

/// A gateway on `slapd` with `extra` lines in `[ldap]` (ldaps:// unless
/// `url` says otherwise). Its setup names the users ([`local_users`]).
async fn gateway(slapd: &Slapd, setup: Setup, url: Option<&str>, extra: &str) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let url = url.map_or_else(|| slapd.ldaps_url(), str::to_owned);
    let section = slapd.section(dir.path(), &url, extra);
    let gw = setup
        .rules(&format!("{}\n{section}", crate::support::DEFAULT_RULES))
        .start()
        .await;
    std::mem::forget(dir);
    gw
}

async fn status(gw: &TestGateway, session: &str, path: &str) -> u16 {
    gw.get_as(session, path).await.status().as_u16()
}

#[tokio::test]
async fn directory_users_sign_in_over_ldaps_and_starttls_with_groups_as_roles() {
    let slapd = Slapd::start();
    for url in [slapd.ldaps_url(), slapd.ldap_url()] {
        let extra = if url.starts_with("ldap://") {
            format!("start_tls = true\n{ROLE_MAP}")
        } else {
            ROLE_MAP.to_owned()
        };
        let gw = gateway(&slapd, setup(), Some(&url), &extra).await;
        // Carol's groups: admins (by name) and staff (by DN).
        let carol = gw.sign_in("Carol", CAROL_PASSWORD).await;
        assert_eq!(status(&gw, &carol, "/staff/x").await, 200, "{url}");
        let seen = gw.upstream.last();
        assert_eq!(seen.headers["x-auth-user"], "carol", "their directory name");
        assert_eq!(seen.headers["x-auth-roles"], "admin,staff");
        assert_eq!(seen.headers["x-auth-email"], "carol@example.org");
        // Dave is staff, not admin.
        let dave = gw.sign_in("dave", DAVE_PASSWORD).await;
        assert_eq!(status(&gw, &dave, "/staff/x").await, 403);
        assert_eq!(status(&gw, &dave, "/private/x").await, 200);
        // A wrong password, an unknown name: the same refusal.
        for (user, password) in [("carol", "wrong password"), ("nobody", CAROL_PASSWORD)] {
            let response = gw.try_sign_in(user, password).await;
            assert_eq!(response.status(), 401, "{user}");
            assert!(response
                .text()
                .await
                .unwrap()
                .contains("Invalid username or password."));
        }
        // Local users sign in beside them.
        let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
        assert_eq!(status(&gw, &alice, "/staff/x").await, 200);
        // A directory user's password is the directory's to change.
        let page = gw.get_as(&carol, "/.gateway/password").await;
        assert_eq!(page.status(), 403);
        assert!(page.text().await.unwrap().contains("company directory"));
        // Their second factor is kept here: the account page offers it.
        let account = gw
            .get_as(&carol, "/.gateway/account")
            .await
            .text()
            .await
            .unwrap();
        assert!(account.contains("href=\"/.gateway/totp\""), "{account}");
    }
}

#[tokio::test]
async fn memberof_names_the_groups_when_no_group_base_is_set() {
    let slapd = Slapd::start();
    let gw = gateway(
        &slapd,
        setup(),
        None,
        "role_map = { \"cn=admins,ou=groups,dc=example,dc=org\" = [\"admin\"] }\ndefault_roles = [\"member\"]",
    )
    .await;
    let carol = gw.sign_in("carol", CAROL_PASSWORD).await;
    assert_eq!(status(&gw, &carol, "/staff/x").await, 200);
    assert_eq!(gw.upstream.last().headers["x-auth-roles"], "admin,member");
}

#[tokio::test]
async fn typed_names_never_widen_the_search_and_two_matches_refuse() {
    let slapd = Slapd::start();
    let gw = gateway(&slapd, setup().login("max_failures = 100"), None, "").await;
    // Each of these, unescaped, would find carol alone and bind as her.
    for name in [
        "car*",
        "*",
        "carol)(uid=*",
        "carol)(|(uid=*",
        "c*l",
        "carol\\",
        "carol\0",
        "(",
    ] {
        let response = gw.try_sign_in(name, CAROL_PASSWORD).await;
        assert_eq!(response.status(), 401, "{name:?} {:?}", response.headers());
    }
    // Two entries have uid eve: refused, whatever the password.
    assert_eq!(
        gw.try_sign_in("eve", "eve-directory-pw").await.status(),
        401
    );
    // A DN with an escaped comma, as the directory gives it, binds.
    let jane = gw.sign_in("jane", "jane-directory-pw").await;
    assert_eq!(status(&gw, &jane, "/private/x").await, 200);
}

#[tokio::test]
async fn an_empty_password_is_refused_before_any_bind() {
    // This slapd lets a DN without a password bind ("unauthenticated").
    let slapd = Slapd::start();
    let gw = gateway(
        &slapd,
        setup().server("ops_listen = \"127.0.0.1:0\""),
        None,
        "",
    )
    .await;
    let binds = |text: &str| sample(text, "authgate_directory_binds_total");
    let before = binds(&scrape(&gw).await);
    assert_eq!(gw.try_sign_in("carol", "").await.status(), 401);
    assert_eq!(binds(&scrape(&gw).await), before, "nothing was sent");
    // The same directory does bind a DN with no password: the guard is what refuses.
    let mut ldap = slapd.admin().await;
    let result = ldap
        .simple_bind(&format!("uid=carol,ou=people,{BASE}"), "")
        .await
        .unwrap();
    assert_eq!(result.rc, 0, "slapd allows unauthenticated binds here");
}

#[tokio::test]
async fn a_wrong_name_and_a_wrong_password_cost_the_same_round_trips() {
    let slapd = Slapd::start();
    let gw = gateway(
        &slapd,
        setup()
            .server("ops_listen = \"127.0.0.1:0\"")
            .login("max_failures = 100"),
        None,
        ROLE_MAP,
    )
    .await;
    let work = |text: &str| {
        (
            sample(text, "authgate_directory_searches_total"),
            sample(text, "authgate_directory_binds_total"),
        )
    };
    let mut costs = Vec::new();
    for (user, password) in [
        ("nobody", "some password"),
        ("carol", "some password"),
        ("alice", "some password"),
        ("alice", ALICE_PASSWORD),
    ] {
        let before = work(&scrape(&gw).await);
        gw.try_sign_in(user, password).await;
        let after = work(&scrape(&gw).await);
        costs.push((user, after.0 - before.0, after.1 - before.1));
    }
    for (user, searches, binds) in &costs {
        assert_eq!((*searches, *binds), (1.0, 1.0), "{user}: {costs:?}");
    }
    // A throttled directory user, as a local one.
    let gw = gateway(&slapd, setup().login("max_failures = 3"), None, "").await;
    for _ in 0..3 {
        assert_eq!(gw.try_sign_in("carol", "wrong").await.status(), 401);
    }
    assert_eq!(gw.try_sign_in("carol", CAROL_PASSWORD).await.status(), 429);
}

#[tokio::test]
async fn a_sign_in_burst_shares_a_few_pooled_connections() {
    let slapd = Slapd::start();
    let gw = gateway(
        &slapd,
        setup()
            .server("ops_listen = \"127.0.0.1:0\"")
            .login("max_failures = 1000"),
        None,
        "connections = 2",
    )
    .await;
    let attempts = (0..40).map(|i| {
        let gw = &gw;
        async move {
            let password = if i % 2 == 0 { CAROL_PASSWORD } else { "wrong" };
            gw.try_sign_in("carol", password).await.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 303).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        20,
        "{statuses:?}"
    );
    let opened = sample(
        &scrape(&gw).await,
        "authgate_directory_connections_opened_total",
    );
    assert!(
        opened <= 4.0,
        "two for searches and two for binds at most: {opened}"
    );
}

#[tokio::test]
async fn a_stopped_directory_answers_503_while_local_users_and_sessions_carry_on() {
    let log = crate::logs::captured();
    let slapd = Slapd::start();
    let gw = gateway(
        &slapd,
        setup().server("ops_listen = \"127.0.0.1:0\""),
        None,
        "timeout = \"300ms\"",
    )
    .await;
    let carol = gw.sign_in("carol", CAROL_PASSWORD).await;
    slapd.signal("-STOP");
    let started = Instant::now();
    let response = gw.try_sign_in("dave", DAVE_PASSWORD).await;
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(
        took < Duration::from_secs(2),
        "answered within the timeout: {took:?}"
    );
    // Local users, existing sessions and the proxy do not wait on it; a
    // local name with a wrong password gets what an unknown name gets.
    assert_eq!(gw.try_sign_in("alice", "wrong").await.status(), 503);
    assert_eq!(gw.try_sign_in("nobody", "wrong").await.status(), 503);
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(status(&gw, &alice, "/private/x").await, 200);
    assert_eq!(status(&gw, &carol, "/private/x").await, 200);
    let metrics = scrape(&gw).await;
    assert_eq!(sample(&metrics, "authgate_directory_up"), 0.0);
    assert!(sample(&metrics, "authgate_directory_failures_total") >= 1.0);
    // More failures within the streak: still 503, and no more log lines.
    for _ in 0..3 {
        assert_eq!(gw.try_sign_in("dave", DAVE_PASSWORD).await.status(), 503);
    }
    slapd.signal("-CONT");
    // It heals by itself.
    within(Duration::from_secs(10), || async {
        gw.try_sign_in("dave", DAVE_PASSWORD).await.status() == 303
    })
    .await;
    assert_eq!(sample(&scrape(&gw).await, "authgate_directory_up"), 1.0);
    // One line when the streak began, one when it ended; no password.
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let ours = |needle: &str| {
        text.lines()
            .filter(|l| l.contains(needle) && l.contains(&slapd.ldaps_url()))
            .count()
    };
    assert_eq!(ours("the directory cannot be reached"), 1, "{text}");
    assert_eq!(ours("the directory answers again"), 1);
    for secret in [CAROL_PASSWORD, DAVE_PASSWORD, crate::slapd::SEARCH_PASSWORD] {
        assert!(!text.contains(secret), "a password was logged");
    }
}

#[tokio::test]
async fn a_directory_that_is_gone_answers_503_and_heals_when_it_is_back() {
    let mut slapd = Slapd::start();
    let gw = gateway(&slapd, setup(), None, "timeout = \"500ms\"").await;
    slapd.stop();
    assert_eq!(gw.try_sign_in("carol", CAROL_PASSWORD).await.status(), 503);
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    assert_eq!(status(&gw, &alice, "/private/x").await, 200);
}

#[tokio::test]
async fn rechecks_end_sessions_of_removed_users_and_apply_new_groups() {
    let slapd = Slapd::start();
    let gw = gateway(
        &slapd,
        setup(),
        None,
        &format!("recheck = \"1s\"\n{ROLE_MAP}"),
    )
    .await;
    let carol = gw.sign_in("carol", CAROL_PASSWORD).await;
    let dave = gw.sign_in("dave", DAVE_PASSWORD).await;
    assert_eq!(status(&gw, &carol, "/staff/x").await, 200);
    // Carol leaves admins: her open session loses the route.
    leave_admins(&slapd, "uid=carol,ou=people").await;
    // Dave leaves the company.
    slapd.delete(&format!("uid=dave,ou=people,{BASE}")).await;
    within(Duration::from_secs(5), || async {
        status(&gw, &carol, "/staff/x").await == 403
    })
    .await;
    assert_eq!(
        status(&gw, &carol, "/private/x").await,
        200,
        "still signed in"
    );
    assert_eq!(gw.upstream.last().headers["x-auth-roles"], "staff");
    within(Duration::from_secs(5), || async {
        status(&gw, &dave, "/private/x").await == 401
    })
    .await;
}

#[tokio::test]
async fn an_admin_locks_out_a_directory_user_by_name() {
    let slapd = Slapd::start();
    let gw = gateway(&slapd, setup(), None, "").await;
    let carol = gw.sign_in("carol", CAROL_PASSWORD).await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = csrf_of(&gw, &alice).await;
    let locked = api(
        &gw,
        Method::POST,
        "/providers/ldap/users/carol/lock",
        Some(&alice),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert!(
        locked.status().is_success(),
        "{}",
        locked.text().await.unwrap()
    );
    assert_eq!(
        status(&gw, &carol, "/private/x").await,
        401,
        "her session ended"
    );
    assert_eq!(gw.try_sign_in("carol", CAROL_PASSWORD).await.status(), 401);
    assert_eq!(gw.try_sign_in("Carol", CAROL_PASSWORD).await.status(), 401);
}

#[tokio::test]
async fn a_name_in_the_users_file_and_the_directory_needs_an_order() {
    let slapd = Slapd::start();
    let users = format!(
        "{}\n[users.dave]\npassword = \"{}\"\nroles = [\"user\"]\n",
        local_users(),
        authgate::users::password::hash_password(ALICE_PASSWORD)
    );
    // No order: the gateway does not start ...
    let dir = tempfile::tempdir().unwrap();
    let section = slapd.section(dir.path(), &slapd.ldaps_url(), "");
    let refused = Setup::new()
        .users(&users)
        .rules(&format!("{}\n{section}", crate::support::DEFAULT_RULES))
        .try_start()
        .await
        .err()
        .expect("a name in both stops the start");
    assert!(
        refused.contains("dave both in the users file and in the [ldap] directory"),
        "{refused}"
    );
    // ... and a name the directory gains later signs in neither way.
    let gw = gateway(&slapd, setup().login("max_failures = 100"), None, "").await;
    assert_eq!(gw.try_sign_in("bob", BOB_PASSWORD).await.status(), 303);
    let mut ldap = slapd.admin().await;
    ldap.add(
        &format!("uid=bob,ou=people,{BASE}"),
        vec![
            ("objectClass", HashSet::from(["inetOrgPerson"])),
            ("uid", HashSet::from(["bob"])),
            ("cn", HashSet::from(["Bob"])),
            ("sn", HashSet::from(["B"])),
            ("userPassword", HashSet::from(["bob-directory-pw"])),
        ],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    assert_eq!(gw.try_sign_in("bob", BOB_PASSWORD).await.status(), 401);
    assert_eq!(
        gw.try_sign_in("bob", "bob-directory-pw").await.status(),
        401
    );
    drop(gw);
    // The users file first.
    let gw = gateway(
        &slapd,
        Setup::new()
            .users(&users)
            .users_line("order = [\"local\", \"ldap\"]"),
        None,
        "",
    )
    .await;
    assert_eq!(gw.try_sign_in("dave", ALICE_PASSWORD).await.status(), 303);
    assert_eq!(gw.try_sign_in("dave", DAVE_PASSWORD).await.status(), 401);
    drop(gw);
    // The directory first.
    let gw = gateway(
        &slapd,
        Setup::new()
            .users(&users)
            .users_line("order = [\"ldap\", \"local\"]"),
        None,
        "",
    )
    .await;
    assert_eq!(gw.try_sign_in("dave", ALICE_PASSWORD).await.status(), 401);
    let dave = gw.sign_in("dave", DAVE_PASSWORD).await;
    assert_eq!(status(&gw, &dave, "/private/x").await, 200);
}

#[tokio::test]
async fn the_active_directory_preset_takes_upn_sam_and_the_disabled_bit() {
    let slapd = Slapd::start();
    let gw = gateway(
        &slapd,
        setup(),
        None,
        "active_directory = true\nrecheck = \"1s\"\nrole_map = { \"admins\" = [\"admin\"] }",
    )
    .await;
    // By userPrincipalName: the session is in the sAMAccountName.
    let carol = gw.sign_in("carol@corp.example.org", CAROL_PASSWORD).await;
    assert_eq!(status(&gw, &carol, "/staff/x").await, 200);
    assert_eq!(gw.upstream.last().headers["x-auth-user"], "carol");
    // userAccountControl 514 = disabled, with the right password.
    assert_eq!(gw.try_sign_in("dave", DAVE_PASSWORD).await.status(), 401);
    // Disabling carol ends her session at the next recheck.
    slapd
        .modify(
            &format!("uid=carol,ou=people,{BASE}"),
            ldap3::Mod::Replace("userAccountControl", HashSet::from(["514"])),
        )
        .await;
    within(Duration::from_secs(5), || async {
        status(&gw, &carol, "/private/x").await == 401
    })
    .await;
}

#[tokio::test]
async fn check_online_binds_and_shows_what_a_user_would_get() {
    let slapd = Slapd::start();
    let gw = gateway(
        &slapd,
        setup(),
        None,
        &format!("{ROLE_MAP}\ndefault_roles = [\"member\"]"),
    )
    .await;
    let run = |args: &[&str]| {
        let out = crate::support::authgate()
            .args(["check", "-c"])
            .arg(gw.config_file())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(&["--online", "--ldap-user", "carol"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("\"carol\" is uid=carol,ou=people,{BASE}")),
        "{out}"
    );
    assert!(out.contains("roles: admin, member, staff"), "{out}");
    assert!(out.contains("x-auth-email: carol@example.org"), "{out}");
    let (ok, out) = run(&["--online", "--ldap-user", "nobody"]);
    assert!(ok, "{out}");
    assert!(out.contains("no entry for \"nobody\""), "{out}");
    // A wrong search password is a problem, and says which directory.
    let secret = std::fs::read_to_string(gw.config_file())
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("bind_password_file = \"")?
                .strip_suffix('"')
                .map(str::to_owned)
        })
        .unwrap();
    std::fs::write(&secret, "wrong").unwrap();
    let (ok, out) = run(&["--online"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("[ldap] ldaps://127.0.0.1:") && out.contains("cannot bind"),
        "{out}"
    );
}

/// Groups taken away in the directory close the WebSockets of routes the
/// user no longer passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_closes_when_the_directory_takes_its_role_away() {
    use crate::websocket::{closed_within, echo_upstream, open};
    let slapd = Slapd::start();
    let (url, _) = echo_upstream().await;
    let gw = gateway(
        &slapd,
        setup().upstream_url(&url),
        None,
        &format!("recheck = \"1s\"\n{ROLE_MAP}"),
    )
    .await;
    let carol = gw.sign_in("carol", CAROL_PASSWORD).await;
    let mut staff = open(&gw, &carol, "/staff/ws").await;
    leave_admins(&slapd, "uid=carol,ou=people").await;
    let took = closed_within(&mut staff, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5));
}

/// Takes `who` (an RDN path under the base) out of the admins group.
async fn leave_admins(slapd: &Slapd, who: &str) {
    let member = format!("{who},{BASE}");
    slapd
        .modify(
            &format!("cn=admins,ou=groups,{BASE}"),
            ldap3::Mod::Delete("member", HashSet::from([member.as_str()])),
        )
        .await;
}

/// On Redis, one replica asks the directory each round, and what it
/// learns reaches every replica's sessions.
#[tokio::test]
async fn on_redis_one_replica_rechecks_and_every_replica_applies_it() {
    use crate::replicas::{on, RedisServer};
    let slapd = Slapd::start();
    let redis = RedisServer::start();
    // memberOf: one search per round for everyone (no group searches).
    let extra = "recheck = \"1s\"\nrole_map = { \"admins\" = [\"admin\"] }";
    let setup = || {
        on(&redis)
            .users(&local_users())
            .server("ops_listen = \"127.0.0.1:0\"")
    };
    let a = gateway(&slapd, setup(), None, extra).await;
    let b = gateway(&slapd, setup(), None, extra).await;
    let carol = a.sign_in("carol", CAROL_PASSWORD).await;
    assert_eq!(status(&b, &carol, "/staff/x").await, 200);
    let searches = |text: &str| sample(text, "authgate_directory_searches_total");
    let before = searches(&scrape(&a).await) + searches(&scrape(&b).await);
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let rounds = searches(&scrape(&a).await) + searches(&scrape(&b).await) - before;
    assert!(
        (3.0..=7.0).contains(&rounds),
        "about one search a second between both replicas, not one each: {rounds}"
    );
    // Carol's memberOf loses admins: both replicas refuse her the route.
    let admins = format!("cn=admins,ou=groups,{BASE}");
    slapd
        .modify(
            &format!("uid=carol,ou=people,{BASE}"),
            ldap3::Mod::Delete("memberOf", HashSet::from([admins.as_str()])),
        )
        .await;
    for gw in [&a, &b] {
        within(Duration::from_secs(5), || async {
            status(gw, &carol, "/staff/x").await == 403
        })
        .await;
        assert_eq!(status(gw, &carol, "/private/x").await, 200);
    }
    // Deleted: her sessions end on both.
    slapd.delete(&format!("uid=carol,ou=people,{BASE}")).await;
    for gw in [&a, &b] {
        within(Duration::from_secs(5), || async {
            status(gw, &carol, "/private/x").await == 401
        })
        .await;
    }
}

/// A burst the hashing queue cannot take: those it refuses (503) cost the
/// directory nothing, so the burst's memory and the directory's work are
/// bounded as for local users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_the_hashing_queue_refuses_never_reach_the_directory() {
    let slapd = Slapd::start();
    let gw = gateway(
        &slapd,
        setup()
            .server("ops_listen = \"127.0.0.1:0\"")
            .login("max_failures = 1000\nhashing_threads = 1"),
        None,
        "",
    )
    .await;
    let client = gw.client();
    let before = scrape(&gw).await;
    let mut tokens = Vec::new();
    for _ in 0..150 {
        tokens.push(gw.login_form(&client).await);
    }
    let attempts = tokens.iter().map(|token| {
        gw.post_login(
            &client,
            token,
            &[("username", "carol"), ("password", "wrong")],
        )
    });
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let busy = statuses.iter().filter(|s| **s == 503).count();
    let answered = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        busy > 0,
        "the queue (1 thread, 64 waiting) was full: {statuses:?}"
    );
    assert_eq!(busy + answered, 150, "{statuses:?}");
    let metrics = scrape(&gw).await;
    for work in ["binds", "searches"] {
        let name = format!("authgate_directory_{work}_total");
        let sent = sample(&metrics, &name) - sample(&before, &name);
        assert_eq!(sent, answered as f64, "{work}");
    }
}

/// A reload that removes `[ldap]` ends the directory's sessions, and its
/// users can no longer sign in; local users are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_without_ldap_ends_directory_sessions() {
    let slapd = Slapd::start();
    let gw = gateway(&slapd, setup(), None, "").await;
    let carol = gw.sign_in("carol", CAROL_PASSWORD).await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let text = std::fs::read_to_string(gw.config_file()).unwrap();
    let without = text.split("[ldap]").next().unwrap().to_owned();
    std::fs::write(gw.config_file(), without).unwrap();
    within(Duration::from_secs(5), || async {
        status(&gw, &carol, "/private/x").await == 401
    })
    .await;
    assert_eq!(gw.try_sign_in("carol", CAROL_PASSWORD).await.status(), 401);
    assert_eq!(status(&gw, &alice, "/private/x").await, 200);
}

/// Plain `ldap://` works when `insecure = true` says so (a network the
/// operator trusts), and a `group_filter` may name the user by name.
#[tokio::test]
async fn plain_ldap_with_insecure_and_a_group_filter_by_username() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let section: String = slapd
        .section(
            dir.path(),
            &slapd.ldap_url(),
            &format!(
                "insecure = true\ngroup_base = \"ou=groups,{BASE}\"\ngroup_filter = \"(member=uid={{username}},ou=people,{BASE})\"\nrole_map = {{ admins = [\"admin\"] }}"
            ),
        )
        .lines()
        .filter(|l| !l.starts_with("ca = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let gw = setup()
        .rules(&format!("{}\n{section}", crate::support::DEFAULT_RULES))
        .start()
        .await;
    let carol = gw.sign_in("carol", CAROL_PASSWORD).await;
    assert_eq!(status(&gw, &carol, "/staff/x").await, 200);
    assert_eq!(gw.upstream.last().headers["x-auth-roles"], "admin");
    let dave = gw.sign_in("dave", DAVE_PASSWORD).await;
    assert_eq!(status(&gw, &dave, "/staff/x").await, 403);
}
