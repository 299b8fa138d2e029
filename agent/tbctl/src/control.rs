//! `tbctl start|stop|restart`: one request to one replica's agent. The agent owns the safety
//! decision (its quorum guard); tbctl only reports the outcome or the refusal.

use std::process::ExitCode;

use super::client::{AgentClient, AgentError, ControlAnswer};
use super::jobs;
use super::status::describe;
use tb_proto::inventory::ReplicaEntry;

pub use tb_proto::endpoints::ReplicaAction as Action;

/// The agent answers a restart only once the replica is ready again (up to its
/// control.ready_timeout_ms, 120 s by default), so restart gets room beyond that.
pub fn default_timeout_ms(action: Action) -> u64 {
    match action {
        Action::Start | Action::Stop => 60_000,
        Action::Restart => 180_000,
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
