//! Every state-changing operation is a job, kept in memory for `GET /v1/jobs/{id}`. Bounded: the
//! oldest finished jobs are forgotten first. A job survives as long as the agent runs; the
//! backups themselves are on disk.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::api::{Job, JobKind, JobState, Outcome};

use tb_proto::clock::now_unix_ms;

/// A job's id: `<kind>-<suffix>`. A backup's job is named after its backup; other jobs get a new
/// suffix of the backup ids' shape (`crate::ids`), unique within the agent's life (a backup is
/// verified often, so the backup's id would not do).
pub fn new_job_id(kind: JobKind, replica: u8, backup_id: Option<&str>) -> String {
    let suffix = match (kind, backup_id) {
        (JobKind::Backup, Some(id)) => id.to_string(),
        _ => crate::ids::timestamped(replica),
    };
    format!("{}-{suffix}", kind.as_str())
}

pub const JOBS_KEPT_MAX: usize = 64;

#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<VecDeque<Job>>,
}

impl Jobs {
    pub fn begin(&self, id: &str, kind: JobKind, backup_id: Option<String>) {
        let mut jobs = self.jobs.lock().expect("not poisoned");
        if jobs.len() >= JOBS_KEPT_MAX
            && let Some(position) = jobs.iter().position(|job| job.state != JobState::Running)
        {
            jobs.remove(position);
        }
        // Running jobs are never forgotten; they are bounded by the locks (one per host, one
        // per backup, and at most `backup.keep_last` backups).
        jobs.push_back(Job {
            id: id.to_string(),
            kind,
            state: JobState::Running,
            step: "starting".into(),
            started_unix_ms: now_unix_ms(),
            finished_unix_ms: None,
            outcome: None,
            error: None,
            backup_id,
            downtime_ms: None,
        });
    }

    pub fn update(&self, id: &str, change: impl FnOnce(&mut Job)) {
        let mut jobs = self.jobs.lock().expect("not poisoned");
        if let Some(job) = jobs.iter_mut().find(|job| job.id == id) {
            change(job);
        }
    }

    pub fn step(&self, id: &str, step: &str) {
        tracing::info!(job = %id, step, "job step");
        self.update(id, |job| job.step = step.to_string());
    }

    /// Records how the job ended: `error` is None when it succeeded.
    pub fn finish(&self, id: &str, outcome: Outcome, error: Option<String>) {
        self.update(id, |job| {
            assert_eq!(job.state, JobState::Running, "a job finishes once");
            job.state = if error.is_some() {
                JobState::Failed
            } else {
                JobState::Succeeded
            };
            job.outcome = Some(outcome);
            job.error = error;
            job.finished_unix_ms = Some(now_unix_ms());
        });
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        let jobs = self.jobs.lock().expect("not poisoned");
        jobs.iter().find(|job| job.id == id).cloned()
    }
}
