//! Every state-changing action (start, stop, restart, backup, recover,
//! restore, verify, delete) goes through [`launch`]. One place takes the locks, writes the audit
//! lines, records the job, counts the outcome and maps errors to HTTP answers.
//!
//! An operation runs as a task owned by the agent, never by the request: when the client goes
//! away (its timeout, a dropped connection), hyper drops the handler's future, but the operation
//! goes on, keeps its locks until it has finished, and writes its closing audit line. The handler
//! only waits for it, bounded, and answers 202 with the job to follow when the wait runs out.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{OwnedMutexGuard, oneshot};

use super::locks::{BackupLease, Lock};
use super::{AppError, Finished};
use crate::api::{JobAccepted, JobKind, Outcome};
use crate::audit::{self, Phase};
use crate::state::AgentState;

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

/// The answer to an operation: its result (200), or the job to follow (202).
pub enum Answer<T> {
    Done(T),
    Accepted(JobAccepted),
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
    /// What the operation knew of its lease when it went on to stop the replica (closing
    /// audit line).
    lease_act: Arc<Mutex<Option<audit::LeaseAct>>>,
}

impl JobHandle {
    /// Recorded by the lease check right before the replica is stopped (lease::hold).
    pub fn record_lease_act(&self, act: audit::LeaseAct) {
        *self.lease_act.lock().expect("not poisoned") = Some(act);
    }

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
    let job_id = super::jobs::new_job_id(kind, state.config.replica.index, backup_id.as_deref());
    state.jobs.begin(&job_id, kind, backup_id.clone());
    // From here on nothing awaits before the task exists: a handler dropped now (its client
    // gone) must not leave a job without its task.

    let (accepted_sender, accepted) = oneshot::channel();
    let (result_sender, result) = oneshot::channel();
    let replica_lock = Arc::new(Mutex::new(replica_guard));
    let lease_act = Arc::new(Mutex::new(None));
    let handle = JobHandle {
        state: Arc::clone(state),
        id: job_id.clone(),
        forced,
        caller_token: caller.token.clone(),
        replica_lock: Arc::clone(&replica_lock),
        accepted: Some(accepted_sender),
        lease_act: Arc::clone(&lease_act),
    };
    let running = Running {
        state: Arc::clone(state),
        caller,
        kind,
        forced,
        job_id: job_id.clone(),
        lease_act,
    };
    tokio::spawn(async move {
        let outcome = running
            .run(handle, operation, replica_lock, backup_lease)
            .await;
        // The handler may have gone (its client did); the job keeps the outcome.
        let _ = result_sender.send(outcome);
    });

    let accepted_answer = Answer::Accepted(JobAccepted { job_id, backup_id });
    answer(
        wait,
        state.timeouts.answer_wait,
        accepted,
        result,
        accepted_answer,
    )
    .await
}

/// The handler's answer: the operation's result, or `accepted_answer` (202) once the operation
/// says it has accepted (`Wait::Accept`) or `answer_wait` has passed.
async fn answer<T>(
    wait: Wait,
    answer_wait: Duration,
    accepted: oneshot::Receiver<()>,
    result: oneshot::Receiver<Result<T, AppError>>,
    accepted_answer: Answer<T>,
) -> Result<Answer<T>, AppError> {
    let deadline = tokio::time::sleep(answer_wait);
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

/// A job's task: the context of its audit lines, its counter and its record.
struct Running {
    state: Arc<AgentState>,
    caller: Caller,
    kind: JobKind,
    forced: bool,
    job_id: String,
    lease_act: Arc<Mutex<Option<audit::LeaseAct>>>,
}

impl Running {
    /// Runs the operation and records its outcome (job, counter, closing audit line), and only
    /// then releases the locks.
    async fn run<T, F, Fut>(
        self,
        handle: JobHandle,
        operation: F,
        replica_lock: Arc<Mutex<Option<OwnedMutexGuard<()>>>>,
        backup_lease: Option<BackupLease>,
    ) -> Result<T, AppError>
    where
        T: Finished + Send + 'static,
        F: FnOnce(JobHandle) -> Fut,
        Fut: Future<Output = Result<T, AppError>> + Send + 'static,
    {
        let Running {
            state,
            caller,
            kind,
            forced,
            job_id,
            lease_act,
        } = self;
        let job = Some(job_id.as_str());
        record(
            &state,
            &caller,
            kind,
            forced,
            job,
            Phase::Begin,
            Outcome::Running,
            "",
            None,
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
            tracing::error!(job = %job_id, %error, "operation failed");
        }
        state.jobs.finish(&job_id, name, job_error);
        let lease = lease_act.lock().expect("not poisoned").take();
        state.counters.record_control(kind.as_str(), name.as_str());
        record(
            &state,
            &caller,
            kind,
            forced,
            job,
            Phase::End,
            name,
            &detail,
            lease,
        )
        .await;
        drop(replica_lock.lock().expect("not poisoned").take());
        drop(backup_lease);
        outcome
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
            None,
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
    lease: Option<audit::LeaseAct>,
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
            lease,
        })
        .await;
}
