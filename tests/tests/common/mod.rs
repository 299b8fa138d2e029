//! Test harness: a real local cluster (real `tigerbeetle` replicas, real `tb-agent`s) brought up
//! by the project's own main command, `tbctl local up`, and torn down when the test ends.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use tb_tests::wait::{poll, wait_for, wait_until};
pub use tbctl::local::LocalState;

/// How often the harness looks again at a condition it waits for.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Control requests (restart) wait for readiness on the agent's side.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(180);

/// Where the release binaries are: beside the test executable's `deps/` directory.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TB_AGENT_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo")
        .to_path_buf()
}

pub fn tigerbeetle_bin() -> PathBuf {
    built_binary("TIGERBEETLE_BIN", "scripts/tigerbeetle-build", &[])
}

/// A 0.16.70 server: a release older than the agents' embedded client (0.16.78).
pub fn tigerbeetle_past_bin() -> PathBuf {
    built_binary(
        "TIGERBEETLE_PAST_BIN",
        "scripts/tigerbeetle-build-release",
        &["0.16.70"],
    )
}

/// A 0.16.78 server that carries 0.16.70 as its past release: replicas running 0.16.70
/// upgrade when it replaces their binary.
pub fn tigerbeetle_multiversion_bin() -> PathBuf {
    built_binary(
        "TIGERBEETLE_MULTIVERSION_BIN",
        "scripts/tigerbeetle-build-release",
        &["0.16.78", "--multiversion-past", "0.16.70"],
    )
}

/// The binary named by `variable`, else the one the build script prints (built once, cached).
fn built_binary(variable: &str, script: &str, args: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return path.into();
    }
    let output = Command::new(repo_dir().join(script))
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{script}: {error}"));
    assert!(
        output.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

pub struct Cluster {
    pub state: LocalState,
    pub admin_token: String,
    pub peer_token: String,
    pub http: reqwest::blocking::Client,
}

/// Port bases per test, so a test never meets another's leftovers in TIME_WAIT.
pub struct Ports {
    pub replica: u16,
    pub agent: u16,
    pub statsd: u16,
}

impl Ports {
    pub fn for_test(slot: u16) -> Ports {
        Ports {
            replica: 23000 + slot * 10,
            agent: 27000 + slot * 10,
            statsd: 28000 + slot * 10,
        }
    }
}

/// A blocking HTTP client. reqwest is built without a default TLS provider (see the workspace
/// Cargo.toml), so the process installs ring's first.
pub fn http_client(timeout: Duration) -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap()
}

/// `tbctl local up` for a test cluster: its own state directory and ports.
pub fn local_up(state_dir: &Path, ports: &Ports) -> std::process::Output {
    local_up_with(state_dir, ports, &tigerbeetle_bin())
}

/// `local_up` with a given `tigerbeetle` binary (a test may wrap the real one).
pub fn local_up_with(state_dir: &Path, ports: &Ports, tigerbeetle: &Path) -> std::process::Output {
    tbctl(&[
        "local",
        "up",
        "--state-dir",
        state_dir.to_str().unwrap(),
        "--tigerbeetle",
        tigerbeetle.to_str().unwrap(),
        "--replica-port-base",
        &ports.replica.to_string(),
        "--agent-port-base",
        &ports.agent.to_string(),
        "--statsd-port-base",
        &ports.statsd.to_string(),
        "--cache-grid",
        "256MiB",
    ])
}

pub fn tbctl(args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("tbctl"))
        .args(args)
        .output()
        .expect("run tbctl")
}

