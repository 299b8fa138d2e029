//! Cold backups that keep the cluster available, verification, retention, shipping hooks,
//! `tigerbeetle recover` for a lost data file, and disaster-recovery restore.
//!
//! TigerBeetle allows copying a data file only while its replica is stopped (or through an atomic
//! clone), so a backup stops this one replica — after the quorum guard says the rest of the
//! cluster keeps committing without it — clones or copies the file, and starts it again. Hashing,
//! compression and shipping happen afterwards, from the copy, with the replica already back.

pub mod cold_copy;
pub mod hooks;
pub mod manifest_rules;
pub mod recover;
pub mod restore;
pub mod retention;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::api::LeaseFields;
use crate::api::{BackupRecord, BackupTimings, HookResult, Manifest, Verification};
use crate::config::{self, Run};
use crate::lease::hold;
use crate::ops::{self, AppError, JobDone, JobHandle, io_failure};
use crate::state::AgentState;
use store::{COMPRESSED_FILE, RAW_FILE, Store, now_unix_ms, write_json_atomically};
use tb_proto::backup_files as files;
use tb_proto::backup_modes::Compression;
use tb_proto::lease::Operation;

const MANIFEST_FORMAT_VERSION: u32 = 1;

fn backup_config(state: &AgentState) -> Result<&config::Backup, AppError> {
    state.config.backup.as_ref().ok_or(AppError::NotConfigured)
}

pub fn store(state: &AgentState) -> Result<Store, AppError> {
    Ok(Store {
        dir: backup_config(state)?.dir.clone(),
    })
}

/// File work off the async runtime: runs `work` on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        AppError::Failed(format!("internal: file work ended abnormally: {error}"))
    })?
}

/// A marker holds one backup id.
const MARKER_SIZE_MAX_BYTES: u64 = 256;

/// At start-up: removes half-written backups and brings back a replica that a killed agent had
/// stopped for a copy.
pub async fn recover_after_crash(state: &Arc<AgentState>) {
    let Ok(store) = store(state) else {
        return;
    };
    match store.remove_partials() {
        Ok(removed) if !removed.is_empty() => {
            tracing::warn!(
                ?removed,
                "removed incomplete backups left by an earlier run"
            )
        }
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "cannot remove incomplete backups"),
    }
    let marker = store.marker();
    let complete = |id: &str| store.backup_dir(id).join(store::MANIFEST_FILE).exists();
    let backup_id = match marker_action(read_marker(&marker), complete) {
        MarkerAction::Nothing => return,
        MarkerAction::Stale(backup_id) => {
            tracing::error!(backup = %backup_id, "a stale stopped-for-backup marker names a \
                complete backup; the replica is left as it is");
            remove_marker(&marker);
            return;
        }
        MarkerAction::StartReplica(backup_id) => backup_id,
    };
    tracing::warn!(backup = %backup_id, "the agent stopped during a backup copy; starting the \
        replica again");
    // In process mode the supervisor starts the replica at start-up anyway.
    if matches!(state.config.replica.run, Run::Systemd { .. })
        && let Err(error) = state.replica.start().await
    {
        tracing::error!(%error, "cannot start the replica after an interrupted backup");
        return;
    }
    remove_marker(&marker);
}

#[derive(Debug, PartialEq, Eq)]
enum MarkerAction {
    Nothing,
    /// The marker outlived its copy (its removal failed): the replica was started again after
    /// that copy, so whoever stopped it since was not a backup. Leave the replica alone.
    Stale(String),
    /// A copy was interrupted with the replica stopped: start it again.
    StartReplica(String),
}

fn marker_action(marker: Option<String>, complete: impl Fn(&str) -> bool) -> MarkerAction {
    match marker {
        None => MarkerAction::Nothing,
        Some(id) if complete(&id) => MarkerAction::Stale(id),
        Some(id) => MarkerAction::StartReplica(id),
    }
}

/// The backup id a stopped-for-backup marker names (its whole content, bounded), if there is one.
fn read_marker(marker: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(marker).ok()?;
    let mut text = String::new();
    let read = file.take(MARKER_SIZE_MAX_BYTES).read_to_string(&mut text);
    let id = text.trim().to_string();
    match read {
        Ok(_) if store::validate_backup_id(&id).is_ok() => Some(id),
        // Unreadable or not an id: an interrupted copy is the only writer, so start the replica.
        _ => Some(String::from("(unreadable marker)")),
    }
}

