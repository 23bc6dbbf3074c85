//! `/.gateway/account` (issue 16): a user's own sessions, ended by the user.

use crate::support::{Setup, TestGateway, ALICE_PASSWORD, BOB_PASSWORD};

async fn sign_in_with_browser(gw: &TestGateway, user: &str, password: &str, ua: &str) -> String {
    let client = gw.client_builder().user_agent(ua).build().unwrap();
    let token = gw.login_form(&client).await;
    let response = gw
        .post_login(
            &client,
            &token,
            &[("username", user), ("password", password)],
        )
        .await;
    assert_eq!(response.status(), 303);
    crate::support::set_cookie(&response, "__Host-authgate").unwrap()
}

async fn page(gw: &TestGateway, session: &str) -> String {
    let response = gw.get_as(session, "/.gateway/account").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    response.text().await.unwrap()
}

fn handles(page: &str) -> Vec<String> {
    page.split("name=\"action\" value=\"end\"><input type=\"hidden\" name=\"target\" value=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

async fn post(gw: &TestGateway, session: &str, form: &[(&str, &str)]) -> reqwest::Response {
    gw.client()
        .post(gw.url("/.gateway/account"))
        .header("cookie", format!("__Host-authgate={session}"))
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn users_see_and_end_their_own_sessions_only() {
    let gw = Setup::new().start().await;
    let laptop = sign_in_with_browser(&gw, "bob", BOB_PASSWORD, "Laptop <script>x</script>").await;
    let phone = sign_in_with_browser(&gw, "bob", BOB_PASSWORD, "Phone").await;
    let tablet = sign_in_with_browser(&gw, "bob", BOB_PASSWORD, "Tablet").await;
    let alice = sign_in_with_browser(&gw, "alice", ALICE_PASSWORD, "Alice's").await;

    let text = page(&gw, &laptop).await;
    assert!(
        text.contains("Laptop &lt;script&gt;x&lt;/script&gt;"),
        "{text}"
    );
    assert!(!text
        .replace(authgate::pages::PASSKEY_SCRIPT_TAG, "")
        .contains("<script"));
    assert!(text.contains("Phone") && text.contains("Tablet"));
    assert!(!text.contains("Alice's"), "another user's session");
    assert!(text.contains("<strong>this one</strong>"));
    for cookie in [&laptop, &phone, &tablet] {
        assert!(
            !text.contains(cookie.as_str()),
            "a cookie value on the page"
        );
    }
    assert!(text.contains("/.gateway/password") && text.contains("/.gateway/totp"));
    let others = handles(&text);
    assert_eq!(others.len(), 2, "the two other sessions can be ended");
    let csrf = crate::admin::csrf_of(&gw, &laptop).await;

    // Without the token: refused, nothing ends.
    let forged = post(
        &gw,
        &laptop,
        &[("csrf", "forged"), ("action", "end_others")],
    )
    .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(gw.get_as(&phone, "/private/x").await.status(), 200);

    // Another user's session is not one of bob's to end.
    let alices_handle = handles(&page(&gw, &alice).await);
    assert!(alices_handle.is_empty());
    let listed: serde_json::Value = crate::admin::api(
        &gw,
        reqwest::Method::GET,
        "/sessions?user=alice",
        Some(&alice),
        None,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let alice_handle = listed["sessions"][0]["id"].as_str().unwrap().to_owned();
    let tried = post(
        &gw,
        &laptop,
        &[
            ("csrf", &csrf),
            ("action", "end"),
            ("target", &alice_handle),
        ],
    )
    .await;
    assert_eq!(tried.status(), 303);
    assert_eq!(gw.get_as(&alice, "/private/x").await.status(), 200);

    // One of bob's, then all but this one.
    let ended = post(
        &gw,
        &laptop,
        &[("csrf", &csrf), ("action", "end"), ("target", &others[0])],
    )
    .await;
    assert_eq!(ended.status(), 303);
    assert_eq!(ended.headers()["location"], "/.gateway/account");
    let statuses = [
        gw.get_as(&phone, "/private/x").await.status().as_u16(),
        gw.get_as(&tablet, "/private/x").await.status().as_u16(),
    ];
    assert!(
        statuses.contains(&401) && statuses.contains(&200),
        "{statuses:?}"
    );
    let rest = post(&gw, &laptop, &[("csrf", &csrf), ("action", "end_others")]).await;
    assert_eq!(rest.status(), 303);
    assert_eq!(gw.get_as(&phone, "/private/x").await.status(), 401);
    assert_eq!(gw.get_as(&tablet, "/private/x").await.status(), 401);
    assert_eq!(gw.get_as(&laptop, "/private/x").await.status(), 200);
    let text = page(&gw, &laptop).await;
    assert!(handles(&text).is_empty());
    assert!(!text.contains("Sign out everywhere else"));
}

/// The header a signed-in person's pages carry (issue 25): who, and links
/// to the account, the admin page (admins only) and sign-out.
fn header_of(page: &str) -> &str {
    let start = page.find("<header>").expect("no header on the page");
    let end = page[start..].find("</header>").expect("an unclosed header") + start;
    &page[start..end]
}

#[tokio::test]
async fn pages_name_browsers_say_when_and_carry_who_is_signed_in() {
    let gw = Setup::new().start().await;
    let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
    let bob = sign_in_with_browser(&gw, "bob", BOB_PASSWORD, chrome).await;
    let alice = sign_in_with_browser(&gw, "alice", ALICE_PASSWORD, "curl/8.5.0").await;

    let text = page(&gw, &bob).await;
    // "Chrome 156 on Linux", the whole User-Agent on hover.
    assert!(
        text.contains(&format!("<td title=\"{chrome}\">Chrome 156 on Linux</td>")),
        "{text}"
    );
    // "just now", the exact time (UTC) on hover.
    let started = text.split("<time datetime=\"").nth(1).expect("no <time>");
    assert!(started.contains(" (UTC)\">just now</time>"), "{started}");
    // Tables scroll inside the card instead of overflowing it on a phone.
    assert!(text.contains("<div class=\"scroll\"><table>"), "{text}");

    let bobs = header_of(&text);
    assert!(bobs.contains("Signed in as <strong>bob</strong>"), "{bobs}");
    assert!(
        bobs.contains("href=\"/.gateway/account\"") && bobs.contains("href=\"/.gateway/logout\"")
    );
    assert!(
        !bobs.contains("/.gateway/admin/"),
        "an admin link for a user: {bobs}"
    );

    let alices = page(&gw, &alice).await;
    assert!(
        header_of(&alices).contains("href=\"/.gateway/admin/\""),
        "{alices}"
    );
    for path in [
        "/.gateway/password",
        "/.gateway/totp",
        "/.gateway/reauth",
        "/.gateway/logout",
        "/.gateway/admin/",
    ] {
        let response = gw.get_as(&alice, path).await;
        assert_eq!(response.status(), 200, "{path}");
        let html = response.text().await.unwrap();
        assert!(
            header_of(&html).contains("Signed in as <strong>alice</strong>"),
            "{path}: {html}"
        );
    }
    // The admin page names browsers and times the same way.
    let admin = gw
        .get_as(&alice, "/.gateway/admin/")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        admin.contains(">Chrome 156 on Linux</td>") && admin.contains(">curl 8.5.0</td>"),
        "{admin}"
    );
    assert!(admin.contains(">just now</time>"), "{admin}");

    // Nobody is signed in on the sign-in page: no header.
    let login = gw
        .client()
        .get(gw.url("/.gateway/login"))
        .send()
        .await
        .unwrap();
    assert!(!login.text().await.unwrap().contains("<header>"));
}
