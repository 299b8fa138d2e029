//! `tbctl local up|down`: a cluster on 127.0.0.1 with one agent per replica, each agent running
//! its replica as a child process. Data files are formatted once and then only ever reused.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::client::{AgentClient, Token, read_secret_file};
use super::local_files::{self, AgentSettings, ClusterIdentity, FormatPlan, Layout, TokenHashes};
use super::process;
use super::status;
use tb_proto::auth;
use tb_proto::config::Config;
use tb_proto::inventory::Inventory;
use tb_proto::tigerbeetle;

/// `tigerbeetle format` takes well under a second; a minute means it is stuck.
const FORMAT_TIMEOUT_MS: u64 = 120_000;
/// Small state files (cluster.json, local.json) are a few KiB at most.
const STATE_FILE_SIZE_MAX_BYTES: u64 = 64 * 1024;
/// Log lines shown when an agent or a format fails.
const LOG_TAIL_LINES: usize = 20;
/// How often `local down` checks whether the signalled processes are gone.
const STOP_POLL_INTERVAL_MS: u64 = 100;
/// After SIGKILL the kernel needs only moments; waiting longer would hide a real problem.
const KILL_WAIT_MS: u64 = 5_000;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Holds data files, configs, tokens and logs. Default: $HOME/.local/state/tbctl/local.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The `tigerbeetle` server binary (scripts/tigerbeetle-build prints its path).
    #[arg(long, env = "TIGERBEETLE_BIN", value_name = "PATH")]
    tigerbeetle: PathBuf,
    /// Default: `tb-agent` beside this tbctl executable.
    #[arg(long, value_name = "PATH")]
    agent_binary: Option<PathBuf>,
    /// How many replicas the local cluster has (1, or 3 and more for a quorum guard to matter).
    #[arg(long, default_value_t = 3)]
    replica_count: u8,
    /// Replica i listens on this port + i.
    #[arg(long, default_value_t = 3000)]
    replica_port_base: u16,
    /// Agent i listens on this port + i.
    #[arg(long, default_value_t = 7000)]
    agent_port_base: u16,
    /// Agent i receives replica i's StatsD metrics on this UDP port + i.
    #[arg(long, default_value_t = 8125)]
    statsd_port_base: u16,
    /// Each replica's grid cache (`tigerbeetle start --cache-grid`).
    #[arg(long, default_value = "256MiB")]
    cache_grid: String,
    /// How long to wait for every replica to be ready.
    #[arg(long, default_value_t = 180_000, value_parser = super::timeout_ms)]
    ready_timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Default: $HOME/.local/state/tbctl/local.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How long agents get to stop their replicas and exit after SIGTERM, before SIGKILL.
    #[arg(long, default_value_t = 30_000, value_parser = super::timeout_ms)]
    stop_timeout_ms: u64,
}

