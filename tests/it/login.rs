//! Sign-in, sessions, sign-out, CSRF, throttling and identity (SPEC §3, §5, §6).

use std::time::{Duration, Instant};

use crate::support::{set_cookie, set_cookie_line, Setup, ALICE_PASSWORD, BOB_PASSWORD};

#[tokio::test]
async fn the_login_page_is_a_self_contained_form() {
    let gw = Setup::new().start().await;
    let client = gw.client();
    let response = client
        .get(gw.url("/.gateway/login?next=/staff/x%3Fa%3D1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let cookie = set_cookie_line(&response, "__Host-authgate-login").unwrap();
    assert!(
        cookie.contains("; Path=/; Secure; HttpOnly; SameSite=Strict"),
        "{cookie}"
    );
    let page = response.text().await.unwrap();
    // Its one script is the gateway's own passkey button.
    assert!(page.contains(authgate::pages::PASSKEY_SCRIPT_TAG));
    let page = page.replace(authgate::pages::PASSKEY_SCRIPT_TAG, "");
    for needle in [
        "name=\"username\"",
        "name=\"password\"",
        "name=\"csrf\"",
        "name=\"next\" value=\"/staff/x?a=1\"",
        "name=\"viewport\"",
        "method=\"post\"",
    ] {
        assert!(page.contains(needle), "no {needle} in {page}");
    }
    for external in ["http://", "https://", "<script", "src="] {
        assert!(!page.contains(external), "{external} in the login page");
    }
}

#[tokio::test]
async fn signing_in_sets_a_host_only_session_cookie_and_goes_to_next() {
    let gw = Setup::new().start().await;
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let response = gw
        .post_login(
            &client,
            &token,
            &[
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
                ("next", "/staff/report?y=1"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/staff/report?y=1");
    let line = set_cookie_line(&response, "__Host-authgate").unwrap();
    let id = set_cookie(&response, "__Host-authgate").unwrap();
    assert_eq!(
        line,
        format!("__Host-authgate={id}; Path=/; Secure; HttpOnly; SameSite=Lax")
    );
    assert_eq!(id.len(), 43);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));

    let page = gw.get_as(&id, "/staff/report").await;
    assert_eq!(page.status(), 200);
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["x-auth-user"], "alice");
    assert_eq!(seen.headers["x-auth-roles"], "admin,user");
}

#[tokio::test]
async fn usernames_are_canonical_and_long_unicode_passwords_work_untruncated() {
    let password = "Grüße-パスワード-🔑-".repeat(6);
    let hash = authgate::users::password::hash_password(&password);
    let users = format!("[users.Dora]\npassword = \"{hash}\"\nroles = [\"user\"]\n");
    let gw = Setup::new().users(&users).start().await;
    let session = gw.sign_in("  DORA ", &password).await;
    assert_eq!(gw.get_as(&session, "/private/x").await.status(), 200);
    assert_eq!(gw.upstream.last().headers["x-auth-user"], "Dora");

    let client = gw.client();
    let token = gw.login_form(&client).await;
    let mut truncated = password.clone();
    truncated.pop();
    let response = gw
        .post_login(
            &client,
            &token,
            &[("username", "dora"), ("password", &truncated)],
        )
        .await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn failures_look_the_same_whether_the_user_exists_or_not() {
    let gw = Setup::new().login("max_failures = 100").start().await;
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let mut answers = Vec::new();
    for (user, password) in [
        ("bob", "wrong password"),
        ("nobody-here", "wrong password"),
        ("carol", ALICE_PASSWORD),
    ] {
        // The quickest of three: other tests share the cores.
        let mut quickest = Duration::MAX;
        let mut last = None;
        for _ in 0..3 {
            let started = Instant::now();
            let response = gw
                .post_login(
                    &client,
                    &token,
                    &[("username", user), ("password", password)],
                )
                .await;
            quickest = quickest.min(started.elapsed());
            assert!(set_cookie(&response, "__Host-authgate").is_none());
            last = Some((response.status(), response.text().await.unwrap()));
        }
        let (status, body) = last.unwrap();
        answers.push((status, body, quickest));
    }
    // carol is locked: her right password gets the same answer.
    for (status, body, _) in &answers {
        assert_eq!(*status, 401);
        assert_eq!(body, &answers[0].1);
        assert!(body.contains("Invalid username or password."));
    }
    // An unknown user costs a full password check too.
    let (known, unknown) = (answers[0].2, answers[1].2);
    assert!(
        unknown * 3 > known && known * 3 > unknown,
        "known {known:?}, unknown {unknown:?}"
    );
}

#[tokio::test]
async fn an_oversized_form_is_refused_before_any_hashing() {
    let gw = Setup::new().start().await;
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let huge = "x".repeat(5000);
    let response = gw
        .post_login(&client, &token, &[("username", "bob"), ("password", &huge)])
        .await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn login_csrf_needs_the_cookie_and_the_field_to_match() {
    let gw = Setup::new().start().await;
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let other = gw.login_form(&gw.client()).await;
    let alice = [("username", "alice"), ("password", ALICE_PASSWORD)];
    let with_csrf = |csrf| [("csrf", csrf), alice[0], alice[1]];
    let (token, other) = (token.as_str(), other.as_str());
    let attempts = [
        // field without its cookie
        gw.login_request(&client, None, &with_csrf(token)),
        // cookie without the field
        gw.login_request(&client, Some(token), &alice),
        // a token from another browser
        gw.login_request(&client, Some(token), &with_csrf(other)),
        // a right pair posted from another site
        gw.login_request(&client, Some(token), &with_csrf(token))
            .header("origin", "https://evil.example"),
    ];
    for (i, attempt) in attempts.into_iter().enumerate() {
        let response = attempt.send().await.unwrap();
        assert_eq!(response.status(), 403, "attempt {i}");
        assert!(
            set_cookie(&response, "__Host-authgate").is_none(),
            "attempt {i} signed in"
        );
    }
    // A browser posting from the gateway's own no-referrer page sends
    // `Origin: null`; with the right token that is fine, and so is this site.
    for origin in ["null".to_owned(), format!("https://{}", gw.addr())] {
        let response = gw
            .login_request(&client, Some(token), &with_csrf(token))
            .header("origin", origin.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "Origin: {origin}");
    }
}

#[tokio::test]
async fn repeated_failures_are_throttled_until_the_window_passes() {
    let gw = Setup::new()
        .login("max_failures = 3")
        .login("failure_window = \"3s\"")
        .start()
        .await;
    let client = gw.client();
    let token = gw.login_form(&client).await;
    for _ in 0..3 {
        let r = gw
            .post_login(
                &client,
                &token,
                &[("username", "Bob"), ("password", "nope")],
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    // Even the right password, under any spelling of the name, and whatever
    // address the client claims to come from.
    let r = gw
        .login_request(
            &client,
            Some(&token),
            &[
                ("csrf", &token),
                ("username", " bob"),
                ("password", BOB_PASSWORD),
            ],
        )
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    // Another account is not held up by bob's failures.
    let r = gw
        .post_login(
            &client,
            &token,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 303);

    // Retry-After rounds up: once it has passed, so has the window.
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    let r = gw
        .post_login(
            &client,
            &token,
            &[("username", "bob"), ("password", BOB_PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 303, "the window has passed");
}

#[tokio::test]
async fn one_client_cycling_user_names_is_throttled_too() {
    let gw = Setup::new().login("max_failures = 2").start().await;
    let client = gw.client();
    let token = gw.login_form(&client).await;
    for i in 0..8 {
        let name = format!("guess{i}");
        let r = gw
            .post_login(&client, &token, &[("username", &name), ("password", "x")])
            .await;
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = gw
        .post_login(
            &client,
            &token,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 429, "4 x max_failures from one address");
}

#[tokio::test]
async fn an_invented_session_id_is_never_adopted_and_each_login_gets_a_new_one() {
    let gw = Setup::new().start().await;
    let invented = "A".repeat(43);
    assert_eq!(gw.get_as(&invented, "/private/x").await.status(), 401);

    let client = gw.client();
    let token = gw.login_form(&client).await;
    let bob = [
        ("csrf", token.as_str()),
        ("username", "bob"),
        ("password", BOB_PASSWORD),
    ];
    let response = gw
        .login_request(&client, Some(&token), &bob)
        .header("cookie", format!("__Host-authgate={invented}"))
        .send()
        .await
        .unwrap();
    let first = set_cookie(&response, "__Host-authgate").unwrap();
    assert_ne!(first, invented);
    assert_eq!(gw.get_as(&invented, "/private/x").await.status(), 401);

    // Signing in again from the same browser replaces the session.
    let response = gw
        .login_request(&client, Some(&token), &bob)
        .header("cookie", format!("__Host-authgate={first}"))
        .send()
        .await
        .unwrap();
    let second = set_cookie(&response, "__Host-authgate").unwrap();
    assert_ne!(second, first);
    assert_eq!(
        gw.get_as(&first, "/private/x").await.status(),
        401,
        "the old session ended"
    );
    assert_eq!(gw.get_as(&second, "/private/x").await.status(), 200);
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let gw = Setup::new().start().await;
    let session = gw.sign_in("bob", BOB_PASSWORD).await;
    let client = gw.client();

    let page = gw.get_as(&session, "/.gateway/logout").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(page.contains("<button"));

    // Without the token: refused, and the session lives on.
    let refused = client
        .post(gw.url("/.gateway/logout"))
        .header("cookie", format!("__Host-authgate={session}"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(gw.get_as(&session, "/private/x").await.status(), 200);

    let response = client
        .post(gw.url("/.gateway/logout"))
        .header("cookie", format!("__Host-authgate={session}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/.gateway/login");
    assert_eq!(response.headers()["clear-site-data"], "\"cookies\"");
    let cleared = set_cookie_line(&response, "__Host-authgate").unwrap();
    assert!(
        cleared.starts_with("__Host-authgate=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // The old cookie value is dead, even replayed.
    let replay = gw.get_as(&session, "/private/x").await;
    assert_eq!(replay.status(), 401);
    assert!(
        set_cookie_line(&replay, "__Host-authgate")
            .unwrap()
            .contains("Max-Age=0"),
        "a dead cookie is cleared"
    );
}

#[tokio::test]
async fn an_idle_session_ends_and_an_active_one_lives() {
    let gw = Setup::new()
        .session("idle_timeout = \"1s\"")
        .session("absolute_timeout = \"10s\"")
        .start()
        .await;
    let active = gw.sign_in("bob", BOB_PASSWORD).await;
    let idle = gw.sign_in("bob", BOB_PASSWORD).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(gw.get_as(&active, "/private/x").await.status(), 200);
    }
    assert_eq!(gw.get_as(&idle, "/private/x").await.status(), 401);
    assert_eq!(gw.get_as(&active, "/private/x").await.status(), 200);
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_deadline_however_active() {
    let gw = Setup::new()
        .session("idle_timeout = \"1s\"")
        .session("absolute_timeout = \"2s\"")
        .start()
        .await;
    let session = gw.sign_in("bob", BOB_PASSWORD).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        assert_eq!(gw.get_as(&session, "/private/x").await.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still used every 200 ms, far inside the idle timeout: only the
    // absolute deadline can end it.
    while started.elapsed() < Duration::from_millis(2200) {
        gw.get_as(&session, "/private/x").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gw.get_as(&session, "/private/x").await.status(), 401);
}

#[tokio::test]
async fn expired_sessions_are_swept_from_memory() {
    let gw = Setup::new()
        .session("idle_timeout = \"1s\"")
        .session("absolute_timeout = \"5s\"")
        .start()
        .await;
    for _ in 0..5 {
        gw.sign_in("bob", BOB_PASSWORD).await;
    }
    let sessions = &gw.gateway().state().auth.store.sessions;
    assert_eq!(sessions.len(), 5);
    // Idle for 1 s, then the sweeper (every 500 ms) removes them unasked.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(
        sessions.len(),
        0,
        "nobody looked them up; the sweeper removed them"
    );
}

#[tokio::test]
async fn roles_decide_and_anonymous_users_are_sent_to_login() {
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(gw.get_as(&alice, "/staff/x").await.status(), 200);
    assert_eq!(gw.get_as(&bob, "/staff/x").await.status(), 403);
    assert_eq!(gw.get_as(&bob, "/private/x").await.status(), 200);
    let anonymous = gw
        .client()
        .get(gw.url("/staff/x?q=1"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 302);
    assert_eq!(
        anonymous.headers()["location"],
        "/.gateway/login?next=/staff/x%3Fq%3D1"
    );
}

#[tokio::test]
async fn next_never_leads_off_the_site() {
    let gw = Setup::new().login("max_failures = 100").start().await;
    let client = gw.client();
    let token = gw.login_form(&client).await;
    let attacks = [
        "//evil.example/",
        "/\\evil.example",
        "\\/evil.example",
        "https://evil.example/",
        "http:evil.example",
        "/%2F/evil.example",
        "/%2f%2fevil.example",
        "/%5Cevil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/%09/evil.example",
        "/%0D%0ASet-Cookie:%20x=1",
        "javascript:alert(1)",
        "evil.example",
    ];
    for next in attacks {
        let response = gw
            .post_login(
                &client,
                &token,
                &[
                    ("username", "bob"),
                    ("password", BOB_PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(response.status(), 303, "{next:?}");
        assert_eq!(response.headers()["location"], "/", "{next:?}");
        let page = client
            .get(gw.url("/.gateway/login"))
            .query(&[("next", next)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("name=\"next\" value=\"/\""), "{next:?}");
    }
}

#[tokio::test]
async fn identity_headers_come_from_the_session_and_cannot_be_spoofed() {
    let gw = Setup::new().start().await;
    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    for client in [gw.h1_client(), gw.client()] {
        let response = client
            .get(gw.url("/private/x"))
            .header(
                "cookie",
                // The pending second-factor cookie is the gateway's too.
                format!("theme=dark; __Host-authgate={bob}; __Host-authgate-mfa=pending; lang=en"),
            )
            .header("x-auth-user", "alice")
            .header("x-auth-roles", "admin")
            .header("x_auth_user", "alice")
            .header("connection", "x-auth-user")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let seen = gw.upstream.last();
        assert_eq!(
            seen.headers
                .get_all("x-auth-user")
                .iter()
                .collect::<Vec<_>>(),
            ["bob"]
        );
        assert_eq!(
            seen.headers
                .get_all("x-auth-roles")
                .iter()
                .collect::<Vec<_>>(),
            ["user"]
        );
        assert!(!seen.headers.contains_key("x_auth_user"));
        let cookies = seen
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(cookies, ["theme=dark; lang=en"]);
    }
    // Anonymous on a public route: no identity at all.
    let response = gw
        .client()
        .get(gw.url("/open"))
        .header("x-auth-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = gw.upstream.last();
    assert!(
        !seen.headers.contains_key("x-auth-user") && !seen.headers.contains_key("x-auth-roles")
    );
}

#[tokio::test]
async fn whoami_reports_the_session_without_extending_it() {
    let gw = Setup::new()
        .session("idle_timeout = \"1200ms\"")
        .start()
        .await;
    let alice = gw.sign_in("Alice", ALICE_PASSWORD).await;
    let first: serde_json::Value = gw
        .get_as(&alice, "/.gateway/whoami")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["user"], "alice");
    assert_eq!(first["roles"], serde_json::json!(["admin", "user"]));
    for key in ["expires_at", "idle_expires_at"] {
        let text = first[key].as_str().unwrap();
        assert!(humantime::parse_rfc3339(text).is_ok(), "{key}: {text}");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second: serde_json::Value = gw
        .get_as(&alice, "/.gateway/whoami")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        second["idle_expires_at"], first["idle_expires_at"],
        "whoami did not move the idle deadline"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    // 1.3 s of nothing but whoami: the session went idle.
    let gone = gw.get_as(&alice, "/.gateway/whoami").await;
    assert_eq!(gone.status(), 401);
    assert_eq!(gone.text().await.unwrap(), r#"{"error":"unauthenticated"}"#);
}

#[tokio::test]
async fn the_sign_in_page_carries_the_organisations_words_escaped_and_nothing_else() {
    let gw = Setup::new()
        .login("title = \"Acme <Intranet>\"")
        .login("notice = \"Authorised staff only.\\nQuestions: <script>alert(1)</script> & co\"")
        .start()
        .await;
    let page = gw
        .client()
        .get(gw.url("/.gateway/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    let text = page.text().await.unwrap();
    assert!(
        text.contains("<title>Sign in · Acme &lt;Intranet&gt;</title>"),
        "{text}"
    );
    assert!(text.contains("<strong>Acme &lt;Intranet&gt;</strong>"));
    assert!(text.contains(
        "Authorised staff only.<br>Questions: &lt;script&gt;alert(1)&lt;/script&gt; &amp; co"
    ));
    // No outside assets (the one script is the gateway's own).
    let text = text.replace(authgate::pages::PASSKEY_SCRIPT_TAG, "");
    assert!(!text.contains("<script"));
    assert!(!text.contains("src=") && !text.contains("http://") && !text.contains("https://"));
    // The failed sign-in's page says the same.
    let failed = gw.try_sign_in("bob", "wrong password!").await;
    assert_eq!(failed.status(), 401);
    assert!(failed
        .text()
        .await
        .unwrap()
        .contains("<strong>Acme &lt;Intranet&gt;</strong>"));

    // A reload changes them; a title that is not plain text is refused.
    let config = gw.config_file();
    let edited = std::fs::read_to_string(&config)
        .unwrap()
        .replace("Acme <Intranet>", "Acme Tools");
    std::fs::write(&config, &edited).unwrap();
    assert!(matches!(
        gw.gateway().reload().await,
        authgate::reload::Reloaded::Applied { .. }
    ));
    let page = gw
        .client()
        .get(gw.url("/.gateway/login"))
        .send()
        .await
        .unwrap();
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("<strong>Acme Tools</strong>"));
    std::fs::write(&config, edited.replace("Acme Tools", &"x".repeat(81))).unwrap();
    let authgate::reload::Reloaded::Refused { problems } = gw.gateway().reload().await else {
        panic!("an 81-character title was taken");
    };
    assert!(
        problems[0].contains("title must be plain text of at most 80 characters"),
        "{problems:?}"
    );
}
