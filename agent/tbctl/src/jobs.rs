//! Following an agent job (backup, recover) until it finishes: poll `GET /v1/jobs/{id}`, show
//! each new step (progress.rs: on stderr), give up at a deadline. Giving up never cancels
//! anything: the job runs on the agent whether or not tbctl watches.

use std::time::{Duration, Instant};

use super::client::{AgentClient, AgentError};
use super::exit;
use super::output;
use super::progress::Progress;
use super::status::describe;
use tb_proto::api;
use tb_proto::endpoints::Endpoint;
use tb_proto::inventory::ReplicaEntry;

/// Starting a job runs the agent's checks and quorum guard: seconds at most.
const START_TIMEOUT_MS: u64 = 30_000;
/// Jobs report their step as it changes; half a second shows every step of a backup.
const POLL_INTERVAL_MS: u64 = 500;
/// Each poll is one small GET: an agent that takes longer is struggling, and the next poll
/// asks again.
const POLL_REQUEST_TIMEOUT_MS: u64 = 5_000;

pub const STATE_RUNNING: api::JobState = api::JobState::Running;
pub const STATE_SUCCEEDED: api::JobState = api::JobState::Succeeded;

/// Polls job `job_id` on `replica`'s agent until it leaves the running state, printing each
/// step once, and returns the finished job (succeeded or failed: the caller decides). Fails
/// after `timeout_ms`, on an error that waiting cannot fix, or when the agent no longer knows
/// the job (it restarted, which interrupts jobs).
pub async fn follow(
    client: &AgentClient,
    replica: &ReplicaEntry,
    job_id: &str,
    timeout_ms: u64,
) -> anyhow::Result<api::Job> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut progress = Progress::new([format!("replica {}", replica.index)]);
    let mut last_step = String::from("(not known yet)");
    loop {
        let remaining_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        let request_timeout_ms = POLL_REQUEST_TIMEOUT_MS.min(remaining_ms).max(1);
        let answer = client
            .job(&replica.agent_url, job_id, request_timeout_ms)
            .await;
        let step = match &answer {
            Ok(job) => job.step.clone(),
            Err(AgentError::NotFound(_)) => anyhow::bail!(
                "{}: the agent no longer knows job {job_id}: it restarted, which interrupts \
                 jobs (last step seen: {last_step}); check its log, then `tbctl backups` or \
                 `tbctl status`",
                describe(replica)
            ),
            Err(error) if error.is_permanent() => {
                anyhow::bail!("{}: job {job_id}: {error}", describe(replica))
            }
            // An agent busy copying may answer late once; the deadline bounds the waiting.
            Err(error) => format!("cannot ask: {error}"),
        };
        progress.update(0, &step);
        if let Ok(job) = answer {
            if job.state != STATE_RUNNING {
                return Ok(job);
            }
            last_step = job.step;
        }
        let now = Instant::now();
        if now >= deadline {
            anyhow::bail!(
                "{}: job {job_id} still running after {timeout_ms} ms (step: {last_step}); it \
                 continues on the agent: follow it with `tbctl backups` or `tbctl status`",
                describe(replica)
            );
        }
        let pause = Duration::from_millis(POLL_INTERVAL_MS).min(deadline - now);
        tokio::time::sleep(pause).await;
    }
}

/// Starts the job of `endpoint` (a backup or a recover) on `entry`'s agent, follows it, and
/// returns the accepted answer and the finished job; fails with one line naming the replica when
/// the agent refuses, the job fails, or `timeout_ms` passes. `check_with` names the command that
/// tells whether a job started after a timeout.
pub async fn start_and_follow(
    client: &AgentClient,
    entry: &ReplicaEntry,
    endpoint: Endpoint,
    check_with: &str,
    timeout_ms: u64,
) -> anyhow::Result<(api::JobAccepted, api::Job)> {
    let action = match endpoint {
        Endpoint::BackupCreate => "backup",
        Endpoint::ReplicaRecover => "recover",
        _ => unreachable!("{endpoint:?} starts no job"),
    };
    let result = client
        .start_job(&entry.agent_url, endpoint, START_TIMEOUT_MS)
        .await;
    let accepted = accepted(entry, action, check_with, result)?;
    let subject = match &accepted.backup_id {
        Some(backup_id) => format!("{action} {backup_id}"),
        None => action.to_string(),
    };
    output::say(format!(
        "replica {}: {subject} started (job {}; waiting up to {} s)",
        entry.index,
        accepted.job_id,
        timeout_ms / 1000
    ));
    let job = follow(client, entry, &accepted.job_id, timeout_ms).await?;
    anyhow::ensure!(
        job.state == STATE_SUCCEEDED,
        "{}: {subject}: {}",
        describe(entry),
        failure(&job)
    );
    Ok((accepted, job))
}

/// The job's error as one line, for messages about a failed job.
pub fn failure(job: &api::Job) -> String {
    match &job.error {
        Some(error) => format!("job {} failed at \"{}\": {error}", job.id, job.step),
        None => format!(
            "job {} ended as {} at \"{}\" without an error",
            job.id, job.state, job.step
        ),
    }
}

/// "1.3 s" for a job's downtime, or why there is none.
pub fn downtime_text(job: &api::Job) -> String {
    match job.downtime_ms {
        Some(downtime_ms) => format!("{:.1} s", downtime_ms as f64 / 1000.0),
        None => "none (the replica was not running)".to_string(),
    }
}

/// The agent's answer to starting a job (`action`: "backup", "recover"), or one line naming
/// the replica that says why it did not start. After a timeout the job may have started anyway:
/// `check_with` names the command that tells.
pub fn accepted(
    entry: &ReplicaEntry,
    action: &str,
    check_with: &str,
    result: Result<api::JobAccepted, AgentError>,
) -> anyhow::Result<api::JobAccepted> {
    match result {
        Ok(accepted) => Ok(accepted),
        Err(AgentError::Refused { code, message }) => Err(exit::refusal(
            &code,
            format!("{}: {action} refused ({code}): {message}", describe(entry)),
        )),
        Err(error @ AgentError::Timeout(_)) => anyhow::bail!(
            "{}: starting {action}: {error}; it may have started anyway: check with \
             `{check_with}` before repeating it",
            describe(entry)
        ),
        Err(error @ AgentError::Unreachable(_)) => Err(exit::Unreachable(format!(
            "{}: starting {action}: {error}",
            describe(entry)
        ))
        .into()),
        Err(error) => anyhow::bail!("{}: starting {action}: {error}", describe(entry)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: api::JobState, error: Option<&str>, downtime_ms: Option<u64>) -> api::Job {
        api::Job {
            id: "backup-x".into(),
            kind: api::JobKind::Backup,
            state,
            step: "copying the data file".into(),
            started_unix_ms: 0,
            finished_unix_ms: None,
            outcome: None,
            error: error.map(str::to_string),
            backup_id: None,
            downtime_ms,
        }
    }

    #[test]
    fn failure_and_downtime_texts() {
        assert_eq!(
            failure(&job(api::JobState::Failed, Some("disk full"), None)),
            "job backup-x failed at \"copying the data file\": disk full"
        );
        assert_eq!(
            downtime_text(&job(STATE_SUCCEEDED, None, Some(1300))),
            "1.3 s"
        );
        assert!(downtime_text(&job(STATE_SUCCEEDED, None, None)).starts_with("none"));
    }
}
