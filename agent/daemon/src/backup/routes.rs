//! HTTP handlers of the backup API. Scopes: `backup` to create, verify, delete and download;
//! `read` to list; `control` and `backup` together to restore; `control` to recover.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{Refusal, store};
use crate::api::{BackupRequest, JobAccepted, RestoreRequest};
use crate::audit;
use crate::server::{TokenName, error, parse_body};
use crate::state::AgentState;

type AppState = Arc<AgentState>;
type BodyResult = Result<Bytes, axum::extract::rejection::BytesRejection>;

/// Routes that answer quickly.
pub fn quick_routes() -> (Router<AppState>, Router<AppState>) {
    let read = Router::new()
        .route("/v1/backups", get(list))
        .route("/v1/backups/{id}", get(show))
        .route("/v1/jobs/{id}", get(job));
    let backup = Router::new()
        .route("/v1/backups", post(create))
        .route("/v1/backups/{id}", axum::routing::delete(delete));
    (read, backup)
}

/// Routes that may take as long as a copy or an extraction: (backup scope, control scope,
/// control+backup scopes).
pub fn slow_routes() -> (Router<AppState>, Router<AppState>, Router<AppState>) {
    let backup = Router::new()
        .route("/v1/backups/{id}/verify", post(verify))
        .route("/v1/backups/{id}/file", get(download));
    let control = Router::new().route("/v1/replica/recover", post(recover));
    let control_and_backup = Router::new().route("/v1/backups/{id}/restore", post(restore));
    (backup, control, control_and_backup)
}

fn refusal(refusal: Refusal) -> Response {
    match refusal {
        Refusal::NotConfigured => error(
            StatusCode::CONFLICT,
            "not_configured",
            "backups are not configured on this agent: add a [backup] section",
        ),
        Refusal::Busy => error(
            StatusCode::CONFLICT,
            "busy",
            "another control or backup operation is running on this host",
        ),
        Refusal::NotFound(why) => error(StatusCode::NOT_FOUND, "not_found", why),
        Refusal::BadRequest(why) => error(StatusCode::BAD_REQUEST, "bad_request", why),
        Refusal::Refused(why) => error(StatusCode::CONFLICT, "refused", why),
        Refusal::Failed(why) => error(StatusCode::INTERNAL_SERVER_ERROR, "failed", why),
    }
}

fn outcome_of<T>(result: &Result<T, Refusal>) -> (&'static str, String) {
    match result {
        Ok(_) => ("accepted", String::new()),
        Err(Refusal::NotConfigured) => ("refused", "not configured".into()),
        Err(Refusal::Busy) => ("busy", String::new()),
        Err(Refusal::NotFound(why) | Refusal::BadRequest(why) | Refusal::Refused(why)) => {
            ("refused", why.clone())
        }
        Err(Refusal::Failed(why)) => ("failed", why.clone()),
    }
}

fn audit_record<T>(
    state: &AgentState,
    token: &str,
    remote: SocketAddr,
    action: &str,
    forced: bool,
    result: &Result<T, Refusal>,
) {
    let (outcome, detail) = outcome_of(result);
    state.counters.record_control(action, outcome);
    state.audit.record(&audit::Entry {
        token,
        remote,
        action,
        outcome,
        forced,
        detail: &detail,
    });
}

/// 202 with the job to follow, or the refusal; audited either way.
fn job_started(
    state: &AgentState,
    token: &str,
    remote: SocketAddr,
    action: &str,
    result: Result<JobAccepted, Refusal>,
) -> Response {
    audit_record(state, token, remote, action, false, &result);
    match result {
        Ok(accepted) => (StatusCode::ACCEPTED, axum::Json(accepted)).into_response(),
        Err(why) => refusal(why),
    }
}

async fn create(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    axum::Extension(TokenName(token)): axum::Extension<TokenName>,
    headers: HeaderMap,
    body: BodyResult,
) -> Response {
    if let Err(response) = parse_body::<BackupRequest>(&headers, body) {
        return response;
    }
    let result = super::start_backup(&state).await;
    job_started(&state, &token, remote, "backup", result)
}

async fn list(State(state): State<AppState>) -> Response {
    let store = match super::store(&state) {
        Ok(store) => store,
        Err(why) => return refusal(why),
    };
    match store.list() {
        Ok(backups) => axum::Json(backups).into_response(),
        Err(why) => refusal(Refusal::Failed(format!("listing backups: {why}"))),
    }
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if let Err(why) = store::validate_backup_id(&id) {
        return refusal(Refusal::BadRequest(why));
    }
    let store = match super::store(&state) {
        Ok(store) => store,
        Err(why) => return refusal(why),
    };
    match store.get(&id) {
        Ok(Some(record)) => axum::Json(record).into_response(),
        Ok(None) => refusal(Refusal::NotFound(format!("no backup {id}"))),
        Err(why) => refusal(Refusal::Failed(why.to_string())),
    }
}

async fn job(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.jobs.get(&id) {
        Some(job) => axum::Json(job).into_response(),
        None => refusal(Refusal::NotFound(format!(
            "no job {id} (jobs are kept while the agent runs)"
        ))),
    }
}

async fn verify(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    axum::Extension(TokenName(token)): axum::Extension<TokenName>,
    Path(id): Path<String>,
) -> Response {
    let result = super::verify(&state, &id).await;
    audit_record(&state, &token, remote, "backup_verify", false, &result);
    match result {
        Ok(verification) if verification.ok => axum::Json(verification).into_response(),
        Ok(verification) => error(StatusCode::CONFLICT, "corrupt", verification.detail),
        Err(why) => refusal(why),
    }
}

async fn delete(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    axum::Extension(TokenName(token)): axum::Extension<TokenName>,
    Path(id): Path<String>,
) -> Response {
    let result = super::delete(&state, &id);
    audit_record(&state, &token, remote, "backup_delete", false, &result);
    match result {
        Ok(()) => axum::Json(serde_json::json!({ "deleted": id })).into_response(),
        Err(why) => refusal(why),
    }
}

async fn download(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let (path, manifest) = match super::stored_file(&state, &id) {
        Ok(found) => found,
        Err(why) => return refusal(why),
    };
    match tokio::fs::File::open(&path).await {
        Ok(file) => (
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
            .into_response(),
        Err(why) => refusal(Refusal::Failed(format!("{}: {why}", path.display()))),
    }
}

async fn restore(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    axum::Extension(TokenName(token)): axum::Extension<TokenName>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: BodyResult,
) -> Response {
    let request = match parse_body::<RestoreRequest>(&headers, body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let result = super::restore(&state, &id, &request).await;
    audit_record(
        &state,
        &token,
        remote,
        "restore",
        request.mode.is_some(),
        &result,
    );
    match result {
        Ok(response) => axum::Json(response).into_response(),
        Err(why) => refusal(why),
    }
}

async fn recover(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    axum::Extension(TokenName(token)): axum::Extension<TokenName>,
    headers: HeaderMap,
    body: BodyResult,
) -> Response {
    if let Err(response) = parse_body::<BackupRequest>(&headers, body) {
        return response;
    }
    let result = super::start_recover(&state).await;
    job_started(&state, &token, remote, "recover", result)
}
