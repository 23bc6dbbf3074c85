//! Running it like infrastructure (issue 13): `authgate healthcheck`, the
//! image's config and user, and the example manifests checked against the
//! config they ship.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::{authgate, set_key, spawn_run, wait_for_line, Running, Upstream};

/// A plain HTTP server answering every request with the status in `status`.
async fn ops_stand_in(status: Arc<AtomicU16>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let code = status.load(Ordering::SeqCst);
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(code)
                                .body(Full::new(bytes::Bytes::from_static(b"x")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (port, task)
}

fn healthcheck(args: &[&str], config: &Path) -> (bool, String) {
    let out = authgate()
        .arg("healthcheck")
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_asks_the_ops_listener_the_config_names() {
    let status = Arc::new(AtomicU16::new(200));
    let (port, server) = ops_stand_in(status.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    // A wildcard address is asked on loopback.
    std::fs::write(
        &config,
        format!("[server]\nops_listen = \"0.0.0.0:{port}\"\n"),
    )
    .unwrap();
    let (ok, text) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || healthcheck(&[], &config)
    })
    .await
    .unwrap();
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/healthz")),
        "{text}"
    );

    status.store(503, Ordering::SeqCst);
    let (ok, text) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || healthcheck(&[], &config)
    })
    .await
    .unwrap();
    assert!(!ok, "a 503 passed: {text}");
    assert!(text.contains("503"), "{text}");

    server.abort();
    let _ = server.await;
    let (ok, text) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || healthcheck(&[], &config)
    })
    .await
    .unwrap();
    assert!(!ok, "nothing listening passed: {text}");

    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let (ok, text) = healthcheck(&[], &config);
    assert!(!ok);
    assert!(text.contains("no [server] ops_listen"), "{text}");
}

/// The `-e` expressions of the Dockerfile's `sed -i` over the shipped config.
fn dockerfile_edits(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.contains("sed -i") && l.contains("/tmp/gateway.toml"))
        .expect("the Dockerfile edits the shipped config with sed");
    line.split("-e '")
        .skip(1)
        .map(|part| part.split('\'').next().unwrap().to_owned())
        .collect()
}

/// The values of the `INSTRUCTION` lines of the Dockerfile's last stage.
fn instructions<'a>(dockerfile: &'a str, name: &str) -> Vec<&'a str> {
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    last_stage
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .collect()
}

