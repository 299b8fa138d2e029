//! The router, built from the endpoint table, and the handlers of the status, health, metrics and
//! replica-control endpoints (the backup and lease handlers are in `backup.rs` and `lease.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, on};

use super::endpoint::{AppState, method_filter};
use super::error::error;
use super::extract::JsonBody;
use super::{auth, backup, lease};
use crate::api::{ControlRequest, ControlResponse, JobKind};
use crate::ops::{self, Answer, AppError, Caller, Lock, Spec, Wait};
use crate::{control, health};
use tb_proto::endpoints::{Duration as EndpointDuration, Endpoint, ReplicaAction};

/// The router, built from the endpoint table in `tb_proto::endpoints`: every entry gets its
/// handler, its scope check and the timeout of its duration class, so tbctl, the OpenAPI test and
/// the server cannot disagree on a route.
pub fn router(state: AppState) -> Router {
    let config = &state.config;
    let quick_timeout = Duration::from_millis(config.server.request_timeout_ms);
    // Operations run as tasks of their own and their handlers answer 202 once
    // `answer_wait` has passed, so this is only a backstop that never cuts an operation short.
    let slow_timeout = state.timeouts.answer_wait + Duration::from_secs(10);
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        let mut route = handler(endpoint);
        if !endpoint.scopes().is_empty() {
            route = route.route_layer(axum::middleware::from_fn_with_state(
                (Arc::clone(&state), endpoint.scopes()),
                auth::require_scope,
            ));
        }
        let timeout = match endpoint.duration() {
            EndpointDuration::Quick => quick_timeout,
            EndpointDuration::Slow => slow_timeout,
        };
        // Axum merges the method routers of one path (`GET` and `POST /v1/backups`).
        router = router.route(
            endpoint.path(),
            route.layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            )),
        );
    }
    router
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see docs/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(
            config.server.body_size_max_bytes as usize,
        ))
        .with_state(state)
}

fn handler(endpoint: Endpoint) -> MethodRouter<AppState> {
    let method = method_filter(endpoint);
    match endpoint {
        // Liveness says only that the agent runs (like Patroni's /liveness): no token needed.
        Endpoint::HealthLive => on(method, live),
        Endpoint::HealthReady => on(method, ready),
        Endpoint::Status => on(method, status),
        Endpoint::Metrics => on(method, metrics_text),
        Endpoint::ReplicaControl => on(method, replica_control),
        Endpoint::ReplicaRecover
        | Endpoint::BackupList
        | Endpoint::BackupCreate
        | Endpoint::BackupShow
        | Endpoint::BackupDelete
        | Endpoint::BackupVerify
        | Endpoint::BackupFile
        | Endpoint::BackupRestore
        | Endpoint::Job => backup::handler(endpoint),
        Endpoint::LeaseShow
        | Endpoint::LeaseInit
        | Endpoint::LeaseAcquire
        | Endpoint::LeaseRenew
        | Endpoint::LeaseRelease
        | Endpoint::LeaseBreak => lease::handler(endpoint),
    }
}

async fn live() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    let report = health::ready_report(&state);
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(report)).into_response()
}

async fn metrics_text(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = crate::metrics::Format::negotiate(accept);
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            // Caches between the scraper and the agent must not serve one format for the other.
            (header::VARY, "Accept"),
        ],
        crate::metrics::body_as(&state, format).await,
    )
        .into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    axum::Json(crate::status::status_report(&state)).into_response()
}

async fn replica_control(
    State(state): State<AppState>,
    caller: Caller,
    Path(action): Path<String>,
    JsonBody(request): JsonBody<ControlRequest>,
) -> Result<Answer<ControlResponse>, AppError> {
    let action = match ReplicaAction::parse(&action) {
        Some(ReplicaAction::Start) => JobKind::Start,
        Some(ReplicaAction::Stop) => JobKind::Stop,
        Some(ReplicaAction::Restart) => JobKind::Restart,
        None => {
            return Err(AppError::NotFound(
                "actions are start, stop and restart".into(),
            ));
        }
    };
    ops::launch(
        &state,
        caller,
        Spec {
            kind: action,
            forced: request.force,
            lock: Lock::Replica,
            wait: Wait::Finish,
            backup_id: None,
        },
        move |job| control::act(job, action, request.lease()),
    )
    .await
}
