//! The operations layer against real 3-replica clusters: an operation outlives its client, holds
//! its lock until it has finished, and is audited when it begins and when it ends; `force` on
//! restart; a backup copy past its deadline is abandoned and the replica started again.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Cluster, Ports};
use serde_json::Value;

fn audit_lines(cluster: &Cluster, replica: u8) -> Vec<Value> {
    let path = cluster.state.state_dir.join(format!("audit-{replica}.log"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Sends `POST path` with the admin token on a raw connection and drops it after `after`,
/// as a client whose timeout expired would.
fn post_and_hang_up(cluster: &Cluster, replica: u8, path: &str, after: Duration) {
    let url = &cluster.state.agents[usize::from(replica)].url;
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 0\r\n\r\n",
        cluster.admin_token
    )
    .unwrap();
    std::thread::sleep(after);
    drop(stream);
}

#[test]
fn a_dropped_restart_finishes_holds_the_lock_and_is_audited_and_force_restarts() {
    let cluster = Cluster::up("ops-drop", Ports::for_test(40));
    cluster.wait_all_ready();
    let admin = cluster.admin_token.clone();
    let pid_before = cluster.replica_pid(2).expect("replica 2 runs");

    // The client gives up 100 ms into a restart.
    post_and_hang_up(
        &cluster,
        2,
        "/v1/replica/restart",
        Duration::from_millis(100),
    );
    // The restart goes on and holds the lock: a second operation is refused as busy.
    let response = cluster.post(2, "/v1/replica/stop", Some(&admin), None);
    assert_eq!(response.status(), 409);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"], "busy", "{body}");
    // The replica comes back: a new process, ready.
    cluster.wait_until(
        "replica 2 ready again after the abandoned restart",
        Duration::from_secs(120),
        || {
            cluster.replica_pid(2).is_some_and(|pid| pid != pid_before)
                && cluster.ready_code(2) == 200
        },
    );
    // Both audit lines of the restart exist, with one job id; the busy stop has one line.
    let mut lines = Vec::new();
    cluster.wait_until(
        "the restart's closing audit line",
        Duration::from_secs(30),
        || {
            lines = audit_lines(&cluster, 2);
            lines
                .iter()
                .any(|line| line["action"] == "restart" && line["phase"] == "end")
        },
    );
    let restart: Vec<&Value> = lines
        .iter()
        .filter(|line| line["action"] == "restart")
        .collect();
    assert_eq!(restart.len(), 2, "{lines:?}");
    assert_eq!(
        (restart[0]["phase"].as_str(), restart[0]["outcome"].as_str()),
        (Some("begin"), Some("running")),
        "{lines:?}"
    );
    assert_eq!(
        (restart[1]["phase"].as_str(), restart[1]["outcome"].as_str()),
        (Some("end"), Some("restarted")),
        "{lines:?}"
    );
    let job_id = restart[0]["job_id"].as_str().unwrap();
    assert_eq!(restart[1]["job_id"], job_id);
    // The closing line says what the restart knew of its own lease when it stopped the
    // replica: taken, then acted on before its deadline (tests/chaos checks every agent's).
    let end = restart[1];
    let lease_id = end["lease_id"]
        .as_str()
        .expect("the lease on the closing line");
    assert!(end["detail"].as_str().unwrap().contains(lease_id), "{end}");
    let field = |name: &str| {
        end[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {end}"))
    };
    let (taken, acted, deadline) = (
        field("lease_taken_unix_ms"),
        field("lease_acted_unix_ms"),
        field("lease_deadline_unix_ms"),
    );
    assert!(taken <= acted && acted < deadline, "{end}");
    assert!(restart[0].get("lease_id").is_none(), "{lines:?}");
    assert_eq!(restart[0]["token"], "admin");
    let busy: Vec<&Value> = lines
        .iter()
        .filter(|line| line["action"] == "stop")
        .collect();
    assert_eq!(busy.len(), 1, "{lines:?}");
    assert_eq!(busy[0]["outcome"], "busy");
    // The job that carried the restart says how it ended.
    let finished = cluster.job(2, job_id);
    assert_eq!(
        (finished["state"].as_str(), finished["outcome"].as_str()),
        (Some("succeeded"), Some("restarted")),
        "{finished}"
    );
    assert!(finished["downtime_ms"].as_u64().unwrap() > 0, "{finished}");

    // force on restart: with replica 0 stopped, restarting 1 would leave one replica running.
    let response = cluster.post(0, "/v1/replica/stop", Some(&admin), None);
    assert_eq!(response.status(), 200, "{:?}", response.text());
    let pid_1 = cluster.replica_pid(1).expect("replica 1 runs");
    let response = cluster.post(1, "/v1/replica/restart", Some(&admin), None);
    assert_eq!(response.status(), 409);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"], "refused", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("force"),
        "{body}"
    );
    assert_eq!(
        cluster.replica_pid(1),
        Some(pid_1),
        "a refused restart must not touch the replica"
    );
    let response = cluster.post(
        1,
        "/v1/replica/restart",
        Some(&admin),
        Some("{\"force\": true}"),
    );
    assert_eq!(response.status(), 200, "{:?}", response.text());
    let body: Value = response.json().unwrap();
    assert_eq!(
        (body["outcome"].as_str(), body["forced"].as_bool()),
        (Some("restarted"), Some(true)),
        "{body}"
    );
    assert_ne!(cluster.replica_pid(1), Some(pid_1));
    let forced = audit_lines(&cluster, 1);
    let last = forced.last().unwrap();
    assert_eq!(
        (
            last["action"].as_str(),
            last["outcome"].as_str(),
            last["forced"].as_bool()
        ),
        (Some("restart"), Some("restarted"), Some(true)),
        "{last}"
    );
    let response = cluster.post(0, "/v1/replica/start", Some(&admin), None);
    assert_eq!(response.status(), 200, "{:?}", response.text());
    cluster.wait_all_ready();
}

/// An agent started by the test with its own config; killed (with its replica) on drop.
struct OwnAgent {
    child: std::process::Child,
    log: PathBuf,
}

impl OwnAgent {
    fn start(config: &Path, log: &Path) -> OwnAgent {
        use std::os::unix::process::CommandExt;
        let log_file = std::fs::File::create(log).unwrap();
        let child = std::process::Command::new(common::bin_dir().join("tb-agent"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .unwrap();
        OwnAgent {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Fails the test at once, with the agent's log, when the agent has exited (a config it
    /// refuses, for one), instead of a timeout later that does not say why.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the agent exited ({status}): {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for OwnAgent {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn process_exists(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
}

#[test]
fn a_backup_copy_past_its_deadline_is_abandoned_and_the_replica_started() {
    let cluster = Cluster::up("ops-deadline", Ports::for_test(41));
    cluster.wait_all_ready();
    let admin = cluster.admin_token.clone();

    // Replica 2's agent again, with a copy deadline no copy of its data file can meet.
    let replica_pid = cluster.replica_pid(2).unwrap();
    let agent = &cluster.state.agents[2];
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(agent.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    cluster.wait_until(
        "the old agent's replica to exit",
        Duration::from_secs(30),
        || !process_exists(replica_pid),
    );
    // Edited as the typed config, so the new agent reads every other setting unchanged. It also
    // answers a control request after 1 ms (202 with the job), for tbctl's follow below.
    let mut config = tb_proto::config::Config::load(&agent.config).unwrap();
    config.control.answer_wait_ms = Some(1);
    config
        .backup
        .as_mut()
        .expect("a [backup] section")
        .copy_timeout_ms = 1;
    let config_path = cluster.state.state_dir.join("agent-2-deadline.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let mut agent = OwnAgent::start(
        &config_path,
        &cluster.state.state_dir.join("agent-2-deadline.log"),
    );
    cluster.wait_until("replica 2 ready", Duration::from_secs(120), || {
        agent.assert_running();
        matches!(
            cluster
                .http
                .get(cluster.url(2, "/v1/health/ready"))
                .bearer_auth(&admin)
                .timeout(Duration::from_secs(5))
                .send(),
            Ok(response) if response.status() == 200
        )
    });
    let pid_before = cluster.replica_pid(2).unwrap();

    let response = cluster.post(2, "/v1/backups", Some(&admin), None);
    assert_eq!(response.status(), 202, "{:?}", response.text());
    let accepted: Value = response.json().unwrap();
    let job_id = accepted["job_id"].as_str().unwrap().to_string();
    let finished = cluster.wait_job(2, &job_id, Duration::from_secs(120));
    assert_eq!(finished["state"], "failed", "{finished}");
    assert!(
        finished["error"]
            .as_str()
            .unwrap()
            .contains("copy_timeout_ms"),
        "{finished}"
    );
    // The replica was started again, and nothing of the abandoned copy stays.
    cluster.wait_until(
        "replica 2 ready after the abandoned copy",
        Duration::from_secs(120),
        || {
            cluster.replica_pid(2).is_some_and(|pid| pid != pid_before)
                && cluster.ready_code(2) == 200
        },
    );
    let backup_dir = cluster.state.state_dir.join("backups/replica-2");
    let mut leftovers = Vec::new();
    cluster.wait_until(
        "the abandoned copy to be removed",
        Duration::from_secs(120),
        || {
            leftovers = std::fs::read_dir(&backup_dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            leftovers.is_empty()
        },
    );
    let listed: Value = cluster.get(2, "/v1/backups", Some(&admin)).json().unwrap();
    assert_eq!(listed, serde_json::json!([]));

    // A restart that outlasts the agent's answer wait is answered 202 with its job, and tbctl
    // follows the job to its end: the replica restarted and ready, exit 0.
    let response = cluster.post(2, "/v1/replica/restart", Some(&admin), None);
    assert_eq!(response.status(), 202, "{:?}", response.text());
    let job_id = response.json::<Value>().unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let restarted = cluster.wait_job(2, &job_id, Duration::from_secs(120));
    assert_eq!(restarted["state"], "succeeded", "{restarted}");
    let pid_before = cluster.replica_pid(2).unwrap();
    let output = common::tbctl(&[
        "restart",
        "--replica",
        "2",
        "--inventory",
        &cluster.inventory_arg(),
        "--token-file",
        &cluster.token_file_arg(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("replica 2: restart finished"), "{stdout}");
    assert!(cluster.replica_pid(2).is_some_and(|pid| pid != pid_before));
    assert_eq!(cluster.ready_code(2), 200);
}
