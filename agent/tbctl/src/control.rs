//! `tbctl start|stop|restart`: one request to one replica's agent. The agent owns the safety
//! decision (its quorum guard); tbctl only reports the outcome or the refusal. Start then waits
//! until the replica runs in normal status, so that the next guarded command finds it counted.

use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;

use super::client::{AgentClient, AgentError, ControlAnswer};
use super::exit;
use super::jobs;
use super::lease;
use super::output;
use super::progress::Progress;
use super::status::{self, Goal, describe};
use tb_proto::api;
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
    let mut result = match request(client, replica, Action::Start, force, timeout_ms).await? {
        Ok(result) => result,
        Err(code) => return Ok(code),
    };
    if !wait {
        return emit(&result);
    }
    let goal = start_goal(client, inventory, replica).await;
    let remaining_ms = timeout_ms.saturating_sub(began.elapsed().as_millis() as u64);
    let entries = std::slice::from_ref(replica);
    let reached = status::wait_for(client, entries, goal, remaining_ms.max(1), || Ok(())).await?;
    result.waited_for = Some(goal);
    result.reached = Some(reached);
    if reached {
        return emit(&result);
    }
    eprintln!(
        "{}: started, but the wait ended after {timeout_ms} ms (--timeout-ms); it may still \
         get there: check with `tbctl status`",
        describe(replica)
    );
    output::emit(&result)?;
    Ok(ExitCode::FAILURE)
}

/// What start waits for, after saying so when it is less than normal status.
async fn start_goal(client: &AgentClient, inventory: &Inventory, replica: &ReplicaEntry) -> Goal {
    let others =
        status::running_others(client, inventory, replica.index, PEER_STATUS_TIMEOUT_MS).await;
    let replica_count = inventory.replicas.len() as u8;
    let goal = goal_for(others, replica_count);
    if goal == Goal::Reporting {
        output::say(format!(
            "{}: {others} other replicas run, and a quorum needs {} running, this one included: \
             it may reach normal status only once others start, so this waits until it runs and \
             reports its status",
            describe(replica),
            ready_replicas_needed(replica_count)
        ));
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

/// What `tbctl start|stop|restart --json` prints.
#[derive(Debug, Serialize)]
pub struct ControlJson {
    pub replica: u8,
    pub host_name: String,
    /// The agent's answer, when it answered within its own wait (200).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<api::ControlResponse>,
    /// The job the agent answered with instead (202), followed to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<api::Job>,
    /// start: what it waited for (absent with --no-wait), and whether it got there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_for: Option<Goal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reached: Option<bool>,
    /// restart --then-wait-ready-ms: whether every replica was ready after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_ready: Option<bool>,
    /// restart --then-renew-lease-ttl-s: whether the lease was renewed once every replica was
    /// ready (absent when the wait failed: nothing was asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_renewed: Option<bool>,
}

/// What `tbctl restart` does after the restart: wait until every replica of `inventory` is
/// ready, then maybe renew the lease.
pub struct ThenWait<'a> {
    pub inventory: &'a Inventory,
    pub wait_ms: u64,
    pub renew: Option<Renewal<'a>>,
}

/// Renews the lease once a command's own work is done; whether it was. A failure is printed,
/// not returned: the work is done all the same, and the caller renews by itself next time.
pub async fn renew_lease(
    client: &AgentClient,
    inventory: &Inventory,
    renewal: &Renewal<'_>,
) -> bool {
    match lease::renew(client, inventory, renewal.lease_id, renewal.ttl_s).await {
        Ok(view) => {
            output::say(format!("renewed: {}", lease::describe(&view)));
            true
        }
        Err(error) => {
            eprintln!("the lease's renewal failed: {error:#}");
            false
        }
    }
}

/// The lease a command renews once its work is done, and for how long.
pub struct Renewal<'a> {
    pub lease_id: &'a str,
    pub ttl_s: u32,
}

fn emit(result: &ControlJson) -> anyhow::Result<ExitCode> {
    output::emit(result)?;
    Ok(ExitCode::SUCCESS)
}

