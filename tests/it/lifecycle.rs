//! Graceful shutdown, readiness and metrics.

use std::time::{Duration, Instant};

use crate::support::{Setup, ALICE_PASSWORD, BOB_PASSWORD};

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let mut gw = Setup::new()
        .server("ops_listen = \"127.0.0.1:0\"")
        .server("shutdown_grace = \"10s\"")
        .start()
        .await;
    let client = gw.client();
    let ops = gw.gateway().ops_addr().unwrap();
    let ready = reqwest::get(format!("http://{ops}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    let in_flight = tokio::spawn({
        let request = client.get(gw.url("/slow?ms=800"));
        async move { request.send().await.unwrap() }
    });
    // Wait until the upstream has the request.
    while gw.upstream.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr = gw.addr();
    let gateway = gw.take_gateway();
    let shutdown = tokio::spawn(gateway.shutdown());

    tokio::time::sleep(Duration::from_millis(150)).await;
    let draining = reqwest::get(format!("http://{ops}/readyz")).await.unwrap();
    assert_eq!(draining.status(), 503, "not ready while draining");
    let healthy = reqwest::get(format!("http://{ops}/healthz")).await.unwrap();
    assert_eq!(healthy.status(), 200);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused once shutdown starts"
    );

    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow answer");
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown ends once the last request is done")
        .unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_requests_after_the_grace_period() {
    let mut gw = Setup::new()
        .server("shutdown_grace = \"300ms\"")
        .start()
        .await;
    let client = gw.client();
    let stuck = tokio::spawn({
        let request = client.get(gw.url("/slow?ms=20000"));
        async move { request.send().await }
    });
    while gw.upstream.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    gw.take_gateway().shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(stuck.await.unwrap().is_err(), "the stuck request was cut");
}

#[tokio::test]
async fn metrics_count_requests_by_class_and_time_them() {
    let gw = Setup::new()
        .server("ops_listen = \"127.0.0.1:0\"")
        .start()
        .await;
    let client = gw.client();
    for path in ["/", "/", "/admin", "/a%2fb"] {
        client.get(gw.url(path)).send().await.unwrap();
    }
    let ops = gw.gateway().ops_addr().unwrap();
    let response = reqwest::get(format!("http://{ops}/metrics")).await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains("authgate_requests_total{class=\"2xx\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("authgate_requests_total{class=\"4xx\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("authgate_denied_total{reason=\"deny_rule\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("authgate_request_duration_seconds_count 4\n"),
        "{text}"
    );
    assert!(
        text.contains("authgate_request_duration_seconds_bucket{le=\"+Inf\"} 4\n"),
        "{text}"
    );
    let missing = reqwest::get(format!("http://{ops}/nope")).await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn the_gateways_own_pages_carry_the_security_headers() {
    let gw = Setup::new().start().await;
    let client = gw.client();
    for (path, accept) in [
        ("/admin", "text/html"),
        ("/admin", "application/json"),
        ("/a%2fb", "text/html"),
        ("/.gateway/x", "*/*"),
    ] {
        let response = client
            .get(gw.url(path))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        let h = response.headers();
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["strict-transport-security"], "max-age=31536000");
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "frame-ancestors 'none'",
            "object-src 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(h["content-type"]
            .to_str()
            .unwrap()
            .contains("charset=utf-8"));
    }
}

#[tokio::test]
async fn hsts_can_be_turned_off() {
    let gw = Setup::new().server("hsts = false").start().await;
    let response = gw.client().get(gw.url("/")).send().await.unwrap();
    assert!(response
        .headers()
        .get("strict-transport-security")
        .is_none());
}

#[tokio::test]
async fn past_max_per_user_a_sign_in_ends_the_least_recently_used_session() {
    let log = crate::logs::captured();
    let gw = Setup::new().session("max_per_user = 3").start().await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(gw.sign_in("bob", BOB_PASSWORD).await);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The first is used again, so the second is now the least recent.
    assert_eq!(gw.get_as(&sessions[0], "/private/x").await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    sessions.push(gw.sign_in("bob", BOB_PASSWORD).await);
    let status = |i: usize| {
        let gw = &gw;
        let session = sessions[i].clone();
        async move { gw.get_as(&session, "/private/x").await.status().as_u16() }
    };
    assert_eq!(status(1).await, 401, "the least recently used one ended");
    for i in [0, 2, 3] {
        assert_eq!(status(i).await, 200, "session {i}");
    }
    // Many more sign-ins: never more than three at once.
    for _ in 0..5 {
        gw.sign_in("bob", BOB_PASSWORD).await;
    }
    let live = gw
        .gateway()
        .state()
        .auth
        .store
        .sessions
        .list(Some("bob"))
        .await
        .unwrap();
    assert_eq!(live.len(), 3);
    // alice's sessions are hers to count.
    assert_eq!(
        gw.get_as(&gw.sign_in("alice", ALICE_PASSWORD).await, "/private/x")
            .await
            .status(),
        200
    );
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(text.contains("session_limit"), "a security event: {text}");
}

#[tokio::test]
async fn on_a_stop_readyz_turns_503_at_once_and_new_connections_are_served_for_drain_delay() {
    let mut gw = Setup::new()
        .server("ops_listen = \"127.0.0.1:0\"")
        .server("drain_delay = \"1s\"")
        .start()
        .await;
    let ops = gw.gateway().ops_addr().unwrap();
    let addr = gw.addr();
    let client = gw.client();
    let url = gw.url("/x");
    let started = Instant::now();
    let shutdown = tokio::spawn(gw.take_gateway().shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = reqwest::get(format!("http://{ops}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503, "not ready from the first moment");
    // A load balancer that has not caught up yet still gets answers, on a
    // new connection too.
    let fresh = gw.client();
    assert_eq!(fresh.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    assert!(started.elapsed() < Duration::from_millis(900));
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("the stop ends after the delay")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the delay was kept"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after the delay"
    );
}
