//! Several apps behind one gateway (issue 12, point 7): `[[upstream]]`
//! entries picked by host and path prefix, the longest prefix first,
//! `strip_prefix` with `X-Forwarded-Prefix`; `explain`, `[[test]]` and
//! `check` know which app a request goes to.

use crate::support::{authgate, Setup, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_to_the_app_their_host_and_longest_prefix_name() {
    let docs = Upstream::start().await;
    let docs_api = Upstream::start().await;
    let grafana = Upstream::start().await;
    let main = Upstream::start().await;
    let gw = Setup::new()
        .upstream_tables(&format!(
            "[[upstream]]\nurl = \"{}\"\npath_prefix = \"/docs\"\nstrip_prefix = true\n\n\
[[upstream]]\nurl = \"{}\"\npath_prefix = \"/docs/api\"\n\n\
[[upstream]]\nurl = \"{}\"\nhost = \"grafana.example\"\n\n\
[[upstream]]\nurl = \"{}\"\n",
            docs.url(),
            docs_api.url(),
            grafana.url(),
            main.url()
        ))
        .start()
        .await;
    let get = |path: &str, host: Option<&str>| {
        let mut request = gw.h1_client().get(gw.url(path));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        async move { request.send().await.unwrap().status() }
    };

    assert_eq!(get("/docs/guide?x=1", None).await, 200);
    let seen = docs.last();
    assert_eq!(seen.uri, "/guide?x=1", "the prefix is stripped");
    assert_eq!(seen.headers["x-forwarded-prefix"], "/docs");
    assert_eq!(get("/docs", None).await, 200);
    assert_eq!(docs.last().uri, "/");

    assert_eq!(get("/docs/api/v1", None).await, 200);
    assert_eq!(
        docs_api.last().uri,
        "/docs/api/v1",
        "the longest prefix wins, unstripped"
    );
    assert!(docs_api.last().headers.get("x-forwarded-prefix").is_none());

    assert_eq!(get("/docsearch", None).await, 200);
    assert_eq!(main.last().uri, "/docsearch", "a prefix is whole segments");

    assert_eq!(get("/d/1", Some("Grafana.Example")).await, 200);
    assert_eq!(grafana.last().uri, "/d/1");
    assert_eq!(get("/docs/x", Some("grafana.example")).await, 200);
    assert_eq!(docs.last().uri, "/x", "a longer prefix beats a host");
    assert!(gw.upstream.requests().is_empty());
}

#[tokio::test]
async fn without_a_catch_all_an_unserved_request_is_404() {
    let app = Upstream::start().await;
    let gw = Setup::new()
        .upstream_tables(&format!(
            "[[upstream]]\nurl = \"{}\"\npath_prefix = \"/app\"\n",
            app.url()
        ))
        .start()
        .await;
    let response = gw.client().get(gw.url("/other")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(app.requests().is_empty());
}

#[test]
fn check_explain_and_tests_know_where_a_request_goes() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_config(dir.path(), "http://127.0.0.1:9", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[upstream]\nurl = \"http://127.0.0.1:9\"\n",
        "[[upstream]]\nurl = \"http://127.0.0.1:9\"\n\n[[upstream]]\nurl = \"http://127.0.0.1:10\"\npath_prefix = \"/admin\"\n",
    );
    assert!(text.contains("[[upstream]]"), "{text}");
    std::fs::write(&config, &text).unwrap();
    let explained = authgate()
        .args(["explain", "-c"])
        .arg(&config)
        .args(["--user", "alice", "GET", "/x/../admin/users"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&explained.stdout);
    assert!(
        out.contains("upstream: http://127.0.0.1:10 ([[upstream]] on line"),
        "{out}"
    );

    // A [[test]] may say where the request must go.
    let with_test = format!(
        "{text}\n[[test]]\nuser = \"alice\"\nmethod = \"GET\"\npath = \"/admin/x\"\nexpect = \"deny\"\nupstream = \"http://127.0.0.1:9\"\n"
    );
    std::fs::write(&config, &with_test).unwrap();
    let checked = authgate()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!checked.status.success());
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(
        err.contains("expected upstream http://127.0.0.1:9, got http://127.0.0.1:10"),
        "{err}"
    );

    // Two entries for the same host and prefix: the second is never used.
    let twice =
        format!("{text}\n[[upstream]]\nurl = \"http://127.0.0.1:11\"\npath_prefix = \"/admin/\"\n");
    std::fs::write(&config, &twice).unwrap();
    let checked = authgate()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(err.contains("would never be used"), "{err}");

    // host / path_prefix belong to [[upstream]] entries only.
    let one = "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\npath_prefix = \"/x\"\n";
    let problems = match authgate::Config::parse(one, &dir.path().join("gateway.toml")) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        problems.contains(":7:15: path_prefix is for [[upstream]] entries"),
        "{problems}"
    );
}
