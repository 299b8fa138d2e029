//! HTTP handlers of the backup API. Scopes: `backup` to create, verify, delete and download;
//! `read` to list; `control` and `backup` together to restore; `control` to recover.

use std::future::Future;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, on};
use serde::Serialize;
use tb_proto::endpoints::Endpoint;

use super::endpoint::{AppState, method_filter};
use super::extract::{JsonBody, backup_id};
use crate::api::{
    BackupRecord, BackupRequest, Job, JobKind, RestoreRequest, RestoreResponse, Verification,
};
use crate::backup as operations;
use crate::ops::{
    self, Answer, AppError, Caller, Deleted, Finished, JobDone, JobHandle, Lock, Spec, Wait,
};
use tb_proto::backup_id::BackupId;

/// The handler of a backup, recover or job endpoint (the router in `http/mod.rs` adds scopes and
/// timeouts from the endpoint table).
pub fn handler(endpoint: Endpoint) -> MethodRouter<AppState> {
    let method = method_filter(endpoint);
    match endpoint {
        Endpoint::BackupList => on(method, list),
        Endpoint::BackupCreate => on(method, create),
        Endpoint::BackupShow => on(method, show),
        Endpoint::BackupDelete => on(method, delete),
        Endpoint::BackupVerify => on(method, verify),
        Endpoint::BackupFile => on(method, download),
        Endpoint::BackupRestore => on(method, restore),
        Endpoint::ReplicaRecover => on(method, recover),
        Endpoint::Job => on(method, job),
        Endpoint::HealthLive
        | Endpoint::HealthReady
        | Endpoint::Status
        | Endpoint::Metrics
        | Endpoint::ReplicaControl
        | Endpoint::LeaseShow
        | Endpoint::LeaseInit
        | Endpoint::LeaseAcquire
        | Endpoint::LeaseRenew
        | Endpoint::LeaseRelease
        | Endpoint::LeaseBreak => unreachable!("{endpoint:?} is served elsewhere"),
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<BackupRequest>,
) -> Result<Answer<JobDone>, AppError> {
    ops::backup_schedule::launch_backup(&state, caller, request.lease()).await
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<BackupRecord>>, AppError> {
    let store = operations::store(&state)?;
    operations::blocking(move || {
        store
            .list()
            .map_err(|why| AppError::Failed(format!("listing backups: {why}")))
    })
    .await
    .map(Json)
}

async fn show(
    State(state): State<AppState>,
    path: Result<Path<BackupId>, PathRejection>,
) -> Result<Json<BackupRecord>, AppError> {
    let id = backup_id(path)?;
    let (_, record) = operations::find_backup_blocking(&state, id.as_str()).await?;
    Ok(Json(record))
}

async fn job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Job>, AppError> {
    state.jobs.get(&id).map(Json).ok_or_else(|| {
        AppError::NotFound(format!("no job {id} (jobs are kept while the agent runs)"))
    })
}

async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<BackupId>, PathRejection>,
) -> Result<Answer<Verification>, AppError> {
    on_backup(
        &state,
        caller,
        JobKind::BackupVerify,
        false,
        (Lock::Backup, path),
        operations::verify,
    )
    .await
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<BackupId>, PathRejection>,
) -> Result<Answer<Deleted>, AppError> {
    on_backup(
        &state,
        caller,
        JobKind::BackupDelete,
        false,
        (Lock::Backup, path),
        operations::delete,
    )
    .await
}

/// The lock an operation on one backup takes, made from its id, and the id from the path.
type BackupTarget = (fn(String) -> Lock, Result<Path<BackupId>, PathRejection>);

/// Verify, delete and restore: an operation on one existing backup, named by an id checked
/// first (a refusal is audited), under the lock of that id, answered when it ends.
async fn on_backup<T, F, Fut>(
    state: &AppState,
    caller: Caller,
    kind: JobKind,
    forced: bool,
    (lock_of, path): BackupTarget,
    operation: F,
) -> Result<Answer<T>, AppError>
where
    T: Finished + Serialize + Send + 'static,
    F: FnOnce(JobHandle, String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, AppError>> + Send + 'static,
{
    let id = match backup_id(path) {
        Ok(id) => id.into_string(),
        Err(refused) => return Err(ops::refuse(state, &caller, kind, forced, refused).await),
    };
    let lock = lock_of(id.clone());
    let spec = Spec {
        kind,
        forced,
        lock,
        wait: Wait::Finish,
        backup_id: Some(id.clone()),
    };
    ops::launch(state, caller, spec, move |job| operation(job, id)).await
}

async fn download(
    State(state): State<AppState>,
    path: Result<Path<BackupId>, PathRejection>,
) -> Result<Response, AppError> {
    let id = backup_id(path)?;
    // Opened inside the backup's directory, never through a link (see `stored_file`).
    let (file, manifest) = operations::stored_file(&state, id.as_str()).await?;
    let file = tokio::fs::File::from_std(file);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_LENGTH,
                manifest.stored_size_bytes.to_string(),
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 * 1024,
        )),
    )
        .into_response())
}

async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<BackupId>, PathRejection>,
    JsonBody(request): JsonBody<RestoreRequest>,
) -> Result<Answer<RestoreResponse>, AppError> {
    let forced = request.mode.is_some();
    on_backup(
        &state,
        caller,
        JobKind::Restore,
        forced,
        (Lock::ReplicaAndBackup, path),
        move |job, id| operations::restore::restore(job, id, request),
    )
    .await
}

async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<BackupRequest>,
) -> Result<Answer<JobDone>, AppError> {
    ops::launch(
        &state,
        caller,
        Spec {
            kind: JobKind::Recover,
            forced: false,
            lock: Lock::Replica,
            wait: Wait::Accept,
            backup_id: None,
        },
        move |job| operations::recover::recover(job, request.lease()),
    )
    .await
}
