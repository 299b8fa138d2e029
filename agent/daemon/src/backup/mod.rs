//! Cold backups that keep the cluster available, verification, retention, shipping hooks,
//! `tigerbeetle recover` for a lost data file, and disaster-recovery restore.
//!
//! TigerBeetle allows copying a data file only while its replica is stopped (or through an atomic
//! clone), so a backup stops this one replica — after the quorum guard says the rest of the
//! cluster keeps committing without it — clones or copies the file, and starts it again. Hashing,
//! compression and shipping happen afterwards, from the copy, with the replica already back.

pub mod jobs;
pub mod routes;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use crate::api::{
    BackupRecord, BackupTimings, HookResult, JobAccepted, Manifest, RestoreRequest,
    RestoreResponse, Verification,
};
use crate::config::{self, Run};
use crate::control::{self, ControlError};
use crate::state::AgentState;
use store::{Store, now_unix_ms, write_json_atomically};
use tb_proto::backup_files as files;

const MANIFEST_FORMAT_VERSION: u32 = 1;
const RAW_FILE: &str = "data.tigerbeetle";
const COMPRESSED_FILE: &str = "data.tigerbeetle.zst";
/// Bytes of a hook's output kept in the backup's record.
const HOOK_OUTPUT_KEPT_BYTES: usize = 16 * 1024;
/// `tigerbeetle recover` formats a small file and asks the cluster: minutes at most.
const RECOVER_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a backup, restore or recover did not start.
#[derive(Debug)]
pub enum Refusal {
    NotConfigured,
    Busy,
    NotFound(String),
    BadRequest(String),
    Refused(String),
    Failed(String),
}

impl From<ControlError> for Refusal {
    fn from(error: ControlError) -> Refusal {
        match error {
            ControlError::Busy => Refusal::Busy,
            ControlError::Refused(why) => Refusal::Refused(why),
            ControlError::Failed(why) => Refusal::Failed(why),
        }
    }
}

fn backup_config(state: &AgentState) -> Result<&config::Backup, Refusal> {
    state.config.backup.as_ref().ok_or(Refusal::NotConfigured)
}

pub fn store(state: &AgentState) -> Result<Store, Refusal> {
    Ok(Store {
        dir: backup_config(state)?.dir.clone(),
    })
}

fn io_failure(what: &str) -> impl Fn(std::io::Error) -> Refusal + '_ {
    move |error| Refusal::Failed(format!("{what}: {error}"))
}

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
    if marker.exists() {
        tracing::warn!("the agent stopped during a backup copy; starting the replica again");
        // In process mode the supervisor starts the replica at start-up anyway.
        if matches!(state.config.replica.run, Run::Systemd { .. })
            && let Err(error) = state.replica.start().await
        {
            tracing::error!(%error, "cannot start the replica after an interrupted backup");
            return;
        }
        let _ = std::fs::remove_file(&marker);
    }
}

/// `POST /v1/backups`: checks that the backup is safe, then runs it as a job.
pub async fn start_backup(state: &Arc<AgentState>) -> Result<JobAccepted, Refusal> {
    let config = backup_config(state)?;
    let guard = Arc::clone(&state.control_lock)
        .try_lock_owned()
        .map_err(|_| Refusal::Busy)?;
    let running = state.replica.pid().is_some();
    if running {
        control::quorum_guard(state, control::Override::NotOffered).await?;
    }
    std::fs::create_dir_all(&config.dir).map_err(io_failure("backup.dir"))?;
    let data_size_bytes = std::fs::metadata(&state.config.replica.data_file)
        .map_err(io_failure("the data file"))?
        .len();
    let available = files::available_bytes(&config.dir).map_err(io_failure("backup.dir"))?;
    let needed = data_size_bytes + config.free_margin_bytes;
    if available < needed {
        return Err(Refusal::Refused(format!(
            "{} has {available} bytes free; a backup needs {needed} (the data file's \
             {data_size_bytes} bytes plus the {} byte margin)",
            config.dir.display(),
            config.free_margin_bytes
        )));
    }
    let backup_id = store::new_backup_id(state.config.replica.index);
    let job_id = format!("backup-{backup_id}");
    state.jobs.begin(&job_id, "backup", Some(backup_id.clone()));
    tokio::spawn(run_backup(
        Arc::clone(state),
        guard,
        job_id.clone(),
        backup_id.clone(),
    ));
    Ok(JobAccepted {
        job_id,
        backup_id: Some(backup_id),
    })
}

