//! `GET /v1/lease` and `POST /v1/lease/{init,acquire,renew,release,break}`. Every request that
//! changes the lease writes one audit line naming the holder.

use axum::Json;
use axum::extract::State;
use axum::routing::{MethodRouter, on};
use tb_proto::endpoints::Endpoint;
use tb_proto::lease::{
    self as contract, AcquireRequest, Initialized, LeaseIdRequest, LeaseStatus, LeaseView,
    Operation, Released, RenewRequest,
};

use super::endpoint::{AppState, method_filter};
use super::extract::JsonBody;
use crate::api::{JobKind, Outcome};
use crate::ops::{self, AppError, Caller};

/// A holder's name is shown to other operators and written to audit lines: short and printable.
const HOLDER_LENGTH_MAX: usize = 128;

pub fn handler(endpoint: Endpoint) -> MethodRouter<AppState> {
    let method = method_filter(endpoint);
    match endpoint {
        Endpoint::LeaseShow => on(method, show),
        Endpoint::LeaseInit => on(method, init),
        Endpoint::LeaseAcquire => on(method, acquire),
        Endpoint::LeaseRenew => on(method, renew),
        Endpoint::LeaseRelease => on(method, release),
        Endpoint::LeaseBreak => on(method, break_lease),
        other => unreachable!("{other:?} is not a lease endpoint"),
    }
}

async fn show(State(state): State<AppState>) -> Result<Json<LeaseStatus>, AppError> {
    state.lease.status().await.map(Json)
}

/// Audits the request's result (its outcome or its error) and passes it on.
async fn audited<T>(
    state: &AppState,
    caller: &Caller,
    kind: JobKind,
    result: Result<T, AppError>,
    detail: impl FnOnce(&T) -> String,
) -> Result<Json<T>, AppError> {
    let (outcome, text) = match &result {
        Ok(value) => (Outcome::Succeeded, detail(value)),
        Err(error) => (error.outcome(), error.detail()),
    };
    ops::record_once(state, caller, kind, false, outcome, &text).await;
    result.map(Json)
}

async fn init(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Initialized>, AppError> {
    let result = state.lease.init().await;
    audited(&state, &caller, JobKind::LeaseInit, result, |done| {
        done.detail.clone()
    })
    .await
}

fn holder_of(caller: &Caller, holder: Option<String>) -> Result<String, AppError> {
    let Some(holder) = holder else {
        return Ok(caller.token.clone());
    };
    // Characters, as docs/openapi.json counts them (`maxLength`), not bytes.
    if holder.is_empty()
        || holder.chars().count() > HOLDER_LENGTH_MAX
        || holder.chars().any(|c| c.is_control())
    {
        return Err(AppError::BadRequest(format!(
            "holder must be 1 to {HOLDER_LENGTH_MAX} printable characters"
        )));
    }
    // The token's name stays part of it: a holder cannot pass for another token.
    Ok(format!("{holder} (token {})", caller.token))
}

async fn acquire(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<AcquireRequest>,
) -> Result<Json<LeaseView>, AppError> {
    let result = async {
        let holder = holder_of(&caller, request.holder)?;
        let retry_of = match (&request.lease_id, &request.transfer_id) {
            (Some(lease), Some(transfer)) => Some((
                contract::parse_id(lease).map_err(AppError::bad_request)?,
                contract::parse_id(transfer).map_err(AppError::bad_request)?,
            )),
            (None, None) => None,
            _ => {
                return Err(AppError::BadRequest(
                    "a retried acquire names both lease_id and transfer_id".into(),
                ));
            }
        };
        let operation = request.operation.unwrap_or(Operation::Manual);
        // Stop, restart, backup and recover leases are the agents' own: a lease taken through
        // the API cannot pass for one (a restarted agent releases its predecessor's).
        if !operation.external() {
            return Err(AppError::BadRequest(format!(
                "operation {operation} is an agent's own; a lease taken through the API is for \
                 rollout, upgrade or manual"
            )));
        }
        let held = state
            .lease
            .acquire(&holder, operation, request.ttl_s, retry_of)
            .await?;
        Ok(held.view)
    }
    .await;
    audited(&state, &caller, JobKind::LeaseAcquire, result, |view| {
        format!("took lease {} for {} s", view.lease_id, view.ttl_s)
    })
    .await
}

async fn renew(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<RenewRequest>,
) -> Result<Json<LeaseView>, AppError> {
    let result = async {
        let lease_id = contract::parse_id(&request.lease_id).map_err(AppError::bad_request)?;
        let held = state.lease.renew(lease_id, request.ttl_s).await?;
        Ok(held.view)
    }
    .await;
    audited(&state, &caller, JobKind::LeaseRenew, result, |view| {
        format!("renewed lease {} for {} s", view.lease_id, view.ttl_s)
    })
    .await
}

async fn release(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<LeaseIdRequest>,
) -> Result<Json<Released>, AppError> {
    void(&state, &caller, &request.lease_id, JobKind::LeaseRelease).await
}

/// Ends a lease whose holder is gone, without waiting for its ttl: the lease id must be typed
/// out, so only the lease an operator looked at (`tbctl lease show`) can be broken.
async fn break_lease(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<LeaseIdRequest>,
) -> Result<Json<Released>, AppError> {
    void(&state, &caller, &request.lease_id, JobKind::LeaseBreak).await
}

/// Release and break: void the lease's pending transfer (idempotent), audited as `kind`.
async fn void(
    state: &AppState,
    caller: &Caller,
    lease_id: &str,
    kind: JobKind,
) -> Result<Json<Released>, AppError> {
    let verb = if kind == JobKind::LeaseBreak {
        "broken"
    } else {
        "released"
    };
    let result = async {
        let id = contract::parse_id(lease_id).map_err(AppError::bad_request)?;
        let released = state.lease.release(id).await?;
        Ok(Released {
            lease_id: lease_id.to_string(),
            released,
            detail: if released {
                format!("lease {lease_id} {verb}")
            } else {
                format!("lease {lease_id} was not held (already released, expired or broken)")
            },
        })
    }
    .await;
    audited(state, caller, kind, result, |done| done.detail.clone()).await
}
