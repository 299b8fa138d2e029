//! What readiness may trust, against real replicas and real agents: a stopped (SIGSTOP) replica
//! is not ready at once; StatsD datagrams from any process but the replica's own are rejected,
//! even with the right tags, so they cannot make a frozen replica look healthy; the stale-StatsD,
//! memory-lock and disk-space checks fail with their name and reason.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Cluster, Ports, metric_sample as sample};
use serde_json::Value;

/// Slots 50-59 are this file's (see common::Ports).
const SLOT_SPOOF: u16 = 50;
const SLOT_CHECKS: u16 = 51;

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// A replica stopped with SIGSTOP, continued when dropped (also when the test fails, so the
/// cluster's teardown finds a process that can exit).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

fn failing_checks(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|check| !check["ok"].as_bool().unwrap())
        .map(|check| check["name"].as_str().unwrap().to_string())
        .collect()
}

/// The local address of the UDP socket connected to `statsd_port` on loopback: the replica's
/// StatsD socket (TigerBeetle connects one at startup and sends everything from it).
fn replica_statsd_source(pid: u32, statsd_port: u16) -> std::net::SocketAddr {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap();
    let remote = format!("0100007F:{statsd_port:04X}");
    let line = table
        .lines()
        .find(|line| line.split_whitespace().nth(2) == Some(remote.as_str()))
        .unwrap_or_else(|| panic!("no socket connected to {remote} in\n{table}"));
    let local = line.split_whitespace().nth(1).unwrap();
    let port = u16::from_str_radix(local.split_once(':').unwrap().1, 16).unwrap();
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// Sends what a healthy replica would say, with the right cluster and replica tags, every 100 ms
/// from two sockets of this process: an ordinary one, and one bound to the replica's own source
/// port on another loopback address. Stops when dropped.
struct Spoofer {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spoofer {
    fn start(statsd_port: u16, cluster_tag: &str, replica: u8, replica_source_port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let datagram = format!(
            "tb.replica_status:0|g|#cluster:{cluster_tag},replica:{replica}\n\
             tb.replica_sync_stage:0|g|#cluster:{cluster_tag},replica:{replica}\n"
        );
        let sockets = [
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind(("127.0.0.2", replica_source_port)).unwrap(),
        ];
        let thread = std::thread::spawn({
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            move || {
                while !stop.load(Ordering::Relaxed) {
                    for socket in &sockets {
                        socket
                            .send_to(datagram.as_bytes(), ("127.0.0.1", statsd_port))
                            .unwrap();
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Spoofer {
            stop,
            sent,
            thread: Some(thread),
        }
    }
}

impl Drop for Spoofer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_stopped_replica_is_unready_at_once_and_spoofed_statsd_cannot_revive_it() {
    let ports = Ports::for_test(SLOT_SPOOF);
    let replica: u8 = 1;
    let statsd_port = ports.statsd + u16::from(replica);
    let cluster = Cluster::up("trust-spoof", ports);
    cluster.wait_all_ready();
    let cluster_tag = format!("{:032x}", cluster.state.cluster_id.parse::<u128>().unwrap());
    let metrics = || {
        cluster
            .get(replica, "/metrics", Some(&cluster.admin_token))
            .text()
            .unwrap()
    };
    let pid = cluster.replica_pid(replica).expect("replica running");
    let source = replica_statsd_source(pid, statsd_port);

    // Fault 8: a stopped replica keeps its process, and its cluster keeps answering the probe;
    // its agent must still say 503 within seconds, naming the process check.
    let stopped = Stopped::new(pid);
    let took = cluster.wait_until(
        "replica 1 not ready after SIGSTOP",
        Duration::from_secs(5),
        || cluster.ready_code(replica) == 503,
    );
    let report = cluster.ready_json(replica);
    let process = check(&report, "replica_process");
    assert_eq!(process["ok"], false, "{report}");
    assert!(
        process["detail"].as_str().unwrap().contains("stopped"),
        "{report}"
    );
    eprintln!("503 {took:?} after SIGSTOP: {}", process["detail"]);
    let body = metrics();
    assert_eq!(sample(&body, "tb_agent_replica_running"), Some(0.0));
    let accepted_at_stop = sample(&body, "tb_agent_statsd_packets_total").unwrap();

    // Fault 3: another local process sends "status normal, not syncing" with the replica's tags.
    // Nothing it sends is accepted, so the StatsD checks go stale and name themselves, and
    // readiness stays 503 at every sample.
    let spoofer = Spoofer::start(statsd_port, &cluster_tag, replica, source.port());
    let stale_limit = Duration::from_secs(15); // health.statsd_stale_ms's default
    let mut samples = 0;
    cluster.wait_until(
        "replica_status to go stale while the spoofer sends",
        stale_limit + Duration::from_secs(10),
        || {
            let response = cluster.get(replica, "/v1/health/ready", Some(&cluster.admin_token));
            assert_eq!(response.status().as_u16(), 503, "ready while stopped");
            let report: Value = response.json().unwrap();
            samples += 1;
            let status = check(&report, "replica_status");
            status["ok"] == false && status["detail"].as_str().unwrap().contains("ms old")
        },
    );
    let report = cluster.ready_json(replica);
    let failing = failing_checks(&report);
    for name in ["replica_process", "replica_status", "replica_sync"] {
        assert!(failing.contains(&name.to_string()), "{report}");
    }
    assert!(
        check(&report, "replica_status")["detail"]
            .as_str()
            .unwrap()
            .contains("not_replica_socket"),
        "the detail names the rejections: {report}"
    );
    let body = metrics();
    let rejected = sample(
        &body,
        "tb_agent_statsd_rejected_total{reason=\"not_replica_socket\"}",
    )
    .unwrap();
    let sent = spoofer.sent.load(Ordering::Relaxed) as f64;
    assert!(
        rejected >= sent * 0.9,
        "{rejected} rejected of {sent} spoofed"
    );
    assert_eq!(
        sample(&body, "tb_agent_statsd_packets_total"),
        Some(accepted_at_stop),
        "no datagram accepted while the replica is stopped"
    );
    eprintln!("{samples} readiness samples, all 503; {rejected} spoofed datagrams rejected");

    // The real replica's datagrams are still accepted, spoofer or not: continued, it is ready
    // again after its next emit (every 10 s).
    drop(stopped);
    cluster.wait_until(
        "replica 1 ready again after SIGCONT",
        Duration::from_secs(40),
        || cluster.ready_code(replica) == 200,
    );
    let body = metrics();
    assert!(sample(&body, "tb_agent_statsd_packets_total").unwrap() > accepted_at_stop);
    assert_eq!(sample(&body, "tb_agent_replica_running"), Some(1.0));
    drop(spoofer);
}

/// One agent and its single-replica cluster, started by hand (not `tbctl local`) so the test can
/// set the health limits and wrap the replica binary.
struct SoloAgent {
    child: Child,
    dir: PathBuf,
    url: String,
    token: String,
}

impl Drop for SoloAgent {
    fn drop(&mut self) {
        // The replica dies with its agent (PR_SET_PDEATHSIG).
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("TB_TESTS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn memory_lock_and_disk_space_failures_are_named_in_readiness() {
    let ports = Ports::for_test(SLOT_CHECKS);
    let dir = std::env::temp_dir().join(format!("tb-tests-trust-checks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tigerbeetle = common::tigerbeetle_bin();
    let data_file = dir.join("0_0.tigerbeetle");
    let format = Command::new(&tigerbeetle)
        .args(["format", "--cluster=0", "--replica=0", "--replica-count=1"])
        .arg(&data_file)
        .output()
        .unwrap();
    assert!(
        format.status.success(),
        "{}",
        String::from_utf8_lossy(&format.stderr)
    );
    // The replica runs without CAP_IPC_LOCK and with RLIMIT_MEMLOCK at most 8 MiB (enough for
    // io_uring, far below its ~1 GB), as on a host where the unit forgot both: mlockall fails and
    // TigerBeetle logs "Unable to lock pages" and goes on.
    let wrapper = dir.join("tigerbeetle-without-memlock");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             limit=$(ulimit -l)\n\
             if [ \"$limit\" = unlimited ] || [ \"$limit\" -gt 8192 ]; then ulimit -l 8192; fi\n\
             exec setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock -- {} \"$@\"\n",
            tigerbeetle.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let token = "trust-checks-reader-0123456789".to_string();
    // No filesystem has 2^63 - 1 bytes free: the disk-space check must fail and say why.
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{agent}\"\n\
         [replica]\ncluster_id = \"0\"\nindex = 0\ncount = 1\naddresses = [\"127.0.0.1:{replica}\"]\n\
         data_file = \"{data}\"\nstatsd_port = {statsd}\n\
         [replica.run]\nmode = \"process\"\nbinary = \"{binary}\"\n\
         extra_args = [\"--cache-grid=256MiB\"]\nlog_file = \"{log}\"\n\
         [health]\nfree_bytes_min = 9223372036854775807\n\
         [[tokens]]\nname = \"reader\"\nscopes = [\"read\"]\nsha256 = \"{hash}\"\n",
        agent = ports.agent,
        replica = ports.replica,
        statsd = ports.statsd,
        data = data_file.display(),
        binary = wrapper.display(),
        log = dir.join("replica.log").display(),
        hash = tb_proto::auth::hash_secret_hex(&token),
    );
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(common::bin_dir().join("tb-agent"))
        .args(["serve", "--config", config_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let agent = SoloAgent {
        child,
        dir,
        url: format!("http://127.0.0.1:{}", ports.agent),
        token,
    };
    let http = common::http_client(Duration::from_secs(10));
    let ready = || -> Option<(u16, Value)> {
        let response = http
            .get(format!("{}/v1/health/ready", agent.url))
            .bearer_auth(&agent.token)
            .send()
            .ok()?;
        Some((response.status().as_u16(), response.json().ok()?))
    };

    // Wait until every other check passes (the replica's first StatsD emit comes after 10 s),
    // so the 503 is due to these two checks alone.
    let observed = common::poll(
        Duration::from_secs(90),
        Duration::from_millis(200),
        || match ready() {
            Some((code, report)) if failing_checks(&report) == ["disk_space", "memory_lock"] => {
                Ok((code, report))
            }
            other => Err(other),
        },
    );
    let (code, report) = observed.map(|(seen, _)| seen).unwrap_or_else(|timed_out| {
        panic!(
            "readiness never failed on exactly disk_space and memory_lock: {:?}; agent log:\n{}",
            timed_out.last,
            std::fs::read_to_string(agent.dir.join("agent.log")).unwrap_or_default()
        )
    });
    assert_eq!(code, 503, "{report}");
    assert_eq!(report["ready"], false);
    let memory = check(&report, "memory_lock")["detail"].as_str().unwrap();
    assert!(memory.contains("Unable to lock pages"), "{memory}");
    assert!(
        memory.contains("CAP_IPC_LOCK"),
        "says how to fix it: {memory}"
    );
    let disk = check(&report, "disk_space")["detail"].as_str().unwrap();
    assert!(
        disk.contains("free") && disk.contains("9223372036854775807"),
        "{disk}"
    );
    let body = http
        .get(format!("{}/metrics", agent.url))
        .bearer_auth(&agent.token)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(sample(&body, "tb_agent_ready"), Some(0.0));
    assert_eq!(
        sample(&body, "tb_agent_check_ok{check=\"memory_lock\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&body, "tb_agent_check_ok{check=\"disk_space\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&body, "tb_agent_check_ok{check=\"replica_status\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&body, "tb_agent_replica_locked_bytes"), Some(0.0));
}
