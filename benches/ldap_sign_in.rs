//! What `[ldap]` costs (issue 27), against a real OpenLDAP `slapd` on
//! loopback (`tests/it/slapd.rs`), holding 10,000 people:
//! - sign-in latency (p50, p99) of directory users, next to local users'
//!   measured in the same run: `POST /.gateway/login` to its answer;
//! - one recheck round over 10,000 directory sessions (10,000 users), with
//!   groups from `memberOf` (one search per 50 users) and from a group
//!   search (one more search per user).
//!
//! Run with `cargo bench --bench ldap_sign_in`.

#[path = "../tests/it/slapd.rs"]
#[allow(dead_code)]
mod slapd;

mod common;
use common::{cpu, post_sign_in};

use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::{Config, Gateway};
use slapd::{Slapd, BASE};

const PEOPLE: usize = 10_000;
const SIGN_INS: usize = 200;
const PASSWORD: &str = "bench-password-123";
const DIRECTORY_PASSWORD: &str = "bench-directory-pw";

/// The tests' directory plus `PEOPLE` people in the staff group.
fn directory() -> String {
    let mut ldif = slapd::people();
    let mut staff =
        format!("\ndn: cn=bench,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: bench\n");
    for i in 0..PEOPLE {
        ldif.push_str(&format!(
            "\ndn: uid=u{i:05},ou=people,{BASE}\nobjectClass: user\nuid: u{i:05}\ncn: User {i}\nsn: {i}\nmail: u{i:05}@example.org\nuserPassword: {DIRECTORY_PASSWORD}\nmemberOf: cn=bench,ou=groups,{BASE}\n"
        ));
        staff.push_str(&format!("member: uid=u{i:05},ou=people,{BASE}\n"));
    }
    ldif + &staff
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    times[((times.len() as f64 * p) as usize).min(times.len() - 1)]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn gateway(slapd: &Slapd, dir: &std::path::Path, groups: &str) -> Gateway {
    let section = slapd.section(
        dir,
        &slapd.ldaps_url(),
        &format!("{groups}\nrole_map = {{ bench = [\"user\"] }}\nconnections = 4"),
    );
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[store]\nbackend = \"memory\"\n[users]\nfile = \"users.toml\"\n[login]\nmax_failures = 1000\n[[rule]]\npath = \"/**\"\naccess = \"authenticated\"\n{section}"
    );
    let config = Config::parse(&text, &dir.join("gateway.toml")).unwrap();
    Gateway::start(config).await.unwrap()
}

async fn run() {
    let started = Instant::now();
    let slapd = Slapd::with_data(&directory());
    println!("slapd with {PEOPLE} people up in {:?}", started.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.path().join("gw.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("gw.key"), &cert.key_pem).unwrap();
    let hash = authgate::users::password::hash_password(PASSWORD);
    std::fs::write(
        dir.path().join("users.toml"),
        format!("[users.alice]\npassword = \"{hash}\"\nroles = [\"user\"]\n"),
    )
    .unwrap();

    let gw = gateway(&slapd, dir.path(), "").await;
    let base = format!("https://{}", gw.addr());
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (mut local, mut directory) = (Vec::new(), Vec::new());
    for i in 0..SIGN_INS * 2 {
        let (user, password, times) = if i % 2 == 0 {
            ("alice".to_owned(), PASSWORD, &mut local)
        } else {
            (
                format!("u{:05}", i * 37 % PEOPLE),
                DIRECTORY_PASSWORD,
                &mut directory,
            )
        };
        let (begun, answer) = post_sign_in(&client, &base, &user, password).await;
        times.push(begun.elapsed());
        assert_eq!(answer.status(), 303, "{user}");
    }
    let (l50, l99) = (percentile(&mut local, 0.5), percentile(&mut local, 0.99));
    let (d50, d99) = (
        percentile(&mut directory, 0.5),
        percentile(&mut directory, 0.99),
    );
    println!("local sign-in:     p50 {l50:?}, p99 {l99:?} ({SIGN_INS} sign-ins)");
    println!(
        "directory sign-in: p50 {d50:?} ({:.2}x local), p99 {d99:?} ({:.2}x local)",
        d50.as_secs_f64() / l50.as_secs_f64(),
        d99.as_secs_f64() / l99.as_secs_f64()
    );
    drop(gw);

    for (how, groups) in [
        ("memberOf", ""),
        (
            "a group search per user",
            "group_base = \"ou=groups,dc=example,dc=org\"",
        ),
    ] {
        let gw = gateway(&slapd, dir.path(), groups).await;
        let auth = gw.state().auth.clone();
        for i in 0..PEOPLE {
            let name = format!("u{i:05}");
            let user =
                authgate::users::User::vouched(&name, vec!["user".into()], "ldap".into()).unwrap();
            let vouched = Arc::new(authgate::session::Vouched {
                user: Arc::new(user),
                headers: Vec::new(),
                subject: format!("uid={name},ou=people,{BASE}").into(),
                sid: None,
                id_token: "".into(),
            });
            let key = vouched.user.key.clone();
            auth.store
                .sessions
                .create(
                    authgate::session::NewSession {
                        user: &key,
                        password_fingerprint: 0,
                        ip: std::net::Ipv4Addr::LOCALHOST.into(),
                        user_agent: "bench",
                        mfa: false,
                        vouched: Some(vouched),
                        proved_ms: None,
                    },
                    authgate::session::now_ms(),
                )
                .await
                .unwrap();
        }
        let metrics = |gw: &Gateway| {
            let stats = &gw.state().metrics.directory;
            (
                stats.searches.load(std::sync::atomic::Ordering::Relaxed),
                stats
                    .connections_opened
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
        };
        let before = metrics(&gw);
        let cpu_before = cpu();
        let begun = Instant::now();
        let (changed, users) = auth.recheck_directory().await.unwrap();
        let took = begun.elapsed();
        let cpu_used = cpu() - cpu_before;
        let after = metrics(&gw);
        assert_eq!(
            (changed, users),
            (0, PEOPLE),
            "nothing changed in the directory"
        );
        println!(
            "recheck of {PEOPLE} sessions ({how}): {took:?} wall, {cpu_used:?} gateway CPU, {} searches ({} connection(s) opened since start)",
            after.0 - before.0,
            after.1,
        );
    }
}
