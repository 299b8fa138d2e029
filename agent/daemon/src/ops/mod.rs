//! The operations layer: every state-changing action (start, stop, restart, backup, recover,
//! restore, verify, delete) goes through [`launch`]. One place takes the locks, writes the audit
//! lines, records the job, counts the outcome and maps errors to HTTP answers.
//!
//! An operation runs as a task owned by the agent, never by the request: when the client goes
//! away (its timeout, a dropped connection), hyper drops the handler's future, but the operation
//! goes on, keeps its locks until it has finished, and writes its closing audit line. The handler
//! only waits for it, bounded, and answers 202 with the job to follow when the wait runs out.

pub mod error;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::{OwnedMutexGuard, oneshot};

pub use error::{AppError, io_failure};

use crate::api::{ControlResponse, JobAccepted, JobKind, Outcome, RestoreResponse, Verification};
use crate::audit::{self, Phase};
use crate::config::Config;
use crate::health;
use crate::server::TokenName;
use crate::state::AgentState;

/// Every duration the operations use, parsed once from the config.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long the replica gets to stop (process mode: SIGTERM, then SIGKILL).
    pub stop: Duration,
    /// How long a started replica gets to become ready.
    pub ready: Duration,
    /// How long a recover may take, state sync included.
    pub recover: Duration,
    /// How long the copy of a backup may keep the replica stopped.
    pub backup_copy: Duration,
    /// How long a handler waits for an operation before answering 202 with its job.
    pub answer_wait: Duration,
}

impl Timeouts {
    pub fn from_config(config: &Config) -> Timeouts {
        let control = &config.control;
        let stop = Duration::from_millis(control.stop_timeout_ms);
        let ready = Duration::from_millis(control.ready_timeout_ms);
        Timeouts {
            stop,
            ready,
            recover: Duration::from_millis(control.recover_timeout_ms),
            backup_copy: Duration::from_millis(
                config
                    .backup
                    .as_ref()
                    .map_or(u64::MAX / 2, |backup| backup.copy_timeout_ms),
            ),
            // A restart stops, starts and waits for readiness: by default it answers within
            // this, with its result.
            answer_wait: control.answer_wait_ms.map_or(
                stop + ready + Duration::from_secs(30),
                Duration::from_millis,
            ),
        }
    }
}

/// The locks of the operations layer: one for the replica (a second operation on it gets 409
/// busy) and one per backup (verify, delete and restore of one backup exclude each other).
#[derive(Default)]
pub struct Locks {
    replica: Arc<tokio::sync::Mutex<()>>,
    backups: Arc<Mutex<HashSet<String>>>,
}

/// A held per-backup lock; released on drop.
pub struct BackupLease {
    backups: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for BackupLease {
    fn drop(&mut self) {
        let removed = self.backups.lock().expect("not poisoned").remove(&self.id);
        assert!(removed, "a backup lease is released once");
    }
}

impl Locks {
    pub fn replica(&self) -> Option<OwnedMutexGuard<()>> {
        Arc::clone(&self.replica).try_lock_owned().ok()
    }

    pub fn backup(&self, id: &str) -> Option<BackupLease> {
        let inserted = self
            .backups
            .lock()
            .expect("not poisoned")
            .insert(id.to_string());
        inserted.then(|| BackupLease {
            backups: Arc::clone(&self.backups),
            id: id.to_string(),
        })
    }
}

/// Which locks an operation holds from its start to its end.
#[derive(Debug, Clone)]
pub enum Lock {
    Replica,
    Backup(String),
    ReplicaAndBackup(String),
}

/// What the handler waits for before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The end of the operation (bounded by `Timeouts::answer_wait`).
    Finish,
    /// The operation's checks: 202 once it says it has started its long part.
    Accept,
}

