//! Size limits, slow clients, the connection cap, framing and methods.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{read_until_close, Setup};

#[tokio::test]
async fn a_head_over_the_limit_is_431() {
    let gw = Setup::new()
        .server("max_header_size = \"16KiB\"")
        .start()
        .await;
    let big = "a".repeat(20 * 1024);
    for client in [gw.h1_client(), gw.client()] {
        let response = client
            .get(gw.url("/"))
            .header("x-big", &big)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 431);
    }
    // Under the limit passes.
    let fine = gw
        .h1_client()
        .get(gw.url("/"))
        .header("x-big", "a".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
    assert_eq!(gw.upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_head_under_hypers_floor_is_still_held_to_the_limit() {
    // hyper's own buffer cannot go below 8 KiB; the pipeline holds 2 KiB.
    let gw = Setup::new()
        .server("max_header_size = \"2KiB\"")
        .start()
        .await;
    let response = gw
        .h1_client()
        .get(gw.url("/"))
        .header("x-big", "a".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert!(gw.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let gw = Setup::new()
        .server("max_body_size = \"64KiB\"")
        .start()
        .await;
    let client = gw.h1_client();
    let declared = client
        .post(gw.url("/upload"))
        .body(vec![1u8; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 413);
    assert!(
        gw.upstream.requests().is_empty(),
        "a declared oversize body is refused before the upstream"
    );

    let chunks =
        futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![1u8; 16 * 1024])));
    let streamed = client
        .post(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);

    let fine = gw
        .client()
        .post(gw.url("/upload"))
        .body(vec![1u8; 60 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
    assert_eq!(fine.text().await.unwrap(), (60 * 1024).to_string());
}

#[tokio::test]
async fn a_client_sending_its_head_too_slowly_is_dropped() {
    let gw = Setup::new()
        .server("header_timeout = \"300ms\"")
        .start()
        .await;
    let mut tls = gw.tls().await;
    let started = Instant::now();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // ... and never the rest.
    let answer = read_until_close(&mut tls, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "still open after {waited:?}"
    );
    assert!(!answer.contains("200"), "{answer}");
    assert!(gw.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut() {
    let gw = Setup::new()
        .server("handshake_timeout = \"300ms\"")
        .start()
        .await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the gateway kept a silent connection: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let gw = Setup::new().server("max_connections = 1").start().await;
    let mut first = gw.tls().await;
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // The second handshake is not served while the first connection lives.
    let second = tokio::spawn({
        let addr = gw.addr();
        let pem = gw.cert_pem.clone();
        async move { crate::support::tls_connect(addr, &pem, &[b"http/1.1"]).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served over the cap"
    );
    drop(first);
    let mut second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the freed slot is taken")
        .unwrap();
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_close(&mut second, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn length_and_transfer_encoding_together_are_400_and_never_forwarded() {
    let gw = Setup::new().start().await;
    let cases: [&[u8]; 4] = [
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        // Smuggling attempt after a clean request on the same connection.
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\nPOST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        // Two different lengths.
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ];
    for (i, request) in cases.iter().enumerate() {
        let answer = gw.raw(request).await;
        let last_status = answer
            .rmatch_indices("HTTP/1.1 ")
            .next()
            .map(|(at, _)| &answer[at..at + 12]);
        assert_eq!(last_status, Some("HTTP/1.1 400"), "case {i}: {answer}");
    }
    let forwarded: Vec<_> = gw
        .upstream
        .requests()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert!(forwarded.is_empty(), "{forwarded:?}");
}

#[tokio::test]
async fn trace_is_405() {
    let gw = Setup::new().start().await;
    let response = gw
        .h1_client()
        .request(reqwest::Method::TRACE, gw.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(gw.upstream.requests().is_empty());
}

/// A TLS connection that sends a POST head to `path` promising 100 bytes,
/// then `sent` of them, and then nothing.
async fn slow_post(
    addr: std::net::SocketAddr,
    pem: &str,
    path: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut tls =
        crate::support::tls_connect_with(addr, pem, &[b"http/1.1"], &[&rustls::version::TLS13])
            .await?;
    tls.write_all(
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nu")
            .as_bytes(),
    )
    .await?;
    Ok(tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_end_with_408_after_body_timeout() {
    let gw = Setup::new()
        .server("max_connections = 20")
        .server("body_timeout = \"1s\"")
        .start()
        .await;
    let started = Instant::now();
    let slow: Vec<_> = (0..20)
        .map(|i| {
            let (addr, pem) = (gw.addr(), gw.cert_pem.clone());
            // Half the gateway's own sign-in form, half a proxied upload.
            let path = if i % 2 == 0 {
                "/.gateway/login"
            } else {
                "/upload"
            };
            tokio::spawn(async move {
                let mut tls = slow_post(addr, &pem, path).await.unwrap();
                read_until_close(&mut tls, Duration::from_secs(10)).await
            })
        })
        .collect();
    for answer in futures_util::future::join_all(slow).await {
        let answer = answer.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(6),
        "the last 408 took {waited:?}"
    );
    // The wait is between two pieces, not for the whole body: a body that
    // keeps moving takes as long as it needs.
    let mut tls = gw.tls().await;
    tls.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 8\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for byte in b"trickled" {
        tokio::time::sleep(Duration::from_millis(250)).await;
        tls.write_all(&[*byte]).await.unwrap();
    }
    let answer = read_until_close(&mut tls, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("\r\n8"),
        "the upload reads all 8 bytes: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_connection() {
    let gw = Setup::new()
        .server("max_connections = 20")
        .server("max_connections_per_client = 10")
        .server("body_timeout = \"30s\"")
        .start()
        .await;
    // 127.0.0.1 opens 20 slow uploads: the first 10 hang, the rest are
    // closed at once.
    let mut hanging = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        match slow_post(gw.addr(), &gw.cert_pem, "/upload").await {
            Ok(tls) => hanging.push(tls),
            Err(_) => refused += 1,
        }
    }
    // A connection refused after its handshake shows up on the first read.
    let mut still_open = Vec::new();
    for mut tls in hanging {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), tls.read(&mut byte)).await {
            Err(_) => still_open.push(tls),
            Ok(_) => refused += 1,
        }
    }
    assert_eq!(still_open.len(), 10, "{refused} refused");
    // Another client is served while they hang.
    let other = gw
        .client_builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = other
        .get(gw.url("/x"))
        .send()
        .await
        .expect("served while they hang");
    assert_eq!(response.status(), 200);
    drop(still_open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_connections_are_not_one_clients() {
    // The load balancer in front speaks for many clients: the cap is not
    // applied to its address.
    let gw = Setup::new()
        .server("max_connections_per_client = 2")
        .server("trusted_proxies = [\"127.0.0.1\"]")
        .start()
        .await;
    let mut open = Vec::new();
    for _ in 0..6 {
        open.push(gw.tls().await);
    }
    for tls in &mut open {
        tls.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("served")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
}
