//! start, stop and restart of the local replica, one at a time, behind the quorum guard.

use std::time::{Duration, Instant};

use crate::api::ControlResponse;
use crate::health;
use crate::state::AgentState;

pub use tb_proto::endpoints::ReplicaAction as Action;

#[derive(Debug)]
pub enum ControlError {
    /// Another control operation is running on this host.
    Busy,
    /// Refused before anything was touched (quorum guard, missing data file).
    Refused(String),
    /// The action ran and failed.
    Failed(String),
}

impl ControlError {
    pub fn outcome(&self) -> &'static str {
        match self {
            ControlError::Busy => "busy",
            ControlError::Refused(_) => "refused",
            ControlError::Failed(_) => "failed",
        }
    }
}

pub async fn act(
    state: &AgentState,
    action: Action,
    force: bool,
) -> Result<ControlResponse, ControlError> {
    let _guard = state
        .control_lock
        .try_lock()
        .map_err(|_| ControlError::Busy)?;
    let running = state.replica.pid().is_some();
    let response = |outcome: &str, detail: String, downtime_ms: Option<u64>| ControlResponse {
        action: action.as_str().to_string(),
        outcome: outcome.to_string(),
        detail,
        downtime_ms,
        forced: force,
    };
    match action {
        Action::Start if running => Ok(response(
            "unchanged",
            "the replica is already running".into(),
            None,
        )),
        Action::Start => {
            state
                .replica
                .start()
                .await
                .map_err(|error| ControlError::Refused(error.to_string()))?;
            Ok(response(
                "started",
                "the replica process started".into(),
                None,
            ))
        }
        Action::Stop if !running => Ok(response(
            "unchanged",
            "the replica is already stopped".into(),
            None,
        )),
        Action::Stop => {
            let guard_detail = quorum_guard(
                state,
                if force {
                    Override::Forced
                } else {
                    Override::NotForced
                },
            )
            .await?;
            state
                .replica
                .stop()
                .await
                .map_err(|error| ControlError::Failed(error.to_string()))?;
            Ok(response("stopped", guard_detail, None))
        }
        Action::Restart => {
            let guard_detail = if running {
                quorum_guard(
                    state,
                    if force {
                        Override::Forced
                    } else {
                        Override::NotForced
                    },
                )
                .await?
            } else {
                String::new()
            };
            let down_since = Instant::now();
            state
                .replica
                .stop()
                .await
                .map_err(|error| ControlError::Failed(error.to_string()))?;
            state
                .replica
                .start()
                .await
                .map_err(|error| ControlError::Failed(error.to_string()))?;
            let timeout = Duration::from_millis(state.config.control.ready_timeout_ms);
            wait_ready(state, timeout)
                .await
                .map_err(ControlError::Failed)?;
            let downtime_ms = down_since.elapsed().as_millis() as u64;
            Ok(response(
                "restarted",
                format!(
                    "ready again after {downtime_ms} ms{}{guard_detail}",
                    if guard_detail.is_empty() { "" } else { "; " }
                ),
                Some(downtime_ms),
            ))
        }
    }
}

/// Whether the caller may override the quorum guard: stop and restart may (`force`), backups
/// and recover never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    Forced,
    NotForced,
    NotOffered,
}

/// Ok with the guard's finding when stopping keeps a quorum (or it is forced), else Refused.
pub(crate) async fn quorum_guard(
    state: &AgentState,
    force: Override,
) -> Result<String, ControlError> {
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
        (false, _) => Err(ControlError::Refused(format!(
            "stopping replica {} would put the cluster's availability at risk: {}. {advice}",
            replica.index, verdict.detail
        ))),
    }
}

/// Waits until every readiness check passes, or says which ones still fail at the deadline.
pub async fn wait_ready(state: &AgentState, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let report = health::ready_report(state);
        if report.ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the replica started but was not ready within {} ms: {}",
                timeout.as_millis(),
                report.failing_summary()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