/// Who asked: the token's name and the remote address, for audit lines.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: String,
    pub remote: SocketAddr,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, AppError> {
        let token = parts
            .extensions
            .get::<TokenName>()
            .map(|name| name.0.clone());
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        match (token, remote) {
            (Some(token), Some(remote)) => Ok(Caller { token, remote }),
            // A route that changes state without authentication is a bug in the router.
            _ => Err(AppError::Failed(
                "internal: the request carries no authenticated caller".into(),
            )),
        }
    }
}

/// An optional JSON body: empty means `T::default()`; otherwise JSON of the exact shape.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody<T>, AppError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                AppError::Body {
                    status,
                    code: if status == StatusCode::PAYLOAD_TOO_LARGE {
                        "body_too_large"
                    } else {
                        "bad_body"
                    },
                    message: rejection.body_text(),
                }
            })?;
        parse_json(&content_type, &body).map(JsonBody)
    }
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(
    content_type: &str,
    body: &[u8],
) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if !content_type.starts_with("application/json") {
        return Err(AppError::Body {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: "send the body as application/json".into(),
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|parse_error| AppError::Body {
            status: StatusCode::BAD_REQUEST,
            code: "malformed_json",
            message: format!("request body: {parse_error}"),
        })?;
    // Every body is an object. serde would also read a struct from an array (`[]` as all
    // defaults), which would let a malformed request act, e.g. stop a replica.
    if !value.is_object() {
        return Err(AppError::Body {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_body",
            message: "request body: expected a JSON object".into(),
        });
    }
    // The JSON is well-formed: what remains is its shape (unknown fields, types, values).
    serde_json::from_value(value).map_err(|shape_error| AppError::Body {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_body",
        message: format!("request body: {shape_error}"),
    })
}

/// The answer to an operation: its result (200), or the job to follow (202).
pub enum Answer<T> {
    Done(T),
    Accepted(JobAccepted),
}

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        match self {
            Answer::Done(value) => axum::Json(value).into_response(),
            Answer::Accepted(accepted) => {
                (StatusCode::ACCEPTED, axum::Json(accepted)).into_response()
            }
        }
    }
}

/// What an operation's result says for its audit line and its job.
pub trait Finished {
    fn outcome(&self) -> Outcome;
    fn detail(&self) -> String;
}

impl Finished for ControlResponse {
    fn outcome(&self) -> Outcome {
        self.outcome
    }
    fn detail(&self) -> String {
        self.detail.clone()
    }
}

impl Finished for Verification {
    fn outcome(&self) -> Outcome {
        assert!(self.ok, "a failed verification is AppError::Corrupt");
        Outcome::Succeeded
    }
    fn detail(&self) -> String {
        self.detail.clone()
    }
}

impl Finished for RestoreResponse {
    fn outcome(&self) -> Outcome {
        Outcome::Succeeded
    }
    fn detail(&self) -> String {
        match &self.previous_moved_to {
            Some(aside) => format!("restored; the previous data file is at {aside}"),
            None => "restored".into(),
        }
    }
}

/// `DELETE /v1/backups/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub deleted: String,
}

impl Finished for Deleted {
    fn outcome(&self) -> Outcome {
        Outcome::Succeeded
    }
    fn detail(&self) -> String {
        format!("deleted backup {}", self.deleted)
    }
}

/// The result of a job whose answer was 202 (backup, recover): the job carries the details.
#[derive(Debug, Clone, Serialize)]
pub struct JobDone {
    pub detail: String,
}

impl Finished for JobDone {
    fn outcome(&self) -> Outcome {
        Outcome::Succeeded
    }
    fn detail(&self) -> String {
        self.detail.clone()
    }
}

/// What a running operation gets: its job, its locks, and the means to say it has been accepted.
pub struct JobHandle {
    pub state: Arc<AgentState>,
    pub id: String,
    pub forced: bool,
    /// The name of the caller's token (the holder named in a lease it takes).
    pub caller_token: String,
    replica_lock: Arc<Mutex<Option<OwnedMutexGuard<()>>>>,
    accepted: Option<oneshot::Sender<()>>,
}

impl JobHandle {
    pub fn step(&self, step: &str) {
        self.state.jobs.step(&self.id, step);
    }

