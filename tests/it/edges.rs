//! Issue 9: the request edges. Methods, hosts and paths are judged as the
//! upstream will read them; framing, idle connections and early answers.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{read_until_close, tls_connect, Setup, TestGateway, BOB_PASSWORD};

/// The status of the last response in a raw HTTP/1.1 exchange.
fn last_status(answer: &str) -> Option<u16> {
    let (at, _) = answer.rmatch_indices("HTTP/1.").next()?;
    answer.get(at + 9..at + 12)?.parse().ok()
}

const METHOD_RULES: &str = r#"
[[rule]]
path = "/api/**"
methods = ["DELETE"]
roles = ["admin"]

[[rule]]
path = "/reports/**"
methods = ["GET"]
roles = ["admin"]

[[rule]]
path = "/actuator/env"
access = "deny"

[[rule]]
path = "/**"
access = "authenticated"
"#;

#[tokio::test]
async fn methods_are_judged_as_upstreams_read_them() {
    let gw = Setup::new().rules(METHOD_RULES).start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    for client in [gw.h1_client(), gw.client()] {
        let status = |method: &str, path: &str, session: Option<&str>| {
            let mut request = client.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                gw.url(path),
            );
            if let Some(session) = session {
                request = request.header("cookie", format!("__Host-authgate={session}"));
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        for method in ["delete", "Delete", "DELETE"] {
            let answer = status(method, "/api/x", Some(&bob)).await;
            assert_eq!(answer, 403, "{method} is DELETE to the upstream");
        }
        // A rule listing GET covers HEAD, in any case.
        for method in ["HEAD", "head"] {
            let answer = status(method, "/reports/q3", Some(&bob)).await;
            assert_eq!(answer, 403, "{method} /reports/q3");
        }
        for method in ["trace", "Trace"] {
            assert_eq!(status(method, "/x", None).await, 405, "{method}");
        }
    }
    assert!(
        gw.upstream
            .requests()
            .iter()
            .all(|s| !s.uri.starts_with("/api") && !s.uri.starts_with("/reports")),
        "nothing reached the protected paths"
    );
    // Not a token at all: 400.
    let answer = gw.raw(b"GE(T / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(last_status(&answer), Some(400), "{answer}");
}

#[tokio::test]
async fn a_trailing_slash_is_no_way_around_a_rule() {
    let gw = Setup::new().rules(METHOD_RULES).start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    for path in [
        "/actuator/env",
        "/actuator/env/",
        "/actuator/env//",
        "/actuator/./env/",
    ] {
        assert_eq!(gw.get_as(&bob, path).await.status(), 403, "{path}");
    }
    assert_eq!(gw.get_as(&bob, "/actuator/health/").await.status(), 200);
}

/// Sends `head` (a request head without the final blank line's CRLF pair)
/// over raw TLS and returns the answer.
async fn raw_head(gw: &TestGateway, head: &str) -> String {
    gw.raw(format!("{head}\r\n\r\n").as_bytes()).await
}

#[tokio::test]
async fn hosts_are_parsed_not_trusted() {
    let rules = r#"
[[rule]]
path = "/**"
host = "admin.example"
access = "deny"

[[rule]]
path = "/**"
access = "public"
"#;
    let gw = Setup::new().rules(rules).start().await;
    for (head, expected) in [
        ("GET / HTTP/1.1\r\nHost: user@localhost", 400),
        ("GET / HTTP/1.1\r\nHost: local host", 400),
        ("GET / HTTP/1.1\r\nHost: app.test:99999", 400),
        ("GET / HTTP/1.1\r\nHost: [::1", 400),
        ("GET / HTTP/1.1\r\nConnection: close", 400),
        (
            "GET / HTTP/1.1\r\nHost: localhost\r\nHost: admin.example",
            400,
        ),
        ("GET / HTTP/1.0\r\nConnection: close", 200),
        ("GET / HTTP/1.1\r\nHost: ADMIN.Example", 403),
        ("GET / HTTP/1.1\r\nHost: admin.example.", 403),
        ("GET / HTTP/1.1\r\nHost: admin.example.:8443", 403),
        (
            "GET http://admin.example./ HTTP/1.1\r\nHost: localhost",
            403,
        ),
        ("GET / HTTP/1.1\r\nHost: app.example..", 400),
    ] {
        let answer = raw_head(&gw, &format!("{head}\r\nConnection: close")).await;
        assert_eq!(last_status(&answer), Some(expected), "{head:?}: {answer}");
    }
    // The upstream gets the host that was judged.
    let answer = raw_head(
        &gw,
        "GET /seen HTTP/1.1\r\nHost: App.Example.:8443\r\nConnection: close",
    )
    .await;
    assert_eq!(last_status(&answer), Some(200), "{answer}");
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["host"], "app.example:8443");
    assert_eq!(seen.headers["x-forwarded-host"], "app.example:8443");

    // HTTP/2: a Host that disagrees with :authority is refused.
    let response = gw
        .client()
        .get(gw.url("/"))
        .header("host", "admin.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 400);
    // The same host in both, spelled differently, is fine.
    let response = gw
        .client()
        .get(gw.url("/"))
        .header("host", gw.addr().to_string() + "")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn non_ascii_paths_survive_and_are_judged() {
    let rules = r#"
[[rule]]
path = "/café/**"
access = "deny"

[[rule]]
path = "/**"
access = "public"
"#;
    let gw = Setup::new().rules(rules).start().await;
    let answer = gw
        .raw("GET /naïve/ü HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".as_bytes())
        .await;
    assert_eq!(last_status(&answer), Some(200), "{answer}");
    assert_eq!(gw.upstream.last().uri, "/na%C3%AFve/%C3%BC");
    for target in [
        "/café/menu",
        "/caf%C3%A9/menu",
        "/caf%c3%a9/menu",
        "/CAF%C3%A9/menu",
    ] {
        let answer = gw
            .raw(
                format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        assert_eq!(last_status(&answer), Some(403), "{target}: {answer}");
    }
}

#[tokio::test]
async fn every_spelling_of_a_configured_identity_header_is_stripped() {
    let rules = format!(
        "[identity]\nuser_header = \"Remote-User\"\nroles_header = \"Remote-Groups\"\n{}",
        crate::support::DEFAULT_RULES
    );
    let gw = Setup::new().rules(&rules).start().await;
    let response = gw
        .client()
        .get(gw.url("/public"))
        .header("remote_user", "admin")
        .header("REMOTE_USER", "admin")
        .header("Remote_Groups", "admin")
        .header("remote-user", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = gw.upstream.last().headers;
    for name in [
        "remote_user",
        "remote-user",
        "remote_groups",
        "remote-groups",
    ] {
        assert!(!seen.contains_key(name), "{name} reached the upstream");
    }
}

#[tokio::test]
async fn the_framing_guard_never_goes_blind() {
    let gw = Setup::new().start().await;
    let cases: [&[u8]; 3] = [
        // An upgrade request first: the guard must keep following.
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        // Bare LF line ends, the head closed by LF CR LF.
        b"GET / HTTP/1.1\nHost: localhost\n\r\nPOST /upload HTTP/1.1\nHost: localhost\nContent-Length: 4\nTransfer-Encoding: chunked\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /upload HTTP/1.1\nHost: localhost\nContent-Length: 4\nTransfer-Encoding: chunked\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    for (i, request) in cases.iter().enumerate() {
        let answer = gw.raw(request).await;
        assert_eq!(last_status(&answer), Some(400), "case {i}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "case {i}"
        );
    }
    let smuggled: Vec<_> = gw
        .upstream
        .requests()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert!(smuggled.is_empty(), "{smuggled:?}");
}

/// Opens a TLS connection offering `alpn`, sends nothing more, and returns
/// how long the gateway kept it open (`None`: still open after `limit`).
async fn silent_for(gw: &TestGateway, alpn: &'static [u8], limit: Duration) -> Option<Duration> {
    let mut tls = tls_connect(gw.addr(), &gw.cert_pem, &[alpn]).await;
    let opened = Instant::now();
    read_until_close(&mut tls, limit).await;
    let open = opened.elapsed();
    (open < limit).then_some(open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cost_their_owner_not_everyone() {
    let gw = Setup::new()
        .server("max_connections = 50")
        .server("header_timeout = \"500ms\"")
        .server("idle_timeout = \"1s\"")
        .start()
        .await;
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let silent: Vec<_> = (0..60)
            .map(|_| {
                let gw = &gw;
                async move { silent_for(gw, alpn, Duration::from_secs(8)).await }
            })
            .collect();
        let served = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let asked = Instant::now();
            let response = gw.client().get(gw.url("/x")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            asked.elapsed()
        };
        let (open_for, waited) = tokio::join!(futures_util::future::join_all(silent), served);
        for open in &open_for {
            let open = open.expect("a silent connection was never closed");
            assert!(open < Duration::from_secs(3), "{alpn:?} kept {open:?}");
        }
        assert!(
            waited < Duration::from_secs(3),
            "a new client waited {waited:?}"
        );
    }

    // After a request, an idle HTTP/1.1 keep-alive connection is closed
    // after idle_timeout, not before header_timeout.
    let mut tls = gw.tls().await;
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    read_until_close(&mut tls, Duration::from_secs(8)).await;
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(3),
        "keep-alive closed after {idle:?}"
    );

    // An HTTP/2 connection that has made a request and then goes quiet.
    let client = gw.client();
    assert_eq!(client.get(gw.url("/x")).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The old connection is gone (GOAWAY); the client reconnects unharmed.
    assert_eq!(client.get(gw.url("/x")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_reach_the_client() {
    let gw = Setup::new()
        .server("max_body_size = \"64KiB\"")
        .server("max_header_size = \"16KiB\"")
        .start()
        .await;
    let big_form = format!("csrf=x&username={}", "a".repeat(1 << 20));
    let big_body = vec![b'x'; 1 << 20];
    for client in [gw.h1_client(), gw.client()] {
        for _ in 0..3 {
            let response = client
                .post(gw.url("/.gateway/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(big_form.clone())
                .send()
                .await
                .expect("the 413 reaches the client");
            assert_eq!(response.status(), 413);
            let response = client
                .post(gw.url("/upload"))
                .body(big_body.clone())
                .send()
                .await
                .expect("the 413 reaches the client");
            assert_eq!(response.status(), 413);
            let response = client
                .get(gw.url("/x"))
                .header("x-big", "v".repeat(200_000))
                .send()
                .await
                .expect("the 431 reaches the client");
            assert_eq!(response.status(), 431);
        }
    }
}

/// One HTTP/2 frame: length, type, flags, stream, payload (RFC 9113 §4.1).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_are_checked_with_pings() {
    let gw = Setup::new().server("idle_timeout = \"1s\"").start().await;
    let mut tls = tls_connect(gw.addr(), &gw.cert_pem, &[b"h2"]).await;
    // GET /slow?ms=4000: a request in flight, so the connection is not idle.
    let authority = gw.addr().to_string();
    let path = b"/slow?ms=4000";
    // HPACK: :method GET, :scheme https (static table), :path and
    // :authority as literals with indexed names.
    let mut block = vec![0x82, 0x87, 0x44, path.len() as u8];
    block.extend_from_slice(path);
    block.extend([0x41, authority.len() as u8]);
    block.extend_from_slice(authority.as_bytes());
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(0x4, 0, 0, &[]));
    hello.extend(h2_frame(0x1, 0x5, 1, &block));
    tls.write_all(&hello).await.unwrap();

    let started = Instant::now();
    let ping = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let mut head = [0u8; 9];
            tls.read_exact(&mut head).await.unwrap();
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; length];
            tls.read_exact(&mut payload).await.unwrap();
            // A PING (type 6) that is not an ACK.
            if head[3] == 0x6 && head[4] & 0x1 == 0 {
                return payload;
            }
            assert_ne!(head[3], 0x7, "GOAWAY while a request was in flight");
        }
    })
    .await
    .expect("the gateway sent a keep-alive PING while the request was in flight");
    assert_eq!(ping.len(), 8);
    assert!(started.elapsed() >= Duration::from_millis(500));
}

/// `curl --http2` (the binary) posting `bytes` to `path`: its exit code and
/// the status it saw.
fn curl_post(gw: &TestGateway, path: &str, bytes: usize, headers: &[String]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("body");
    std::fs::write(&data, vec![b'x'; bytes]).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &gw.cert_pem).unwrap();
    let mut command = std::process::Command::new("curl");
    command
        .args([
            "--http2",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .arg("--cacert")
        .arg(&ca)
        .args([
            "-X",
            "POST",
            "-H",
            "content-type: application/x-www-form-urlencoded",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", data.display()));
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command
        .arg(gw.url(path))
        .output()
        .expect("curl is installed (apt-get install curl)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_reach_curl_over_http2() {
    let gw = Setup::new()
        .server("max_body_size = \"1MiB\"")
        .server("max_header_size = \"16KiB\"")
        .start()
        .await;
    let gw = std::sync::Arc::new(gw);
    let run = |path: &'static str, bytes: usize, headers: Vec<String>| {
        let gw = gw.clone();
        tokio::task::spawn_blocking(move || curl_post(&gw, path, bytes, &headers))
    };
    assert_eq!(
        run("/upload", 1000, vec![]).await.unwrap(),
        (0, "200".into())
    );
    assert_eq!(
        run("/upload", 8 << 20, vec![]).await.unwrap(),
        (0, "413".into()),
        "the 413 for a proxied upload"
    );
    assert_eq!(
        run("/.gateway/login", 8 << 20, vec![]).await.unwrap(),
        (0, "413".into()),
        "the gateway's own 413 on its sign-in form"
    );
    assert_eq!(
        run(
            "/upload",
            8 << 20,
            vec![format!("x-big: {}", "v".repeat(20_000))]
        )
        .await
        .unwrap(),
        (0, "431".into()),
        "the 431"
    );
}