/// `STATE/local.json`: what `local down` and scripts need to find the cluster's pieces.
#[derive(Debug, Serialize, Deserialize)]
pub struct LocalState {
    pub state_dir: PathBuf,
    pub cluster_id: String,
    pub inventory: PathBuf,
    pub admin_token_file: PathBuf,
    pub peer_token_file: PathBuf,
    pub agents: Vec<AgentEntry>,
    pub replicas: Vec<ReplicaFiles>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AgentEntry {
    pub replica: u8,
    pub url: String,
    pub pid: i32,
    pub config: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReplicaFiles {
    pub replica: u8,
    pub address: String,
    pub data_file: PathBuf,
    pub log: PathBuf,
}

pub async fn up(args: &UpArgs) -> anyhow::Result<ExitCode> {
    local_files::check_cache_grid(&args.cache_grid)?;
    let (tigerbeetle, agent_binary) = binaries(args)?;
    let state_dir = create_state_dir(&state_dir_or_default(&args.state_dir)?)?;
    let layout = Layout::new(
        state_dir,
        args.replica_count,
        args.replica_port_base,
        args.agent_port_base,
        args.statsd_port_base,
    )?;
    let _lock = lock(&layout.state_dir)?;
    let previous = read_state(&layout.state_file())?;

    let (cluster, cluster_id) =
        prepare_data_files(&layout, &tigerbeetle, previous.as_ref()).await?;
    let (inventory_json, inventory) = local_inventory(&layout, &cluster)?;
    let settings = AgentSettings {
        tigerbeetle: &tigerbeetle,
        cache_grid: &args.cache_grid,
    };
    // Every check comes before the first write, so that a refused up changes nothing.
    let plans = plan_agents(&layout, &inventory, &settings, previous.as_ref())?;

    local_files::write_atomic(&layout.inventory_file(), inventory_json.as_bytes(), 0o600)?;
    let (agents, mut children) = start_agents(&layout, &agent_binary, plans)?;
    let state = LocalState {
        state_dir: layout.state_dir.clone(),
        cluster_id: cluster.cluster_id.clone(),
        inventory: layout.inventory_file(),
        admin_token_file: layout.admin_token_file(),
        peer_token_file: layout.peer_token_file(),
        agents,
        replicas: layout
            .replicas()
            .map(|replica| ReplicaFiles {
                replica,
                address: layout.replica_address(replica),
                data_file: layout.data_file(cluster_id, replica),
                log: layout.replica_log(replica),
            })
            .collect(),
    };
    // Written before waiting, so that `local down` can stop the agents even if this wait fails.
    let state_json = serde_json::to_string_pretty(&state)?;
    local_files::write_atomic(&layout.state_file(), state_json.as_bytes(), 0o600)?;
    wait_until_ready(
        &layout,
        &inventory,
        &state,
        &mut children,
        args.ready_timeout_ms,
    )
    .await
}

/// `--tigerbeetle` and the agent binary, both checked to be executable files.
fn binaries(args: &UpArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    let tigerbeetle = executable(&args.tigerbeetle, "--tigerbeetle")?;
    let agent_binary = match &args.agent_binary {
        Some(path) => executable(path, "--agent-binary")?,
        None => {
            let beside = std::env::current_exe()?.with_file_name("tb-agent");
            executable(&beside, "tb-agent beside tbctl")
                .context("build it (`cargo build --bin tb-agent`) or pass --agent-binary PATH")?
        }
    };
    Ok((tigerbeetle, agent_binary))
}

/// The local inventory (its JSON, and parsed): the layout, the cluster and the tokens' hashes.
fn local_inventory(
    layout: &Layout,
    cluster: &ClusterIdentity,
) -> anyhow::Result<(String, Inventory)> {
    let admin_sha256 = auth::token_sha256(&secret(&layout.admin_token_file())?)?;
    let peer_sha256 = auth::token_sha256(&secret(&layout.peer_token_file())?)?;
    let tokens = TokenHashes {
        admin_sha256: &admin_sha256,
        peer_sha256: &peer_sha256,
    };
    let file = local_files::inventory(layout, &cluster.cluster_id, &tokens)?;
    let json = serde_json::to_string_pretty(&file)?;
    let inventory = Inventory::parse(&json).context("the generated inventory")?;
    Ok((json, inventory))
}

/// One agent's config, and the pid of the agent already running it (from an earlier up).
struct AgentPlan {
    replica: u8,
    config_path: PathBuf,
    config: String,
    running: Option<i32>,
}

/// Every agent's config, checked; refused when a running agent has another config.
fn plan_agents(
    layout: &Layout,
    inventory: &Inventory,
    settings: &AgentSettings,
    previous: Option<&LocalState>,
) -> anyhow::Result<Vec<AgentPlan>> {
    let down_hint = down_hint(layout);
    let mut plans = Vec::new();
    for replica in layout.replicas() {
        let config_path = layout.agent_config(replica);
        let config = local_files::agent_config(layout, inventory, replica, settings)?;
        Config::parse(&config)
            .map_err(|error| anyhow::anyhow!("generated {}: {error}", config_path.display()))?;
        let running = running_agent(previous, replica, &config_path);
        if let Some(pid) = running {
            // The running agent read its config when it started. Rewriting the file under it
            // would make the file lie; a changed setting needs a restart.
            let current = std::fs::read_to_string(&config_path).unwrap_or_default();
            anyhow::ensure!(
                current == config,
                "agent {replica} (pid {pid}) is running with a different configuration than \
                 these flags produce; run {down_hint} first, then `tbctl local up` again"
            );
        }
        plans.push(AgentPlan {
            replica,
            config_path,
            config,
            running,
        });
    }
    Ok(plans)
}

/// The pid of replica `replica`'s agent from an earlier up, when it still runs that config.
fn running_agent(previous: Option<&LocalState>, replica: u8, config_path: &Path) -> Option<i32> {
    previous
        .and_then(|state| state.agents.iter().find(|agent| agent.replica == replica))
        .map(|agent| agent.pid)
        .filter(|pid| process::is_agent(*pid, config_path))
}

fn down_hint(layout: &Layout) -> String {
    format!(
        "`tbctl local down --state-dir {}`",
        shell_quote(&layout.state_dir)
    )
}

/// Writes the configs of the agents not running yet and starts them. Returns every agent, and
/// the children started now (the agents of an earlier up are not our children).
fn start_agents(
    layout: &Layout,
    agent_binary: &Path,
    plans: Vec<AgentPlan>,
) -> anyhow::Result<(Vec<AgentEntry>, Vec<Option<Child>>)> {
    let mut agents = Vec::new();
    let mut children: Vec<Option<Child>> = Vec::new();
    for plan in plans {
        let replica = plan.replica;
        let pid = match plan.running {
            Some(pid) => {
                crate::say!("agent {replica}: already running (pid {pid})");
                children.push(None);
                pid
            }
            None => {
                local_files::write_atomic(&plan.config_path, plan.config.as_bytes(), 0o600)?;
                let args = [
                    "serve".as_ref(),
                    "--config".as_ref(),
                    plan.config_path.as_os_str(),
                ];
                let child =
                    process::spawn_detached(agent_binary, &args, &layout.agent_log(replica))?;
                let pid = i32::try_from(child.id()).expect("Linux pids fit in i32");
                crate::say!("agent {replica}: started (pid {pid})");
                children.push(Some(child));
                pid
            }
        };
        agents.push(AgentEntry {
            replica,
            url: layout.agent_url(replica),
            pid,
            config: plan.config_path,
            log: layout.agent_log(replica),
        });
    }
    Ok((agents, children))
}

/// Waits for every replica to be ready, prints the summary and the `--json` result.
async fn wait_until_ready(
    layout: &Layout,
    inventory: &Inventory,
    state: &LocalState,
    children: &mut [Option<Child>],
    ready_timeout_ms: u64,
) -> anyhow::Result<ExitCode> {
    let status_command = status_command(state)?;
    let hint = format!(
        "the agents keep running: inspect with `{status_command}`, stop with {}",
        down_hint(layout)
    );
    crate::say!(
        "waiting for {} replicas to be ready (up to {} s)",
        layout.replica_count,
        ready_timeout_ms / 1000
    );
    let token = Token::from_file(&layout.admin_token_file())?;
    let client = AgentClient::new(token, super::client::Tls::default())?;
    let ready = status::wait_ready(&client, inventory, ready_timeout_ms, || {
        check_agents_alive(layout, &state.agents, children)
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error:#}\n{hint}"))?;
    print_summary(layout, state, ready, &status_command);
    // `--json`: local.json's content (agents, replicas, inventory, token file) and readiness.
    super::output::emit(&serde_json::json!({ "ready": ready, "cluster": state }))?;
    if !ready {
        anyhow::bail!(
            "the local cluster was not ready within {} ms; logs: {}/agent-*.log and \
             replica-*.log; {hint}",
            ready_timeout_ms,
            layout.state_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn down(args: &DownArgs) -> anyhow::Result<ExitCode> {
    let state_dir = state_dir_or_default(&args.state_dir)?;
    let nothing = || {
        crate::say!(
            "no local cluster in {}: nothing to stop",
            state_dir.display()
        );
        super::output::emit(&serde_json::json!({ "stopped": true, "data_dir": null }))?;
        Ok(ExitCode::SUCCESS)
    };
    if !state_dir.is_dir() {
        return nothing();
    }
    let _lock = lock(&state_dir)?;
    let Some(state) = read_state(&state_dir.join(local_files::STATE_FILE_NAME))? else {
        return nothing();
    };

    let stopping = signal_agents(&state.agents)?;
    let stopped_in_time = wait_groups_empty(&stopping, args.stop_timeout_ms);
    let mut failed = false;
    for agent in &stopping {
        if stopped_in_time.contains(&agent.pid) {
            crate::say!("agent {}: stopped (pid {})", agent.replica, agent.pid);
            continue;
        }
        eprintln!(
            "agent {}: did not stop within {} ms of SIGTERM; sending SIGKILL to its process group",
            agent.replica, args.stop_timeout_ms
        );
        signal_group(agent.pid, Signal::SIGKILL)?;
        if wait_groups_empty(&[agent], KILL_WAIT_MS).is_empty() {
            eprintln!(
                "agent {}: processes of group {} still exist after SIGKILL: {:?}",
                agent.replica,
                agent.pid,
                process::group_members(agent.pid)
            );
            failed = true;
        } else {
            crate::say!("agent {}: killed (pid {})", agent.replica, agent.pid);
        }
    }
    crate::say!(
        "data files kept in {}; `tbctl local up` starts the same cluster again",
        state_dir.join("data").display()
    );
    super::output::emit(&serde_json::json!({
        "stopped": !failed,
        "data_dir": state_dir.join("data"),
    }))?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// SIGTERM to the process group of every agent that still runs. Returns those signalled.
fn signal_agents(agents: &[AgentEntry]) -> anyhow::Result<Vec<&AgentEntry>> {
    let mut stopping = Vec::new();
    for agent in agents {
        let members = process::group_members(agent.pid);
        if members.is_empty() {
            crate::say!("agent {}: not running", agent.replica);
            continue;
        }
        if members.contains(&agent.pid) && !process::is_agent(agent.pid, &agent.config) {
            // The pid now belongs to another program: never signal what is not ours.
            crate::say!(
                "agent {}: not running (pid {} is now another program; left alone)",
                agent.replica,
                agent.pid
            );
            continue;
        }
        // The group is the agent and its replica. If the agent died earlier, the group
        // may still hold its orphaned replica, which must stop too. Group ids are not
        // reused while the group has members, so the members are ours.
        signal_group(agent.pid, Signal::SIGTERM)?;
        stopping.push(agent);
    }
    Ok(stopping)
}

/// Formats the data files of a new cluster, or checks those of an existing one. Returns the
/// cluster identity (and its id), which is written before any format so that a crash cannot
/// orphan files.
async fn prepare_data_files(
    layout: &Layout,
    tigerbeetle: &Path,
    previous: Option<&LocalState>,
) -> anyhow::Result<(ClusterIdentity, u128)> {
    let data_dir = layout.data_dir();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let (cluster, cluster_id, plan) = match known_identity(layout)? {
        Some((cluster, cluster_id)) => {
            adopt_legacy_data_files(layout, cluster_id, previous)?;
            let plan = local_files::format_plan(&data_files_exist(layout, cluster_id)?);
            (cluster, cluster_id, plan)
        }
        None => {
            let (cluster, cluster_id) = new_identity(layout)?;
            (cluster, cluster_id, FormatPlan::FormatAll)
        }
    };
    match plan {
        FormatPlan::ReuseAll => {
            crate::say!("reusing the data files in {}", data_dir.display());
        }
        FormatPlan::Refuse { missing } => {
            return Err(refuse_partial(layout, cluster_id, &missing, tigerbeetle));
        }
        FormatPlan::FormatAll => {
            for replica in layout.replicas() {
                format(layout, cluster_id, replica, tigerbeetle).await?;
            }
            crate::say!(
                "formatted {} data files for new cluster {} in {}",
                layout.replica_count,
                cluster.cluster_id,
                data_dir.display()
            );
        }
    }
    Ok((cluster, cluster_id))
}

/// `cluster.json`, when it exists, checked against `--replica-count`.
fn known_identity(layout: &Layout) -> anyhow::Result<Option<(ClusterIdentity, u128)>> {
    let cluster_file = layout.cluster_file();
    let Some(text) = local_files::read_optional(&cluster_file, STATE_FILE_SIZE_MAX_BYTES)? else {
        return Ok(None);
    };
    let (cluster, cluster_id) = ClusterIdentity::parse(&text)
        .with_context(|| format!("{}: not a cluster identity", cluster_file.display()))?;
    anyhow::ensure!(
        cluster.replica_count == layout.replica_count,
        "{} holds a {}-replica cluster; pass --replica-count {} or use another --state-dir",
        layout.state_dir.display(),
        cluster.replica_count,
        cluster.replica_count
    );
    Ok(Some((cluster, cluster_id)))
}

/// A new cluster's identity, written to `cluster.json`. Refused when the data directory holds
/// data files already: without `cluster.json` their cluster is unknown.
fn new_identity(layout: &Layout) -> anyhow::Result<(ClusterIdentity, u128)> {
    let data_dir = layout.data_dir();
    let existing = std::fs::read_dir(&data_dir)
        .with_context(|| format!("reading {}", data_dir.display()))?
        .filter_map(Result::ok)
        .any(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .ends_with(".tigerbeetle")
        });
    anyhow::ensure!(
        !existing,
        "{} is missing, but data files exist in {}: their cluster id is unknown. \
         Restore the file (the id is also in inventory.json and local.json), or delete \
         the whole state directory {} to start a fresh cluster",
        layout.cluster_file().display(),
        data_dir.display(),
        layout.state_dir.display()
    );
    let cluster_id = rand::random::<u128>();
    let cluster = ClusterIdentity {
        cluster_id: cluster_id.to_string(),
        replica_count: layout.replica_count,
    };
    let json = serde_json::to_string_pretty(&cluster)?;
    local_files::write_atomic(&layout.cluster_file(), json.as_bytes(), 0o600)?;
    Ok((cluster, cluster_id))
}

fn data_files_exist(layout: &Layout, cluster_id: u128) -> anyhow::Result<Vec<bool>> {
    layout
        .replicas()
        .map(|replica| {
            let path = layout.data_file(cluster_id, replica);
            path.try_exists()
                .with_context(|| format!("checking {}", path.display()))
        })
        .collect()
}

/// Gives data files of an earlier tbctl, which named every cluster's files as cluster 0's,
/// their inventory name (`<cluster>_<replica>.tigerbeetle`). A hard link, then the old name
/// removed: nothing is overwritten, and an interruption leaves both names of one file, which
/// the next up finishes. Refused while an agent of an earlier up runs on the old names.
fn adopt_legacy_data_files(
    layout: &Layout,
    cluster_id: u128,
    previous: Option<&LocalState>,
) -> anyhow::Result<()> {
    for replica in layout.replicas() {
        let (legacy, path) = (
            layout.legacy_data_file(replica),
            layout.data_file(cluster_id, replica),
        );
        if legacy == path || !legacy.try_exists()? {
            continue;
        }
        let running: Vec<i32> = previous
            .map(|state| state.agents.iter())
            .into_iter()
            .flatten()
            .filter(|agent| process::is_agent(agent.pid, &agent.config))
            .map(|agent| agent.pid)
            .collect();
        anyhow::ensure!(
            running.is_empty(),
            "{} has the name an earlier tbctl gave it and moves to {}, but agents of an \
             earlier up still run (pids {running:?}): run {} first, then `tbctl local up` again",
            legacy.display(),
            path.display(),
            down_hint(layout)
        );
        if !path.try_exists()? {
            std::fs::hard_link(&legacy, &path)
                .with_context(|| format!("linking {} to {}", legacy.display(), path.display()))?;
        }
        anyhow::ensure!(
            same_file(&legacy, &path)?,
            "both {} and {} exist and are different files: keep the right one under the \
             second name and move the other away",
            legacy.display(),
            path.display()
        );
        std::fs::remove_file(&legacy).with_context(|| format!("removing {}", legacy.display()))?;
        local_files::sync_parent(&path).with_context(|| format!("syncing {}", path.display()))?;
        crate::say!("renamed {} to {}", legacy.display(), path.display());
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Why `up` refuses when some replicas' files are gone, and how to rebuild them.
fn refuse_partial(
    layout: &Layout,
    cluster_id: u128,
    missing: &[u8],
    tigerbeetle: &Path,
) -> anyhow::Error {
    let addresses: Vec<String> = layout
        .replicas()
        .map(|i| layout.replica_address(i))
        .collect();
    let recover: Vec<String> = missing
        .iter()
        .map(|&replica| {
            let flags =
                tigerbeetle::recover_flags(cluster_id, &addresses, replica, layout.replica_count);
            format!(
                "  {} recover {} {}",
                shell_quote(tigerbeetle),
                flags.join(" "),
                shell_quote(&layout.data_file(cluster_id, replica))
            )
        })
        .collect();
    anyhow::anyhow!(
        "data files of replicas {missing:?} are missing while the others exist. \
         Refusing to format them: a freshly formatted replica has forgotten what it \
         acknowledged, and the cluster can lose committed transfers. Rebuild a lost file \
         from the other replicas (they must be running) with:\n{}\n\
         or delete the whole state directory {} to start a fresh, empty cluster",
        recover.join("\n"),
        layout.state_dir.display()
    )
}

/// Formats into `PATH.formatting` and links it to PATH only when complete: an interrupted
/// format never leaves a file that looks like a real replica.
async fn format(
    layout: &Layout,
    cluster_id: u128,
    replica: u8,
    tigerbeetle: &Path,
) -> anyhow::Result<()> {
    let path = layout.data_file(cluster_id, replica);
    let mut partial = path.as_os_str().to_owned();
    partial.push(".formatting");
    let partial = PathBuf::from(partial);
    match std::fs::remove_file(&partial) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("removing {}", partial.display()));
        }
        _ => {}
    }
    let mut command = tokio::process::Command::new(tigerbeetle);
    command
        .arg("format")
        .args(tigerbeetle::format_flags(
            cluster_id,
            replica,
            layout.replica_count,
        ))
        .arg(&partial)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the future on timeout kills the process instead of leaving it behind.
        .kill_on_drop(true);
    let output = tokio::time::timeout(
        Duration::from_millis(FORMAT_TIMEOUT_MS),
        command.output(),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "`tigerbeetle format` of replica {replica} did not finish within {FORMAT_TIMEOUT_MS} ms"
        )
    })?
    .with_context(|| format!("running {}", tigerbeetle.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "`{} format` of replica {replica} failed ({}):\n{}",
            tigerbeetle.display(),
            output.status,
            output_tail(&output)
        );
    }
    // A hard link fails if PATH exists, where a rename would replace it: an existing data
    // file is never overwritten, even by a race with another process.
    std::fs::hard_link(&partial, &path)
        .with_context(|| format!("linking {} to {}", partial.display(), path.display()))?;
    std::fs::remove_file(&partial).with_context(|| format!("removing {}", partial.display()))?;
    local_files::sync_parent(&path).with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// The last lines a failed command printed: TigerBeetle logs to stderr; stdout is the fallback.
fn output_tail(output: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    if text.trim().is_empty() {
        text = "(no output)".to_string();
    }
    let start = text.lines().count().saturating_sub(LOG_TAIL_LINES);
    let tail: Vec<&str> = text.lines().skip(start).collect();
    tail.join("\n")
}

/// Fails the wait as soon as an agent exits: it will not become ready, and its log says why.
fn check_agents_alive(
    layout: &Layout,
    agents: &[AgentEntry],
    children: &mut [Option<Child>],
) -> anyhow::Result<()> {
    for (agent, child) in agents.iter().zip(children.iter_mut()) {
        let exited = match child {
            Some(child) => child.try_wait()?.map(|status| status.to_string()),
            None if !process::is_alive(agent.pid) => Some("gone".to_string()),
            None => None,
        };
        if let Some(how) = exited {
            anyhow::bail!(
                "agent {} exited during startup ({how}); last lines of {}:\n{}",
                agent.replica,
                agent.log.display(),
                process::tail(&layout.agent_log(agent.replica), LOG_TAIL_LINES)
            );
        }
    }
    Ok(())
}

fn print_summary(layout: &Layout, state: &LocalState, ready: bool, status_command: &str) {
    crate::say!();
    if ready {
        crate::say!(
            "local cluster {} is ready ({} replicas)",
            state.cluster_id,
            layout.replica_count
        );
    }
    for agent in &state.agents {
        crate::say!(
            "  agent {}: {} (pid {})",
            agent.replica,
            agent.url,
            agent.pid
        );
    }
    crate::say!("  inventory:  {}", state.inventory.display());
    crate::say!("  token file: {}", state.admin_token_file.display());
    crate::say!("  state file: {}", layout.state_file().display());
    crate::say!();
    crate::say!("  {status_command}");
}

fn status_command(state: &LocalState) -> anyhow::Result<String> {
    Ok(format!(
        "{} status --inventory {} --token-file {}",
        tbctl_command()?,
        shell_quote(&state.inventory),
        shell_quote(&state.admin_token_file)
    ))
}

/// Sends `signal` to the process group led by `pid` (agents run in their own group).
fn signal_group(pid: i32, signal: Signal) -> anyhow::Result<()> {
    match killpg(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(error) => Err(error).with_context(|| format!("{signal} to process group {pid}")),
    }
}

/// Waits until the process groups of `agents` are empty, at most `timeout_ms`. Returns the
/// pids of the agents whose groups emptied.
fn wait_groups_empty(agents: &[&AgentEntry], timeout_ms: u64) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let empty: Vec<i32> = agents
            .iter()
            .map(|agent| agent.pid)
            .filter(|pid| process::group_members(*pid).is_empty())
            .collect();
        if empty.len() == agents.len() || Instant::now() >= deadline {
            return empty;
        }
        std::thread::sleep(Duration::from_millis(STOP_POLL_INTERVAL_MS));
    }
}

fn read_state(path: &Path) -> anyhow::Result<Option<LocalState>> {
    let Some(text) = local_files::read_optional(path, STATE_FILE_SIZE_MAX_BYTES)? else {
        return Ok(None);
    };
    let state = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a tbctl local state file", path.display()))?;
    Ok(Some(state))
}

/// The secret in `path`, generated on first use. Only tbctl and the agents read it.
fn secret(path: &Path) -> anyhow::Result<String> {
    if path.try_exists()? {
        return read_secret_file(path);
    }
    let secret = auth::generate_secret();
    local_files::write_atomic(path, format!("{secret}\n").as_bytes(), 0o600)?;
    Ok(secret)
}

/// Serializes `local up` and `local down` on one state directory: two ups at once would race
/// to format the same files and start the same agents.
fn lock(state_dir: &Path) -> anyhow::Result<Flock<std::fs::File>> {
    let path = state_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!(
            "{}: {errno}: another `tbctl local` command is using {}",
            path.display(),
            state_dir.display()
        )
    })
}

fn state_dir_or_default(state_dir: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match state_dir {
        Some(dir) => Ok(dir.clone()),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|home| !home.is_empty())
                .context("HOME is not set: pass --state-dir DIR")?;
            Ok(PathBuf::from(home).join(".local/state/tbctl/local"))
        }
    }
}

