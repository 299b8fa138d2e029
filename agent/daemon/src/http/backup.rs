//! HTTP handlers of the backup API. Scopes: `backup` to create, verify, delete and download;
//! `read` to list; `control` and `backup` together to restore; `control` to recover.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, on};
use serde::Serialize;
use tb_proto::endpoints::Endpoint;

use super::endpoint::{AppState, method_filter};
use super::extract::JsonBody;
use crate::api::{
    BackupRecord, BackupRequest, Job, JobKind, RestoreRequest, RestoreResponse, Verification,
};
use crate::backup::{self as operations, store};
use crate::ops::{
    self, Answer, AppError, Caller, Deleted, Finished, JobDone, JobHandle, Lock, Spec, Wait,
};
use crate::state::AgentState;

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

/// A backup id from the path, checked before it names a lock or a directory.
async fn checked_id(
    state: &Arc<AgentState>,
    caller: &Caller,
    kind: JobKind,
    forced: bool,
    id: &str,
) -> Result<(), AppError> {
    match store::validate_backup_id(id) {
        Ok(()) => Ok(()),
        Err(why) => Err(ops::refuse(state, caller, kind, forced, AppError::BadRequest(why)).await),
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
    Path(id): Path<String>,
) -> Result<Json<BackupRecord>, AppError> {
    store::validate_backup_id(&id).map_err(AppError::BadRequest)?;
    let (_, record) = operations::find_backup_blocking(&state, &id).await?;
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
    Path(id): Path<String>,
) -> Result<Answer<Verification>, AppError> {
    let lock = Lock::Backup(id.clone());
    on_backup(
        &state,
        caller,
        JobKind::BackupVerify,
        false,
        lock,
        id,
        operations::verify,
    )
    .await
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Answer<Deleted>, AppError> {
    let lock = Lock::Backup(id.clone());
    on_backup(
        &state,
        caller,
        JobKind::BackupDelete,
        false,
        lock,
        id,
        operations::delete,
    )
    .await
}

/// Verify, delete and restore: an operation on one existing backup, named by an id checked
/// first, under `lock`, answered when it ends.
async fn on_backup<T, F, Fut>(
    state: &AppState,
    caller: Caller,
    kind: JobKind,
    forced: bool,
    lock: Lock,
    id: String,
    operation: F,
) -> Result<Answer<T>, AppError>
where
    T: Finished + Serialize + Send + 'static,
    F: FnOnce(JobHandle, String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, AppError>> + Send + 'static,
{
    checked_id(state, &caller, kind, forced, &id).await?;
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
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    // Opened inside the backup's directory, never through a link (see `stored_file`).
    let (file, manifest) = operations::stored_file(&state, &id).await?;
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
    Path(id): Path<String>,
    JsonBody(request): JsonBody<RestoreRequest>,
) -> Result<Answer<RestoreResponse>, AppError> {
    let forced = request.mode.is_some();
    let lock = Lock::ReplicaAndBackup(id.clone());
    on_backup(
        &state,
        caller,
        JobKind::Restore,
        forced,
        lock,
        id,
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
