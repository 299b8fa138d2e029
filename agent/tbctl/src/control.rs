//! `tbctl start|stop|restart`: one request to one replica's agent. The agent owns the safety
//! decision (its quorum guard); tbctl only reports the outcome or the refusal. Start then waits
//! until the replica runs in normal status, so that the next guarded command finds it counted.

use std::process::ExitCode;
use std::time::Instant;

use super::client::{AgentClient, AgentError, ControlAnswer};
use super::jobs;
use super::status::{self, Goal, describe};
use tb_proto::inventory::{Inventory, ReplicaEntry};
use tb_proto::quorum::ready_replicas_needed;

pub use tb_proto::endpoints::ReplicaAction as Action;

/// The agent answers a restart only once the replica is ready again (up to its
/// control.ready_timeout_ms, 120 s by default), so restart gets room beyond that. Start waits
/// for normal status: the first StatsD report alone comes 10 s after the process starts.
pub fn default_timeout_ms(action: Action) -> u64 {
    match action {
        Action::Stop => 60_000,
        Action::Start => 120_000,
        Action::Restart => 180_000,
    }
}

/// Each status request while choosing what start waits for.
const PEER_STATUS_TIMEOUT_MS: u64 = 5_000;

/// `tbctl start`: the start request, then (unless `wait` is false) the wait until the replica
/// runs in normal status, all within `timeout_ms`. Exits 1 when the wait times out: the
/// replica may still get there, `tbctl status` tells.
pub async fn start(
    client: &AgentClient,
    inventory: &Inventory,
    replica: &ReplicaEntry,
    force: bool,
    timeout_ms: u64,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let began = Instant::now();
    let code = run(client, replica, Action::Start, force, timeout_ms).await?;
    if !wait || code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let goal = start_goal(client, inventory, replica).await;
    let remaining_ms = timeout_ms.saturating_sub(began.elapsed().as_millis() as u64);
    let entries = std::slice::from_ref(replica);
    if status::wait_for(client, entries, goal, remaining_ms.max(1), || Ok(())).await? {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{}: started, but the wait ended after {timeout_ms} ms (--timeout-ms); it may still \
         get there: check with `tbctl status`",
        describe(replica)
    );
    Ok(ExitCode::FAILURE)
}

/// What start waits for, after saying so when it is less than normal status.
async fn start_goal(client: &AgentClient, inventory: &Inventory, replica: &ReplicaEntry) -> Goal {
    let others =
        status::running_others(client, inventory, replica.index, PEER_STATUS_TIMEOUT_MS).await;
    let replica_count = inventory.replicas.len() as u8;
    let goal = goal_for(others, replica_count);
    if goal == Goal::Reporting {
        println!(
            "{}: {others} other replicas run, and a quorum needs {} running, this one included: \
             it may reach normal status only once others start, so this waits until it runs and \
             reports its status",
            describe(replica),
            ready_replicas_needed(replica_count)
        );
    }
    goal
}

/// Normal status, unless too few replicas run for a quorum with this one: a replica that was
/// the primary (or lost its head) then stays in view_change or recovering_head until others
/// start, as the first replicas of a stopped cluster do (docs/backups.md, disaster recovery).
fn goal_for(others_running: usize, replica_count: u8) -> Goal {
    let quorum = usize::from(ready_replicas_needed(replica_count));
    if others_running + 1 >= quorum {
        Goal::Normal
    } else {
        Goal::Reporting
    }
}

pub async fn run(
    client: &AgentClient,
    replica: &ReplicaEntry,
    action: Action,
    force: bool,
    timeout_ms: u64,
) -> anyhow::Result<ExitCode> {
    let name = action.as_str();
    if let Action::Restart = action {
        println!(
            "restarting {}; waiting until it is ready again (up to {} s)",
            describe(replica),
            timeout_ms / 1000
        );
    }
    let started = std::time::Instant::now();
    match client
        .control(&replica.agent_url, name, force, timeout_ms)
        .await
    {
        Ok(ControlAnswer::Accepted(accepted)) => {
            // The operation outlasted the agent's wait; it goes on as the agent's job.
            let remaining_ms = timeout_ms.saturating_sub(started.elapsed().as_millis() as u64);
            let job = jobs::follow(client, replica, &accepted.job_id, remaining_ms.max(1)).await?;
            if job.state != jobs::STATE_SUCCEEDED {
                eprintln!("{}: {name}: {}", describe(replica), jobs::failure(&job));
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "replica {}: {name} finished: {}; downtime {}",
                replica.index,
                job.step,
                jobs::downtime_text(&job)
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(ControlAnswer::Done(response)) => {
            println!(
                "replica {}: {} {}: {}",
                replica.index, response.action, response.outcome, response.detail
            );
            if let Some(downtime_ms) = response.downtime_ms {
                println!(
                    "replica {}: downtime {:.1} s",
                    replica.index,
                    downtime_ms as f64 / 1000.0
                );
            }
            if response.forced {
                println!(
                    "replica {}: forced: the quorum guard was overridden (recorded in the agent's audit log)",
                    replica.index
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(AgentError::Refused { code, message }) => {
            eprintln!("{}: {name} refused ({code}): {message}", describe(replica));
            Ok(super::exit::refused())
        }
        Err(error @ AgentError::Timeout(_)) => anyhow::bail!(
            "{}: {name}: {error}; the action may still be in progress or done, \
             check with `tbctl status` before repeating it",
            describe(replica)
        ),
        Err(error) => anyhow::bail!("{}: {name}: {error}", describe(replica)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_waits_for_normal_status_only_when_a_quorum_can_run() {
        // The first replica of a stopped 3-replica cluster: alone it may never be normal.
        assert_eq!(goal_for(0, 3), Goal::Reporting);
        // The second one, or one rejoining a running cluster: a quorum runs with it.
        assert_eq!(goal_for(1, 3), Goal::Normal);
        assert_eq!(goal_for(2, 3), Goal::Normal);
        assert_eq!(goal_for(1, 5), Goal::Reporting);
        assert_eq!(goal_for(2, 5), Goal::Normal);
        // A single replica is its own quorum.
        assert_eq!(goal_for(0, 1), Goal::Normal);
    }
}
