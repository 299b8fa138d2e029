//! `local down`: SIGTERM to every agent's process group, SIGKILL to those that outlast the
//! timeout. Data files are kept.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::local_files;
use crate::process;

use super::{AgentEntry, DownArgs, lock, read_state, state_dir_or_default};

/// How often `local down` checks whether the signalled processes are gone.
const STOP_POLL_INTERVAL_MS: u64 = 100;
/// After SIGKILL the kernel needs only moments; waiting longer would hide a real problem.
const KILL_WAIT_MS: u64 = 5_000;

pub fn down(args: &DownArgs) -> anyhow::Result<ExitCode> {
    let state_dir = state_dir_or_default(&args.state_dir)?;
    let nothing = || {
        crate::say!(
            "no local cluster in {}: nothing to stop",
            state_dir.display()
        );
        crate::output::emit(&serde_json::json!({ "stopped": true, "data_dir": null }))?;
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
    crate::output::emit(&serde_json::json!({
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