/// Removes the stopped-for-backup marker; a failure is logged: the marker would make a
/// restarted agent start a replica that someone else stopped.
pub fn remove_marker(marker: &Path) {
    if let Err(error) = std::fs::remove_file(marker)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(%error, marker = %marker.display(), "cannot remove the \
            stopped-for-backup marker: remove it by hand, or a restarted agent starts the replica");
    }
}

/// Refuses a backup whose copy would not fit: the backup directory must have the data file's
/// size plus the configured margin free, before the replica is stopped.
fn free_space_for_a_copy(
    dir: &std::path::Path,
    data_file: &std::path::Path,
    free_margin_bytes: u64,
) -> Result<(), AppError> {
    store::create_private_dir_all(dir).map_err(io_failure("backup.dir"))?;
    let data_size_bytes = std::fs::metadata(data_file)
        .map_err(io_failure("the data file"))?
        .len();
    let available = files::available_bytes(dir).map_err(io_failure("backup.dir"))?;
    let needed = data_size_bytes + free_margin_bytes;
    if available < needed {
        return Err(AppError::Refused(format!(
            "{} has {available} bytes free; a backup needs {needed} (the data file's \
             {data_size_bytes} bytes plus the {free_margin_bytes} byte margin)",
            dir.display(),
        )));
    }
    Ok(())
}

/// `POST /v1/backups`, as a job of the operations layer holding the replica lock: checks that
/// the backup is safe (then the answer is 202), stops the replica, copies, starts it, and
/// completes the backup; the lock is released before the shipping hooks run.
pub async fn backup(
    mut job: JobHandle,
    backup_id: String,
    lease: LeaseFields,
) -> Result<JobDone, AppError> {
    let state = Arc::clone(&job.state);
    let config = backup_config(&state)?;
    let running = state.replica.pid().is_some();
    let (dir, data_file, free_margin_bytes) = (
        config.dir.clone(),
        state.config.replica.data_file.clone(),
        config.free_margin_bytes,
    );
    blocking(move || free_space_for_a_copy(&dir, &data_file, free_margin_bytes)).await?;
    // A stopped replica is copied as it is: nothing is stopped, so no lease is needed.
    let standing = if running {
        Some(hold::take_guarded(&job, Operation::Backup, &lease).await?)
    } else {
        None
    };
    job.accept();

    let result = backup_steps(&job, &backup_id).await;
    // The replica is back; other operations may run while hooks ship the backup.
    if let Some(standing) = standing {
        standing.finish().await;
    }
    job.release_replica_lock();
    let store = store(&state)?;
    match result {
        Ok(downtime_ms) => {
            job.update(|record| record.downtime_ms = downtime_ms);
            let hooks = &backup_config(&state).expect("configured").hooks;
            hooks::run_hooks(&job, hooks, &store, &backup_id).await;
            job.step("applying retention");
            let retention_state = Arc::clone(&state);
            blocking(move || {
                let config = backup_config(&retention_state).expect("configured");
                retention::apply_retention(config, &retention_state.locks, &store);
                Ok(())
            })
            .await?;
            Ok(JobDone {
                detail: format!("backup {backup_id} complete"),
            })
        }
        Err(error) => {
            let partial = store.partial_dir(&backup_id);
            let _ = blocking(move || {
                if let Err(cleanup) = std::fs::remove_dir_all(&partial)
                    && cleanup.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::error!(%cleanup, dir = %partial.display(), "cannot remove a failed backup");
                }
                Ok(())
            })
            .await;
            tracing::error!(%error, backup = %backup_id, "backup failed");
            Err(error)
        }
    }
}

