//! The HTTP surface of one real `tb-agent` whose replica is not running (no data file): auth,
//! token rotation, bad input and configuration errors. No cluster is needed for these, so they
//! run in seconds.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tb_proto::auth::hash_secret_hex;

const READER: &str = "reader-secret-0123456789";
const OPERATOR_OLD: &str = "operator-old-secret-0123456789";
const OPERATOR_NEW: &str = "operator-new-secret-0123456789";

use common::StandaloneAgent as Agent;

fn config(port: u16, tokens: &[(&str, &str, &str)], extra_server: &str) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nbody_size_max_bytes = 1024\n{extra_server}\n\
         [replica]\ncluster_id = \"7\"\nindex = 0\ncount = 1\naddresses = [\"127.0.0.1:{}\"]\n\
         data_file = \"/nonexistent/tb-tests/0_0.tigerbeetle\"\nstatsd_port = {}\n\
         [replica.run]\nmode = \"process\"\nbinary = \"{}\"\n",
        port + 1,
        port + 2,
        common::tigerbeetle_bin().display()
    );
    for (name, scopes, secret) in tokens {
        text.push_str(&format!(
            "[[tokens]]\nname = \"{name}\"\nscopes = {scopes}\nsha256 = \"{}\"\n",
            hash_secret_hex(secret)
        ));
    }
    text
}

/// `<temp>/tb-tests-standalone-<name>-<pid>/agent.toml` holding `config_text`; the directory is
/// the caller's to remove.
fn write_config(name: &str, config_text: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tb-tests-standalone-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, config_text).unwrap();
    config_path
}