/// The value of the one `INSTRUCTION` line of the Dockerfile's last stage.
fn instruction<'a>(dockerfile: &'a str, name: &str) -> &'a str {
    let found = instructions(dockerfile, name);
    assert_eq!(found.len(), 1, "one {name} in the run stage: {found:?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_config_serves_from_a_read_only_folder_and_checks_itself() {
    let dockerfile = include_str!("../../Dockerfile");
    // Non-root, the config where AUTHGATE_CONFIG says, the state in the volume.
    // A numeric user and group (the kubelet refuses runAsNonRoot for a
    // name), the manifests' 10001.
    let user = instruction(dockerfile, "USER");
    assert_eq!(user, "10001:10001");
    assert!(dockerfile.contains("--gid 10001"));
    let env = instructions(dockerfile, "ENV");
    assert!(
        env.contains(&"AUTHGATE_CONFIG=/etc/authgate/gateway.toml"),
        "{env:?}"
    );
    // The system's CA roots: installed in the run stage, and named.
    let bundle = env
        .iter()
        .find_map(|e| e.strip_prefix("SSL_CERT_FILE="))
        .expect("SSL_CERT_FILE names the CA bundle");
    let run_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(run_stage.contains("install -y --no-install-recommends ca-certificates"));
    assert_eq!(bundle, "/etc/ssl/certs/ca-certificates.crt");
    assert_eq!(instruction(dockerfile, "VOLUME"), "/var/lib/authgate");
    let joined = dockerfile.replace("\\\n", " ");
    let health = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    assert!(
        health.contains(r#"CMD ["/usr/local/bin/authgate", "healthcheck"]"#),
        "{health}"
    );

    // The shipped config with the image's edits, in a folder laid out as the
    // image's: /etc/authgate (read-only) and the volume.
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc");
    let volume = root.path().join("var-lib-authgate");
    std::fs::create_dir_all(etc.join("certs")).unwrap();
    std::fs::create_dir(&volume).unwrap();
    let config = etc.join("gateway.toml");
    std::fs::write(&config, include_str!("../../gateway.toml")).unwrap();
    // The build applies them to /tmp/gateway.toml and copies that here.
    assert!(dockerfile.contains("COPY --from=build /tmp/gateway.toml /etc/authgate/gateway.toml"));
    let mut sed = std::process::Command::new("sed");
    sed.arg("-i");
    for edit in dockerfile_edits(dockerfile) {
        sed.arg("-e").arg(edit);
    }
    assert!(sed.arg(&config).status().unwrap().success());
    let edited = std::fs::read_to_string(&config).unwrap();
    // Each edit's replacement line is there, uncommented: the state path
    // in the volume and a loopback ops listener for the health check.
    for edit in dockerfile_edits(dockerfile) {
        let replacement = edit.split('|').nth(2).unwrap();
        assert!(
            edited.lines().any(|l| l == replacement),
            "{replacement} not in\n{edited}"
        );
    }
    let ops = edited
        .lines()
        .find_map(|l| l.strip_prefix("ops_listen = \""))
        .expect("the image turns the ops listener on");
    assert!(ops.starts_with("127.0.0.1:"), "{ops}");
    assert!(edited.contains("\npath = \"/var/lib/authgate/authgate-state.db\"\n"));
    // Free ports and the test's upstream; the volume where it is mounted here.
    let upstream = Upstream::start().await;
    assert!(edited.contains("\nfile = \"/var/lib/authgate/users.toml\"\n"));
    assert!(edited.contains("\nseed = \"/etc/authgate/users.toml\"\n"));
    let edited = edited.replace("/var/lib/authgate", volume.to_str().unwrap());
    let edited = edited.replace("/etc/authgate/", &format!("{}/", etc.display()));
    let edited = set_key(&edited, "listen", "\"127.0.0.1:0\"");
    let edited = set_key(&edited, "ops_listen", "\"127.0.0.1:0\"");
    let edited = set_key(&edited, "url", &format!("{:?}", upstream.url()));
    std::fs::write(&config, edited).unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(etc.join("certs/gateway.crt"), &cert.cert_pem).unwrap();
    std::fs::write(etc.join("certs/gateway.key"), &cert.key_pem).unwrap();
    std::fs::write(etc.join("users.toml"), crate::support::default_users()).unwrap();
    let before = listing(&etc);

    let (mut child, mut lines) = spawn_run(&["run", "-c"], &config);
    let serving = wait_for_line(&mut lines, "authgate is serving");
    assert!(serving.contains("redirect_http=off"), "{serving}");
    let ops = serving
        .split("ops_listen=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no ops address in {serving:?}"))
        .to_owned();
    let listen = serving
        .split("listen=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_owned();
    let url = format!("http://{ops}/healthz");
    let (ok, text) = healthcheck(&["--url", &url], &config);
    assert!(ok, "{text}");

    // It serves; its state file is in the volume, and the config folder is untouched.
    let client = crate::support::https_client_builder(&cert.cert_pem)
        .build()
        .unwrap();
    let base = format!("https://{listen}");
    let page = client
        .get(format!("{base}/.gateway/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(volume.join("authgate-state.db").exists());
    assert_eq!(
        std::fs::read_to_string(volume.join("users.toml")).unwrap(),
        crate::support::default_users(),
        "the users file made in the volume from the image's read-only one"
    );
    assert_eq!(
        listing(&etc),
        before,
        "the gateway wrote into its config folder"
    );

    crate::support::sigterm(&child.0);
    assert!(crate::support::wait_for_exit(&mut child).await.success());
    let (ok, _) = healthcheck(&["--url", &url], &config);
    assert!(!ok, "a stopped gateway passed its health check");
    drop::<Running>(child);
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir);
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = entry.metadata().unwrap();
        names.push(format!(
            "{} {} {:?}",
            path.display(),
            meta.len(),
            meta.modified().unwrap()
        ));
        if meta.is_dir() {
            names.extend(walk(&path));
        }
    }
    names
}

/// Every document of the YAML files, merge keys applied.
fn yaml_docs(files: &[&str]) -> Vec<serde_yaml::Value> {
    let mut docs = Vec::new();
    for text in files {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let mut value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            value.apply_merge().unwrap();
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [serde_yaml::Value], kind: &str, name: &str) -> &'a serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn str_of(value: &serde_yaml::Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// Where `file` (absolute) is: the volume whose mount holds it, and the name.
fn mounted<'a>(container: &'a serde_yaml::Value, file: &'a str) -> (&'a str, &'a str) {
    let (dir, name) = file.rsplit_once('/').unwrap();
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("no volume is mounted at {dir} (for {file})"));
    assert!(
        mount.get("subPath").is_none(),
        "{dir}: a subPath mount never sees updates"
    );
    (str_of(&mount["name"]), name)
}

