//! Cold backups that keep the cluster available, verification, retention, shipping hooks,
//! `tigerbeetle recover` for a lost data file, and disaster-recovery restore.
//!
//! TigerBeetle allows copying a data file only while its replica is stopped (or through an atomic
//! clone), so a backup stops this one replica — after the quorum guard says the rest of the
//! cluster keeps committing without it — clones or copies the file, and starts it again. Hashing,
//! compression and shipping happen afterwards, from the copy, with the replica already back.

pub mod cold_copy;
pub mod recover;
pub mod restore;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
/// Bytes of a hook's output kept in the backup's record.
const HOOK_OUTPUT_KEPT_BYTES: usize = 16 * 1024;

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
    blocking(move || {
        store::create_private_dir_all(&dir).map_err(io_failure("backup.dir"))?;
        let data_size_bytes = std::fs::metadata(&data_file)
            .map_err(io_failure("the data file"))?
            .len();
        let available = files::available_bytes(&dir).map_err(io_failure("backup.dir"))?;
        let needed = data_size_bytes + free_margin_bytes;
        if available < needed {
            return Err(AppError::Refused(format!(
                "{} has {available} bytes free; a backup needs {needed} (the data file's \
                 {data_size_bytes} bytes plus the {free_margin_bytes} byte margin)",
                dir.display(),
            )));
        }
        Ok(())
    })
    .await?;
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
            run_hooks(&state, &store, &job.id, &backup_id).await;
            job.step("applying retention");
            let retention_state = Arc::clone(&state);
            blocking(move || {
                apply_retention(&retention_state, &store);
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
            Err(AppError::Failed(error))
        }
    }
}

/// The copy and everything until the backup is complete on disk. Returns the replica's downtime.
async fn backup_steps(job: &JobHandle, backup_id: &str) -> Result<Option<u64>, String> {
    let state = &job.state;
    let job_id = job.id.as_str();
    let config = backup_config(state).expect("configured");
    let store = store(state).expect("configured");
    let partial = store
        .create_partial_dir(backup_id)
        .map_err(|error| format!("{}: {error}", store.partial_dir(backup_id).display()))?;
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
        cluster_id: state.config.replica.cluster_id.clone(),
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
        .map_err(|error| format!("writing the manifest: {error}"))?;

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
) -> Result<(cold_copy::Copied, Option<u64>), String> {
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
    let copied = copied?;
    let mut downtime_ms = None;
    if copied.was_running {
        state
            .jobs
            .step(job_id, "waiting for the replica to be ready");
        ops::wait_ready(state, state.timeouts.ready)
            .await
            .map_err(|error| error.to_string())?;
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
) -> Result<(String, files::Compressed, u64), String> {
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
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("hashing and compressing: {error}"))?;
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
) -> Result<(), String> {
    let state = &job.state;
    let job_id = job.id.as_str();
    state.jobs.step(job_id, "verifying the stored file");
    let stored = std::fs::File::open(partial.join(&manifest.file));
    let verification = verify_files(stored, manifest).await;
    write_json_atomically(&partial.join(store::VERIFICATION_FILE), &verification)
        .map_err(|error| error.to_string())?;
    if !verification.ok {
        return Err(format!(
            "the stored copy does not verify: {}",
            verification.detail
        ));
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
            .map_err(|error| error.to_string())?;
    }
    std::fs::rename(partial, store.backup_dir(backup_id))
        .map_err(|error| format!("completing the backup: {error}"))?;
    store::sync_dir(&store.dir).map_err(|error| error.to_string())?;
    Ok(())
}

