//! Forward-auth (issue 15): `/.gateway/verify` behind an edge proxy, in
//! process and behind a real nginx with `auth_request`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Setup, TestGateway, ALICE_PASSWORD, BOB_PASSWORD};

fn forward_auth_gateway() -> Setup {
    Setup::new()
        .server("trusted_proxies = [\"127.0.0.1\"]")
        .server("verify_listen = \"127.0.0.1:0\"")
        .server("public_url = \"https://auth.example\"")
}

/// A forward-auth call on the verify listener, as Traefik or Caddy make it.
async fn ask(
    gw: &TestGateway,
    session: Option<&str>,
    method: &str,
    host: &str,
    uri: &str,
) -> reqwest::Response {
    let verify = gw.gateway().verify_addr().expect("a verify listener");
    let mut request = reqwest::Client::new()
        .get(format!("http://{verify}/.gateway/verify"))
        .header("x-forwarded-method", method)
        .header("x-forwarded-host", host)
        .header("x-forwarded-uri", uri)
        .header("x-forwarded-proto", "https")
        .header("accept", "text/html");
    if let Some(session) = session {
        request = request.header("cookie", format!("__Host-authgate={session}"));
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn verify_judges_the_original_request_with_the_same_rules() {
    let gw = forward_auth_gateway().start().await;
    let anonymous = ask(&gw, None, "GET", "app.example", "/private/x?a=1").await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["location"],
        "https://auth.example/.gateway/login?next=/private/x%3Fa%3D1"
    );
    assert_eq!(
        ask(&gw, None, "GET", "app.example", "/public/x")
            .await
            .status(),
        200
    );

    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let allowed = ask(&gw, Some(&alice), "POST", "app.example", "/staff/report").await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["x-auth-user"], "alice");
    assert_eq!(allowed.headers()["x-auth-roles"], "admin,user");

    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    assert_eq!(
        ask(&gw, Some(&bob), "GET", "app.example", "/staff/x")
            .await
            .status(),
        403
    );
    // Path tricks are judged as the app will read them.
    for trick in [
        "/public/%2e%2e/staff/x",
        "/public/..;/staff/x",
        "/STAFF/x",
        "/staff;x=1/x",
    ] {
        let status = ask(&gw, Some(&bob), "GET", "app.example", trick)
            .await
            .status();
        assert_eq!(status, 403, "{trick}");
    }
    // nginx's spelling, on the main listener too.
    let nginx_style = gw
        .client()
        .get(gw.url("/.gateway/verify"))
        .header("x-original-url", "https://app.example/staff/x")
        .header("x-original-method", "GET")
        .header("cookie", format!("__Host-authgate={alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(nginx_style.status(), 200);
    assert_eq!(nginx_style.headers()["x-auth-user"], "alice");
}

#[tokio::test]
async fn forwarded_headers_from_outside_trusted_proxies_are_refused() {
    // No trusted proxies: nobody may name the request to judge.
    let gw = Setup::new().start().await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let response = gw
        .client()
        .get(gw.url("/.gateway/verify"))
        .header("x-forwarded-uri", "/staff/x")
        .header("x-forwarded-host", "app.example")
        .header("cookie", format!("__Host-authgate={alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(!response.headers().contains_key("x-auth-user"));
}

/// A real nginx in front of the test upstream, asking authgate's verify
/// listener with `auth_request`.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(verify: std::net::SocketAddr, upstream: std::net::SocketAddr) -> Nginx {
        Nginx::start_with(verify, upstream, "")
    }

    /// nginx with `blanks` added to the `auth_request` location: the
    /// README's snippet blanks the header family nginx does not set.
    fn start_with(
        verify: std::net::SocketAddr,
        upstream: std::net::SocketAddr,
        blanks: &str,
    ) -> Nginx {
        Nginx::with_locations(&format!(
            r#"
        location = /_authgate {{
            internal;
            proxy_pass http://{verify}/.gateway/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
            proxy_set_header X-Original-Method $request_method;
            {blanks}
        }}
        location / {{
            auth_request /_authgate;
            auth_request_set $authgate_user $upstream_http_x_auth_user;
            auth_request_set $authgate_roles $upstream_http_x_auth_roles;
            auth_request_set $authgate_login $upstream_http_location;
            proxy_set_header X-Auth-User $authgate_user;
            proxy_set_header X-Auth-Roles $authgate_roles;
            error_page 401 = @login;
            proxy_pass http://{upstream};
        }}
        location @login {{
            return 302 $authgate_login;
        }}
"#
        ))
    }

    /// nginx with the README's snippet, its addresses pointed at `verify`
    /// and `upstream`: what users copy is what is tested.
    fn from_readme(verify: std::net::SocketAddr, upstream: std::net::SocketAddr) -> Nginx {
        let readme = include_str!("../../README.md");
        let snippet = readme
            .split("```nginx\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the README has an nginx snippet");
        assert!(snippet.contains("10.0.0.7:9091") && snippet.contains("http://app;"));
        Nginx::with_locations(
            &snippet
                .replace("10.0.0.7:9091", &verify.to_string())
                .replace("http://app;", &format!("http://{upstream};")),
        )
    }

    /// nginx on a free port, serving these `location` blocks.
    fn with_locations(locations: &str) -> Nginx {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is not installed: .ci/run installs it (apt-get install nginx)");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = crate::support::free_port();
        let config = format!(
            r#"daemon off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }

    /// One request with the exact request line given (no client-side
    /// path cleaning): status line and headers.
    async fn raw(&self, target: &str, cookie: Option<&str>) -> String {
        self.send("GET", target, cookie, "", "").await
    }

    /// One raw request: method, target, extra header lines and a body.
    async fn send(
        &self,
        method: &str,
        target: &str,
        cookie: Option<&str>,
        extra: &str,
        body: &str,
    ) -> String {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let cookie = cookie.map_or(String::new(), |c| {
            format!("Cookie: __Host-authgate={c}\r\n")
        });
        let length = if body.is_empty() {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        // A browser, unless the extra lines say what is accepted.
        let accept = if extra.contains("Accept:") {
            ""
        } else {
            "Accept: text/html\r\n"
        };
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: app.example\r\n{accept}X-Auth-User: mallory\r\n{cookie}{extra}{length}Connection: close\r\n\r\n{body}"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
            .await
            .expect("nginx answered")
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_real_nginx_with_auth_request() {
    let gw = forward_auth_gateway().start().await;
    let nginx = Nginx::start(gw.gateway().verify_addr().unwrap(), gw.upstream.addr);

    let anonymous = nginx.raw("/private/x", None).await;
    assert!(anonymous.starts_with("HTTP/1.1 302"), "{anonymous}");
    assert!(
        anonymous.contains("Location: https://auth.example/.gateway/login?next=/private/x"),
        "{anonymous}"
    );
    assert!(
        gw.upstream.requests().is_empty(),
        "the app saw an anonymous request"
    );

    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let allowed = nginx.raw("/private/x", Some(&alice)).await;
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    let seen = gw.upstream.last();
    assert_eq!(
        seen.headers["x-auth-user"], "alice",
        "not the client's X-Auth-User"
    );
    assert_eq!(seen.headers["x-auth-roles"], "admin,user");

    let bob = gw.sign_in("bob", BOB_PASSWORD).await;
    let before = gw.upstream.requests().len();
    for trick in [
        "/staff/x",
        "/public/..;/staff/x",
        "/public/%2e%2e/staff/x",
        "/public/%2E%2E/staff/x",
        "/x/../STAFF/x",
    ] {
        let answer = nginx.raw(trick, Some(&bob)).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{trick}: {answer}");
    }
    assert_eq!(
        gw.upstream.requests().len(),
        before,
        "the app saw a denied request"
    );
    let fine = nginx.raw("/private/../public/y", Some(&bob)).await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
}

#[tokio::test]
async fn a_cookie_domain_serves_subdomains_and_lets_next_go_there() {
    let gw = forward_auth_gateway()
        .session("cookie_domain = \"example.com\"")
        .start()
        .await;
    let client = gw.client();
    let sign_in = |next: &'static str| {
        let client = client.clone();
        let gw = &gw;
        async move {
            // The login cookie follows the session cookie's name.
            let form = client.get(gw.url("/.gateway/login")).send().await.unwrap();
            let token = crate::support::set_cookie(&form, "__Secure-authgate-login")
                .expect("the form sets its CSRF cookie");
            client
                .post(gw.url("/.gateway/login"))
                .header("cookie", format!("__Secure-authgate-login={token}"))
                .form(&[
                    ("csrf", token.as_str()),
                    ("username", "alice"),
                    ("password", ALICE_PASSWORD),
                    ("next", next),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let response = sign_in("https://app.example.com/notes?x=1").await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "https://app.example.com/notes?x=1"
    );
    let line = crate::support::set_cookie_line(&response, "__Secure-authgate")
        .expect("a __Secure- cookie");
    assert!(line.contains("; Domain=example.com"), "{line}");
    assert!(
        line.contains("Secure") && line.contains("HttpOnly"),
        "{line}"
    );
    assert!(crate::support::set_cookie(&response, "__Host-authgate").is_none());
    let session = crate::support::set_cookie(&response, "__Secure-authgate").unwrap();
    // Other sites stay out.
    for elsewhere in [
        "https://example.com.evil.org/",
        "https://evil.org/?example.com",
        "http://app.example.com/",
        "//app.example.com/",
    ] {
        let response = sign_in(elsewhere).await;
        assert_eq!(response.headers()["location"], "/", "{elsewhere}");
    }
    // Forward-auth on another subdomain: the cookie works, and the login
    // link brings the browser back to where it was.
    let verify = gw.gateway().verify_addr().unwrap();
    let ask = |cookie: Option<String>| {
        let mut request = reqwest::Client::new()
            .get(format!("http://{verify}/.gateway/verify"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-host", "wiki.example.com")
            .header("x-forwarded-uri", "/private/page")
            .header("accept", "text/html");
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let allowed = ask(Some(format!("__Secure-authgate={session}")))
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["x-auth-user"], "alice");
    let anonymous = ask(None).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["location"],
        "https://auth.example/.gateway/login?next=https%3A//wiki.example.com/private/page"
    );
}

#[test]
fn a_host_cookie_name_cannot_have_a_domain_and_check_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.path().join("gw.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("gw.key"), &cert.key_pem).unwrap();
    let text = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[store]\nbackend = \"memory\"\n[session]\ncookie_name = \"__Host-sso\"\ncookie_domain = \"example.com\"\n";
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = crate::support::authgate()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("gateway.toml:10:15:"), "{said}");
    assert!(said.contains("__Secure-"), "{said}");
}

#[tokio::test]
async fn verify_hands_out_the_assertion_for_the_original_host() {
    let gw = forward_auth_gateway()
        .rules(&format!(
            "{}\n[identity]\nassertion = true\n",
            crate::support::DEFAULT_RULES
        ))
        .start()
        .await;
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let allowed = ask(&gw, Some(&alice), "GET", "notes.example", "/private/x").await;
    assert_eq!(allowed.status(), 200);
    let token = allowed.headers()["x-auth-assertion"].to_str().unwrap();
    use base64::Engine;
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["aud"], "notes.example");
    assert_eq!(payload["sub"], "alice");
}

const ASSET_RULES: &str = r#"
[[rule]]
path = "/assets/**"
methods = ["GET"]
access = "public"

[[rule]]
path = "/staff/**"
roles = ["admin"]

[[rule]]
path = "/**"
access = "authenticated"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_a_client_cannot_name_the_request_in_the_other_header_family() {
    // (forward_auth key, blanks in nginx's auth location, what a spoofed
    // X-Forwarded-Method gets): without the key and without the README's
    // blanks the mix is refused outright; with either, it is ignored and
    // the POST is judged as the POST it is.
    // (None: the README's snippet, which blanks them.)
    let cases = [
        (None, Some(""), "HTTP/1.1 403"),
        (Some("nginx"), Some(""), "HTTP/1.1 302"),
        (None, None, "HTTP/1.1 302"),
    ];
    for (key, blanks, spoofed) in cases {
        let mut setup = forward_auth_gateway().rules(ASSET_RULES);
        let line;
        if let Some(key) = key {
            line = format!("forward_auth = \"{key}\"");
            setup = setup.server(&line);
        }
        let gw = setup.start().await;
        let verify = gw.gateway().verify_addr().unwrap();
        let nginx = match blanks {
            Some(blanks) => Nginx::start_with(verify, gw.upstream.addr, blanks),
            None => Nginx::from_readme(verify, gw.upstream.addr),
        };
        let case = format!(
            "forward_auth {key:?}, the README's snippet: {}",
            blanks.is_none()
        );

        let fine = nginx.raw("/assets/app.css", None).await;
        assert!(fine.starts_with("HTTP/1.1 200"), "{case}: {fine}");
        let seen = gw.upstream.requests().len();
        let post = nginx
            .send("POST", "/assets/upload", None, "", "payload")
            .await;
        assert!(post.starts_with("HTTP/1.1 302"), "{case}: {post}");
        let spoof = nginx
            .send(
                "POST",
                "/assets/upload",
                None,
                "X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /assets/x.css\r\nX-Forwarded-Host: app.example\r\n",
                "payload",
            )
            .await;
        assert!(spoof.starts_with(spoofed), "{case}: {spoof}");
        // nginx sets X-Original-URL itself: the client's is overwritten.
        let spoof = nginx
            .send(
                "GET",
                "/staff/x",
                None,
                "X-Original-URL: https://app.example/assets/x.css\r\nX-Original-Method: GET\r\n",
                "",
            )
            .await;
        assert!(spoof.starts_with("HTTP/1.1 302"), "{case}: {spoof}");
        // The gateway's own prefix is no way around the rules.
        for trick in [
            "/.gateway/..%20/staff/x",
            "/.gateway/.../staff/x",
            "/.gateway/..%2e/staff/x",
            "/.gateway/x/..%20/..%20/staff/x",
            "/.gateway/;/../staff/x",
            "/.gateway/..;/staff/x",
        ] {
            let answer = nginx.raw(trick, None).await;
            assert!(
                !answer.starts_with("HTTP/1.1 200"),
                "{case}: {trick}: {answer}"
            );
        }
        assert_eq!(
            gw.upstream.requests().len(),
            seen,
            "{case}: the app saw a request the rules refuse"
        );
    }
}

/// A forward-auth call as Traefik makes it, plus whatever the client added.
async fn ask_with(gw: &TestGateway, headers: &[(&str, &str)]) -> (u16, String) {
    let verify = gw.gateway().verify_addr().expect("a verify listener");
    let mut request = reqwest::Client::new().get(format!("http://{verify}/.gateway/verify"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn verify_reads_one_header_family_and_refuses_a_mix_a_gap_or_a_fragment() {
    let traefik = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.example"),
        ("x-forwarded-uri", "/staff/x"),
        ("x-forwarded-proto", "https"),
    ];
    let spoof = ("x-original-url", "https://app.example/public/x.css");
    let mut mixed = traefik.to_vec();
    mixed.push(spoof);

    let log = crate::logs::captured();
    let unset = forward_auth_gateway().start().await;
    assert_eq!(ask_with(&unset, &traefik).await.0, 401);
    let (status, body) = ask_with(&unset, &mixed).await;
    assert_eq!(status, 403);
    assert!(body.contains("ambiguous_forward_auth"), "{body}");
    // ... and a security event says so.
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(
        logged.contains("\"event\":\"ambiguous_forward_auth\""),
        "no security event"
    );
    let (status, body) = ask_with(&unset, &[("x-forwarded-host", "app.example")]).await;
    assert_eq!(status, 403);
    assert!(body.contains("ambiguous_forward_auth"), "{body}");

    let set = forward_auth_gateway()
        .server("forward_auth = \"traefik\"")
        .start()
        .await;
    // The nginx family is ignored: the client's X-Original-URL changes nothing.
    assert_eq!(ask_with(&set, &mixed).await.0, 401);
    // No method is no request, not a GET.
    let (status, body) = ask_with(&set, &traefik[1..]).await;
    assert_eq!(status, 403);
    assert!(body.contains("no_original_method"), "{body}");
    let mut fragment = traefik.to_vec();
    fragment[2] = ("x-forwarded-uri", "/public/x.css#/../../staff/x");
    assert_eq!(ask_with(&set, &fragment).await.0, 403);

    let nginx = forward_auth_gateway()
        .server("forward_auth = \"nginx\"")
        .start()
        .await;
    for url in [
        "https://app.example/public/x.css#/../../staff/x",
        "/public/x.css#/../../staff/x",
        "https://app.example*",
        "app.example:443",
    ] {
        let (status, _) = ask_with(
            &nginx,
            &[("x-original-url", url), ("x-original-method", "GET")],
        )
        .await;
        assert_eq!(status, 403, "{url}");
    }
    let (status, body) = ask_with(
        &nginx,
        &[("x-original-url", "https://app.example/public/x.css")],
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("no_original_method"), "{body}");
    // The Traefik family is ignored: a client's X-Forwarded-Method does not
    // turn a POST into a GET.
    let (status, _) = ask_with(
        &nginx,
        &[
            ("x-original-url", "https://app.example/staff/x"),
            ("x-original-method", "POST"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/public/x"),
        ],
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn verify_lets_only_plain_gateway_pages_on_the_gateways_own_host_through() {
    let gw = forward_auth_gateway()
        .rules(ASSET_RULES)
        .server("forward_auth = \"traefik\"")
        .start()
        .await;
    let ask = |host: &'static str, uri: &'static str| {
        let gw = &gw;
        async move {
            ask_with(
                gw,
                &[
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-host", host),
                    ("x-forwarded-uri", uri),
                ],
            )
            .await
            .0
        }
    };
    assert_eq!(ask("auth.example", "/.gateway/login?next=/x").await, 200);
    assert_eq!(ask("auth.example", "/.gateway/admin/api/users").await, 200);
    // On an app's host the prefix is the app's path like any other.
    assert_eq!(ask("app.example", "/.gateway/login").await, 401);
    for trick in [
        "/.gateway/..%20/staff/x",
        "/.gateway/.../staff/x",
        "/.gateway/..%09/staff/x",
        "/.gateway/LOGIN/../../staff/x",
        "/.gateway/x;/staff",
        "/.gateway/login./",
    ] {
        assert_eq!(ask("auth.example", trick).await, 401, "{trick}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_nginx_snippet_answers_api_clients_401_and_keeps_the_session_from_the_app() {
    let gw = forward_auth_gateway()
        .rules(&format!(
            "{}\n[identity]\nassertion = true\n",
            crate::support::DEFAULT_RULES
        ))
        .start()
        .await;
    let nginx = Nginx::from_readme(gw.gateway().verify_addr().unwrap(), gw.upstream.addr);

    // A browser is sent to sign in; an API client gets a 401, not a 302
    // with an empty Location.
    let browser = nginx.raw("/private/x", None).await;
    assert!(browser.starts_with("HTTP/1.1 302"), "{browser}");
    assert!(
        browser.contains("Location: https://auth.example/.gateway/login?next="),
        "{browser}"
    );
    let api = nginx
        .send(
            "GET",
            "/private/x",
            None,
            "Accept: application/json\r\n",
            "",
        )
        .await;
    assert!(api.starts_with("HTTP/1.1 401"), "{api}");
    assert!(!api.contains("Location:"), "{api}");
    assert!(gw.upstream.requests().is_empty());

    // Signed in: the app gets the identity and the assertion from the
    // gateway, the client's other cookies, and never the session cookie.
    let alice = gw.sign_in("alice", ALICE_PASSWORD).await;
    let answer = nginx
        .send(
            "GET",
            "/private/x",
            None,
            &format!(
                "Cookie: theme=dark; __Host-authgate={alice}; lang=en\r\nX-Auth-Assertion: forged\r\n"
            ),
            "",
        )
        .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = gw.upstream.last();
    assert_eq!(seen.headers["x-auth-user"], "alice");
    assert_eq!(seen.headers["cookie"], "theme=dark; lang=en");
    let assertion = seen.headers["x-auth-assertion"].to_str().unwrap();
    assert_eq!(assertion.split('.').count(), 3, "a JWT: {assertion}");
    // Public, anonymous: no identity, the client's own headers blanked.
    let public = nginx
        .send(
            "GET",
            "/public/x",
            None,
            "X-Auth-Assertion: forged\r\nCookie: theme=dark\r\n",
            "",
        )
        .await;
    assert!(public.starts_with("HTTP/1.1 200"), "{public}");
    let seen = gw.upstream.last();
    assert!(!seen.headers.contains_key("x-auth-user"));
    assert!(!seen.headers.contains_key("x-auth-assertion"));
    assert_eq!(seen.headers["cookie"], "theme=dark");
}

#[tokio::test]
async fn verify_calls_get_the_same_access_line_as_every_request_naming_what_was_judged() {
    let log = crate::logs::captured();
    let gw = forward_auth_gateway()
        .server("forward_auth = \"traefik\"")
        .start()
        .await;
    let verify = gw.gateway().verify_addr().unwrap();
    for (listener, id) in [
        (format!("http://{verify}"), "verify-listener-line-1"),
        (gw.url(""), "main-listener-line-1"),
    ] {
        let client = if listener.starts_with("https") {
            gw.client()
        } else {
            reqwest::Client::new()
        };
        let answer = client
            .get(format!("{listener}/.gateway/verify"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-host", "app.example")
            .header("x-forwarded-uri", "/private/../private/x?a=1")
            .header("x-request-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
        assert_eq!(answer.headers()["x-request-id"], id);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
        let line = text
            .lines()
            .find(|l| {
                l.contains(&format!("\"request_id\":\"{id}\"")) && l.contains("\"status\":401")
            })
            .unwrap_or_else(|| panic!("no access line for {id}"))
            .to_owned();
        for field in [
            "\"path\":\"/.gateway/verify?/private/x\"",
            "\"host\":\"app.example\"",
            "\"decision\":\"login\"",
            "\"duration_ms\":",
        ] {
            assert!(line.contains(field), "{field} in {line}");
        }
    }
}