async fn run_backup(
    state: Arc<AgentState>,
    guard: OwnedMutexGuard<()>,
    job_id: String,
    backup_id: String,
) {
    let result = backup_steps(&state, &job_id, &backup_id).await;
    // The replica is back; other control operations may run while hooks ship the backup.
    drop(guard);
    let store = store(&state).expect("configured");
    match result {
        Ok(downtime_ms) => {
            state
                .jobs
                .update(&job_id, |job| job.downtime_ms = downtime_ms);
            run_hooks(&state, &store, &job_id, &backup_id).await;
            state.jobs.step(&job_id, "applying retention");
            apply_retention(&state, &store);
            state.jobs.finish(&job_id, None);
        }
        Err(error) => {
            let partial = store.partial_dir(&backup_id);
            if let Err(cleanup) = std::fs::remove_dir_all(&partial)
                && cleanup.kind() != std::io::ErrorKind::NotFound
            {
                tracing::error!(%cleanup, dir = %partial.display(), "cannot remove a failed backup");
            }
            tracing::error!(%error, backup = %backup_id, "backup failed");
            state.jobs.finish(&job_id, Some(error));
        }
    }
}

/// The copy and everything until the backup is complete on disk. Returns the replica's downtime.
async fn backup_steps(
    state: &Arc<AgentState>,
    job_id: &str,
    backup_id: &str,
) -> Result<Option<u64>, String> {
    let config = backup_config(state).expect("configured");
    let store = store(state).expect("configured");
    let partial = store.partial_dir(backup_id);
    std::fs::create_dir_all(&partial).map_err(|error| format!("{}: {error}", partial.display()))?;
    let raw = partial.join(RAW_FILE);
    let data_file = state.config.replica.data_file.clone();

    let was_running = state.replica.pid().is_some();
    let down_since = Instant::now();
    if was_running {
        state.jobs.step(job_id, "stopping the replica");
        std::fs::write(store.marker(), backup_id)
            .map_err(|error| format!("writing the marker: {error}"))?;
        store::sync_dir(&store.dir).map_err(|error| error.to_string())?;
        state
            .replica
            .stop()
            .await
            .map_err(|error| format!("stopping the replica: {error}"))?;
    }
    state.jobs.step(job_id, "copying the data file");
    let copy_started = Instant::now();
    let copy = {
        let (data_file, raw) = (data_file.clone(), raw.clone());
        tokio::task::spawn_blocking(move || files::clone_or_copy(&data_file, &raw)).await
    };
    let copy_ms = copy_started.elapsed().as_millis() as u64;
    let mut downtime_ms = None;
    let mut stopped_ms = 0;
    if was_running {
        // Whatever happened to the copy, the replica comes back.
        state.jobs.step(job_id, "starting the replica");
        state
            .replica
            .start()
            .await
            .map_err(|error| format!("starting the replica again: {error}"))?;
        stopped_ms = down_since.elapsed().as_millis() as u64;
        let _ = std::fs::remove_file(store.marker());
    }
    let reflink = match copy {
        Ok(Ok(reflink)) => reflink,
        Ok(Err(error)) => return Err(format!("copying {}: {error}", data_file.display())),
        Err(error) => return Err(format!("copying {}: {error}", data_file.display())),
    };
    if was_running {
        state
            .jobs
            .step(job_id, "waiting for the replica to be ready");
        let timeout = Duration::from_millis(state.config.control.ready_timeout_ms);
        control::wait_ready(state, timeout).await?;
        downtime_ms = Some(down_since.elapsed().as_millis() as u64);
    }

    state.jobs.step(job_id, "hashing and compressing the copy");
    let hash_started = Instant::now();
    let (compress, level) = (config.compress, config.zstd_level);
    let partial_for_work = partial.clone();
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
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("hashing and compressing: {error}"))?;
    let hash_ms = hash_started.elapsed().as_millis() as u64;

    let identity = state.binary_identity();
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        backup_id: backup_id.to_string(),
        cluster_id: state.config.replica.cluster_id.clone(),
        replica_index: state.config.replica.index,
        replica_count: state.config.replica.count,
        tigerbeetle_version: identity.and_then(|identity| identity.version),
        host: state.host.latest().hostname.clone(),
        agent_version: crate::AGENT_VERSION.to_string(),
        created_unix_ms: now_unix_ms(),
        file,
        compression: if compress { "zstd" } else { "none" }.to_string(),
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
        .map_err(|error| format!("writing the manifest: {error}"))?;

    state.jobs.step(job_id, "verifying the stored file");
    let verification = verify_files(&partial, &manifest).await;
    write_json_atomically(&partial.join(store::VERIFICATION_FILE), &verification)
        .map_err(|error| error.to_string())?;
    if !verification.ok {
        return Err(format!(
            "the stored copy does not verify: {}",
            verification.detail
        ));
    }
    // Until the hooks have run, the backup is recorded as not shipped.
    let pending: Vec<HookResult> = config
        .hooks
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
            .map_err(|error| error.to_string())?;
    }
    std::fs::rename(&partial, store.backup_dir(backup_id))
        .map_err(|error| format!("completing the backup: {error}"))?;
    store::sync_dir(&store.dir).map_err(|error| error.to_string())?;
    tracing::info!(backup = %backup_id, ?downtime_ms, reflink, "backup complete");
    Ok(downtime_ms)
}