/// `tbctl restart`: the request (within `timeout_ms`), then, with `then_wait_ready` (the
/// inventory, a wait in ms), the wait until every replica of it is ready. Exits 1 when that wait
/// ends first or fails, naming what is not ready; the JSON is printed all the same, saying the
/// restart was done and `cluster_ready: false`.
pub async fn restart(
    client: &AgentClient,
    replica: &ReplicaEntry,
    force: bool,
    timeout_ms: u64,
    then_wait: Option<ThenWait<'_>>,
) -> anyhow::Result<ExitCode> {
    let mut result = match request(client, replica, Action::Restart, force, timeout_ms).await? {
        Ok(result) => result,
        Err(code) => return Ok(code),
    };
    let Some(then) = then_wait else {
        return emit(&result);
    };
    let replicas = &then.inventory.replicas;
    let waited = status::wait_for(client, replicas, Goal::Ready, then.wait_ms, || Ok(())).await;
    let ready = waited.unwrap_or_else(|error| {
        eprintln!(
            "replica {} restarted; then the wait for every replica failed: {error:#}",
            replica.index
        );
        false
    });
    result.cluster_ready = Some(ready);
    if let (true, Some(renewal)) = (ready, then.renew) {
        result.lease_renewed = Some(renew_lease(client, then.inventory, &renewal).await);
    }
    output::emit(&result)?;
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `tbctl stop|restart`: the request, its outcome printed (or, with --json, its JSON).
pub async fn run(
    client: &AgentClient,
    replica: &ReplicaEntry,
    action: Action,
    force: bool,
    timeout_ms: u64,
) -> anyhow::Result<ExitCode> {
    match request(client, replica, action, force, timeout_ms).await? {
        Ok(result) => emit(&result),
        Err(code) => Ok(code),
    }
}

/// One control request and, when the agent answers with a job, that job followed to its end.
/// The outcome's lines are said; the result is returned for the caller to emit. `Err(code)`:
/// refused or failed, already said on stderr.
async fn request(
    client: &AgentClient,
    replica: &ReplicaEntry,
    action: Action,
    force: bool,
    timeout_ms: u64,
) -> anyhow::Result<Result<ControlJson, ExitCode>> {
    let name = action.as_str();
    let started = Instant::now();
    let mut result = ControlJson {
        replica: replica.index,
        host_name: replica.host_name.clone(),
        response: None,
        job: None,
        waited_for: None,
        reached: None,
        cluster_ready: None,
        lease_renewed: None,
    };
    let answer = {
        // The agent answers a restart once the replica is ready again: a line meanwhile.
        let _progress = matches!(action, Action::Restart).then(|| {
            let mut progress = Progress::new([format!("replica {}", replica.index)]);
            let step = format!(
                "restarting; the agent answers once it is ready again (up to {} s)",
                timeout_ms / 1000
            );
            progress.update(0, &step);
            progress
        });
        client
            .control(&replica.agent_url, name, force, timeout_ms)
            .await
    };
    match answer {
        Ok(ControlAnswer::Accepted(accepted)) => {
            // The operation outlasted the agent's wait; it goes on as the agent's job.
            let remaining_ms = timeout_ms.saturating_sub(started.elapsed().as_millis() as u64);
            let job = jobs::follow(client, replica, &accepted.job_id, remaining_ms.max(1)).await?;
            if job.state != jobs::STATE_SUCCEEDED {
                eprintln!("{}: {name}: {}", describe(replica), jobs::failure(&job));
                return Ok(Err(ExitCode::FAILURE));
            }
            output::say(format!(
                "replica {}: {name} finished: {}; downtime {}",
                replica.index,
                job.step,
                jobs::downtime_text(&job)
            ));
            result.job = Some(job);
            Ok(Ok(result))
        }
        Ok(ControlAnswer::Done(response)) => {
            say_done(replica, &response);
            result.response = Some(response);
            Ok(Ok(result))
        }
        Err(AgentError::Refused { code, message }) => {
            eprintln!("{}: {name} refused ({code}): {message}", describe(replica));
            Ok(Err(exit::Exit::of_refusal(&code).into()))
        }
        Err(error @ AgentError::Timeout(_)) => anyhow::bail!(
            "{}: {name}: {error}; the action may still be in progress or done, \
             check with `tbctl status` before repeating it",
            describe(replica)
        ),
        Err(error @ AgentError::Unreachable(_)) => {
            Err(exit::Unreachable(format!("{}: {name}: {error}", describe(replica))).into())
        }
        Err(error) => anyhow::bail!("{}: {name}: {error}", describe(replica)),
    }
}

fn say_done(replica: &ReplicaEntry, response: &api::ControlResponse) {
    output::say(format!(
        "replica {}: {} {}: {}",
        replica.index, response.action, response.outcome, response.detail
    ));
    if let Some(downtime_ms) = response.downtime_ms {
        output::say(format!(
            "replica {}: downtime {:.1} s",
            replica.index,
            downtime_ms as f64 / 1000.0
        ));
    }
    if response.forced {
        output::say(format!(
            "replica {}: forced: the quorum guard was overridden (recorded in the agent's audit \
             log)",
            replica.index
        ));
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
