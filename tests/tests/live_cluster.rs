//! Against a real 3-replica cluster brought up by `tbctl local up`: readiness when a replica
//! dies, the quorum guard, restarts, metrics, the OpenAPI contract, tbctl, and a second `up`
//! that reuses the data files.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;
use tb_proto::endpoints::{Endpoint, ReplicaAction};

use common::{Cluster, Ports, tbctl};

fn kill_replica(cluster: &Cluster, replica: u8) -> u32 {
    let pid = cluster.replica_pid(replica).expect("replica running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    pid
}

fn failing_checks(report: &serde_json::Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|check| !check["ok"].as_bool().unwrap())
        .map(|check| check["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn readiness_quorum_guard_and_restart() {
    let cluster = Cluster::up("readiness", Ports::for_test(1));
    cluster.wait_all_ready();
    let admin = cluster.admin_token.clone();

    // A killed replica: its agent says 503 within 2 s, and the other two stay ready throughout,
    // sampled until it is back. The killed one is a backup (replica 2; at view 0 the primary is
    // replica 0): a dead primary makes the others view-change, and their readiness may then
    // rightly drop for a moment.
    let killed_pid = kill_replica(&cluster, 2);
    let took = cluster.wait_until("replica 2 not ready", Duration::from_secs(2), || {
        cluster.ready_code(2) == 503
    });
    println!("readiness went 503 {took:?} after SIGKILL");
    let report = cluster.ready_json(2);
    assert!(
        failing_checks(&report).contains(&"replica_process".to_string()),
        "{report}"
    );
    // The agent supervises its replica: it is restarted and becomes ready again.
    let mut samples = 0;
    cluster.wait_until("replica 2 ready again", Duration::from_secs(120), || {
        for other in [0, 1] {
            assert_eq!(
                cluster.ready_code(other),
                200,
                "replica {other} not ready while replica 2 was down: {}",
                cluster.ready_json(other)
            );
        }
        samples += 1;
        cluster.ready_code(2) == 200
    });
    assert!(samples > 10, "sampled the others only {samples} times");
    assert_ne!(cluster.replica_pid(2), Some(killed_pid));

    // Quorum guard: stopping 0 is safe while 1 and 2 are ready.
    let response = cluster.post(0, "/v1/replica/stop", Some(&admin), None);
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["outcome"], "stopped", "{body}");
    assert_eq!(cluster.ready_code(0), 503);
    // With 0 down, stopping 1 would leave one replica: refused, with the reason.
    let response = cluster.post(1, "/v1/replica/stop", Some(&admin), Some("{}"));
    assert_eq!(response.status(), 409);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["error"], "refused", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("quorum") && message.contains("replica 0"),
        "{message}"
    );
    assert!(
        cluster.replica_pid(1).is_some(),
        "a refused stop must not stop anything"
    );
    // force overrides, and is audit-logged.
    let response = cluster.post(
        1,
        "/v1/replica/stop",
        Some(&admin),
        Some("{\"force\": true}"),
    );
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(
        (body["outcome"].as_str(), body["forced"].as_bool()),
        (Some("stopped"), Some(true)),
        "{body}"
    );
    let audit = std::fs::read_to_string(cluster.state.state_dir.join("audit-1.log")).unwrap();
    let last: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["action"].as_str(), last["forced"].as_bool()),
        (Some("stop"), Some(true)),
        "{last}"
    );
    assert_eq!(last["token"], "admin");
    assert!(audit.contains("\"outcome\":\"refused\""), "{audit}");
    // Replica 2 alone has no quorum: its readiness says so (the client probe gets no answer).
    cluster.wait_until(
        "replica 2 not ready without quorum",
        Duration::from_secs(30),
        || cluster.ready_code(2) == 503,
    );
    let report = cluster.ready_json(2);
    assert!(
        failing_checks(&report).contains(&"client_probe".to_string()),
        "{report}"
    );
    // tbctl status exits non-zero and shows it.
    let output = tbctl(&[
        "status",
        "--inventory",
        &cluster.inventory_arg(),
        "--token-file",
        &cluster.token_file_arg(),
    ]);
    assert!(!output.status.success());

    // Bring both back with tbctl; the cluster recovers. `tbctl start` waits until the replica
    // runs in normal status (replica 2 runs: a quorum with it), so that the next guarded
    // command counts it: when it returns, the agent's status shows it.
    let (inventory, token_file) = (cluster.inventory_arg(), cluster.token_file_arg());
    let start = |replica: &str, extra: &[&str]| {
        let common = [
            "start",
            "--inventory",
            &inventory,
            "--token-file",
            &token_file,
            "--replica",
            replica,
        ];
        tbctl(&[&common[..], extra].concat())
    };
    let replica_state = |replica: u8| {
        let status: serde_json::Value = cluster
            .get(replica, "/v1/status", Some(&admin))
            .json()
            .unwrap();
        let replica = &status["replica"];
        (
            replica["running"].as_bool(),
            replica["replica_status"].as_i64(),
        )
    };
    let output = start("0", &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(replica_state(0), (Some(true), Some(0)), "{stdout}");
    // What it waits for is progress: on stderr (stdout holds the result alone).
    assert!(stderr.contains("waiting for"), "{stderr}");
    assert!(stdout.contains("in normal status"), "{stdout}");
    // --no-wait: back as soon as the process runs; its first status report comes 10 s later.
    let output = start("1", &["--no-wait"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(replica_state(1), (Some(true), None));
    cluster.wait_all_ready();
    // The forced stop's maintenance lease is released once the cluster answers again.
    cluster.wait_until("the lease to be free", Duration::from_secs(30), || {
        let lease: serde_json::Value = cluster.get(1, "/v1/lease", Some(&admin)).json().unwrap();
        lease["lease"].is_null()
    });

    // Restart waits until ready and reports the downtime.
    let asked = std::time::Instant::now();
    let response = cluster.post(2, "/v1/replica/restart", Some(&admin), None);
    let answered_ms = asked.elapsed().as_millis() as u64;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["outcome"], "restarted", "{body}");
    let downtime_ms = body["downtime_ms"].as_u64().unwrap();
    println!("restart downtime: {downtime_ms} ms");
    // Measured inside the request: never zero (the process was stopped and started) and never
    // longer than the request itself.
    assert!(
        downtime_ms > 0 && downtime_ms <= answered_ms,
        "downtime {downtime_ms} ms, request {answered_ms} ms"
    );
    assert_eq!(cluster.ready_code(2), 200);

    // The whole cluster, through tbctl: a wait, not one look. Restarting a primary costs a view
    // change, during which the other agents' probes go unanswered for a moment (on this 2-core
    // machine beside CI's other lane: up to ~3 s) and a newly started replica's first StatsD
    // report may be seconds away.
    let output = tbctl(&[
        "wait-ready",
        "--inventory",
        &cluster.inventory_arg(),
        "--token-file",
        &cluster.token_file_arg(),
        "--timeout-ms",
        "60000",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The inode of each data file: a re-format or replacement would change it.
fn data_file_inodes(cluster: &Cluster) -> Vec<u64> {
    let inode = |path: &std::path::Path| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
    };
    cluster
        .state
        .replicas
        .iter()
        .map(|replica| inode(&replica.data_file))
        .collect()
}

/// Checks a JSON value against a schema of docs/openapi.json.
fn assert_matches_schema(
    openapi: &serde_json::Value,
    schema_name: &str,
    value: &serde_json::Value,
) {
    let mut schema = openapi.clone();
    schema["$ref"] = serde_json::json!(format!("#/components/schemas/{schema_name}"));
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|error| format!("{error} at {}", error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{schema_name} does not match docs/openapi.json: {errors:?}\n{value}"
    );
}

#[test]
fn metrics_openapi_tbctl_and_second_up() {
    let cluster = Cluster::up("contract", Ports::for_test(2));
    cluster.wait_all_ready();
    let admin = cluster.admin_token.clone();

    // Metrics: a real parser (promtool) accepts them, and they carry the replica's StatsD stream.
    let response = cluster.get(0, "/metrics", Some(&cluster.peer_token));
    assert_eq!(response.status(), 200);
    let metrics = response.text().unwrap();
    for name in [
        "node_filesystem_avail_bytes{",
        "tb_agent_ready 1",
        "tb_agent_probe_ok 1",
        "tb_agent_replica_locked_bytes",
        "tb_replica_status{",
        "tb_replica_sync_stage{",
        "tb_grid_cache_hits{",
        "tb_agent_statsd_packets_total",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    // Exit 1 is a parse error. Exit 3 lists lint findings: only those that come from names we
    // keep on purpose are accepted (node_exporter's camelCase memory names, TigerBeetle's own
    // `_us`/`_ns`/`_count` names, and OpenMetrics counters, whose HELP names the family without
    // `_total`).
    let findings = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(0 | 3)),
        "promtool check metrics failed: {findings}"
    );
    let accepted = |line: &str| {
        (line.starts_with("node_memory_") && line.contains("'snake_case' not 'camelCase'"))
            || (line.starts_with("tb_")
                && !line.starts_with("tb_agent_")
                && line.contains("abbreviated units"))
            || (line.starts_with("tb_") && line.contains("should not have \"_count\" suffix"))
            || (line.ends_with("_total no help text"))
    };
    let unexpected: Vec<&str> = findings
        .lines()
        .filter(|line| !line.trim().is_empty() && !accepted(line))
        .collect();
    assert!(
        unexpected.is_empty(),
        "promtool check metrics: {unexpected:#?}"
    );

    // The OpenAPI document and the running agent agree.
    let openapi: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_dir().join("docs/openapi.json")).unwrap(),
    )
    .unwrap();
    let paths = openapi["paths"].as_object().unwrap();
    // Every route the agent serves (its router is built from this table) is documented.
    for endpoint in Endpoint::ALL {
        let paths_served: Vec<String> = if endpoint == Endpoint::ReplicaControl {
            ReplicaAction::ALL
                .iter()
                .map(|action| endpoint.path_with(&[action.as_str()]))
                .collect()
        } else {
            vec![endpoint.path().to_string()]
        };
        for path in paths_served {
            let method = endpoint.method().as_str();
            assert!(
                paths
                    .get(&path)
                    .is_some_and(|operations| operations.get(method).is_some()),
                "{method} {path} is served but not in docs/openapi.json"
            );
        }
    }
    // Every documented operation exists: without a token it answers 401 (unknown routes
    // answer 404 before any authentication), and documented GETs answer 2xx with one. Failed
    // authentications are throttled per address (20 a minute), and there are more operations:
    // each batch of anonymous requests comes from an address of its own on the loopback.
    let mut anonymous_sent = 0u8;
    for (path, operations) in paths {
        let concrete = path.replace("{id}", "20261123T101500Z-r0-1a2b3c4d");
        for method in operations.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + anonymous_sent / 15);
            anonymous_sent += 1;
            let anonymous = reqwest::blocking::Client::builder()
                .local_address(std::net::IpAddr::V4(source))
                .timeout(common::HTTP_TIMEOUT)
                .build()
                .unwrap()
                .request(method.clone(), cluster.url(0, &concrete))
                .send()
                .unwrap();
            let expected = if path == "/v1/health/live" { 200 } else { 401 };
            assert_eq!(
                anonymous.status(),
                expected,
                "{method} {path} from docs/openapi.json"
            );
            if method == reqwest::Method::GET && !path.contains('{') {
                let status = cluster.get(0, path, Some(&admin)).status();
                assert!(
                    status.is_success(),
                    "{path} is in docs/openapi.json but answers {status}"
                );
            }
        }
    }
    let ready: serde_json::Value = cluster
        .get(0, "/v1/health/ready", Some(&admin))
        .json()
        .unwrap();
    assert_matches_schema(&openapi, "ReadyReport", &ready);
    let status: serde_json::Value = cluster.get(0, "/v1/status", Some(&admin)).json().unwrap();
    assert_matches_schema(&openapi, "StatusReport", &status);
    assert_eq!(
        status["replica"]["binary_version"]
            .as_str()
            .map(|v| v.starts_with("0.16.78")),
        Some(true),
        "{status}"
    );
    assert!(
        status["replica"]["locked_bytes"].as_u64().unwrap() > 0,
        "{status}"
    );
    let unauthenticated: serde_json::Value = cluster.get(0, "/v1/status", None).json().unwrap();
    assert_matches_schema(&openapi, "ErrorBody", &unauthenticated);
    let start: serde_json::Value = cluster
        .post(0, "/v1/replica/start", Some(&admin), None)
        .json()
        .unwrap();
    assert_matches_schema(&openapi, "ControlResponse", &start);

    // tbctl status: a table with every replica ready, and JSON.
    let inventory = cluster.inventory_arg();
    let token_file = cluster.token_file_arg();
    let output = tbctl(&[
        "status",
        "--inventory",
        &inventory,
        "--token-file",
        &token_file,
    ]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        table.contains("normal") && table.contains("0.16.78"),
        "{table}"
    );
    let output = tbctl(&[
        "status",
        "--inventory",
        &inventory,
        "--token-file",
        &token_file,
        "--json",
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");
    // A bad token and a malformed inventory give clear errors.
    let bad_token = cluster.state.state_dir.join("bad.token");
    std::fs::write(&bad_token, "nope").unwrap();
    let output = tbctl(&[
        "status",
        "--inventory",
        &inventory,
        "--token-file",
        bad_token.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success() && stderr.contains("401"),
        "{stderr}"
    );
    let bad_inventory = cluster.state.state_dir.join("bad-inventory.json");
    std::fs::write(&bad_inventory, "{\"all\": {\"hosts\": {}}}").unwrap();
    let output = tbctl(&[
        "status",
        "--inventory",
        bad_inventory.to_str().unwrap(),
        "--token-file",
        &token_file,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("all.vars: must be an object"),
        "{stderr}"
    );
    // The inventory `tbctl local up` wrote passes the rules that Nix applies too
    // (docs/inventory.md), and resolves to this cluster.
    let output = tbctl(&["inventory", "check", "--json", &inventory]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let resolved: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(resolved["replica_count"], 3, "{resolved}");
    assert_eq!(
        resolved["agent_urls"].as_array().unwrap().len(),
        3,
        "{resolved}"
    );

    // Write an account, take the cluster down and up again: the data files are reused, never
    // re-formatted, so the account is still there.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cluster_id: u128 = cluster.state.cluster_id.parse().unwrap();
    let addresses = cluster
        .state
        .replicas
        .iter()
        .map(|replica| replica.address.clone())
        .collect::<Vec<_>>()
        .join(",");
    let account_id: u128 = 4242;
    runtime.block_on(async {
        let client = tigerbeetle_unofficial::Client::new(cluster_id, &addresses).unwrap();
        let account = tigerbeetle_unofficial::Account::new(account_id, 1, 1);
        tokio::time::timeout(
            Duration::from_secs(30),
            client.create_accounts(vec![account]),
        )
        .await
        .expect("create_accounts answered")
        .expect("account created");
    });
    let state_dir = cluster.state.state_dir.display().to_string();
    let inodes = data_file_inodes(&cluster);
    let output = tbctl(&["local", "down", "--state-dir", &state_dir]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for replica in 0..3 {
        assert!(
            cluster
                .http
                .get(cluster.url(replica, "/v1/health/live"))
                .send()
                .is_err(),
            "agent {replica} still up"
        );
    }
    let ports = Ports::for_test(2);
    let output = common::local_up(&cluster.state.state_dir, &ports);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inodes_after = data_file_inodes(&cluster);
    assert_eq!(inodes, inodes_after, "data files were replaced");
    runtime.block_on(async {
        let client = tigerbeetle_unofficial::Client::new(cluster_id, &addresses).unwrap();
        let found = tokio::time::timeout(
            Duration::from_secs(30),
            client.lookup_accounts(vec![account_id]),
        )
        .await
        .expect("lookup answered")
        .unwrap();
        assert_eq!(found.len(), 1, "the account written before `down` is gone");
    });

    // A lost data file is never re-formatted by `up`.
    let output = tbctl(&["local", "down", "--state-dir", &state_dir]);
    assert!(output.status.success());
    let lost = &cluster.state.replicas[1].data_file;
    let aside = lost.with_extension("aside");
    std::fs::rename(lost, &aside).unwrap();
    let output = common::local_up(&cluster.state.state_dir, &ports);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "up with a lost data file must refuse"
    );
    assert!(stderr.contains("recover"), "{stderr}");
    assert!(!lost.exists(), "up must not create a replacement data file");
    std::fs::rename(&aside, lost).unwrap();
}