fn spawn(name: &str, port: u16, config_text: &str) -> Agent {
    let config_path = write_config(name, config_text);
    let dir = config_path.parent().unwrap().to_path_buf();
    let child = Command::new(common::bin_dir().join("tb-agent"))
        .args(["serve", "--config", config_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent {
        child,
        url: format!("http://127.0.0.1:{port}"),
        dir,
    };
    common::wait_live(
        &common::http_client(Duration::from_secs(5)),
        &agent.url,
        None,
    );
    agent
}

fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let client = common::http_client(Duration::from_secs(30));
    let mut builder = match method {
        "GET" => client.get(url),
        "DELETE" => client.delete(url),
        _ => client.post(url),
    };
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    if let Some((content_type, body)) = body {
        builder = builder
            .header("content-type", content_type)
            .body(body.to_string());
    }
    let response = builder.timeout(Duration::from_secs(30)).send().unwrap();
    let status = response.status().as_u16();
    (status, response.text().unwrap())
}

fn error_code(body: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    value["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn auth_matrix_rotation_and_bad_input() {
    let tokens = [
        ("reader", "[\"read\"]", READER),
        ("operator-old", "[\"read\", \"control\"]", OPERATOR_OLD),
        ("operator-new", "[\"read\", \"control\"]", OPERATOR_NEW),
    ];
    let port = 29100;
    let agent = spawn(
        "auth",
        port,
        &config(port, &tokens, "auth_failures_per_minute_max = 1000"),
    );
    let url = |path: &str| format!("{}{path}", agent.url);

    // Liveness needs no token; everything else does.
    assert_eq!(request("GET", &url("/v1/health/live"), None, None).0, 200);
    for path in ["/v1/health/ready", "/v1/status", "/metrics"] {
        let (status, body) = request("GET", &url(path), None, None);
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(error_code(&body), "unauthenticated");
        assert_eq!(
            request("GET", &url(path), Some("not-a-token"), None).0,
            401,
            "{path}"
        );
        assert_ne!(
            request("GET", &url(path), Some(READER), None).0,
            401,
            "{path}"
        );
    }
    let response = common::http_client(Duration::from_secs(30))
        .get(url("/v1/status"))
        .send()
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    // /metrics: the text format unless OpenMetrics is asked for, as Prometheus asks.
    for (accept, content_type, eof) in [
        (None, "text/plain; version=0.0.4; charset=utf-8", false),
        (
            Some("*/*"),
            "text/plain; version=0.0.4; charset=utf-8",
            false,
        ),
        (
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            true,
        ),
    ] {
        let mut builder = common::http_client(Duration::from_secs(30))
            .get(url("/metrics"))
            .bearer_auth(READER);
        if let Some(accept) = accept {
            builder = builder.header("accept", accept);
        }
        let response = builder.send().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            content_type,
            "{accept:?}"
        );
        assert_eq!(response.headers()["vary"], "Accept");
        let body = response.text().unwrap();
        assert_eq!(body.ends_with("# EOF\n"), eof, "{accept:?}: {body}");
        assert!(
            body.lines().any(|line| line.starts_with("tb_agent_ready")),
            "{body}"
        );
    }

    // A read token on a control verb: 403, and nothing happens.
    let (status, body) = request("POST", &url("/v1/replica/stop"), Some(READER), None);
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(&body), "forbidden");

    // Rotation: old and new operator tokens both work while both are configured...
    for token in [OPERATOR_OLD, OPERATOR_NEW] {
        let (status, body) = request("POST", &url("/v1/replica/stop"), Some(token), None);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("already stopped"), "{body}");
    }

    // Bad input gets a clear 4xx and changes nothing.
    let stop = url("/v1/replica/stop");
    let (status, body) = request(
        "POST",
        &stop,
        Some(OPERATOR_NEW),
        Some(("application/json", "{\"force\": tru")),
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "malformed_json"),
        "{body}"
    );
    let (status, body) = request(
        "POST",
        &stop,
        Some(OPERATOR_NEW),
        Some(("application/json", "{\"forse\": true}")),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("unknown field `forse`"), "{body}");
    let (status, body) = request(
        "POST",
        &stop,
        Some(OPERATOR_NEW),
        Some(("application/json", "{\"force\": \"yes\"}")),
    );
    assert_eq!(status, 422, "{body}");
    // A body that is not an object (serde would read `[]` as a struct of defaults, which used to
    // answer 200 and act), and a lease id that is not one: refused before anything is done.
    for malformed in ["[]", "[true]", "null", "{\"lease_id\": \"\"}"] {
        let (status, body) = request(
            "POST",
            &stop,
            Some(OPERATOR_NEW),
            Some(("application/json", malformed)),
        );
        assert_eq!(
            (status, error_code(&body).as_str()),
            (422, "invalid_body"),
            "{malformed}: {body}"
        );
    }
    let (status, body) = request(
        "POST",
        &stop,
        Some(OPERATOR_NEW),
        Some(("text/plain", "{\"force\": true}")),
    );
    assert_eq!(status, 415, "{body}");
    let oversized = format!("{{\"force\": false, \"pad\": \"{}\"}}", "x".repeat(4096));
    let (status, body) = request(
        "POST",
        &stop,
        Some(OPERATOR_NEW),
        Some(("application/json", &oversized)),
    );
    assert_eq!(
        (status, error_code(&body).as_str()),
        (413, "body_too_large"),
        "{body}"
    );
    let (status, body) = request(
        "POST",
        &url("/v1/replica/explode"),
        Some(OPERATOR_NEW),
        None,
    );
    assert_eq!(status, 404, "{body}");
    let (status, _) = request("GET", &url("/v1/nothing-here"), Some(READER), None);
    assert_eq!(status, 404);

    // Starting a replica whose data file is missing is refused with the reason: never format.
    let (status, body) = request("POST", &url("/v1/replica/start"), Some(OPERATOR_NEW), None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("does not exist") && body.contains("recover"),
        "{body}"
    );

    // ...and after the old token is removed (agent restarted with the new config), it is refused.
    drop(agent);
    let agent = spawn("auth", port, &config(port, &[tokens[0], tokens[2]], ""));
    let url = |path: &str| format!("{}{path}", agent.url);
    assert_eq!(
        request("POST", &url("/v1/replica/stop"), Some(OPERATOR_OLD), None).0,
        401
    );
    assert_eq!(
        request("POST", &url("/v1/replica/stop"), Some(OPERATOR_NEW), None).0,
        200
    );
}

