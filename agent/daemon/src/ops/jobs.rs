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
    /// Woken whenever a job finishes (`Jobs::finished`).
    finishes: tokio::sync::Notify,
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
        self.finishes.notify_waiters();
    }

    /// Job `id` once it has finished; None for an id never begun. Running jobs are never
    /// forgotten, so this returns the finished job.
    pub async fn finished(&self, id: &str) -> Option<Job> {
        loop {
            // Registered before the look, so that a finish between the look and the wait
            // still wakes it.
            let finish = self.finishes.notified();
            let mut finish = std::pin::pin!(finish);
            finish.as_mut().enable();
            match self.get(id) {
                Some(job) if job.state == JobState::Running => finish.await,
                other => return other,
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        let jobs = self.jobs.lock().expect("not poisoned");
        jobs.iter().find(|job| job.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn finished_waits_for_the_end_of_a_running_job() {
        let jobs = Arc::new(Jobs::default());
        assert!(jobs.finished("backup-none").await.is_none(), "never begun");
        jobs.begin("backup-a", JobKind::Backup, None);
        let waiter = {
            let jobs = Arc::clone(&jobs);
            tokio::spawn(async move { jobs.finished("backup-a").await })
        };
        // Another job's end does not end this wait.
        jobs.begin("backup-b", JobKind::Backup, None);
        jobs.finish("backup-b", Outcome::Succeeded, None);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        jobs.finish("backup-a", Outcome::Failed, Some("copy failed".into()));
        let job = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the finish")
            .unwrap()
            .expect("the job");
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.error.as_deref(), Some("copy failed"));
        // A job that has finished already is returned at once.
        let done = jobs.finished("backup-b").await.unwrap();
        assert_eq!(done.state, JobState::Succeeded);
    }
}
