//! tbctl's command-line conventions, run as the binary, without a cluster: the inventory from
//! TBCTL_INVENTORY, replicas by host name, exit codes, `--json` on stdout alone, and the
//! generated completions and man page. Agents are "reached" on loopback ports where nothing
//! listens, so every request is refused at once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// inventories/example.json with every agent on a closed loopback port.
fn unreachable_inventory(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("inventories/example.json")).unwrap();
    let mut text = text;
    for index in 0..3 {
        text = text.replace(
            &format!("https://10.0.0.1{index}:7443"),
            &format!("https://127.0.0.{}:1", index + 1),
        );
    }
    let path = dir.join("inventory.json");
    std::fs::write(&path, text).unwrap();
    path
}

fn tbctl(args: &[&str], inventory: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tbctl"));
    command
        .args(args)
        .env_remove("TBCTL_INVENTORY")
        .env_remove("TBCTL_TOKEN_FILE")
        .env("TBCTL_TOKEN", "not-a-real-secret");
    if let Some(inventory) = inventory {
        command.env("TBCTL_INVENTORY", inventory);
    }
    command.output().expect("run tbctl")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tbctl-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn replica_by_host_name_and_unreachable_exit_code() {
    let dir = scratch("replica");
    let inventory = unreachable_inventory(&dir);
    // The inventory comes from TBCTL_INVENTORY; tb-1 is replica 1; its agent cannot be reached.
    let output = tbctl(&["stop", "--replica", "tb-1"], Some(&inventory));
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(
        text(&output).contains("replica 1 (tb-1, https://127.0.0.2:1)"),
        "{}",
        text(&output)
    );
    // An unknown name: a clear error naming the replicas there are, nothing sent.
    let output = tbctl(&["stop", "--replica", "tb-9"], Some(&inventory));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(
            "--replica tb-9: no such replica in the inventory; it has 0 (tb-0), 1 (tb-1), 2 (tb-2)"
        ),
        "{}",
        text(&output)
    );
    // Without --inventory or TBCTL_INVENTORY: a usage error.
    let output = tbctl(&["stop", "--replica", "1"], None);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn json_goes_to_stdout_alone() {
    let dir = scratch("json");
    let inventory = unreachable_inventory(&dir);
    // No agent answers: inventory order, the warning on stderr, the array on stdout.
    let output = tbctl(
        &["rollout", "order", "--timeout-ms", "2000", "--json"],
        Some(&inventory),
    );
    assert!(output.status.success(), "{}", text(&output));
    let order: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(order, serde_json::json!(["tb-0", "tb-1", "tb-2"]));
    // --json is accepted before the command too.
    let file = inventory.to_str().unwrap();
    let output = tbctl(&["--json", "inventory", "check", file], None);
    assert!(output.status.success(), "{}", text(&output));
    let cluster: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(cluster["replica_count"], 3, "{cluster}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn help_lists_the_exit_codes_and_generated_files_build() {
    let output = tbctl(&["--help"], None);
    let help = String::from_utf8_lossy(&output.stdout);
    for line in [
        "0  done",
        "1  failed",
        "2  bad usage",
        "3  refused",
        "4  an agent could not",
    ] {
        assert!(help.contains(line), "{help}");
    }
    let output = tbctl(&["completions", "bash"], None);
    let script = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && script.contains("complete -F _tbctl"),
        "{script}"
    );
    assert!(
        script.contains("--inventory") && script.contains("restore-drill"),
        "{script}"
    );
    let output = tbctl(&["man"], None);
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && page.contains(".TH tbctl 1"),
        "{page}"
    );
    // Every page tbctl.1 refers to (tbctl-restart(1)...) is written by `man --dir`.
    let dir = scratch("man");
    let output = tbctl(&["man", "--dir", dir.to_str().unwrap()], None);
    assert!(output.status.success(), "{}", text(&output));
    for page in ["tbctl.1", "tbctl-restart.1", "tbctl-lease-run.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        let title = format!(".TH {} 1", page.trim_end_matches(".1"));
        assert!(text.contains(&title), "{page}: {text}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn restore_checks_the_backup_id_before_any_request() {
    let dir = scratch("restore");
    let inventory = unreachable_inventory(&dir);
    // A path, not a backup id: refused by the argument parser (usage), nothing sent.
    let output = tbctl(
        &[
            "restore",
            "--replica",
            "tb-0",
            "--backup",
            "../../etc/passwd",
        ],
        Some(&inventory),
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    // A well-formed id to an agent that cannot be reached: exit 4, naming the replica.
    let output = tbctl(
        &[
            "restore",
            "--replica",
            "tb-0",
            "--backup",
            "20261123T101500Z-r0-1a2b3c4d",
        ],
        Some(&inventory),
    );
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert!(text(&output).contains("replica 0"), "{}", text(&output));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `tbctl inventory render --host NAME` on the committed inventories: every field a host needs,
/// computed as the agent and tbctl compute it; an unknown host is a usage error naming the hosts.
#[test]
fn inventory_render_prints_what_a_host_needs() {
    for file in ["inventories/example.json", "inventories/lab.json"] {
        let path = repo().join(file);
        let source = std::fs::read_to_string(&path).unwrap();
        let inventory: serde_json::Value = serde_json::from_str(&source).unwrap();
        let vars = &inventory["all"]["vars"];
        let cluster_id = vars["tigerbeetle_cluster_id"].as_str().unwrap();
        let data_dir = vars["tigerbeetle_data_dir"]
            .as_str()
            .unwrap_or("/var/lib/tigerbeetle");
        let hosts = inventory["all"]["hosts"].as_object().unwrap();
        for (name, host) in hosts {
            let output = tbctl(&["inventory", "render", "--host", name], Some(&path));
            assert!(output.status.success(), "{file} {name}: {}", text(&output));
            let render: serde_json::Value = serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|error| panic!("{file} {name}: {error}: {}", text(&output)));
            let replica = host["tigerbeetle_replica"].as_u64().unwrap();
            let data_file = format!("{data_dir}/{cluster_id}_{replica}.tigerbeetle");
            assert_eq!(render["host"], name.as_str());
            assert_eq!(render["replica"], replica);
            assert_eq!(render["cluster_id"], cluster_id);
            assert_eq!(render["address"], host["tigerbeetle_address"]);
            assert_eq!(render["addresses"].as_array().unwrap().len(), hosts.len());
            assert_eq!(render["data_file"], data_file.as_str());
            let start = render["replica_start_args"].as_array().unwrap();
            assert_eq!(start[0], "start");
            assert_eq!(start.last().unwrap(), data_file.as_str());
            let format = render["replica_format_args"].as_array().unwrap();
            assert_eq!(format[1], format!("--cluster={cluster_id}").as_str());
            assert_eq!(format[2], format!("--replica={replica}").as_str());
            let agent = &render["agent_config"];
            assert_eq!(agent["replica"]["index"], replica);
            assert_eq!(agent["replica"]["data_file"], data_file.as_str());
            assert_eq!(agent["server"]["listen"], render["agent_listen"]);
            let ip = host["tigerbeetle_address"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap();
            let peers = render["firewall"]["peer_ips"].as_array().unwrap();
            assert!(!peers.iter().any(|peer| peer == ip), "{render}");
        }
    }
    let example = repo().join("inventories/example.json");
    let output = tbctl(&["inventory", "render", "--host", "tb-9"], Some(&example));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(output.stdout.is_empty(), "{}", text(&output));
    assert!(
        text(&output).contains("host tb-9 is not in the inventory; its hosts are tb-0, tb-1, tb-2"),
        "{}",
        text(&output)
    );
}

/// A stand-in agent on loopback answering every request with 503 and a not-ready report whose
/// `replica_status` check fails, after 50 ms, for `connections` connections at most; its port.
fn not_ready_agent(connections: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            // As slow as a TLS handshake with a real agent: more than a 1 ms request timeout.
            std::thread::sleep(std::time::Duration::from_millis(50));
            let body = r#"{"ready":false,"checks":[{"name":"replica_status","ok":false,"detail":"stand-in: view change"}]}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn wait_ready_reports_the_last_verdicts_at_its_deadline() {
    // Found by the fault campaign: the poll that ran into the deadline had a 1 ms request
    // timeout, so the final report said "no answer within 1 ms" for every replica, ready or not.
    let dir = scratch("wait-ready");
    let port = not_ready_agent(1000);
    // inventories/example.json without TLS (plain HTTP on loopback, as `tbctl local` writes),
    // replica 0's agent the stand-in.
    let example = std::fs::read_to_string(unreachable_inventory(&dir)).unwrap();
    let mut document: serde_json::Value = serde_json::from_str(&example).unwrap();
    let vars = document["all"]["vars"].as_object_mut().unwrap();
    vars.retain(|key, _| !key.starts_with("tb_agent_tls"));
    let hosts = document["all"]["hosts"].as_object_mut().unwrap();
    for (index, host) in hosts.values_mut().enumerate() {
        let port = if index == 0 { port } else { 1 };
        host["tb_agent_url"] = format!("http://127.0.0.{}:{port}", index + 1).into();
    }
    let inventory = dir.join("one-agent.json");
    std::fs::write(&inventory, document.to_string()).unwrap();
    let output = tbctl(
        &["wait-ready", "--replica", "0", "--timeout-ms", "1500"],
        Some(&inventory),
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report = text(&output);
    let last = report.rsplit("within 1500 ms").next().unwrap();
    assert!(last.contains("stand-in: view change"), "{report}");
    assert!(!last.contains("no answer within"), "{report}");
    std::fs::remove_dir_all(dir).unwrap();
}