/// The copy and everything until the backup is complete on disk. Returns the replica's downtime.
async fn backup_steps(job: &JobHandle, backup_id: &str) -> Result<Option<u64>, AppError> {
    let state = &job.state;
    let job_id = job.id.as_str();
    let config = backup_config(state).expect("configured");
    let store = store(state).expect("configured");
    let partial = store
        .create_partial_dir(backup_id)
        .map_err(|source| AppError::Io {
            what: store.partial_dir(backup_id).display().to_string(),
            source,
        })?;
    let (copied, downtime_ms) = copy_cold(job, &store, backup_id, &partial).await?;
    let cold_copy::Copied {
        reflink,
        stopped_ms,
        copy_ms,
        ..
    } = copied;
    state.jobs.step(job_id, "hashing and compressing the copy");
    let (compress, level) = (config.compress, config.zstd_level);
    let (file, stored, hash_ms) = hash_and_compress(&partial, compress, level).await?;

    let sequence = next_sequence(&store)?;
    let identity = state.binary_identity();
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        backup_id: backup_id.to_string(),
        cluster_id: state.config.replica.cluster_id.to_string(),
        replica_index: state.config.replica.index,
        replica_count: state.config.replica.count,
        tigerbeetle_version: identity.and_then(|identity| identity.version),
        host: state.host.latest().hostname.clone(),
        agent_version: crate::AGENT_VERSION.to_string(),
        created_unix_ms: now_unix_ms(),
        sequence: Some(sequence),
        file,
        compression: if compress {
            Compression::Zstd
        } else {
            Compression::None
        }
        .as_str()
        .to_string(),
        data_size_bytes: stored.data_size_bytes,
        data_blake3: stored.data_blake3,
        stored_size_bytes: stored.stored_size_bytes,
        stored_blake3: stored.stored_blake3,
        reflink,
        timings: BackupTimings {
            stopped_ms,
            copy_ms,
            downtime_ms: downtime_ms.unwrap_or(0),
            hash_ms: if compress { 0 } else { hash_ms },
            compress_ms: if compress { hash_ms } else { 0 },
        },
    };
    write_json_atomically(&partial.join(store::MANIFEST_FILE), &manifest)
        .map_err(io_failure("writing the manifest"))?;

    complete(job, &store, &config.hooks, backup_id, &partial, &manifest).await?;
    tracing::info!(backup = %backup_id, ?downtime_ms, reflink, "backup complete");
    Ok(downtime_ms)
}

/// Stops the replica (when running), copies its data file into `partial`, starts it again and
/// waits until it is ready. Returns the copy's figures and the replica's downtime.
async fn copy_cold(
    job: &JobHandle,
    store: &Store,
    backup_id: &str,
    partial: &Path,
) -> Result<(cold_copy::Copied, Option<u64>), AppError> {
    let state = &job.state;
    let job_id = job.id.as_str();
    let raw = partial.join(RAW_FILE);
    let data_file = state.config.replica.data_file.clone();

    let down_since = Instant::now();
    let marker = store.marker();
    let store_dir = store.dir.clone();
    let abandoned_partial = partial.to_path_buf();
    let copied = {
        let (data_file, raw) = (data_file.clone(), raw.clone());
        cold_copy::copy_while_stopped(
            &state.replica,
            || {
                // Found at start-up if the agent dies while the replica is stopped.
                store::create_private_file(&marker)
                    .and_then(|mut file| std::io::Write::write_all(&mut file, backup_id.as_bytes()))
                    .map_err(|error| format!("writing the marker: {error}"))?;
                store::sync_dir(&store_dir).map_err(|error| error.to_string())
            },
            move |cancel| files::clone_or_copy(&data_file, &raw, cancel),
            move || {
                // The abandoned copy has ended: what it wrote goes too.
                if let Err(error) = std::fs::remove_dir_all(&abandoned_partial)
                    && error.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::error!(%error, dir = %abandoned_partial.display(), "cannot remove an abandoned copy");
                }
            },
            state.timeouts.backup_copy,
            |step| job.step(step),
        )
        .await
    };
    // Kept while the replica is down: a restarted agent then starts it (systemd mode).
    if state.replica.pid().is_some() {
        remove_marker(&marker);
    }
    let copied = copied.map_err(AppError::Failed)?;
    let mut downtime_ms = None;
    if copied.was_running {
        state
            .jobs
            .step(job_id, "waiting for the replica to be ready");
        ops::wait_ready(state, state.timeouts.ready).await?;
        downtime_ms = Some(down_since.elapsed().as_millis() as u64);
    }

    Ok((copied, downtime_ms))
}

/// Hashes the copy in `partial` and, when `compress`, compresses it (the raw copy goes).
/// Returns the stored file's name, its figures and the time it took.
async fn hash_and_compress(
    partial: &Path,
    compress: bool,
    level: i32,
) -> Result<(String, files::Compressed, u64), AppError> {
    let hash_started = Instant::now();
    let partial_for_work = partial.to_path_buf();
    let (file, stored) =
        tokio::task::spawn_blocking(move || -> std::io::Result<(String, files::Compressed)> {
            let raw = partial_for_work.join(RAW_FILE);
            if compress {
                let compressed =
                    files::compress(&raw, &partial_for_work.join(COMPRESSED_FILE), level)?;
                std::fs::remove_file(&raw)?;
                Ok((COMPRESSED_FILE.to_string(), compressed))
            } else {
                let hash = files::blake3_file(&raw)?;
                let size = std::fs::metadata(&raw)?.len();
                Ok((
                    RAW_FILE.to_string(),
                    files::Compressed {
                        data_blake3: hash.clone(),
                        data_size_bytes: size,
                        stored_blake3: hash,
                        stored_size_bytes: size,
                    },
                ))
            }
        })
        .await
        .map_err(|error| AppError::Failed(error.to_string()))?
        .map_err(io_failure("hashing and compressing"))?;
    let hash_ms = hash_started.elapsed().as_millis() as u64;
    Ok((file, stored, hash_ms))
}