/// Failures from an address are throttled, but only failures: a flood of wrong tokens from the
/// orchestrator's address must not lock the orchestrator's valid token out.
/// A backup id that is not one (it could name a path outside the backup directory) is refused
/// on every route that takes one with 400 `bad_request` and the id rule's own sentence, before
/// any lock, directory or job; the refusals of operations (verify, delete, restore) are audited.
#[test]
fn invalid_backup_ids_get_the_rule_s_sentence_and_operations_audit_the_refusal() {
    let port = 29140;
    let dir = std::env::temp_dir().join(format!("tb-tests-backup-ids-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.jsonl");
    let text = config(
        port,
        &[(
            "operator",
            "[\"read\", \"backup\", \"control\"]",
            OPERATOR_NEW,
        )],
        &format!("audit_log = \"{}\"", audit.display()),
    );
    let agent = spawn("backup-ids", port, &text);
    let routes = [
        ("GET", "/v1/backups/{id}", false),
        ("GET", "/v1/backups/{id}/file", false),
        ("POST", "/v1/backups/{id}/verify", true),
        ("DELETE", "/v1/backups/{id}", true),
        ("POST", "/v1/backups/{id}/restore", true),
    ];
    // As sent (percent-encoded), and as the agent reads it.
    let ids = [
        ("x", "x"),
        ("..%2F..%2Fetc", "../../etc"),
        (
            "20261123T101500Z-r0-1a2b3c4d%2F..",
            "20261123T101500Z-r0-1a2b3c4d/..",
        ),
    ];
    for (method, path, _) in routes {
        for (sent, read) in ids {
            let url = format!("{}{}", agent.url, path.replace("{id}", sent));
            let (status, body) = request(method, &url, Some(OPERATOR_NEW), None);
            let expected = tb_proto::ids::validate_backup_id(read)
                .unwrap_err()
                .to_string();
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                (status, value["error"].as_str(), value["message"].as_str()),
                (400, Some("bad_request"), Some(expected.as_str())),
                "{method} {url}: {body}"
            );
        }
    }
    let audited = routes.iter().filter(|(_, _, audited)| *audited).count() * ids.len();
    let lines = common::wait_for(
        "the audit lines of the refusals",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            if lines.len() >= audited {
                Ok(lines)
            } else {
                Err(text)
            }
        },
    );
    assert_eq!(lines.len(), audited, "{lines:?}");
    for line in &lines {
        assert_eq!(line["outcome"], "refused", "{line}");
        assert!(
            line["detail"]
                .as_str()
                .unwrap()
                .starts_with("invalid backup id"),
            "{line}"
        );
    }
    drop(agent);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failures_are_throttled_and_valid_tokens_still_served() {
    let port = 29110;
    let agent = spawn(
        "throttle",
        port,
        &config(
            port,
            &[("reader", "[\"read\"]", READER)],
            "auth_failures_per_minute_max = 3",
        ),
    );
    let status = format!("{}/v1/status", agent.url);
    for _ in 0..3 {
        assert_eq!(request("GET", &status, Some("wrong"), None).0, 401);
    }
    let (code, body) = request("GET", &status, Some("wrong"), None);
    assert_eq!(
        (code, error_code(&body).as_str()),
        (429, "throttled"),
        "{body}"
    );

    // A wrong-token flood from 127.0.0.1 while the valid token, from the same address, keeps
    // asking: every valid request gets 200, every flood request 429.
    let flooding = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            let client = common::http_client(Duration::from_secs(10));
            let mut codes = std::collections::BTreeMap::<u16, u32>::new();
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let code = client
                    .get(&status)
                    .bearer_auth("wrong")
                    .send()
                    .unwrap()
                    .status()
                    .as_u16();
                *codes.entry(code).or_default() += 1;
            }
            codes
        });
        let client = common::http_client(Duration::from_secs(10));
        let started = Instant::now();
        let mut served = 0;
        while started.elapsed() < Duration::from_secs(3) {
            let response = client.get(&status).bearer_auth(READER).send().unwrap();
            assert_eq!(response.status().as_u16(), 200, "valid token refused");
            served += 1;
        }
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        let codes = flood.join().unwrap();
        assert!(served > 10, "only {served} valid requests in 3 s");
        assert_eq!(
            codes.keys().copied().collect::<Vec<_>>(),
            vec![429],
            "{codes:?}"
        );
        assert!(codes[&429] > 10, "{codes:?}");
    });

    // The scheme is case-insensitive (RFC 9110): `bearer` works as `Bearer` does.
    for scheme in ["bearer", "BEARER"] {
        let response = common::http_client(Duration::from_secs(10))
            .get(&status)
            .header("authorization", format!("{scheme} {READER}"))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{scheme}");
    }
}