/// `tbctl ARGS` against `cluster`, with its inventory and the admin token.
pub fn tbctl_as_admin(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    let (inventory, token_file) = (cluster.inventory_arg(), cluster.token_file_arg());
    let mut all = vec!["--token-file", token_file.as_str()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--inventory", inventory.as_str()]);
    tbctl(&all)
}

impl Cluster {
    pub fn up(name: &str, ports: Ports) -> Cluster {
        Cluster::up_with(name, ports, &tigerbeetle_bin())
    }

    pub fn up_with(name: &str, ports: Ports, tigerbeetle: &Path) -> Cluster {
        // Everything that can fail before the cluster exists comes first: a panic after
        // `local up` but before `Cluster` exists would skip Drop and leak the replicas.
        let http = http_client(CONTROL_TIMEOUT);
        let state_dir =
            std::env::temp_dir().join(format!("tb-tests-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        let output = local_up_with(&state_dir, &ports, tigerbeetle);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let local_json = state_dir.join("local.json");
        let state: Option<LocalState> = std::fs::read(&local_json)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if !output.status.success() || state.is_none() {
            let logs = agent_logs(&state_dir);
            // Clean up before failing: leftover replicas would starve the next test of memory.
            let _ = tbctl(&["local", "down", "--state-dir", state_dir.to_str().unwrap()]);
            let _ = std::fs::remove_dir_all(&state_dir);
            panic!(
                "tbctl local up failed ({}):\n{stdout}\n{stderr}\n{logs}",
                output.status
            );
        }
        let state = state.unwrap();
        let read = |path: &Path| std::fs::read_to_string(path).unwrap().trim().to_string();
        Cluster {
            admin_token: read(&state.admin_token_file),
            peer_token: read(&state.peer_token_file),
            state,
            http,
        }
    }

    pub fn url(&self, replica: u8, path: &str) -> String {
        format!("{}{path}", self.state.agents[usize::from(replica)].url)
    }

    pub fn get(&self, replica: u8, path: &str, token: Option<&str>) -> reqwest::blocking::Response {
        let mut request = self.http.get(self.url(replica, path)).timeout(HTTP_TIMEOUT);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().unwrap()
    }

    pub fn post(
        &self,
        replica: u8,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> reqwest::blocking::Response {
        let mut request = self.http.post(self.url(replica, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        request.send().unwrap()
    }

    pub fn ready_code(&self, replica: u8) -> u16 {
        self.get(replica, "/v1/health/ready", Some(&self.admin_token))
            .status()
            .as_u16()
    }

    pub fn ready_json(&self, replica: u8) -> serde_json::Value {
        self.get(replica, "/v1/health/ready", Some(&self.admin_token))
            .json()
            .unwrap()
    }

    /// Polls until `condition` holds, at most `timeout`; returns how long it took.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl FnMut() -> bool,
    ) -> Duration {
        wait_until(what, timeout, POLL_INTERVAL, condition)
    }

    pub fn wait_all_ready(&self) {
        for replica in 0..self.state.agents.len() as u8 {
            self.wait_until(
                &format!("replica {replica} ready"),
                Duration::from_secs(120),
                || self.ready_code(replica) == 200,
            );
        }
    }

    pub fn replica_pid(&self, replica: u8) -> Option<u32> {
        let status: serde_json::Value = self
            .get(replica, "/v1/status", Some(&self.admin_token))
            .json()
            .unwrap();
        status["replica"]["pid"].as_u64().map(|pid| pid as u32)
    }

    /// `GET /v1/jobs/{id}` with the admin token.
    pub fn job(&self, replica: u8, job_id: &str) -> serde_json::Value {
        self.get(
            replica,
            &format!("/v1/jobs/{job_id}"),
            Some(&self.admin_token),
        )
        .json()
        .unwrap()
    }

    /// Waits until the job has ended (not `running`) and returns it.
    pub fn wait_job(&self, replica: u8, job_id: &str, timeout: Duration) -> serde_json::Value {
        wait_for(
            &format!("job {job_id} to end"),
            timeout,
            POLL_INTERVAL,
            || {
                let job = self.job(replica, job_id);
                if job["state"] == "running" {
                    Err(job)
                } else {
                    Ok(job)
                }
            },
        )
    }

    pub fn inventory_arg(&self) -> String {
        self.state.inventory.display().to_string()
    }

    pub fn token_file_arg(&self) -> String {
        self.state.admin_token_file.display().to_string()
    }
}

fn agent_logs(state_dir: &Path) -> String {
    let mut text = String::new();
    for index in 0..3 {
        let path = state_dir.join(format!("agent-{index}.log"));
        if let Ok(log) = std::fs::read_to_string(&path) {
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            text.push_str(&format!("--- {}\n", path.display()));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let state_dir = self.state.state_dir.to_str().unwrap().to_string();
        let output = tbctl(&["local", "down", "--state-dir", &state_dir]);
        if !output.status.success() {
            eprintln!(
                "tbctl local down: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // Belt and braces: never leave replicas behind to starve the next test of memory. The
        // state file is read again: a test may have restarted agents since `up`.
        let state_file = self.state.state_dir.join("local.json");
        let current: Option<LocalState> = std::fs::read(&state_file)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let agents = current.map_or_else(Vec::new, |state| state.agents);
        for agent in agents.iter().chain(&self.state.agents) {
            let pid = nix::unistd::Pid::from_raw(agent.pid);
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        }
        if std::env::var_os("TB_TESTS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.state.state_dir);
        }
    }
}

/// Waits until the agent at `url` answers its liveness probe (any answer: it listens); its `log`,
/// if it has one, is shown if it never does.
pub fn wait_live(client: &reqwest::blocking::Client, url: &str, log: Option<&Path>) {
    let live = format!("{url}/v1/health/live");
    let answered = poll(Duration::from_secs(20), Duration::from_millis(50), || {
        client.get(&live).send().map(drop)
    });
    if let Err(timed_out) = answered {
        panic!(
            "the agent at {url} did not start within {:?} ({}); its log:\n{}",
            timed_out.waited,
            timed_out.last,
            log.and_then(|log| std::fs::read_to_string(log).ok())
                .unwrap_or_default()
        );
    }
}

/// An agent a test started by itself (no cluster): killed and its directory removed on drop.
pub struct StandaloneAgent {
    pub child: std::process::Child,
    pub url: String,
    pub dir: PathBuf,
}

impl Drop for StandaloneAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of one sample line of a /metrics body (`name{labels} value`, `series` naming the
/// labels if any; the encoder writes `name{} value` for a series without labels), or None.
pub fn metric_sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix("{} ").or_else(|| rest.strip_prefix(' '))
        })
        .map(|value| value.trim().parse().unwrap())
}