/// Re-hashes a backup's stored file against its manifest.
pub async fn verify_files(dir: &Path, manifest: &Manifest) -> Verification {
    let stored = dir.join(&manifest.file);
    let expected = manifest.stored_blake3.clone();
    let outcome = tokio::task::spawn_blocking(move || files::blake3_file(&stored)).await;
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
fn find_backup(state: &AgentState, id: &str) -> Result<(Store, BackupRecord), Refusal> {
    store::validate_backup_id(id).map_err(Refusal::BadRequest)?;
    let store = store(state)?;
    let record = store
        .get(id)
        .map_err(io_failure("reading the backup"))?
        .ok_or_else(|| Refusal::NotFound(format!("no backup {id}")))?;
    Ok((store, record))
}

/// `POST /v1/backups/{id}/verify`.
pub async fn verify(state: &AgentState, id: &str) -> Result<Verification, Refusal> {
    let (store, record) = find_backup(state, id)?;
    let dir = store.backup_dir(id);
    let verification = verify_files(&dir, &record.manifest).await;
    write_json_atomically(&dir.join(store::VERIFICATION_FILE), &verification)
        .map_err(io_failure("recording the verification"))?;
    Ok(verification)
}

async fn run_hooks(state: &AgentState, store: &Store, job_id: &str, backup_id: &str) {
    let config = backup_config(state).expect("configured");
    if config.hooks.is_empty() {
        return;
    }
    state.jobs.step(job_id, "running shipping hooks");
    let dir = store.backup_dir(backup_id);
    let mut results = Vec::new();
    for hook in &config.hooks {
        let result = run_hook(hook, &dir, backup_id).await;
        if !result.ok {
            tracing::warn!(hook = %hook.name, error = ?result.error, backup = %backup_id, "hook failed; the backup stays, unshipped");
        }
        results.push(result);
    }
    if let Err(error) = write_json_atomically(&dir.join(store::HOOKS_FILE), &results) {
        tracing::error!(%error, "cannot record hook results");
    }
}

async fn run_hook(hook: &config::Hook, dir: &Path, backup_id: &str) -> HookResult {
    let started = Instant::now();
    let child = tokio::process::Command::new(&hook.command[0])
        .args(&hook.command[1..])
        .current_dir(dir)
        .env("TB_BACKUP_ID", backup_id)
        .env("TB_BACKUP_DIR", dir)
        .env("TB_BACKUP_MANIFEST", dir.join(store::MANIFEST_FILE))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let result = match child {
        Err(error) => Err(format!("cannot start {}: {error}", hook.command[0])),
        Ok(child) => match tokio::time::timeout(
            Duration::from_millis(hook.timeout_ms),
            child.wait_with_output(),
        )
        .await
        {
            Err(_) => Err(format!("timed out after {} ms", hook.timeout_ms)),
            Ok(Err(error)) => Err(error.to_string()),
            Ok(Ok(output)) => Ok(output),
        },
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    match result {
        Err(error) => HookResult {
            name: hook.name.clone(),
            ok: false,
            exit_code: None,
            duration_ms,
            output: String::new(),
            error: Some(error),
        },
        Ok(output) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            if text.len() > HOOK_OUTPUT_KEPT_BYTES {
                let mut cut = text.len() - HOOK_OUTPUT_KEPT_BYTES;
                while !text.is_char_boundary(cut) {
                    cut += 1;
                }
                text = text[cut..].to_string();
            }
            HookResult {
                name: hook.name.clone(),
                ok: output.status.success(),
                exit_code: output.status.code(),
                duration_ms,
                output: text,
                error: (!output.status.success()).then(|| format!("exited with {}", output.status)),
            }
        }
    }
}

/// Keeps the newest `keep_last` backups and none older than `max_age_days`, but never deletes
/// the newest verified backup.
fn apply_retention(state: &AgentState, store: &Store) {
    let config = backup_config(state).expect("configured");
    let Ok(backups) = store.list() else {
        return;
    };
    let newest_verified = backups
        .iter()
        .find(|backup| {
            backup
                .verification
                .as_ref()
                .is_some_and(|verification| verification.ok)
        })
        .map(|backup| backup.id.clone());
    let now = now_unix_ms();
    let max_age_ms = config.max_age_days.map(|days| u64::from(days) * 86_400_000);
    for (position, backup) in backups.iter().enumerate() {
        let too_many = position >= config.keep_last as usize;
        let too_old =
            max_age_ms.is_some_and(|max| now.saturating_sub(backup.manifest.created_unix_ms) > max);
        if (too_many || too_old) && Some(&backup.id) != newest_verified.as_ref() {
            match store.delete(&backup.id) {
                Ok(()) => {
                    tracing::info!(backup = %backup.id, too_many, too_old, "retention deleted a backup")
                }
                Err(error) => {
                    tracing::error!(%error, backup = %backup.id, "retention could not delete")
                }
            }
        }
    }
}

/// `DELETE /v1/backups/{id}`.
pub fn delete(state: &AgentState, id: &str) -> Result<(), Refusal> {
    let (store, _) = find_backup(state, id)?;
    store.delete(id).map_err(io_failure("deleting the backup"))
}

/// The stored file of a complete backup, for downloads (restore drills).
pub fn stored_file(state: &AgentState, id: &str) -> Result<(PathBuf, Manifest), Refusal> {
    let (store, record) = find_backup(state, id)?;
    Ok((
        store.backup_dir(id).join(&record.manifest.file),
        record.manifest,
    ))
}

/// `POST /v1/backups/{id}/restore`: disaster recovery only. Puts a verified backup in place of
/// this replica's data file, atomically, after moving the current file aside.
pub async fn restore(
    state: &Arc<AgentState>,
    id: &str,
    request: &RestoreRequest,
) -> Result<RestoreResponse, Refusal> {
    let (store, record) = find_backup(state, id)?;
    let _guard = state.control_lock.try_lock().map_err(|_| Refusal::Busy)?;
    let replica = &state.config.replica;
    let manifest = &record.manifest;
    if manifest.cluster_id != replica.cluster_id
        || manifest.replica_index != replica.index
        || manifest.replica_count != replica.count
    {
        return Err(Refusal::Refused(format!(
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
        return Err(Refusal::Refused(
            "the local replica is running: stop it first. Restoring an old copy into a live \
             cluster can lose committed data; restore is for disaster recovery of a stopped \
             cluster"
                .into(),
        ));
    }
    match (&request.mode, &request.cluster_id) {
        (None, None) => {
            let running = peers_possibly_running(state).await;
            if !running.is_empty() {
                return Err(Refusal::Refused(format!(
                    "peer replicas may be running ({}). Restoring one replica's old file into a \
                     live cluster can lose committed data. For a disaster recovery of the whole \
                     cluster, stop every replica, or send {{\"mode\": \"disaster-recovery\", \
                     \"cluster_id\": \"<the cluster id>\"}}",
                    running.join("; ")
                )));
            }
        }
        (Some(mode), Some(cluster_id)) if mode == "disaster-recovery" => {
            if *cluster_id != replica.cluster_id {
                return Err(Refusal::Refused(format!(
                    "the confirmation names cluster {cluster_id}, but this replica belongs to \
                     cluster {}",
                    replica.cluster_id
                )));
            }
        }
        _ => {
            return Err(Refusal::BadRequest(
                "the body must be empty or {\"mode\": \"disaster-recovery\", \"cluster_id\": \"...\"}".into(),
            ));
        }
    }
    // Verify before touching anything.
    let backup_dir = store.backup_dir(id);
    let verification = verify_files(&backup_dir, manifest).await;
    let _ = write_json_atomically(&backup_dir.join(store::VERIFICATION_FILE), &verification);
    if !verification.ok {
        return Err(Refusal::Refused(format!(
            "backup {id} failed verification, nothing was changed: {}",
            verification.detail
        )));
    }
    let data_file = replica.data_file.clone();
    let data_dir = data_file.parent().expect("absolute path").to_path_buf();
    let temporary = data_dir.join(format!(".restore-{id}.tmp"));
    let _ = std::fs::remove_file(&temporary);
    let (stored, compression, expected) = (
        backup_dir.join(&manifest.file),
        manifest.compression.clone(),
        manifest.data_blake3.clone(),
    );
    let temporary_for_work = temporary.clone();
    let extracted = tokio::task::spawn_blocking(move || {
        files::extract(&stored, &compression, &temporary_for_work)
    })
    .await
    .map_err(|error| Refusal::Failed(error.to_string()))?;
    match extracted {
        Ok(hash) if hash == expected => {}
        Ok(hash) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(Refusal::Failed(format!(
                "the extracted file hashes to {hash}, not {expected}; nothing was changed"
            )));
        }
        Err(error) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(Refusal::Failed(format!(
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

/// Peers whose replica runs, or whose agent cannot say: an unknown state counts as running.
async fn peers_possibly_running(state: &AgentState) -> Vec<String> {
    let replica = &state.config.replica;
    match &state.peers {
        Some(peers) => peers.running_peers(replica.index).await,
        None if replica.count == 1 => Vec::new(),
        None => vec!["no [peers] configured, so the agent cannot tell".into()],
    }
}

/// `POST /v1/replica/recover`: rebuilds a lost data file with `tigerbeetle recover` (never
/// `format`), starts the replica and waits until state sync has finished.
pub async fn start_recover(state: &Arc<AgentState>) -> Result<JobAccepted, Refusal> {
    let guard = Arc::clone(&state.control_lock)
        .try_lock_owned()
        .map_err(|_| Refusal::Busy)?;
    let replica = &state.config.replica;
    if replica.count < 3 {
        return Err(Refusal::Refused(format!(
            "tigerbeetle recover needs a cluster of 3 or more replicas; this one has {}",
            replica.count
        )));
    }
    if replica.data_file.exists() {
        return Err(Refusal::Refused(format!(
            "{} exists: recover is only for a lost data file. To rebuild a damaged one, move it \
             aside first",
            replica.data_file.display()
        )));
    }
    if state.replica.pid().is_some() {
        return Err(Refusal::Refused("the replica is running".into()));
    }
    // The rest of the cluster must be healthy enough to view-change without this replica.
    control::quorum_guard(state, control::Override::NotOffered).await?;
    let job_id = format!("recover-{}", store::new_backup_id(replica.index));
    state.jobs.begin(&job_id, "recover", None);
    let task_state = Arc::clone(state);
    let task_job = job_id.clone();
    tokio::spawn(async move {
        let result = recover_steps(&task_state, &task_job).await;
        drop(guard);
        state_finish(&task_state, &task_job, result);
    });
    Ok(JobAccepted {
        job_id,
        backup_id: None,
    })
}

fn state_finish(state: &AgentState, job_id: &str, result: Result<(), String>) {
    if let Err(error) = &result {
        tracing::error!(%error, job = %job_id, "job failed");
    }
    state.jobs.finish(job_id, result.err());
}

async fn recover_steps(state: &Arc<AgentState>, job_id: &str) -> Result<(), String> {
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
            .arg(format!("--cluster={}", replica.cluster_id))
            .arg(format!("--addresses={}", replica.addresses.join(",")))
            .arg(format!("--replica={}", replica.index))
            .arg(format!("--replica-count={}", replica.count))
            .arg(&temporary)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| {
        format!(
            "tigerbeetle recover did not finish within {} s",
            RECOVER_COMMAND_TIMEOUT.as_secs()
        )
    })?
    .map_err(|error| format!("cannot run tigerbeetle recover: {error}"))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&temporary);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "tigerbeetle recover failed ({}): {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    std::fs::rename(&temporary, data_file)
        .map_err(|error| format!("putting the recovered file in place: {error}"))?;
    if let Some(dir) = data_file.parent() {
        store::sync_dir(dir).map_err(|error| error.to_string())?;
    }
    state.jobs.step(job_id, "starting the replica");
    state
        .replica
        .start()
        .await
        .map_err(|error| error.to_string())?;
    state.jobs.step(job_id, "waiting for state sync to finish");
    let timeout = Duration::from_millis(state.config.control.recover_timeout_ms);
    control::wait_ready(state, timeout).await
}