#[test]
fn invalid_configs_stop_the_agent_with_the_field_and_reason() {
    let base = config(29120, &[("reader", "[\"read\"]", READER)], "");
    let cases = [
        (base.replace("count = 1", "count = 9"), "replica.count"),
        (
            base.replace("cluster_id = \"7\"", "cluster_id = 7"),
            "cluster_id",
        ),
        (base.replace("index = 0", "index = 1"), "replica.index"),
        (
            base.replace("[server]", "[server]\nlisten_address = \"x\""),
            "unknown field `listen_address`",
        ),
        (
            base.replace("mode = \"process\"", "mode = \"docker\""),
            "docker",
        ),
        (
            base.replacen(&hash_secret_hex(READER), READER, 1),
            "tokens[0].sha256",
        ),
        ("this is not toml".to_string(), "config"),
    ];
    let dir = std::env::temp_dir().join(format!("tb-tests-configs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (index, (text, expected)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad-{index}.toml"));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        for subcommand in ["check-config", "serve"] {
            let output = Command::new(common::bin_dir().join("tb-agent"))
                .args([subcommand, "--config", path.to_str().unwrap()])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{subcommand} case {index}: {stderr}"
            );
            assert!(
                stderr.contains(expected),
                "{subcommand} case {index}: wanted {expected:?} in {stderr}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check-config --print-effective` prints what the agent reads: the file's values and every
/// default filled in (tests/ansible/compare-agents compares the NixOS and Ansible configs by it).
#[test]
fn check_config_prints_the_effective_config() {
    let text = config(29125, &[("reader", "[\"read\"]", READER)], "");
    let path = write_config("effective", &text);
    let output = Command::new(common::bin_dir().join("tb-agent"))
        .args(["check-config", "--print-effective", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    assert!(output.status.success(), "{output:?}");
    let effective: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // From the file.
    assert_eq!(effective["server"]["listen"], "127.0.0.1:29125");
    assert_eq!(effective["server"]["body_size_max_bytes"], 1024);
    assert_eq!(effective["replica"]["cluster_id"], "7");
    assert_eq!(effective["tokens"][0]["sha256"], hash_secret_hex(READER));
    // Defaults the file leaves out.
    assert_eq!(effective["control"]["ready_timeout_ms"], 120_000);
    assert_eq!(effective["health"]["memlock_ratio_min"], 0.9);
    assert_eq!(effective["log"]["format"], "text");
    assert!(effective["backup"].is_null(), "no [backup]: backups off");
}

/// Backups of a stopped replica need no cluster: hooks (success, failure, timeout, environment)
/// and retention, with a real agent on a real file. systemd mode with a unit that does not exist
/// keeps the agent from starting anything.
#[test]
fn hooks_and_retention() {
    let port = 29130;
    let dir = std::env::temp_dir().join(format!("tb-tests-hooks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let data_file = dir.join("data/0_0.tigerbeetle");
    let content: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&data_file, &content).unwrap();
    let shipped_log = dir.join("shipped.log");
    let base = config(
        port,
        &[("operator", "[\"read\", \"backup\"]", OPERATOR_NEW)],
        "",
    );
    let text = base
        .replace(
            "/nonexistent/tb-tests/0_0.tigerbeetle",
            data_file.to_str().unwrap(),
        )
        .replace(
            "mode = \"process\"",
            "mode = \"systemd\"\nunit = \"tb-tests-absent.service\"",
        )
        + &format!(
            "[backup]\ndir = \"{}\"\nkeep_last = 2\nfree_margin_bytes = 0\n\
             [[backup.hooks]]\nname = \"ship\"\ncommand = [\"sh\", \"-c\", \
             \"echo $TB_BACKUP_ID $(basename $TB_BACKUP_DIR) $(test -f $TB_BACKUP_MANIFEST && echo manifest) >> {}\"]\n\
             [[backup.hooks]]\nname = \"broken\"\ncommand = [\"sh\", \"-c\", \"echo oops; exit 3\"]\n\
             [[backup.hooks]]\nname = \"slow\"\ncommand = [\"sleep\", \"5\"]\ntimeout_ms = 300\n",
            dir.join("backups").display(),
            shipped_log.display()
        );
    let agent = spawn("hooks", port, &text);
    let url = |path: &str| format!("{}{path}", agent.url);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, body) = request("POST", &url("/v1/backups"), Some(OPERATOR_NEW), None);
        assert_eq!(status, 202, "{body}");
        let accepted: serde_json::Value = serde_json::from_str(&body).unwrap();
        let job_url = url(&format!(
            "/v1/jobs/{}",
            accepted["job_id"].as_str().unwrap()
        ));
        let job = common::wait_for(
            "the backup job to end",
            Duration::from_secs(60),
            Duration::from_millis(50),
            || {
                let (_, body) = request("GET", &job_url, Some(OPERATOR_NEW), None);
                let job: serde_json::Value = serde_json::from_str(&body).unwrap();
                if job["state"] == "running" {
                    Err(job)
                } else {
                    Ok(job)
                }
            },
        );
        assert_eq!(job["state"], "succeeded", "{job}");
        assert!(
            job["downtime_ms"].is_null(),
            "a stopped replica has no downtime: {job}"
        );
        // Back to back, often in the same second: the order is the manifests' sequence.
        ids.push(accepted["backup_id"].as_str().unwrap().to_string());
    }

    // Retention kept the newest two.
    let (_, body) = request("GET", &url("/v1/backups"), Some(OPERATOR_NEW), None);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let listed_ids: Vec<&str> = listed
        .iter()
        .map(|backup| backup["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed_ids, vec![ids[2].as_str(), ids[1].as_str()]);

    // Each hook's outcome is recorded; a failed hook leaves the backup, unshipped.
    let newest = &listed[0];
    assert_eq!(newest["shipped"], false, "{newest}");
    assert_eq!(newest["verification"]["ok"], true, "{newest}");
    let hooks = newest["hooks"].as_array().unwrap();
    assert_eq!(
        (hooks[0]["name"].as_str(), hooks[0]["ok"].as_bool()),
        (Some("ship"), Some(true)),
        "{newest}"
    );
    assert_eq!(
        (hooks[1]["exit_code"].as_i64(), hooks[1]["output"].as_str()),
        (Some(3), Some("oops\n")),
        "{newest}"
    );
    assert!(
        hooks[2]["error"].as_str().unwrap().contains("timed out"),
        "{newest}"
    );
    // The hook saw the backup's id, directory and manifest.
    let shipped = std::fs::read_to_string(&shipped_log).unwrap();
    for id in &ids {
        assert!(
            shipped.contains(&format!("{id} {id} manifest")),
            "{shipped}"
        );
    }
    // The stored copy decompresses to the original bytes.
    let manifest = &newest["manifest"];
    assert_eq!(
        manifest["data_blake3"].as_str().unwrap(),
        blake3::hash(&content).to_hex().as_str()
    );
    let stored = dir
        .join("backups")
        .join(&ids[2])
        .join(manifest["file"].as_str().unwrap());
    assert_eq!(
        zstd::decode_all(std::fs::File::open(stored).unwrap()).unwrap(),
        content
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
