//! start, stop and restart of the local replica. They run through the operations layer
//! (`crate::ops`), which holds the replica lock and writes the audit lines.

use std::time::Instant;

use crate::api::{ControlResponse, JobKind, LeaseFields, Outcome};
use crate::lease::hold;
use crate::ops::{self, AppError, JobHandle, Override};
use tb_proto::lease::Operation;

/// Runs `action` (start, stop or restart) for the job; `force` overrides the quorum guard.
/// Stop and restart hold the cluster's maintenance lease from before the guard until the
/// replica is stopped (stop) or ready again (restart): two agents cannot both pass the guard.
pub async fn act(
    job: JobHandle,
    action: JobKind,
    lease: LeaseFields,
) -> Result<ControlResponse, AppError> {
    assert!(
        matches!(action, JobKind::Start | JobKind::Stop | JobKind::Restart),
        "not a control action: {action:?}"
    );
    let state = &job.state;
    let force = job.forced;
    let running = state.replica.pid().is_some();
    let response = |outcome, detail: String, downtime_ms: Option<u64>| ControlResponse {
        action,
        outcome,
        detail,
        downtime_ms,
        forced: force,
    };
    let guard_override = if force {
        Override::Forced
    } else {
        Override::NotForced
    };
    match action {
        JobKind::Start if running => Ok(response(
            Outcome::Unchanged,
            "the replica is already running".into(),
            None,
        )),
        JobKind::Start => {
            job.step("starting the replica");
            state
                .replica
                .start_by_operator()
                .await
                .map_err(|error| AppError::Refused(error.to_string()))?;
            Ok(response(
                Outcome::Started,
                "the replica process started".into(),
                None,
            ))
        }
        JobKind::Stop if !running => Ok(response(
            Outcome::Unchanged,
            "the replica is already stopped".into(),
            None,
        )),
        JobKind::Stop => {
            let (detail, _) =
                under_lease(&job, Operation::Stop, &lease, guard_override, running).await?;
            Ok(response(Outcome::Stopped, detail, None))
        }
        _ => {
            let (detail, downtime_ms) =
                under_lease(&job, Operation::Restart, &lease, guard_override, running).await?;
            Ok(response(Outcome::Restarted, detail, downtime_ms))
        }
    }
}

/// Stop or restart under the cluster's maintenance lease, released before the answer (the next
/// operation must find it free). Returns the detail and, for a restart, the downtime.
async fn under_lease(
    job: &JobHandle,
    operation: Operation,
    lease: &LeaseFields,
    guard_override: Override,
    running: bool,
) -> Result<(String, Option<u64>), AppError> {
    let standing = hold::take(job, operation, lease).await?;
    if operation == Operation::Stop {
        let result = stop_under(job, &standing, guard_override).await;
        let lease_text = standing.describe();
        standing.finish().await;
        let guard_detail = result?;
        return Ok((format!("{guard_detail}; {lease_text}"), None));
    }
    let result = restart_under(job, &standing, running, guard_override).await;
    let lease_text = standing.describe();
    standing.finish().await;
    let (guard_detail, downtime_ms) = result?;
    Ok((
        format!(
            "ready again after {downtime_ms} ms{}{guard_detail}; {lease_text}",
            if guard_detail.is_empty() { "" } else { "; " },
        ),
        Some(downtime_ms),
    ))
}

/// The stop, under the lease: the quorum guard, then the stop. Returns the guard's finding.
async fn stop_under(
    job: &JobHandle,
    standing: &hold::Standing,
    guard_override: Override,
) -> Result<String, AppError> {
    let state = &job.state;
    job.step("asking the peers (quorum guard)");
    let guard_detail = ops::quorum_guard(state, guard_override).await?;
    standing.check_time_left(job, state.timeouts.stop)?;
    // An operator's stop: no leftover stopped-for-backup marker may make a restarted agent
    // start this replica again.
    if let Ok(store) = crate::backup::store(state) {
        crate::backup::remove_marker(&store.marker());
    }
    job.step("stopping the replica");
    state
        .replica
        .stop()
        .await
        .map_err(|error| AppError::Failed(error.to_string()))?;
    Ok(guard_detail)
}

/// The restart, under the lease: the quorum guard (when running), stop, start, wait for ready.
/// Returns the guard's finding and the downtime.
async fn restart_under(
    job: &JobHandle,
    standing: &hold::Standing,
    running: bool,
    guard_override: Override,
) -> Result<(String, u64), AppError> {
    let state = &job.state;
    let guard_detail = if running {
        job.step("asking the peers (quorum guard)");
        ops::quorum_guard(state, guard_override).await?
    } else {
        String::new()
    };
    standing.check_time_left(job, hold::needed(state))?;
    let down_since = Instant::now();
    job.step("stopping the replica");
    let stopped = state.replica.stop().await;
    // Whatever the stop did, the replica is started again: a restart never leaves it down on
    // purpose.
    job.step("starting the replica");
    let started = state.replica.start_by_operator().await;
    match (stopped, started) {
        (Ok(()), Ok(())) => {}
        (Err(stop), Ok(())) => {
            return Err(AppError::Failed(format!(
                "stopping the replica: {stop}; it was started again"
            )));
        }
        (stop, Err(start)) => {
            let stop = stop
                .err()
                .map_or(String::new(), |e| format!("stopping: {e}; "));
            return Err(AppError::Failed(format!(
                "{stop}starting the replica: {start}"
            )));
        }
    }
    job.step("waiting for the replica to be ready");
    ops::wait_ready(state, state.timeouts.ready).await?;
    let downtime_ms = down_since.elapsed().as_millis() as u64;
    job.update(|record| record.downtime_ms = Some(downtime_ms));
    Ok((guard_detail, downtime_ms))
}
