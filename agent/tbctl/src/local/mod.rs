//! `tbctl local up|down`: a cluster on 127.0.0.1 with one agent per replica, each agent running
//! its replica as a child process. Data files are formatted once and then only ever reused.

mod data_files;
mod start;
mod stop;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::client::read_secret_file;
use super::local_files::{self, AgentSettings, ClusterIdentity, Layout, TokenHashes};
use data_files::prepare_data_files;
use start::{plan_agents, start_agents, wait_until_ready};
pub use stop::down;
use tb_proto::auth;
use tb_proto::inventory::Inventory;

/// Small state files (cluster.json, local.json) are a few KiB at most.
const STATE_FILE_SIZE_MAX_BYTES: u64 = 64 * 1024;
/// Log lines shown when an agent or a format fails.
const LOG_TAIL_LINES: usize = 20;

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

fn down_hint(layout: &Layout) -> String {
    format!(
        "`tbctl local down --state-dir {}`",
        shell_quote(&layout.state_dir)
    )
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