/// Verifies the stored file against `manifest`, records the hooks as pending and moves the
/// backup from `partial` to its place: from here on it is complete.
async fn complete(
    job: &JobHandle,
    store: &Store,
    hooks: &[config::Hook],
    backup_id: &str,
    partial: &Path,
    manifest: &Manifest,
) -> Result<(), AppError> {
    let state = &job.state;
    let job_id = job.id.as_str();
    state.jobs.step(job_id, "verifying the stored file");
    let stored = std::fs::File::open(partial.join(&manifest.file));
    let verification = verify_files(stored, manifest).await;
    write_json_atomically(&partial.join(store::VERIFICATION_FILE), &verification)
        .map_err(|error| AppError::Failed(error.to_string()))?;
    if !verification.ok {
        return Err(AppError::Failed(format!(
            "the stored copy does not verify: {}",
            verification.detail
        )));
    }
    // Until the hooks have run, the backup is recorded as not shipped.
    let pending: Vec<HookResult> = hooks
        .iter()
        .map(|hook| HookResult {
            name: hook.name.clone(),
            ok: false,
            exit_code: None,
            duration_ms: 0,
            output: String::new(),
            error: Some("pending: not run yet".into()),
        })
        .collect();
    if !pending.is_empty() {
        write_json_atomically(&partial.join(store::HOOKS_FILE), &pending)
            .map_err(|error| AppError::Failed(error.to_string()))?;
    }
    std::fs::rename(partial, store.backup_dir(backup_id))
        .map_err(io_failure("completing the backup"))?;
    store::sync_dir(&store.dir).map_err(|error| AppError::Failed(error.to_string()))?;
    Ok(())
}

/// The sequence number of a new backup (see `Manifest::sequence`).
fn next_sequence(store: &Store) -> Result<u64, AppError> {
    let listed = store
        .list()
        .map_err(io_failure("listing backups for the sequence"))?;
    store
        .next_sequence(&listed)
        .map_err(io_failure("the backup sequence"))
}

/// Re-hashes a backup's stored file (opened by the caller, inside the backup's directory)
/// against its manifest.
pub async fn verify_files(
    stored: std::io::Result<std::fs::File>,
    manifest: &Manifest,
) -> Verification {
    let expected = manifest.stored_blake3.clone();
    let expected_size_bytes = manifest.stored_size_bytes;
    let outcome = tokio::task::spawn_blocking(move || {
        let stored = stored?;
        let size_bytes = stored.metadata()?.len();
        if size_bytes != expected_size_bytes {
            return Err(std::io::Error::other(format!(
                "it holds {size_bytes} bytes, the manifest says {expected_size_bytes}"
            )));
        }
        files::blake3_reader(stored)
    })
    .await;
    let (ok, detail) = match outcome {
        Ok(Ok(actual)) if actual == expected => {
            (true, format!("blake3 {actual} matches the manifest"))
        }
        Ok(Ok(actual)) => (
            false,
            format!(
                "blake3 {actual} differs from the manifest's {expected}: the backup is corrupt"
            ),
        ),
        Ok(Err(error)) => (false, format!("cannot read {}: {error}", manifest.file)),
        Err(error) => (false, error.to_string()),
    };
    Verification {
        ok,
        verified_unix_ms: now_unix_ms(),
        detail,
    }
}

/// A complete backup by id: the id is validated first, so no path escapes the backup directory.
/// Reads files: call it through [`blocking`].
fn find_backup(state: &AgentState, id: &str) -> Result<(Store, BackupRecord), AppError> {
    store::validate_backup_id(id).map_err(AppError::BadRequest)?;
    let store = store(state)?;
    let record = store
        .get(id)
        .map_err(|error| match error.kind() {
            // A tampered or foreign backup: refused, with the reason, and nothing of it used.
            std::io::ErrorKind::InvalidData => AppError::Refused(error.to_string()),
            _ => AppError::Failed(format!("reading the backup: {error}")),
        })?
        .ok_or_else(|| AppError::NotFound(format!("no backup {id}")))?;
    Ok((store, record))
}