/// Creates the state directory (0700: it holds secrets) and returns its absolute path, which
/// agent configs require.
fn create_state_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    anyhow::ensure!(
        dir.to_str().is_some(),
        "{}: the state directory path must be UTF-8 (it goes into TOML and JSON files)",
        dir.display()
    );
    Ok(dir)
}

pub(super) fn executable(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let path = path
        .canonicalize()
        .with_context(|| format!("{what} {}", path.display()))?;
    let metadata =
        std::fs::metadata(&path).with_context(|| format!("{what} {}", path.display()))?;
    anyhow::ensure!(
        metadata.is_file() && metadata.permissions().mode() & 0o111 != 0,
        "{what} {}: not an executable file",
        path.display()
    );
    Ok(path)
}

/// `tbctl` when the tbctl on PATH is this one, else this executable's full path, so the
/// printed command works when pasted.
fn tbctl_command() -> anyhow::Result<String> {
    let current = std::env::current_exe()?;
    let current = current.canonicalize().unwrap_or(current);
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("tbctl"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    if on_path.and_then(|path| path.canonicalize().ok()).as_ref() == Some(&current) {
        Ok("tbctl".to_string())
    } else {
        Ok(shell_quote(&current))
    }
}

/// Quotes a path for a POSIX shell, only when needed.
fn shell_quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c));
    if plain && !text.is_empty() {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_only_when_needed() {
        assert_eq!(shell_quote(Path::new("/a/b.json")), "/a/b.json");
        assert_eq!(shell_quote(Path::new("/a b/c")), "'/a b/c'");
        assert_eq!(shell_quote(Path::new("/it's")), r"'/it'\''s'");
    }

    fn legacy_layout(name: &str) -> Layout {
        let dir = std::env::temp_dir().join(format!("tbctl-legacy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        Layout::new(dir, 2, 3000, 7000, 8125).unwrap()
    }

    /// Files named as an earlier tbctl named them (cluster 0's names, whatever the cluster)
    /// get the inventory's names, contents and inodes kept; an up finds them, not a format.
    #[test]
    fn legacy_data_files_are_adopted_under_their_inventory_names() {
        let layout = legacy_layout("adopt");
        for replica in layout.replicas() {
            std::fs::write(layout.legacy_data_file(replica), [replica; 8]).unwrap();
        }
        adopt_legacy_data_files(&layout, 42, None).unwrap();
        for replica in layout.replicas() {
            assert!(!layout.legacy_data_file(replica).exists());
            let path = layout.data_file(42, replica);
            assert!(path.ends_with(format!("data/42_{replica}.tigerbeetle")));
            assert_eq!(std::fs::read(&path).unwrap(), [replica; 8]);
        }
        assert_eq!(
            local_files::format_plan(&data_files_exist(&layout, 42).unwrap()),
            FormatPlan::ReuseAll
        );
        // Again: nothing left to adopt. Cluster 0's files already have their names.
        adopt_legacy_data_files(&layout, 42, None).unwrap();
        std::fs::write(layout.legacy_data_file(0), b"zero").unwrap();
        adopt_legacy_data_files(&layout, 0, None).unwrap();
        assert_eq!(std::fs::read(layout.data_file(0, 0)).unwrap(), b"zero");
        std::fs::remove_dir_all(&layout.state_dir).unwrap();
    }

    /// Two different files under the old and the new name: neither is touched.
    #[test]
    fn legacy_and_new_data_files_that_differ_are_refused() {
        let layout = legacy_layout("differ");
        std::fs::write(layout.legacy_data_file(0), b"old").unwrap();
        std::fs::write(layout.data_file(7, 0), b"new").unwrap();
        let error = adopt_legacy_data_files(&layout, 7, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("are different files"), "{error}");
        assert_eq!(std::fs::read(layout.legacy_data_file(0)).unwrap(), b"old");
        assert_eq!(std::fs::read(layout.data_file(7, 0)).unwrap(), b"new");
        std::fs::remove_dir_all(&layout.state_dir).unwrap();
    }

    #[test]
    fn local_state_json_shape() {
        let state = LocalState {
            state_dir: "/s".into(),
            cluster_id: "7".into(),
            inventory: "/s/inventory.json".into(),
            admin_token_file: "/s/admin.token".into(),
            peer_token_file: "/s/peer.token".into(),
            agents: vec![AgentEntry {
                replica: 0,
                url: "http://127.0.0.1:7000".into(),
                pid: 42,
                config: "/s/agent-0.toml".into(),
                log: "/s/agent-0.log".into(),
            }],
            replicas: vec![ReplicaFiles {
                replica: 0,
                address: "127.0.0.1:3000".into(),
                data_file: "/s/data/0_0.tigerbeetle".into(),
                log: "/s/replica-0.log".into(),
            }],
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["cluster_id"], "7");
        assert_eq!(json["agents"][0]["pid"], 42);
        assert_eq!(json["replicas"][0]["data_file"], "/s/data/0_0.tigerbeetle");
    }
}
