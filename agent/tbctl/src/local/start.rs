//! `local up`'s agents: their configs planned and checked, the new ones started, and the wait
//! until every replica is ready.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};

use crate::client::{AgentClient, Token};
use crate::local_files::{self, AgentSettings, Layout};
use crate::process;
use crate::status;
use tb_proto::config::Config;
use tb_proto::inventory::Inventory;

use super::{AgentEntry, LOG_TAIL_LINES, LocalState, down_hint, shell_quote, tbctl_command};

/// One agent's config, and the pid of the agent already running it (from an earlier up).
pub(super) struct AgentPlan {
    replica: u8,
    config_path: PathBuf,
    config: String,
    running: Option<i32>,
}

/// Every agent's config, checked; refused when a running agent has another config.
pub(super) fn plan_agents(
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

/// Writes the configs of the agents not running yet and starts them. Returns every agent, and
/// the children started now (the agents of an earlier up are not our children).
pub(super) fn start_agents(
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
pub(super) async fn wait_until_ready(
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
    let client = AgentClient::new(token, crate::client::Tls::default())?;
    let ready = status::wait_ready(&client, inventory, ready_timeout_ms, || {
        check_agents_alive(layout, &state.agents, children)
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error:#}\n{hint}"))?;
    print_summary(layout, state, ready, &status_command);
    // `--json`: local.json's content (agents, replicas, inventory, token file) and readiness.
    crate::output::emit(&serde_json::json!({ "ready": ready, "cluster": state }))?;
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