    pub fn update(&self, change: impl FnOnce(&mut crate::api::Job)) {
        self.state.jobs.update(&self.id, change);
    }

    /// For `Wait::Accept`: the checks passed; the handler answers 202 now.
    pub fn accept(&mut self) {
        if let Some(accepted) = self.accepted.take() {
            let _ = accepted.send(());
        }
    }

    /// Lets other replica operations run while this one finishes work that leaves the replica
    /// alone (a backup's shipping hooks). Idempotent.
    pub fn release_replica_lock(&self) {
        self.replica_lock.lock().expect("not poisoned").take();
    }
}

/// What [`launch`] runs: the kind of operation, whether it overrides a guard (audited), the
/// locks it holds, what its handler waits for, and the backup it is about.
#[derive(Debug, Clone)]
pub struct Spec {
    pub kind: JobKind,
    pub forced: bool,
    pub lock: Lock,
    pub wait: Wait,
    pub backup_id: Option<String>,
}

/// The one way to run a state-changing operation. Takes `lock` (or answers busy), writes the
/// opening audit line, runs `operation` as a task of its own, and answers as `wait` says. The
/// task records the outcome (job, counter, closing audit line) and only then releases the locks.
pub async fn launch<T, F, Fut>(
    state: &Arc<AgentState>,
    caller: Caller,
    spec: Spec,
    operation: F,
) -> Result<Answer<T>, AppError>
where
    T: Finished + Serialize + Send + 'static,
    F: FnOnce(JobHandle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, AppError>> + Send + 'static,
{
    let Spec {
        kind,
        forced,
        lock,
        wait,
        backup_id,
    } = spec;
    let (replica_guard, backup_lease) = match take_locks(state, &lock) {
        Ok(held) => held,
        Err(busy) => return Err(refuse(state, &caller, kind, forced, busy).await),
    };
    // A backup's job is named after the backup; other ids are new (a backup is verified often).
    let job_suffix = match (kind, &backup_id) {
        (JobKind::Backup, Some(id)) => id.clone(),
        _ => new_job_suffix(state),
    };
    let job_id = format!("{}-{job_suffix}", kind.as_str());
    state.jobs.begin(&job_id, kind, backup_id.clone());
    // From here on nothing awaits before the task exists: a handler dropped now (its client
    // gone) must not leave a job without its task.

    let (accepted_sender, accepted) = oneshot::channel();
    let (result_sender, result) = oneshot::channel();
    let replica_lock = Arc::new(Mutex::new(replica_guard));
    let handle = JobHandle {
        state: Arc::clone(state),
        id: job_id.clone(),
        forced,
        caller_token: caller.token.clone(),
        replica_lock: Arc::clone(&replica_lock),
        accepted: Some(accepted_sender),
    };
    let task_state = Arc::clone(state);
    let task_job = job_id.clone();
    let task_caller = caller;
    tokio::spawn(async move {
        record(
            &task_state,
            &task_caller,
            kind,
            forced,
            Some(&task_job),
            Phase::Begin,
            Outcome::Running,
            "",
        )
        .await;
        // The operation runs in a task of its own so that a panic in it still ends the job, and
        // the closing audit line is written, before the locks are released.
        let outcome = match tokio::spawn(operation(handle)).await {
            Ok(result) => result,
            Err(join_error) => Err(AppError::Failed(format!(
                "internal: the operation ended abnormally: {join_error}"
            ))),
        };
        let (name, detail) = match &outcome {
            Ok(done) => (done.outcome(), done.detail()),
            Err(error) => (error.outcome(), error.detail()),
        };
        let job_error = outcome.is_err().then(|| detail.clone());
        if let Some(error) = &job_error {
            tracing::error!(job = %task_job, %error, "operation failed");
        }
        task_state.jobs.finish(&task_job, name, job_error);
        task_state
            .counters
            .record_control(kind.as_str(), name.as_str());
        record(
            &task_state,
            &task_caller,
            kind,
            forced,
            Some(&task_job),
            Phase::End,
            name,
            &detail,
        )
        .await;
        drop(replica_lock.lock().expect("not poisoned").take());
        drop(backup_lease);
        // The handler may have gone (its client did); the job keeps the outcome.
        let _ = result_sender.send(outcome);
    });

    let accepted_answer = Answer::Accepted(JobAccepted { job_id, backup_id });
    let deadline = tokio::time::sleep(state.timeouts.answer_wait);
    tokio::pin!(deadline);
    let result = match wait {
        Wait::Finish => tokio::select! {
            result = result => result,
            () = &mut deadline => return Ok(accepted_answer),
        },
        Wait::Accept => {
            tokio::pin!(result);
            tokio::select! {
                // Accepted, or the operation ended without accepting (its sender is gone).
                signal = accepted => match signal {
                    Ok(()) => return Ok(accepted_answer),
                    Err(_) => tokio::select! {
                        result = &mut result => result,
                        () = &mut deadline => return Ok(accepted_answer),
                    },
                },
                result = &mut result => result,
                () = &mut deadline => return Ok(accepted_answer),
            }
        }
    };
    match result {
        Ok(outcome) => outcome.map(Answer::Done),
        Err(_) => Err(AppError::Failed(
            "internal: the operation's task ended without a result".into(),
        )),
    }
}

fn take_locks(
    state: &AgentState,
    lock: &Lock,
) -> Result<(Option<OwnedMutexGuard<()>>, Option<BackupLease>), AppError> {
    let replica_busy =
        || AppError::Busy("another control or backup operation is running on this host".into());
    let backup_busy = |id: &str| {
        AppError::Busy(format!(
            "another operation (verify, delete or restore) is using backup {id}"
        ))
    };
    Ok(match lock {
        Lock::Replica => (Some(state.locks.replica().ok_or_else(replica_busy)?), None),
        Lock::Backup(id) => (
            None,
            Some(state.locks.backup(id).ok_or_else(|| backup_busy(id))?),
        ),
        Lock::ReplicaAndBackup(id) => {
            let guard = state.locks.replica().ok_or_else(replica_busy)?;
            let lease = state.locks.backup(id).ok_or_else(|| backup_busy(id))?;
            (Some(guard), Some(lease))
        }
    })
}

/// A refusal before an operation began (busy, a malformed id): one audit line, counted.
pub async fn refuse(
    state: &Arc<AgentState>,
    caller: &Caller,
    kind: JobKind,
    forced: bool,
    error: AppError,
) -> AppError {
    record_once(
        state,
        caller,
        kind,
        forced,
        error.outcome(),
        &error.detail(),
    )
    .await;
    error
}

/// A request that runs no job (a refusal, a lease request): one audit line, counted. The line
/// is written by a task of its own, so a client that goes away cannot skip it.
pub async fn record_once(
    state: &Arc<AgentState>,
    caller: &Caller,
    kind: JobKind,
    forced: bool,
    outcome: Outcome,
    detail: &str,
) {
    state
        .counters
        .record_control(kind.as_str(), outcome.as_str());
    let (task_state, task_caller, detail) = (Arc::clone(state), caller.clone(), detail.to_string());
    let _ = tokio::spawn(async move {
        record(
            &task_state,
            &task_caller,
            kind,
            forced,
            None,
            Phase::End,
            outcome,
            &detail,
        )
        .await;
    })
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn record(
    state: &AgentState,
    caller: &Caller,
    action: JobKind,
    forced: bool,
    job_id: Option<&str>,
    phase: Phase,
    outcome: Outcome,
    detail: &str,
) {
    state
        .audit
        .record(&audit::Entry {
            token: &caller.token,
            remote: caller.remote,
            action,
            phase,
            outcome,
            forced,
            job_id,
            detail,
        })
        .await;
}

/// Job ids: `<kind>-<the same shape as a backup id>`, unique within the agent's life.
fn new_job_suffix(state: &AgentState) -> String {
    crate::backup::store::new_backup_id(state.config.replica.index)
}

/// Whether the caller may override the quorum guard: stop and restart may (`force`), backups
/// and recover never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    Forced,
    NotForced,
    NotOffered,
}

/// Ok with the guard's finding when stopping keeps a quorum (or it is forced), else Refused.
pub async fn quorum_guard(state: &AgentState, force: Override) -> Result<String, AppError> {
    let replica = &state.config.replica;
    let verdict = match &state.peers {
        Some(peers) => peers.quorum_without(replica.index).await,
        None if replica.count == 1 => crate::peers::QuorumVerdict {
            ok: false,
            detail: "this is a single-replica cluster: stopping it stops the cluster".into(),
        },
        None => crate::peers::QuorumVerdict {
            ok: false,
            detail:
                "no [peers] configured, so the agent cannot prove the other replicas keep a quorum"
                    .into(),
        },
    };
    let advice = match force {
        Override::NotOffered => "Bring the other replicas back first; this cannot be forced.",
        _ => {
            "Bring the other replicas back first, or pass {\"force\": true} if you accept that \
             the cluster stops committing."
        }
    };
    match (verdict.ok, force) {
        (true, _) => Ok(verdict.detail),
        (false, Override::Forced) => {
            Ok(format!("forced past the quorum guard: {}", verdict.detail))
        }
        (false, _) => Err(AppError::Refused(format!(
            "stopping replica {} would put the cluster's availability at risk: {}. {advice}",
            replica.index, verdict.detail
        ))),
    }
}

/// Waits until every readiness check passes, or says which ones still fail at the deadline.
pub async fn wait_ready(state: &AgentState, timeout: Duration) -> Result<(), AppError> {
    let deadline = Instant::now() + timeout;
    loop {
        let report = health::ready_report(state);
        if report.ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(AppError::Failed(format!(
                "the replica started but was not ready within {} ms: {}",
                timeout.as_millis(),
                report.failing_summary()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_lock_excludes_a_second_holder_until_released() {
        let locks = Locks::default();
        let lease = locks.backup("a").expect("free");
        assert!(locks.backup("a").is_none(), "held twice");
        assert!(locks.backup("b").is_some(), "another backup is independent");
        drop(lease);
        assert!(locks.backup("a").is_some(), "released on drop");
        let guard = locks.replica().expect("free");
        assert!(locks.replica().is_none(), "held twice");
        drop(guard);
        assert!(locks.replica().is_some());
    }

    #[test]
    fn bodies_empty_json_and_refusals() {
        let empty: crate::api::ControlRequest = parse_json("", b"  \n").unwrap();
        assert!(!empty.force);
        let forced: crate::api::ControlRequest =
            parse_json("application/json", br#"{"force": true}"#).unwrap();
        assert!(forced.force);
        let codes = [
            (
                "text/plain",
                &br#"{"force": true}"#[..],
                "unsupported_media_type",
            ),
            ("application/json", &b"{"[..], "malformed_json"),
            (
                "application/json",
                &br#"{"forse": true}"#[..],
                "invalid_body",
            ),
            // Arrays, which serde would read as a struct of defaults, and other non-objects.
            ("application/json", &b"[]"[..], "invalid_body"),
            ("application/json", &b"[true]"[..], "invalid_body"),
            ("application/json", &b"null"[..], "invalid_body"),
            ("application/json", &b"0"[..], "invalid_body"),
            // A lease id that is not one.
            (
                "application/json",
                &br#"{"lease_id": ""}"#[..],
                "invalid_body",
            ),
            (
                "application/json",
                &br#"{"lease_id": "0000000000000000000000000000000A"}"#[..],
                "invalid_body",
            ),
        ];
        for (content_type, body, expected) in codes {
            match parse_json::<crate::api::ControlRequest>(content_type, body) {
                Err(AppError::Body { code, .. }) => assert_eq!(code, expected),
                other => panic!("{content_type} {body:?}: {:?}", other.map(|r| r.force)),
            }
        }
    }
}
