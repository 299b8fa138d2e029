//! Restore: a verified backup's data file put in place of the stopped replica's, for disaster
//! recovery; refused while peers may be running unless confirmed.

use std::path::PathBuf;

use super::store::{self, Store, now_unix_ms, write_json_atomically};
use super::{find_backup_blocking, verify_files};
use crate::api::{Manifest, RestoreRequest, RestoreResponse};
use crate::ops::{AppError, JobHandle, io_failure};
use crate::state::AgentState;
use tb_proto::backup_files as files;
use tb_proto::backup_modes::RestoreMode;

/// `POST /v1/backups/{id}/restore`: disaster recovery only. Puts a verified backup in place of
/// this replica's data file, atomically, after moving the current file aside.
/// Runs as a job holding the replica lock and the backup's lock.
pub async fn restore(
    job: JobHandle,
    id: String,
    request: RestoreRequest,
) -> Result<RestoreResponse, AppError> {
    let (state, id, request) = (&job.state, id.as_str(), &request);
    let (store, record) = find_backup_blocking(state, id).await?;
    let manifest = &record.manifest;
    restorable_here(state, id, manifest)?;
    // Whatever happens next, the previous process's view and progress say nothing of the file
    // this restore may put in place (a whole-cluster restore can go back to an older view).
    state.replica.data_file_replaced(true);
    peers_stopped_or_overridden(state, request).await?;
    // Verify before touching anything.
    verify_before_restore(&job, &store, id, manifest).await?;
    let data_file = state.config.replica.data_file.clone();
    let data_dir = data_file.parent().expect("absolute path").to_path_buf();
    let temporary = data_dir.join(format!(".restore-{id}.tmp"));
    let _ = std::fs::remove_file(&temporary);
    let stored = store
        .open_in_backup(id, &manifest.file)
        .map_err(|source| AppError::Io {
            what: format!("opening backup {id}"),
            source,
        })?;
    let (compression, expected) = (manifest.compression.clone(), manifest.data_blake3.clone());
    let temporary_for_work = temporary.clone();
    job.step("extracting the backup");
    let extracted = tokio::task::spawn_blocking(move || {
        files::extract_file(stored, &compression, &temporary_for_work)
    })
    .await
    .map_err(|error| AppError::Failed(error.to_string()))?;
    match extracted {
        Ok(hash) if hash == expected => {}
        Ok(hash) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(AppError::Failed(format!(
                "the extracted file hashes to {hash}, not {expected}; nothing was changed"
            )));
        }
        Err(error) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(AppError::Failed(format!(
                "extracting the backup: {error}; nothing was changed"
            )));
        }
    }
    let previous_moved_to = if data_file.exists() {
        let aside = PathBuf::from(format!(
            "{}.replaced-{}",
            data_file.display(),
            now_unix_ms()
        ));
        std::fs::rename(&data_file, &aside)
            .map_err(io_failure("moving the current data file aside"))?;
        Some(aside.display().to_string())
    } else {
        None
    };
    std::fs::rename(&temporary, &data_file)
        .map_err(io_failure("putting the restored file in place"))?;
    store::sync_dir(&data_dir).map_err(io_failure("syncing the data directory"))?;
    tracing::warn!(backup = %id, ?previous_moved_to, "data file restored from a backup");
    Ok(RestoreResponse {
        backup_id: id.to_string(),
        data_file: data_file.display().to_string(),
        previous_moved_to,
    })
}

/// Verifies the backup (and records the verification) before anything is touched.
async fn verify_before_restore(
    job: &JobHandle,
    store: &Store,
    id: &str,
    manifest: &Manifest,
) -> Result<(), AppError> {
    job.step("verifying the backup");
    let backup_dir = store.backup_dir(id);
    let stored = store.open_in_backup(id, &manifest.file);
    let verification = verify_files(stored, manifest).await;
    let _ = write_json_atomically(&backup_dir.join(store::VERIFICATION_FILE), &verification);
    if !verification.ok {
        return Err(AppError::Refused(format!(
            "backup {id} failed verification, nothing was changed: {}",
            verification.detail
        )));
    }
    Ok(())
}

/// Refuses a backup of another replica or cluster, and a running local replica.
fn restorable_here(state: &AgentState, id: &str, manifest: &Manifest) -> Result<(), AppError> {
    let replica = &state.config.replica;
    if manifest.cluster_id != replica.cluster_id
        || manifest.replica_index != replica.index
        || manifest.replica_count != replica.count
    {
        return Err(AppError::Refused(format!(
            "backup {id} is of cluster {} replica {} of {}; this is cluster {} replica {} of {}",
            manifest.cluster_id,
            manifest.replica_index,
            manifest.replica_count,
            replica.cluster_id,
            replica.index,
            replica.count
        )));
    }
    if state.replica.pid().is_some() {
        return Err(AppError::Refused(
            "the local replica is running: stop it first. Restoring an old copy into a live \
             cluster can lose committed data; restore is for disaster recovery of a stopped \
             cluster"
                .into(),
        ));
    }
    Ok(())
}

/// Refuses while peers may be running, unless the request is a confirmed disaster recovery.
async fn peers_stopped_or_overridden(
    state: &AgentState,
    request: &RestoreRequest,
) -> Result<(), AppError> {
    let replica = &state.config.replica;
    let mode = request.mode.as_deref().map(RestoreMode::parse);
    match (mode, &request.cluster_id) {
        (None, None) => {
            let running = peers_possibly_running(state).await;
            if !running.is_empty() {
                return Err(AppError::Refused(format!(
                    "peer replicas may be running ({}). Restoring one replica's old file into a \
                     live cluster can lose committed data. For a disaster recovery of the whole \
                     cluster, stop every replica, or send {{\"mode\": \"disaster-recovery\", \
                     \"cluster_id\": \"<the cluster id>\"}}",
                    running.join("; ")
                )));
            }
        }
        (Some(Some(RestoreMode::DisasterRecovery)), Some(cluster_id)) => {
            if *cluster_id != replica.cluster_id {
                return Err(AppError::Refused(format!(
                    "the confirmation names cluster {cluster_id}, but this replica belongs to \
                     cluster {}",
                    replica.cluster_id
                )));
            }
        }
        _ => {
            return Err(AppError::BadRequest(
                "the body must be empty or {\"mode\": \"disaster-recovery\", \"cluster_id\": \"...\"}".into(),
            ));
        }
    }
    Ok(())
}

/// Peers whose replica runs, or whose agent cannot say: an unknown state counts as running.
async fn peers_possibly_running(state: &AgentState) -> Vec<String> {
    let replica = &state.config.replica;
    match &state.peers {
        Some(peers) => peers.running_peers(replica.index).await,
        None if replica.count == 1 => Vec::new(),
        None => vec!["no [peers] configured, so the agent cannot tell".into()],
    }
}
