//! Recover: `tigerbeetle recover` for a lost data file, under the cluster's maintenance lease.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::store;
use crate::api::LeaseFields;
use crate::lease::hold;
use crate::ops::{self, AppError, JobDone, JobHandle, io_failure};
use crate::state::AgentState;
use tb_proto::lease::Operation;

/// `tigerbeetle recover` formats a small file and asks the cluster: minutes at most.
const RECOVER_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// `POST /v1/replica/recover`: rebuilds a lost data file with `tigerbeetle recover` (never
/// `format`), starts the replica and waits until state sync has finished.
/// Runs as a job holding the replica lock; answers 202 once the checks have passed.
pub async fn recover(mut job: JobHandle, lease: LeaseFields) -> Result<JobDone, AppError> {
    let state = Arc::clone(&job.state);
    let replica = &state.config.replica;
    if replica.count < 3 {
        return Err(AppError::Refused(format!(
            "tigerbeetle recover needs a cluster of 3 or more replicas; this one has {}",
            replica.count
        )));
    }
    if replica.data_file.exists() {
        return Err(AppError::Refused(format!(
            "{} exists: recover is only for a lost data file. To rebuild a damaged one, move it \
             aside first",
            replica.data_file.display()
        )));
    }
    if state.replica.pid().is_some() {
        return Err(AppError::Refused("the replica is running".into()));
    }
    // Held until the replica has caught up: no other replica may stop meanwhile. The rest of
    // the cluster must be healthy enough to view-change without this replica (the guard).
    let standing = hold::take_guarded(&job, Operation::Recover, &lease).await?;
    job.accept();
    // The recovered file is not the one a previous process was caught up on.
    state.replica.data_file_replaced(false);
    let recovered = recover_steps(&state, &job.id).await;
    let lease_text = standing.describe();
    standing.finish().await;
    recovered?;
    Ok(JobDone {
        detail: format!("the data file was recovered and the replica is ready; {lease_text}"),
    })
}

async fn recover_steps(state: &Arc<AgentState>, job_id: &str) -> Result<(), AppError> {
    let replica = &state.config.replica;
    let data_file = &replica.data_file;
    // `recover` writes a new file; it becomes the data file only once recover succeeded.
    let temporary = PathBuf::from(format!("{}.recovering", data_file.display()));
    let _ = std::fs::remove_file(&temporary);
    state.jobs.step(job_id, "running tigerbeetle recover");
    let output = tokio::time::timeout(
        RECOVER_COMMAND_TIMEOUT,
        tokio::process::Command::new(state.replica.binary())
            .arg("recover")
            .args(tb_proto::tigerbeetle::recover_flags(
                replica.cluster_id.get(),
                &replica.addresses,
                replica.index,
                replica.count,
            ))
            .arg(&temporary)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| {
        AppError::Failed(format!(
            "tigerbeetle recover did not finish within {} s",
            RECOVER_COMMAND_TIMEOUT.as_secs()
        ))
    })?
    .map_err(io_failure("cannot run tigerbeetle recover"))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&temporary);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(AppError::Failed(format!(
            "tigerbeetle recover failed ({}): {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    std::fs::rename(&temporary, data_file)
        .map_err(io_failure("putting the recovered file in place"))?;
    if let Some(dir) = data_file.parent() {
        store::sync_dir(dir).map_err(|error| AppError::Failed(error.to_string()))?;
    }
    state.jobs.step(job_id, "starting the replica");
    state
        .replica
        .start()
        .await
        .map_err(|error| AppError::Failed(error.to_string()))?;
    state.jobs.step(job_id, "waiting for state sync to finish");
    ops::wait_ready(state, state.timeouts.recover).await
}
