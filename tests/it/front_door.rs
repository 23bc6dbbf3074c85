//! Issue 8: the sign-in path under attack, behind a load balancer, with
//! an upstream that tries to plant the gateway's cookies.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::AsyncWriteExt;

use crate::support::{set_cookie, tls_connect, Setup, TestGateway, ALICE_PASSWORD, BOB_PASSWORD};

/// Statuses of `n` wrong sign-ins sent at once, one name each from `names`.
async fn guesses_at_once(
    gw: &TestGateway,
    names: impl Fn(usize) -> String,
    n: usize,
    forwarded_for: Option<&str>,
) -> Vec<u16> {
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let posts = (0..n).map(|i| {
        let name = names(i);
        let token = token.clone();
        let client = client.clone();
        async move {
            let form = [
                ("csrf", token.as_str()),
                ("username", name.as_str()),
                ("password", "not-the-password"),
            ];
            let mut request = gw.login_request(&client, Some(&token), &form);
            if let Some(xff) = forwarded_for {
                request = request.header("x-forwarded-for", xff);
            }
            request.send().await.unwrap().status().as_u16()
        }
    });
    join_all(posts).await
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_in_parallel_gets_no_more_guesses_than_guessing_in_turn() {
    let gw = Setup::new().login("max_failures = 5").start().await;
    let statuses = guesses_at_once(&gw, |_| "bob".into(), 60, None).await;
    assert_eq!(
        count(&statuses, 401),
        5,
        "exactly the allowance was verified: {statuses:?}"
    );
    assert_eq!(count(&statuses, 429), 55, "{statuses:?}");
    // bob's own password is refused too until the window ends.
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let right = gw
        .post_login(
            &client,
            &token,
            &[("username", "bob"), ("password", BOB_PASSWORD)],
        )
        .await;
    assert_eq!(right.status(), 429);

    // Across accounts, one client gets four times the allowance.
    let gw = Setup::new().login("max_failures = 5").start().await;
    let statuses = guesses_at_once(&gw, |i| format!("user{i}"), 60, None).await;
    assert_eq!(count(&statuses, 401), 20, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 40, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_sign_ins_never_wedge_the_hashing_queue() {
    // 300 connections from one address: this is about the hashing queue,
    // not the per-client cap.
    let gw = Setup::new()
        .login("max_failures = 1000")
        .server("max_connections_per_client = 1000")
        .start()
        .await;
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let addr = gw.addr();
    let body = format!("csrf={token}&username=bob&password=wrong-password");
    let request = format!(
        "POST /.gateway/login HTTP/1.1\r\nHost: {addr}\r\nCookie: __Host-authgate-login={token}\r\n\
Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Hundreds of sign-ins, each abandoned a few ms after it was sent:
    // most of them wait in the hashing queue when their client goes.
    let aborted = (0..300).map(|i| {
        let request = request.clone();
        let cert = gw.cert_pem.clone();
        tokio::spawn(async move {
            let mut tls = tls_connect(addr, &cert, &[b"http/1.1"]).await;
            tls.write_all(request.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2 + i % 10)).await;
            drop(tls);
        })
    });
    for task in join_all(aborted).await {
        task.unwrap();
    }
    // The queue drains what was abandoned; then sign-ins work again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = gw
            .post_login(
                &client,
                &token,
                &[("username", "alice"), ("password", ALICE_PASSWORD)],
            )
            .await;
        match response.status().as_u16() {
            303 => break,
            503 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("sign-in still refused after the aborted ones: {other}"),
        }
    }
}

#[tokio::test]
async fn the_upstream_cannot_plant_the_gateways_cookies() {
    let log = crate::logs::captured();
    let gw = Setup::new().start().await;
    let response = gw
        .client()
        .get(gw.url("/plant-cookies"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        cookies,
        ["theme=dark; Path=/", "lang=en; Path=/"],
        "only the app's own cookies"
    );
    // One warning for the response, naming how many went.
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("upstream_cookie_dropped") && l.contains("\"cookies\":3"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // A configured cookie name is protected the same way.
    let gw = Setup::new()
        .session("cookie_name = \"theme\"")
        .start()
        .await;
    let response = gw
        .client()
        .get(gw.url("/plant-cookies"))
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&response, "theme").is_none());
    assert_eq!(set_cookie(&response, "lang").as_deref(), Some("en"));
    assert_eq!(response.headers().get_all("set-cookie").iter().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_client() {
    let log = crate::logs::captured();
    let gw = Setup::new()
        .server(r#"trusted_proxies = ["127.0.0.0/8", "10.0.0.0/8"]"#)
        .login("max_failures = 2")
        .start()
        .await;
    // The balancer's chain goes on with the peer appended; the client
    // wrote "6.6.6.6" itself, which changes nothing.
    let response = gw
        .client()
        .get(gw.url("/page"))
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        gw.upstream.last().headers["x-forwarded-for"],
        "6.6.6.6, 203.0.113.9, 10.1.2.3, 127.0.0.1"
    );
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        text.contains("\"client\":\"203.0.113.9\""),
        "the access log names the forwarded client"
    );

    // Each forwarded client has its own allowance (4 x 2 across accounts).
    let one = guesses_at_once(&gw, |i| format!("user{i}"), 12, Some("203.0.113.1")).await;
    assert_eq!((count(&one, 401), count(&one, 429)), (8, 4), "{one:?}");
    let other = guesses_at_once(&gw, |i| format!("other{i}"), 1, Some("198.51.100.2")).await;
    assert_eq!(
        other,
        [401],
        "another user behind the same balancer is not held"
    );

    // IPv6 clients are counted by their /64.
    let v6 = guesses_at_once(&gw, |i| format!("v6user{i}"), 8, Some("2001:db8::1")).await;
    assert_eq!(count(&v6, 401), 8, "{v6:?}");
    let same_64 = guesses_at_once(&gw, |_| "v6next".into(), 1, Some("2001:db8::ffff:2")).await;
    assert_eq!(same_64, [429]);
    let forwarded = Setup::new()
        .server(r#"trusted_proxies = ["127.0.0.1"]"#)
        .start()
        .await;
    forwarded
        .client()
        .get(forwarded.url("/page"))
        .header("forwarded", "for=\"[2001:db8:cafe::17]:4711\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        forwarded.upstream.last().headers["x-forwarded-for"],
        "2001:db8:cafe::17, 127.0.0.1"
    );

    // The session records the forwarded address.
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let form = [
        ("csrf", token.as_str()),
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
    ];
    let signed_in = gw
        .login_request(&client, Some(&token), &form)
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = set_cookie(&signed_in, "__Host-authgate").unwrap();
    let sessions: serde_json::Value = gw
        .get_as(&session, "/.gateway/admin/api/sessions?user=alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["sessions"][0]["ip"], "198.51.100.7", "{sessions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_claim_another_address() {
    let gw = Setup::new().login("max_failures = 2").start().await;
    gw.client()
        .get(gw.url("/page"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9")
        .header("x-real-ip", "203.0.113.9")
        .send()
        .await
        .unwrap();
    let seen = gw.upstream.last().headers;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert!(!seen.contains_key("forwarded") && !seen.contains_key("x-real-ip"));
    // A new claimed address per guess buys nothing: all are 127.0.0.1.
    let one = guesses_at_once(&gw, |i| format!("user{i}"), 8, Some("203.0.113.1")).await;
    assert_eq!(count(&one, 401), 8);
    let other = guesses_at_once(&gw, |_| "fresh".into(), 1, Some("198.51.100.2")).await;
    assert_eq!(other, [429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_users_file_is_reported_and_the_last_good_users_stay() {
    let log = crate::logs::captured();
    let gw = Setup::new()
        .server("ops_listen = \"127.0.0.1:0\"")
        .start()
        .await;
    let metrics_url = format!("http://{}/metrics", gw.gateway().ops_addr().unwrap());
    let problems = || async {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("authgate_users_file_problems_total "))
            .expect("the metric is exported")
            .to_owned()
    };
    assert_eq!(problems().await, "0");
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;

    // Something replaces the file with what the gateway cannot read.
    let path = gw.users_file();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while problems().await == "0" {
        assert!(Instant::now() < deadline, "the failure was never counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        text.lines()
            .any(|l| l.contains("\"ERROR\"") && l.contains("CANNOT READ THE USERS FILE")),
        "an error line says so"
    );
    assert_eq!(gw.get_as(&bob, "/private/x").await.status(), 200);
    gw.sign_in("alice", ALICE_PASSWORD).await;

    // Readable again: its changes apply.
    std::fs::remove_dir(&path).unwrap();
    std::fs::write(
        &path,
        good.replace("roles = [\"user\"]", "roles = [\"user\"]\nlocked = true"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.get_as(&bob, "/private/x").await.status() == 200 {
        assert!(Instant::now() < deadline, "bob's lock never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_costs_what_the_strongest_known_user_costs() {
    let strong = "$argon2id$v=19$m=65536,t=3,p=2$c2FsdHNhbHRzYWx0$0Wd3o6T3ooE7kQ2oxLMhxfC8EBDqBb7DTKcWrMCsHrg";
    let users = format!(
        "{}\n[users.dana]\npassword = \"{strong}\"\nroles = [\"user\"]\n",
        crate::support::default_users()
    );
    let gw = Setup::new().users(&users).start().await;
    let auth = &gw.gateway().state().auth;
    assert_eq!(auth.unknown_user_cost(), (65536, 3, 2));
    // dana goes: on reload, back to the floor the others have.
    std::fs::write(gw.users_file(), crate::support::default_users()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while auth.unknown_user_cost() != (19456, 2, 1) {
        assert!(
            Instant::now() < deadline,
            "{:?} {}",
            auth.unknown_user_cost(),
            auth.users().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