/// The sequence number of a new backup (see `Manifest::sequence`).
fn next_sequence(store: &Store) -> Result<u64, String> {
    let listed = store
        .list()
        .map_err(|error| format!("listing backups for the sequence: {error}"))?;
    store
        .next_sequence(&listed)
        .map_err(|error| format!("the backup sequence: {error}"))
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
        Ok(mut child) => {
            let stdout = child.stdout.take().expect("piped");
            let stderr = child.stderr.take().expect("piped");
            // The output is read as it comes and only its tail kept: a hook that prints
            // gigabytes costs the agent no more than the kept bytes. On a timeout the child is
            // dropped, which kills it.
            let run = async {
                let (stdout, stderr, status) = tokio::join!(
                    read_tail(stdout, HOOK_OUTPUT_KEPT_BYTES),
                    read_tail(stderr, HOOK_OUTPUT_KEPT_BYTES),
                    child.wait()
                );
                Ok::<_, std::io::Error>((stdout?, stderr?, status?))
            };
            match tokio::time::timeout(Duration::from_millis(hook.timeout_ms), run).await {
                Err(_) => Err(format!("timed out after {} ms", hook.timeout_ms)),
                Ok(Err(error)) => Err(error.to_string()),
                Ok(Ok(output)) => Ok(output),
            }
        }
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
        Ok((stdout, stderr, status)) => {
            let mut bytes = stdout;
            bytes.extend_from_slice(&stderr);
            let mut cut = bytes.len().saturating_sub(HOOK_OUTPUT_KEPT_BYTES);
            // Start on a character, not inside one (UTF-8 continuation bytes are 0b10xxxxxx).
            while cut < bytes.len() && bytes[cut] & 0xC0 == 0x80 {
                cut += 1;
            }
            let text = String::from_utf8_lossy(&bytes[cut..]).into_owned();
            HookResult {
                name: hook.name.clone(),
                ok: status.success(),
                exit_code: status.code(),
                duration_ms,
                output: text,
                error: (!status.success()).then(|| format!("exited with {status}")),
            }
        }
    }
}

/// Reads `reader` to its end, keeping only the last `kept_bytes` bytes: memory stays bounded by
/// `kept_bytes` plus one read buffer, whatever the amount read.
async fn read_tail(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    kept_bytes: usize,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut kept: std::collections::VecDeque<u8> =
        std::collections::VecDeque::with_capacity(kept_bytes);
    let mut buffer = vec![0u8; 8192];
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        let fresh = &buffer[read.saturating_sub(kept_bytes)..read];
        let overflow = (kept.len() + fresh.len()).saturating_sub(kept_bytes);
        kept.drain(..overflow);
        kept.extend(fresh);
        assert!(kept.len() <= kept_bytes);
    }
    Ok(kept.into())
}

/// Keeps the newest `keep_last` backups and none older than `max_age_days`, but never deletes
/// the newest verified backup.
fn apply_retention(state: &AgentState, store: &Store) {
    let config = backup_config(state).expect("configured");
    let backups = match store.list() {
        Ok(backups) => backups,
        Err(error) => {
            tracing::error!(%error, "retention cannot list the backups");
            return;
        }
    };
    let max_age_ms = config.max_age_days.map(|days| u64::from(days) * 86_400_000);
    for doomed in retention_doomed(&backups, config.keep_last, max_age_ms, now_unix_ms()) {
        // A backup being verified, restored or deleted is left for the next run.
        let Some(_lease) = state.locks.backup(&doomed.id) else {
            continue;
        };
        match store.delete(&doomed.id) {
            Ok(()) => tracing::info!(
                backup = %doomed.id,
                too_many = doomed.too_many,
                too_old = doomed.too_old,
                "retention deleted a backup"
            ),
            Err(error) => {
                tracing::error!(%error, backup = %doomed.id, "retention could not delete")
            }
        }
    }
}

/// A backup retention deletes, and why.
#[derive(Debug, PartialEq, Eq)]
struct Doomed {
    id: String,
    too_many: bool,
    too_old: bool,
}

