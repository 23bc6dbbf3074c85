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
async fn echo_upstream() -> (String, Arc<Mutex<Vec<http::HeaderMap>>>) {
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
