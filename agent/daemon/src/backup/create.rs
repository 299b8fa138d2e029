//! `POST /v1/backups`: the cold copy of the data file, hashed, compressed, verified and made
//! complete, then shipped by the hooks and followed by retention.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::configured::{backup_config, blocking, store};
use super::existing::verify_files;
use super::marker::remove_marker;
use super::store::{self, COMPRESSED_FILE, RAW_FILE, Store, now_unix_ms, write_json_atomically};
use super::{cold_copy, hooks, retention};
use crate::api::LeaseFields;
use crate::api::{BackupTimings, HookResult, Manifest};
use crate::config;
use crate::lease::hold;
use crate::ops::{self, AppError, JobDone, JobHandle, io_failure};
use tb_proto::backup_files as files;
use tb_proto::backup_modes::Compression;
use tb_proto::lease::Operation;

const MANIFEST_FORMAT_VERSION: u32 = 1;

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
                    .map_err(io_failure("writing the marker"))?;
                store::sync_dir(&store_dir).map_err(|error| AppError::Failed(error.to_string()))
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
    let copied = copied?;
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
