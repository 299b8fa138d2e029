//! Operations on a complete backup: find it (its id checked first), verify it, delete it, open
//! its stored file for a download.

use std::sync::Arc;

use super::configured::{blocking, store};
use super::store::{self, Store, now_unix_ms, write_json_atomically};
use crate::api::{BackupRecord, Manifest, Verification};
use crate::ops::{self, AppError, JobHandle, io_failure};
use crate::state::AgentState;
use tb_proto::backup_files as files;

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
    store::validate_backup_id(id).map_err(AppError::bad_request)?;
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
        store::validate_backup_id(&id).map_err(AppError::bad_request)?;
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
