//! The checks around stopping a replica: the quorum guard before, readiness after.

use std::time::{Duration, Instant};

use super::AppError;
use crate::health;
use crate::state::AgentState;

/// Whether the caller may override the quorum guard: stop and restart may (`force`), backups
/// and recover never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    Forced,
    NotForced,
    NotOffered,
}

/// Ok with the guard's finding when stopping keeps a quorum (or it is forced), else Refused.
pub async fn quorum_guard(state: &AgentState, force: Override) -> Result<String, AppError> {
    let replica = &state.config.replica;
    let verdict = match &state.peers {
        Some(peers) => peers.quorum_without(replica.index).await,
        None if replica.count == 1 => crate::peers::QuorumVerdict {
            ok: false,
            detail: "this is a single-replica cluster: stopping it stops the cluster".into(),
        },
        None => crate::peers::QuorumVerdict {
            ok: false,
            detail:
                "no [peers] configured, so the agent cannot prove the other replicas keep a quorum"
                    .into(),
        },
    };
    let advice = match force {
        Override::NotOffered => "Bring the other replicas back first; this cannot be forced.",
        _ => {
            "Bring the other replicas back first, or pass {\"force\": true} if you accept that \
             the cluster stops committing."
        }
    };
    match (verdict.ok, force) {
        (true, _) => Ok(verdict.detail),
        (false, Override::Forced) => {
            Ok(format!("forced past the quorum guard: {}", verdict.detail))
        }
        (false, _) => Err(AppError::Refused(format!(
            "stopping replica {} would put the cluster's availability at risk: {}. {advice}",
            replica.index, verdict.detail
        ))),
    }
}

/// How often wait_ready evaluates readiness (a report reads a few /proc files: cheap).
const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Waits until every readiness check passes, or says which ones still fail at the deadline.
pub async fn wait_ready(state: &AgentState, timeout: Duration) -> Result<(), AppError> {
    let deadline = Instant::now() + timeout;
    loop {
        let report = health::ready_report(state);
        if report.ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(AppError::Failed(format!(
                "the replica started but was not ready within {} ms: {}",
                timeout.as_millis(),
                report.failing_summary()
            )));
        }
        // Often: the log's verdict settles at a known instant, and a gate is a rollout's pace.
        tokio::time::sleep(READY_POLL_INTERVAL).await;
    }
}