#[test]
fn the_kubernetes_example_agrees_with_the_config_it_ships() {
    let docs = yaml_docs(&[
        include_str!("../../examples/kubernetes/deployment.yaml"),
        include_str!("../../examples/kubernetes/configmap.yaml"),
        include_str!("../../examples/kubernetes/secret.yaml.example"),
    ]);
    let deployment = of_kind(&docs, "Deployment", "notes");
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    let gateway = containers.iter().find(|c| c["name"] == "authgate").unwrap();
    let app = containers.iter().find(|c| c["name"] == "app").unwrap();
    let volume = |name: &str| {
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    let port = |name: &str| {
        gateway["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };

    // Secrets are mounted readable by the owner and the pod's group only,
    // so the gateway's start warns about none of them.
    for volume in pod["volumes"].as_sequence().unwrap() {
        if volume["secret"].is_mapping() {
            // Kubernetes reads YAML 1.1, where 0440 is octal.
            let mode = match &volume["secret"]["defaultMode"] {
                serde_yaml::Value::Number(n) => n.as_u64().unwrap(),
                serde_yaml::Value::String(octal) if octal.starts_with('0') => {
                    u64::from_str_radix(octal, 8).unwrap()
                }
                _ => panic!("no defaultMode on {volume:?}: Kubernetes mounts 0644"),
            };
            assert_eq!(mode & 0o007, 0, "{volume:?} is readable by others");
        }
    }

    // The config the gateway reads is the ConfigMap's, mounted as a folder.
    let env = gateway["env"].as_sequence().unwrap();
    let config_path = str_of(
        &env.iter()
            .find(|e| e["name"] == "AUTHGATE_CONFIG")
            .expect("AUTHGATE_CONFIG")["value"],
    );
    let (config_volume, config_name) = mounted(gateway, config_path);
    let config_map_name = str_of(&volume(config_volume)["configMap"]["name"]).to_owned();
    let text = str_of(&of_kind(&docs, "ConfigMap", &config_map_name)["data"][config_name]);
    let config: toml::Table = text.parse().unwrap();
    let server = &config["server"];

    // Ports: the TLS listener is the Service's only target; probes ask ops.
    let listen = server["listen"].as_str().unwrap();
    assert_eq!(port_of(listen), port("https"));
    let ops = server["ops_listen"].as_str().unwrap();
    assert!(
        ops.starts_with("0.0.0.0:"),
        "probes come from the node: {ops}"
    );
    assert_eq!(port_of(ops), port("ops"));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &gateway[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "ops", "{probe}");
    }
    let service = of_kind(&docs, "Service", "notes");
    let service_ports = service["spec"]["ports"].as_sequence().unwrap();
    assert_eq!(service_ports.len(), 1, "only the gateway's port is exposed");
    assert_eq!(service_ports[0]["targetPort"], "https");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );

    // The app is on the pod's localhost, where the upstream url points.
    let upstream = config["upstream"]["url"].as_str().unwrap();
    let app_listen = app["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("-listen="))
        .unwrap();
    assert_eq!(upstream, format!("http://{app_listen}"));
    assert!(app_listen.starts_with("127.0.0.1:"));

    // Files: certificate and users from their Secrets, state in its volume.
    let secret_file = |path: &str| {
        let (volume_name, file) = mounted(gateway, path);
        let secret_name = str_of(&volume(volume_name)["secret"]["secretName"]).to_owned();
        let secret = of_kind(&docs, "Secret", &secret_name);
        str_of(&secret["stringData"][file]).to_owned()
    };
    // The users file is on the state volume (writable), made from the
    // Secret at the first start.
    let users_text = secret_file(config["users"]["seed"].as_str().unwrap());
    let (users_volume, _) = mounted(gateway, config["users"]["file"].as_str().unwrap());
    assert!(
        volume(users_volume)["persistentVolumeClaim"].is_mapping(),
        "the users file is on the state volume"
    );
    secret_file(server["cert"].as_str().unwrap());
    secret_file(server["key"].as_str().unwrap());
    let state_path = config["store"]["path"].as_str().unwrap();
    let (state_volume, _) = mounted(gateway, state_path);
    let claim = str_of(&volume(state_volume)["persistentVolumeClaim"]["claimName"]).to_owned();
    of_kind(&docs, "PersistentVolumeClaim", &claim);

    // Rollouts: a versioned image that a locally loaded copy satisfies;
    // the pod outlives drain_delay + shutdown_grace; the app stops after
    // the gateway has drained; a startup probe guards a slow start; the
    // state volume is one pod's.
    let image = str_of(&gateway["image"]);
    assert_eq!(
        image,
        format!("authgate:{}", env!("CARGO_PKG_VERSION")),
        "a versioned tag"
    );
    assert_eq!(gateway["imagePullPolicy"], "IfNotPresent");
    let seconds = |key: &str, default: u64| {
        server
            .get(key)
            .and_then(|v| v.as_str())
            .map_or(default, |t| humantime::parse_duration(t).unwrap().as_secs())
    };
    let needed = seconds("drain_delay", 5) + seconds("shutdown_grace", 30);
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds {grace} <= {needed}"
    );
    assert!(
        app["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap()
            > seconds("drain_delay", 5),
        "the app outlives the drain"
    );
    assert_eq!(gateway["startupProbe"]["httpGet"]["port"], "ops");
    let pvc = of_kind(&docs, "PersistentVolumeClaim", &claim);
    assert_eq!(pvc["spec"]["accessModes"][0], "ReadWriteOncePod");
    assert_eq!(service_ports[0]["appProtocol"], "https");

    // Non-root (the image's user), read-only root, limits.
    let dockerfile = include_str!("../../Dockerfile");
    let uid = pod["securityContext"]["runAsUser"].as_u64().unwrap();
    assert!(dockerfile.contains(&format!("--uid {uid} ")));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["fsGroup"].as_u64(), Some(uid));
    for container in containers {
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert!(container["resources"]["limits"]["memory"].is_string());
    }

    // The config itself is valid and its tests pass, given those files.
    let dir = tempfile::tempdir().unwrap();
    let local = |path: &str| {
        let (mount, _) = path.rsplit_once('/').unwrap();
        let here = dir.path().join(mount.trim_start_matches('/'));
        std::fs::create_dir_all(&here).unwrap();
        here
    };
    let mut materialized = text.to_owned();
    for path in [
        server["cert"].as_str().unwrap(),
        server["key"].as_str().unwrap(),
        config["users"]["seed"].as_str().unwrap(),
        state_path,
    ] {
        let (mount, _) = path.rsplit_once('/').unwrap();
        materialized = materialized.replace(
            &format!("\"{mount}/"),
            &format!("\"{}/", local(path).display()),
        );
    }
    let cert = authgate::tls::self_signed();
    std::fs::write(
        local(server["cert"].as_str().unwrap()).join("tls.crt"),
        &cert.cert_pem,
    )
    .unwrap();
    std::fs::write(
        local(server["key"].as_str().unwrap()).join("tls.key"),
        &cert.key_pem,
    )
    .unwrap();
    std::fs::write(
        local(config["users"]["seed"].as_str().unwrap()).join("users.toml"),
        &users_text,
    )
    .unwrap();
    let parsed = authgate::Config::parse(&materialized, &dir.path().join("gateway.toml"))
        .unwrap_or_else(|e| panic!("the ConfigMap's gateway.toml is refused:\n{e}"));
    let failures = authgate::review::run_tests(&parsed, &parsed.users);
    assert!(failures.is_empty(), "{failures:?}");
    example_password_works(&users_text);
}

/// The example users file says alice's password in a comment: it must be
/// the one its hash is of.
fn example_password_works(users: &str) {
    use argon2::PasswordVerifier;
    let password = users
        .split("password here is \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the example names its password");
    let hash = users
        .lines()
        .find_map(|l| l.trim().strip_prefix("password = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap();
    let parsed = argon2::PasswordHash::new(hash).unwrap();
    assert!(
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        "the example hash is not of {password:?}"
    );
}

#[test]
fn the_compose_example_agrees_with_the_config_it_ships() {
    let docs = yaml_docs(&[include_str!("../../examples/compose.yaml")]);
    let services = &docs[0]["services"];
    let text = include_str!("../../examples/shared/gateway.toml");
    let config: toml::Table = text.parse().unwrap();
    let listen = port_of(config["server"]["listen"].as_str().unwrap());

    // Two gateways built from the repository, the shared folder where the
    // image reads its config, publishing the TLS port.
    let gateways: Vec<&serde_yaml::Value> = services
        .as_mapping()
        .unwrap()
        .values()
        .filter(|s| s["build"] == "..")
        .collect();
    assert_eq!(gateways.len(), 2);
    let drain_and_grace = 5 + 30;
    for gateway in &gateways {
        // One image name; hardened; restarted; stopped no sooner than the
        // drain and the grace allow; started once Redis answers.
        assert_eq!(
            gateway["image"],
            format!("authgate:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(gateway["read_only"], true);
        assert_eq!(gateway["cap_drop"][0], "ALL");
        assert_eq!(gateway["security_opt"][0], "no-new-privileges:true");
        assert_eq!(gateway["restart"], "unless-stopped");
        let stop = humantime::parse_duration(str_of(&gateway["stop_grace_period"])).unwrap();
        assert!(stop.as_secs() > drain_and_grace, "{stop:?}");
        assert_eq!(
            gateway["depends_on"]["redis"]["condition"],
            "service_healthy"
        );
        let volumes = gateway["volumes"].as_sequence().unwrap();
        assert!(volumes.iter().any(|v| v == "./shared:/etc/authgate:ro"));
        let published = gateway["ports"].as_sequence().unwrap();
        assert!(published
            .iter()
            .all(|p| str_of(p).ends_with(&format!(":{listen}"))));
    }
    let dockerfile = include_str!("../../Dockerfile");
    assert!(dockerfile.contains("ENV AUTHGATE_CONFIG=/etc/authgate/gateway.toml"));
    let ops = config["server"]["ops_listen"].as_str().unwrap();
    assert!(
        ops.starts_with("127.0.0.1:"),
        "the HEALTHCHECK asks loopback"
    );

    // Redis and the app are the services the config names.
    let redis_url = config["store"]["url"].as_str().unwrap();
    assert_eq!(config["store"]["backend"].as_str(), Some("redis"));
    let redis_host = redis_url
        .trim_start_matches("redis://")
        .split(':')
        .next()
        .unwrap();
    assert!(
        services.get(redis_host).is_some(),
        "no service {redis_host}"
    );
    let redis = &services[redis_host];
    let redis_command = format!("{:?}", redis["command"]);
    for needed in [
        "--maxmemory-policy noeviction",
        "--appendonly yes",
        "--requirepass",
    ] {
        assert!(
            redis_command.contains(needed),
            "{needed} in {redis_command}"
        );
    }
    assert!(redis["healthcheck"]["test"].is_sequence());
    // Redis and the app only on the internal network, the gateways on both.
    let internal: Vec<&str> = docs[0]["networks"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, n)| n["internal"] == true)
        .map(|(name, _)| str_of(name))
        .collect();
    assert_eq!(redis["networks"].as_sequence().unwrap().len(), 1);
    assert!(internal.contains(&str_of(&redis["networks"][0])));
    // The password Redis starts with is the file the config names.
    let password_file = config["store"]["password_file"].as_str().unwrap();
    let secret = str_of(&redis["secrets"][0]);
    assert_eq!(
        str_of(&docs[0]["secrets"][secret]["file"]),
        format!("./shared/{password_file}")
    );
    let upstream = config["upstream"]["url"].as_str().unwrap();
    let (app_host, app_port) = upstream
        .trim_start_matches("http://")
        .split_once(':')
        .unwrap();
    let app_listen = services[app_host]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("-listen="))
        .unwrap();
    assert_eq!(app_listen, format!(":{app_port}"));

    // The config is valid with the files the folder holds (and a certificate).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let cert = authgate::tls::self_signed();
    std::fs::write(dir.path().join("certs/gateway.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("certs/gateway.key"), &cert.key_pem).unwrap();
    let users = include_str!("../../examples/shared/users.toml");
    std::fs::write(dir.path().join("users.toml"), users).unwrap();
    std::fs::write(dir.path().join(password_file), "example-password\n").unwrap();
    let parsed = authgate::Config::parse(text, &dir.path().join("gateway.toml"))
        .unwrap_or_else(|e| panic!("examples/shared/gateway.toml is refused:\n{e}"));
    let failures = authgate::review::run_tests(&parsed, &parsed.users);
    assert!(failures.is_empty(), "{failures:?}");
    example_password_works(users);
}

#[test]
fn the_redis_example_runs_two_replicas_that_survive_disruptions() {
    let docs = yaml_docs(&[
        include_str!("../../examples/kubernetes-redis/gateway.yaml"),
        include_str!("../../examples/kubernetes-redis/redis.yaml"),
    ]);
    let deployment = of_kind(&docs, "Deployment", "notes");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let pdb = of_kind(&docs, "PodDisruptionBudget", "notes");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    let spread = pod["topologySpreadConstraints"].as_sequence().unwrap();
    assert!(spread
        .iter()
        .any(|c| c["topologyKey"] == "kubernetes.io/hostname"));
    let containers = pod["containers"].as_sequence().unwrap();
    let gateway = containers.iter().find(|c| c["name"] == "authgate").unwrap();
    assert_eq!(gateway["imagePullPolicy"], "IfNotPresent");

    // The config: Redis with a password from the Secret Redis itself uses.
    let text = str_of(&of_kind(&docs, "ConfigMap", "authgate-config")["data"]["gateway.toml"]);
    let config: toml::Table = text.parse().unwrap();
    assert_eq!(config["store"]["backend"].as_str(), Some("redis"));
    let password_file = config["store"]["password_file"].as_str().unwrap();
    let (volume_name, _) = mounted(gateway, password_file);
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == volume_name)
        .unwrap();
    let secret = str_of(&volume["secret"]["secretName"]);
    let redis = of_kind(&docs, "StatefulSet", "authgate-redis");
    let redis_pod = &redis["spec"]["template"]["spec"];
    assert!(redis_pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v["secret"]["secretName"] == secret));
    let args = format!("{:?}", redis_pod["containers"][0]["args"]);
    for needed in [
        "--appendonly yes",
        "--maxmemory-policy noeviction",
        "--requirepass",
    ] {
        assert!(args.contains(needed), "{needed} in {args}");
    }
    let url = config["store"]["url"].as_str().unwrap();
    of_kind(
        &docs,
        "Service",
        url.split("//").nth(1).unwrap().split(':').next().unwrap(),
    );
    for volume in pod["volumes"].as_sequence().unwrap() {
        if volume["secret"].is_mapping() {
            let mode = &volume["secret"]["defaultMode"];
            assert!(
                mode.as_u64().is_some_and(|m| m & 0o007 == 0)
                    || mode.as_str().is_some_and(|m| m.ends_with('0')),
                "{volume:?}"
            );
        }
    }
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 35);
}

#[test]
fn the_sidecar_component_adds_the_same_gateway_as_the_example() {
    let component: serde_yaml::Value = serde_yaml::from_str(include_str!(
        "../../examples/kubernetes/sidecar/kustomization.yaml"
    ))
    .unwrap();
    assert_eq!(component["kind"], "Component");
    let patch_path = str_of(&component["patches"][0]["path"]);
    assert_eq!(patch_path, "sidecar-patch.yaml");
    let patch: serde_yaml::Value = serde_yaml::from_str(include_str!(
        "../../examples/kubernetes/sidecar/sidecar-patch.yaml"
    ))
    .unwrap();
    let docs = yaml_docs(&[include_str!("../../examples/kubernetes/deployment.yaml")]);
    let example = &of_kind(&docs, "Deployment", "notes")["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "authgate")
        .unwrap()
        .clone();
    let added = &patch["spec"]["template"]["spec"]["containers"][0];
    for key in [
        "image",
        "imagePullPolicy",
        "env",
        "ports",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
    ] {
        assert_eq!(added[key], example[key], "{key}");
    }
    let mounts = |c: &serde_yaml::Value| -> Vec<String> {
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| str_of(&m["mountPath"]).to_owned())
            .collect()
    };
    assert_eq!(mounts(added), mounts(example));
    assert_eq!(
        patch["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        45
    );
}

#[test]
fn the_images_ca_bundle_lets_an_https_upstream_without_ca_load() {
    let dockerfile = include_str!("../../Dockerfile");
    let bundle = instructions(dockerfile, "ENV")
        .into_iter()
        .find_map(|e| e.strip_prefix("SSL_CERT_FILE="))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::write_config(dir.path(), "https://127.0.0.1:1", "");
    let check = |file: &str| {
        authgate()
            .args(["check", "-c"])
            .arg(&config)
            .env("SSL_CERT_FILE", file)
            .env("SSL_CERT_DIR", "/nonexistent")
            .output()
            .unwrap()
    };
    let with = check(bundle);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let without = check("/nonexistent/ca.crt");
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("no root certificates"));
}

#[test]
fn the_systemd_unit_is_hardened_and_outlives_the_drain() {
    let unit = include_str!("../../examples/systemd/authgate.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key}="))
            .trim()
            .to_owned()
    };
    assert_eq!(value("User"), "authgate");
    assert!(value("ExecStart").ends_with("authgate run"));
    assert_eq!(value("NoNewPrivileges"), "yes");
    assert_eq!(value("ProtectSystem"), "strict");
    assert_eq!(value("StateDirectory"), "authgate");
    let stop: u64 = value("TimeoutStopSec").parse().unwrap();
    assert!(stop > 5 + 30, "TimeoutStopSec {stop}");
    // Its install steps' edits give a config that loads, with the users
    // file in the state folder made from the seed.
    let dir = tempfile::tempdir().unwrap();
    let mut init = authgate();
    init.args(["init", "--host", "intranet.example"])
        .arg(dir.path().join("etc"));
    let out = crate::support::output_with_stdin(init, "a long enough admin password\n");
    assert!(out.status.success());
    let config = dir.path().join("etc/gateway.toml");
    let state = dir.path().join("var-lib-authgate");
    std::fs::create_dir(&state).unwrap();
    let mut sed = std::process::Command::new("sed");
    sed.arg("-i");
    for edit in unit.split("-e '").skip(1) {
        let edit = edit.split('\'').next().unwrap();
        sed.arg("-e")
            .arg(edit.replace("/var/lib/authgate", state.to_str().unwrap()));
    }
    assert!(sed.arg(&config).status().unwrap().success());
    let edited = std::fs::read_to_string(&config).unwrap();
    assert!(edited.contains("\nseed = \"users.toml\"\n"), "{edited}");
    let loaded = authgate::Config::load(&config).unwrap();
    assert_eq!(loaded.users_file.unwrap(), state.join("users.toml"));
    assert_eq!(loaded.users.len(), 1, "the seed's admin");
}