/// What retention deletes from `backups` (newest first, as `Store::list` orders them by
/// sequence): those past the newest `keep_last` and those older than `max_age_ms`, except the
/// newest verified backup, which is always kept. Age is by the clock at creation; a creation
/// time in the future (a clock stepped back since) counts as age zero.
fn retention_doomed(
    backups: &[BackupRecord],
    keep_last: u32,
    max_age_ms: Option<u64>,
    now_unix_ms: u64,
) -> Vec<Doomed> {
    assert!(
        keep_last >= 1,
        "config validation keeps at least one backup"
    );
    assert!(
        backups
            .windows(2)
            .all(|pair| store::order_key(&pair[0]) >= store::order_key(&pair[1])),
        "backups are listed newest first"
    );
    let newest_verified = backups.iter().position(|backup| {
        backup
            .verification
            .as_ref()
            .is_some_and(|verification| verification.ok)
    });
    let mut doomed = Vec::new();
    for (position, backup) in backups.iter().enumerate() {
        let too_many = position >= keep_last as usize;
        let too_old = max_age_ms
            .is_some_and(|max| now_unix_ms.saturating_sub(backup.manifest.created_unix_ms) > max);
        if (too_many || too_old) && Some(position) != newest_verified {
            doomed.push(Doomed {
                id: backup.id.clone(),
                too_many,
                too_old,
            });
        }
    }
    doomed
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

    fn record(
        id: &str,
        sequence: u64,
        created_unix_ms: u64,
        verified: Option<bool>,
    ) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            manifest: store::tests::manifest(id, Some(sequence), created_unix_ms),
            verification: verified.map(|ok| Verification {
                ok,
                verified_unix_ms: 0,
                detail: String::new(),
            }),
            shipped: true,
            hooks: Vec::new(),
        }
    }

    fn doomed_ids(doomed: &[Doomed]) -> Vec<&str> {
        doomed.iter().map(|doomed| doomed.id.as_str()).collect()
    }

    const DAY_MS: u64 = 86_400_000;

    #[test]
    fn retention_keeps_the_newest_and_the_newest_verified() {
        let now = 100 * DAY_MS;
        // Newest first; the two newest failed verification (or were never verified).
        let backups = [
            record("e", 5, now - DAY_MS, Some(false)),
            record("d", 4, now - 2 * DAY_MS, None),
            record("c", 3, now - 40 * DAY_MS, Some(true)),
            record("b", 2, now - 50 * DAY_MS, Some(true)),
            record("a", 1, now - 60 * DAY_MS, Some(true)),
        ];
        // keep_last 2: c is past it and too old, yet it is the newest verified one.
        let doomed = retention_doomed(&backups, 2, Some(30 * DAY_MS), now);
        assert_eq!(doomed_ids(&doomed), ["b", "a"]);
        assert!(
            doomed
                .iter()
                .all(|doomed| doomed.too_many && doomed.too_old)
        );
        // max_age_days alone deletes what is older, but not the newest verified one.
        let doomed = retention_doomed(&backups, 100, Some(45 * DAY_MS), now);
        assert_eq!(doomed_ids(&doomed), ["b", "a"]);
        assert!(
            doomed
                .iter()
                .all(|doomed| !doomed.too_many && doomed.too_old)
        );
        // keep_last alone.
        let doomed = retention_doomed(&backups, 3, None, now);
        assert_eq!(doomed_ids(&doomed), ["b", "a"]);
        assert!(
            doomed
                .iter()
                .all(|doomed| doomed.too_many && !doomed.too_old)
        );
        // Nothing verified: keep_last and age rule alone.
        let unverified: Vec<_> = backups
            .iter()
            .map(|backup| BackupRecord {
                verification: None,
                ..backup.clone()
            })
            .collect();
        assert_eq!(
            doomed_ids(&retention_doomed(&unverified, 1, None, now)),
            ["d", "c", "b", "a"]
        );
    }

    /// After the clock was stepped back, the newest backup has the oldest creation time, and the
    /// older ones have creation times in the future: the newest (by sequence) is kept, and a
    /// creation time in the future is not "old".
    #[test]
    fn retention_after_a_stepped_back_clock() {
        let now = 100 * DAY_MS;
        let backups = [
            record("new", 3, now - 10 * DAY_MS, Some(true)),
            record("old", 2, now + 5 * DAY_MS, Some(true)),
            record("older", 1, now + 4 * DAY_MS, Some(true)),
        ];
        let doomed = retention_doomed(&backups, 2, Some(5 * DAY_MS), now);
        assert_eq!(doomed_ids(&doomed), ["older"]);
        // With one kept, the newest by sequence survives, whatever the clock said.
        assert_eq!(
            doomed_ids(&retention_doomed(&backups, 1, None, now)),
            ["old", "older"]
        );
    }

    #[tokio::test]
    async fn hook_output_keeps_the_tail() {
        for (total, kept) in [
            (0usize, 16),
            (10, 16),
            (16, 16),
            (100_000, 16),
            (100_000, 16 * 1024),
        ] {
            let input: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            let tail = read_tail(&input[..], kept).await.unwrap();
            assert_eq!(tail, input[total.saturating_sub(kept)..], "{total} {kept}");
        }
    }
}
