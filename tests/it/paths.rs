//! The path the policy judged is the path the upstream gets (SPEC §4).

use crate::support::Setup;

#[tokio::test]
async fn the_upstream_receives_the_normalized_path() {
    let gw = Setup::new().start().await;
    let client = gw.h1_client();
    let cases = [
        ("/x/../public/a?q=%2F1", "/public/a?q=%2F1"),
        ("//public//b", "/public/b"),
        ("/./public/%7Euser/%61", "/public/~user/a"),
        ("/public/a%20b/", "/public/a%20b/"),
        ("/public/%c3%a9", "/public/%C3%A9"),
    ];
    for (sent, forwarded) in cases {
        let response = client.get(gw.url(sent)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{sent}");
        assert_eq!(gw.upstream.last().uri, forwarded, "{sent}");
    }
}

#[tokio::test]
async fn ambiguous_paths_are_400_and_never_forwarded() {
    let gw = Setup::new().start().await;
    let cases = [
        "/public/a%2Fb",
        "/public/a%2fb",
        "/public/a%5Cb",
        "/public/a%00",
        "/public/a%zz",
        "/public/a%4",
        "/../admin",
        "/%2e%2e/admin",
        "/public/..%2fadmin",
    ];
    for sent in cases {
        let request =
            format!("GET {sent} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let answer = gw.raw(request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{sent}: {answer}");
    }
    // A literal backslash is no valid URI byte: refused before or at the policy.
    let answer = gw
        .raw(b"GET /public\\..\\admin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        gw.upstream.requests().is_empty(),
        "{:?}",
        gw.upstream.requests()
    );
}

#[tokio::test]
async fn encoded_and_dotted_forms_of_a_denied_path_are_denied() {
    let gw = Setup::new().start().await;
    let client = gw.h1_client();
    for sent in [
        "/admin",
        "/admin/",
        "//admin",
        "/./admin",
        "/x/../admin",
        "/%61dmin/x",
        "/api/x/../../admin",
        "/public/%2e%2e/admin",
    ] {
        let response = client.get(gw.url(sent)).send().await.unwrap();
        assert_eq!(response.status(), 403, "{sent}");
    }
    assert!(gw.upstream.requests().is_empty());
}

#[tokio::test]
async fn first_matching_rule_decides_and_no_match_is_403() {
    let rules = r#"
[[rule]]
path = "/docs/internal/**"
access = "deny"

[[rule]]
path = "/docs/**"
access = "public"

[[rule]]
path = "/api/*/status"
methods = ["GET"]
access = "public"

[[rule]]
path = "/vhost/**"
host = "special.example"
access = "public"
"#;
    let gw = Setup::new().rules(rules).start().await;
    let client = gw.h1_client();
    let status = |path: &'static str, method: reqwest::Method| {
        let request = client.request(method, gw.url(path));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/docs/guide", reqwest::Method::GET).await, 200);
    assert_eq!(status("/docs/internal/x", reqwest::Method::GET).await, 403);
    assert_eq!(status("/api/v1/status", reqwest::Method::GET).await, 200);
    assert_eq!(status("/api/v1/status", reqwest::Method::POST).await, 403);
    assert_eq!(status("/api/v1/x/status", reqwest::Method::GET).await, 403);
    assert_eq!(
        status("/elsewhere", reqwest::Method::GET).await,
        403,
        "no rule: deny"
    );
    assert_eq!(
        status("/vhost/a", reqwest::Method::GET).await,
        403,
        "wrong host"
    );
    let raw = gw
        .raw(b"GET /vhost/a HTTP/1.1\r\nHost: Special.Example:8443\r\nConnection: close\r\n\r\n")
        .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
}

#[tokio::test]
async fn gateway_paths_are_never_proxied() {
    let gw = Setup::new().start().await;
    for sent in [
        "/.gateway/unknown",
        "/.gateway",
        "/x/../.gateway/y",
        "/%2Egateway/z",
    ] {
        let response = gw.h1_client().get(gw.url(sent)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{sent}");
    }
    assert!(gw.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_session_rule_answers_login_by_client_kind() {
    let gw = Setup::new().start().await;
    let client = gw.h1_client();
    let browser = client
        .get(gw.url("/private/report?y=2024&q=a b"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 302);
    assert_eq!(
        browser.headers()["location"],
        "/.gateway/login?next=/private/report%3Fy%3D2024%26q%3Da%2520b"
    );
    let api = client.post(gw.url("/private/report")).send().await.unwrap();
    assert_eq!(api.status(), 401);
    assert_eq!(api.text().await.unwrap(), r#"{"error":"unauthenticated"}"#);
    assert!(gw.upstream.requests().is_empty());
}
