//! WebSockets through the gateway (issue 12, first part): an HTTP/1.1
//! handshake the policy allows reaches a real WebSocket upstream with its
//! upgrade and identity headers, and frames flow both ways; a handshake
//! from another site and other upgrades are refused.

// tungstenite's handshake callback type returns its large error by value.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Setup, ALICE_PASSWORD};

/// A WebSocket echo server; remembers each handshake's headers.
pub async fn echo_upstream() -> (String, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let remember = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let remember = remember.clone();
            tokio::spawn(async move {
                let callback = |request: &Request, response: Response| {
                    remember.lock().unwrap().push(request.headers().clone());
                    Ok(response)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(tcp, callback).await
                else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if (message.is_text() || message.is_binary())
                        && socket.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (url, seen)
}

fn handshake(
    gw: &crate::support::TestGateway,
    path: &str,
    session: &str,
    origin: Option<&str>,
) -> http::Request<()> {
    let mut request = http::Request::builder()
        .uri(format!("wss://{}{path}", gw.addr()))
        .header("host", gw.addr().to_string())
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .header("cookie", format!("__Host-authgate={session}"));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.body(()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_reaches_the_upstream_with_identity_and_echoes_both_ways() {
    let (url, seen) = echo_upstream().await;
    let gw = Setup::new().upstream_url(&url).start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;

    let tls = gw.tls().await;
    let origin = format!("https://{}", gw.addr());
    let (mut socket, response) =
        tokio_tungstenite::client_async(handshake(&gw, "/private/ws", &alice, Some(&origin)), tls)
            .await
            .expect("the handshake goes through");
    assert_eq!(response.status(), 101);
    let headers = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["x-auth-user"], "alice");
    assert_eq!(headers["x-auth-roles"], "admin,user");
    assert!(headers
        .get("cookie")
        .is_none_or(|c| !c.to_str().unwrap().contains(&alice)));

    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("hello")
    );
    let big = vec![7u8; 3 << 20];
    socket.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap().into_data(), big);
    socket.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_handshakes_and_other_upgrades_are_refused() {
    let (url, seen) = echo_upstream().await;
    let gw = Setup::new().upstream_url(&url).start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;

    let refused = tokio_tungstenite::client_async(
        handshake(&gw, "/private/ws", &alice, Some("https://evil.example")),
        gw.tls().await,
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("a cross-site handshake got through: {other:?}"),
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "the cross-site one never reached it"
    );
    // Extra origins may be allowed.
    let gw_with = Setup::new()
        .upstream_url(&url)
        .server("websocket_origins = [\"https://Tools.Example/\"]")
        .start()
        .await;
    let carol_free = gw_with.sign_in("alice", ALICE_PASSWORD).await;
    let listed = tokio_tungstenite::client_async(
        handshake(
            &gw_with,
            "/private/ws",
            &carol_free,
            Some("https://tools.example"),
        ),
        gw_with.tls().await,
    )
    .await;
    assert!(
        listed.is_ok(),
        "an origin in websocket_origins may: {listed:?}"
    );
    let unlisted = tokio_tungstenite::client_async(
        handshake(
            &gw_with,
            "/private/ws",
            &carol_free,
            Some("https://tools.example.evil"),
        ),
        gw_with.tls().await,
    )
    .await;
    assert!(unlisted.is_err());
    seen.lock().unwrap().clear();
    // Without a session the policy answers first, as for any request.
    let anonymous =
        tokio_tungstenite::client_async(handshake(&gw, "/private/ws", "x", None), gw.tls().await)
            .await;
    assert!(
        matches!(anonymous, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401)
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "the upstream saw none of them"
    );

    let h2c = gw
        .raw(format!("GET /x HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n", gw.addr()).as_bytes())
        .await;
    assert!(h2c.starts_with("HTTP/1.1 400"), "{h2c}");
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

pub async fn open(gw: &crate::support::TestGateway, session: &str, path: &str) -> Socket {
    let origin = format!("https://{}", gw.addr());
    let (mut socket, _) = tokio_tungstenite::client_async(
        handshake(gw, path, session, Some(&origin)),
        gw.tls().await,
    )
    .await
    .expect("the handshake goes through");
    socket.send(Message::text("ping")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("ping"));
    socket
}

/// How long until the gateway closes `socket` (panics past `limit`).
pub async fn closed_within(socket: &mut Socket, limit: std::time::Duration) -> std::time::Duration {
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(limit, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the WebSocket is still open after {limit:?}");
    started.elapsed()
}

const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_session_ends_closes_its_websockets_within_a_second() {
    use crate::admin::{api, csrf_of};
    use crate::support::BOB_PASSWORD;
    let (url, _) = echo_upstream().await;
    let gw = Setup::new()
        .upstream_url(&url)
        .server("ops_listen = \"127.0.0.1:0\"")
        .start()
        .await;
    let admin = gw.sign_in("alice", ALICE_PASSWORD).await;
    let csrf = csrf_of(&gw, &admin).await;

    // Logout.
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let mut socket = open(&gw, &bob, "/private/ws").await;
    let mut other = open(&gw, &admin, "/private/ws").await;
    let metrics = format!("http://{}/metrics", gw.gateway().ops_addr().unwrap());
    crate::admin::within(SECOND, || async {
        reqwest::get(&metrics)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("authgate_websockets_open 2")
    })
    .await;
    let bob_csrf = csrf_of(&gw, &bob).await;
    gw.client()
        .post(gw.url("/.gateway/logout"))
        .header("cookie", format!("__Host-authgate={bob}"))
        .form(&[("csrf", bob_csrf.as_str())])
        .send()
        .await
        .unwrap();
    closed_within(&mut socket, SECOND).await;

    // An admin's revocation.
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let mut socket = open(&gw, &bob, "/private/ws").await;
    let revoked = api(
        &gw,
        reqwest::Method::POST,
        "/users/bob/revoke",
        Some(&admin),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(revoked.status(), 204);
    closed_within(&mut socket, SECOND).await;

    // A lost role: the rule no longer allows the route.
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let set_roles = |roles: serde_json::Value| {
        api(
            &gw,
            reqwest::Method::PUT,
            "/users/bob/roles",
            Some(&admin),
            Some(&csrf),
        )
        .json(&serde_json::json!({ "roles": roles }))
        .send()
    };
    assert_eq!(
        set_roles(serde_json::json!(["admin"]))
            .await
            .unwrap()
            .status(),
        204
    );
    let mut socket = open(&gw, &bob, "/staff/ws").await;
    assert_eq!(
        set_roles(serde_json::json!(["user"]))
            .await
            .unwrap()
            .status(),
        204
    );
    closed_within(&mut socket, SECOND).await;

    // A lock.
    let mut socket = open(&gw, &bob, "/private/ws").await;
    let locked = api(
        &gw,
        reqwest::Method::POST,
        "/users/bob/lock",
        Some(&admin),
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(locked.status(), 204);
    closed_within(&mut socket, SECOND).await;

    // The admin's own socket never noticed any of it.
    other.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        other.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_and_the_absolute_timeout_close_websockets_too() {
    use crate::admin::csrf_of;
    use crate::support::BOB_PASSWORD;
    let (url, _) = echo_upstream().await;
    let gw = Setup::new()
        .upstream_url(&url)
        .session("idle_timeout = \"2s\"")
        .session("absolute_timeout = \"2s\"")
        .start()
        .await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let mut socket = open(&gw, &bob, "/private/ws").await;
    let csrf = csrf_of(&gw, &bob).await;
    let changed =
        crate::admin::password_form(&gw, &bob, &csrf, BOB_PASSWORD, "a new password for bob")
            .send()
            .await
            .unwrap();
    assert_eq!(changed.status(), 200);
    closed_within(&mut socket, SECOND).await;

    // Kept busy, it still ends at the absolute deadline.
    let bob = gw.sign_in("bob", "a new password for bob").await;
    let signed_in = std::time::Instant::now();
    let mut socket = open(&gw, &bob, "/private/ws").await;
    let mut pings = tokio::time::interval(std::time::Duration::from_millis(300));
    let closed = loop {
        pings.tick().await;
        if socket.send(Message::text("busy")).await.is_err() {
            break signed_in.elapsed();
        }
        match tokio::time::timeout(std::time::Duration::from_millis(250), socket.next()).await {
            Ok(Some(Ok(Message::Text(_)))) | Err(_) => {}
            _ => break signed_in.elapsed(),
        }
        assert!(
            signed_in.elapsed() < std::time::Duration::from_secs(4),
            "still open"
        );
    };
    assert!(
        closed >= std::time::Duration::from_millis(1900),
        "closed early: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_data_keeps_the_session_alive_and_a_stop_closes_sockets_after_the_grace() {
    use crate::support::BOB_PASSWORD;
    let (url, _) = echo_upstream().await;
    let mut gw = Setup::new()
        .upstream_url(&url)
        .server("shutdown_grace = \"1s\"")
        .session("idle_timeout = \"1s\"")
        .start()
        .await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let mut socket = open(&gw, &bob, "/private/ws").await;
    // 2 s of traffic on the socket alone, no other request: the idle
    // timeout (1 s) would have ended the session without it.
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        socket.send(Message::text("typing")).await.unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::text("typing")
        );
    }
    // (whoami looks without touching: the socket's traffic kept it alive.)
    assert_eq!(gw.get_as(&bob, "/.gateway/whoami").await.status(), 200);

    let gateway = gw.take_gateway();
    let stopping = tokio::spawn(gateway.shutdown());
    let took = closed_within(&mut socket, 3 * SECOND).await;
    assert!(
        took >= std::time::Duration::from_millis(800),
        "closed before the grace ended: {took:?}"
    );
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_http2_extended_connect_reaches_an_http1_upstream() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (url, seen) = echo_upstream().await;
    let gw = Setup::new().upstream_url(&url).start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;

    let tls = crate::support::tls_connect(gw.addr(), &gw.cert_pem, &[b"h2"]).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let connect = |path: &str, origin: &str| {
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("https://{}{path}", gw.addr()))
            .header("sec-websocket-version", "13")
            .header("origin", origin)
            .header("cookie", format!("__Host-authgate={alice}"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        request
    };
    // The server offers RFC 8441 (the client refuses to send it otherwise).
    let mut response = sender
        .send_request(connect("/private/ws", &format!("https://{}", gw.addr())))
        .await
        .expect("extended CONNECT is offered and accepted");
    assert_eq!(response.status(), 200);
    let headers = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["x-auth-user"], "alice");
    let stream = hyper::upgrade::on(&mut response).await.unwrap();
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(stream),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    socket.send(Message::text("over h2")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("over h2")
    );

    let refused = sender
        .send_request(connect("/private/ws", "https://evil.example"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_websockets_at_once_each_get_their_own_echo() {
    let (url, _) = echo_upstream().await;
    let gw = Arc::new(Setup::new().upstream_url(&url).start().await);
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let mut sockets = Vec::new();
    for _ in 0..100 {
        let gw = gw.clone();
        let alice = alice.clone();
        sockets.push(tokio::spawn(async move {
            open(&gw, &alice, "/private/ws").await
        }));
    }
    let mut open_sockets = Vec::new();
    for socket in sockets {
        open_sockets.push(socket.await.unwrap());
    }
    for (i, socket) in open_sockets.iter_mut().enumerate() {
        socket
            .send(Message::text(format!("socket {i}")))
            .await
            .unwrap();
    }
    for (i, socket) in open_sockets.iter_mut().enumerate() {
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::text(format!("socket {i}"))
        );
    }
    assert_eq!(gw.gateway().state().tunnels.len(), 100);
}

#[tokio::test]
async fn an_upstream_that_does_not_switch_protocols_answers_as_usual() {
    // The plain test app ignores the upgrade and answers 200.
    let gw = Setup::new().start().await;
    let answer = gw
        .raw(
            format!(
                "GET /x HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                gw.addr()
            )
            .as_bytes(),
        )
        .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello from upstream"), "{answer}");
    assert_eq!(gw.upstream.last().headers["upgrade"], "websocket");
}

/// What a switching upstream saw on one connection after its 101.
#[derive(Debug, Clone)]
struct AfterSwitch {
    /// Bytes that came down the connection after the 101.
    bytes: Vec<u8>,
    /// The gateway closed the connection (within 3 s).
    closed: bool,
}

/// An upstream that answers every request with `answer` (a 101 head) and
/// then goes on speaking HTTP: whatever arrives after the 101 it answers
/// with a secret, as an app that trusts `X-Auth-User` would.
async fn switching_upstream(answer: &'static str) -> (String, Arc<Mutex<Vec<AfterSwitch>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let remember = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let remember = remember.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                tcp.write_all(answer.as_bytes()).await.unwrap();
                let mut after = AfterSwitch {
                    bytes: Vec::new(),
                    closed: false,
                };
                let read = tokio::time::timeout(std::time::Duration::from_secs(3), async {
                    loop {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return true,
                            Ok(n) => {
                                after.bytes.extend_from_slice(&buf[..n]);
                                let _ = tcp
                                    .write_all(
                                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret",
                                    )
                                    .await;
                            }
                        }
                    }
                })
                .await;
                after.closed = read.unwrap_or(false);
                remember.lock().unwrap().push(after);
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_that_is_not_the_websocket_handshake_asked_for_is_a_502_and_no_tunnel() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let answers = [
        // httpbin's /status/101: a 101 and nothing that says WebSocket.
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
        // The accept of another key (RFC 6455's sample nonce).
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ];
    for answer in answers {
        let (url, seen) = switching_upstream(answer).await;
        let gw = Setup::new().upstream_url(&url).start().await;
        // HTTP/1.1: the handshake on a public route, and right behind it a
        // request meant for the tunnel, with an identity of its own.
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let smuggled = "GET /admin/secret HTTP/1.1\r\nHost: app\r\nX-Auth-User: admin\r\n\r\n";
        let got = gw
            .raw(
                format!(
                    "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n{smuggled}",
                    gw.addr()
                )
                .as_bytes(),
            )
            .await;
        assert!(got.starts_with("HTTP/1.1 502"), "{answer:?}: {got}");
        assert!(!got.contains("secret"), "{answer:?}: {got}");

        // HTTP/2 extended CONNECT.
        let tls = crate::support::tls_connect(gw.addr(), &gw.cert_pem, &[b"h2"]).await;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("https://{}/ws", gw.addr()))
            .header("sec-websocket-version", "13")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 502, "{answer:?} over HTTP/2");

        // Each upstream connection that switched was closed, and nothing
        // came down it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.lock().unwrap().len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{answer:?}: {:?}",
                seen.lock().unwrap()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for after in seen.lock().unwrap().iter() {
            assert!(
                after.closed,
                "{answer:?}: the upstream connection stayed open"
            );
            assert!(
                after.bytes.is_empty(),
                "{answer:?}: {:?} reached the upstream through a tunnel",
                String::from_utf8_lossy(&after.bytes)
            );
        }
    }
}