/// [`find_backup`] off the async runtime.
pub async fn find_backup_blocking(
    state: &Arc<AgentState>,
    id: &str,
) -> Result<(Store, BackupRecord), AppError> {
    let (state, id) = (Arc::clone(state), id.to_string());
    blocking(move || find_backup(&state, &id)).await
}

/// `POST /v1/backups/{id}/verify`, as a job holding the backup's lock.
pub async fn verify(job: JobHandle, id: String) -> Result<Verification, AppError> {
    let (store, record) = find_backup_blocking(&job.state, &id).await?;
    let dir = store.backup_dir(&id);
    job.step("hashing the stored file");
    let stored = {
        let (store_dir, id, file) = (store.dir.clone(), id.clone(), record.manifest.file.clone());
        blocking(move || Ok(Store { dir: store_dir }.open_in_backup(&id, &file))).await?
    };
    let verification = verify_files(stored, &record.manifest).await;
    let recorded = verification.clone();
    blocking(move || {
        write_json_atomically(&dir.join(store::VERIFICATION_FILE), &recorded)
            .map_err(io_failure("recording the verification"))
    })
    .await?;
    if !verification.ok {
        return Err(AppError::Corrupt(verification.detail));
    }
    Ok(verification)
}

/// `DELETE /v1/backups/{id}`, as a job holding the backup's lock. No manifest check: deleting
/// uses nothing of the backup, so a tampered one (refused everywhere else) can be removed too. A
/// directory that is a symbolic link is removed as a link; what it points to is left alone.
pub async fn delete(job: JobHandle, id: String) -> Result<ops::Deleted, AppError> {
    let state = Arc::clone(&job.state);
    blocking(move || {
        store::validate_backup_id(&id).map_err(AppError::BadRequest)?;
        let store = store(&state)?;
        match std::fs::symlink_metadata(store.backup_dir(&id)) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(AppError::NotFound(format!("no backup {id}")));
            }
            Err(error) => return Err(AppError::Failed(format!("deleting the backup: {error}"))),
        }
        store
            .delete(&id)
            .map_err(io_failure("deleting the backup"))?;
        Ok(ops::Deleted { deleted: id })
    })
    .await
}

/// The stored file of a complete backup, opened inside the backup's directory, for downloads
/// (restore drills). Refused when its size is not the manifest's: the download's length is the
/// manifest's, and a verification would fail anyway.
pub async fn stored_file(
    state: &Arc<AgentState>,
    id: &str,
) -> Result<(std::fs::File, Manifest), AppError> {
    let (state, id) = (Arc::clone(state), id.to_string());
    blocking(move || {
        let (store, record) = find_backup(&state, &id)?;
        let manifest = record.manifest;
        let file =
            store
                .open_in_backup(&id, &manifest.file)
                .map_err(|error| match error.kind() {
                    std::io::ErrorKind::InvalidData => AppError::Refused(error.to_string()),
                    _ => AppError::Failed(format!("opening backup {id}: {error}")),
                })?;
        let size_bytes = file
            .metadata()
            .map_err(io_failure("reading the stored file"))?
            .len();
        if size_bytes != manifest.stored_size_bytes {
            return Err(AppError::Refused(format!(
                "backup {id}'s stored file holds {size_bytes} bytes, its manifest says {}: \
                 verify it",
                manifest.stored_size_bytes
            )));
        }
        Ok((file, manifest))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_its_backup_and_a_missing_one_nothing() {
        let dir = std::env::temp_dir().join(format!("tb-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join(store::REPLICA_STOPPED_MARKER);
        assert_eq!(read_marker(&marker), None);
        let id = store::new_backup_id(1);
        std::fs::write(&marker, &id).unwrap();
        assert_eq!(read_marker(&marker), Some(id));
        // Anything else is still an interrupted copy's marker: the replica is started.
        std::fs::write(&marker, "x".repeat(1000)).unwrap();
        assert_eq!(read_marker(&marker).as_deref(), Some("(unreadable marker)"));
        remove_marker(&marker);
        assert!(!marker.exists());
        remove_marker(&marker);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_marker_never_starts_a_replica_someone_else_stopped() {
        let done = |id: &str| id == "complete";
        assert_eq!(marker_action(None, done), MarkerAction::Nothing);
        assert_eq!(
            marker_action(Some("complete".into()), done),
            MarkerAction::Stale("complete".into())
        );
        assert_eq!(
            marker_action(Some("partial".into()), done),
            MarkerAction::StartReplica("partial".into())
        );
    }
}
