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
    let gw = Setup::new().login("max_failures = 1000").start().await;
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
