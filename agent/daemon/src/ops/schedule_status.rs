//! What the backup scheduler plans and what became of its last run, for `GET /v1/status` and
//! `/metrics` (docs/backups.md, "Scheduled backups"). The scheduler (`super::backup_schedule`)
//! records each transition here; readers take a copy. Kept in memory only: a restarted agent
//! starts with no last run.
//!
//! A tick's run goes: launched (`started`) then `succeeded` or `failed` when its job ends; or
//! `failed` at once (cannot run); or `refused_retrying` (refused before anything changed) until
//! it is launched or given up (`gave_up`). A run's later record replaces an earlier one of the
//! same tick; a job's end is recorded only while its run is still the last one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tb_proto::api::{BackupScheduleStatus, ScheduledRun, ScheduledRunOutcome};
use tb_proto::clock::rfc3339;

/// The scheduler's state. One per agent.
#[derive(Default)]
pub struct ScheduleStatus {
    view: Mutex<View>,
    /// Moves on every change: a source of change of the cached /metrics body.
    generation: AtomicU64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct View {
    expression: Option<String>,
    next_tick: Option<SystemTime>,
    next_run_at: Option<SystemTime>,
    last: Option<Run>,
    last_success_at: Option<SystemTime>,
    /// Ticks in a row whose run ended failed or given up, since the last success (or the
    /// agent's start).
    ticks_failed: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    tick: SystemTime,
    outcome: ScheduledRunOutcome,
    at: SystemTime,
    backup_id: Option<String>,
    job_id: Option<String>,
    error: Option<String>,
    retry_at: Option<SystemTime>,
}

/// What follows a refused run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Tried again at `retry_at`; the schedule's tick after the refused one is `next_tick`.
    At {
        retry_at: SystemTime,
        next_tick: Option<SystemTime>,
    },
    /// Refused until the end of its retry window.
    GaveUp,
}

/// The figures `/metrics` exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleMetrics {
    /// Whether the agent has a schedule at all.
    pub scheduled: bool,
    pub next_tick: Option<SystemTime>,
    pub last_success_at: Option<SystemTime>,
    pub last_outcome: Option<ScheduledRunOutcome>,
    pub ticks_failed: u32,
}

impl ScheduleStatus {
    pub fn new(expression: Option<String>) -> ScheduleStatus {
        let status = ScheduleStatus::default();
        status.view.lock().expect("not poisoned").expression = expression;
        status
    }

    fn change(&self, change: impl FnOnce(&mut View)) {
        let mut view = self.view.lock().expect("not poisoned");
        assert!(view.expression.is_some(), "only a schedule has runs");
        change(&mut view);
        if let Some(last) = &view.last {
            assert_eq!(
                last.retry_at.is_some(),
                last.outcome == ScheduledRunOutcome::RefusedRetrying
            );
        }
        drop(view);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The next run is planned: `tick`, fired at `run_at`.
    pub fn planned(&self, tick: SystemTime, run_at: SystemTime) {
        assert!(run_at >= tick);
        self.change(|view| {
            view.next_tick = Some(tick);
            view.next_run_at = Some(run_at);
        });
    }

    /// No tick follows (an expression whose last date has passed).
    pub fn exhausted(&self) {
        self.change(|view| {
            view.next_tick = None;
            view.next_run_at = None;
        });
    }

    /// `tick`'s backup `backup_id` was launched as job `job_id` at `at`.
    pub fn started(&self, tick: SystemTime, backup_id: &str, job_id: &str, at: SystemTime) {
        self.record(Run {
            backup_id: Some(backup_id.to_string()),
            job_id: Some(job_id.to_string()),
            ..Run::new(tick, ScheduledRunOutcome::Started, at)
        });
    }

    /// `tick`'s backup finished at launch (the operation answered with its result).
    pub fn succeeded_at_once(&self, tick: SystemTime, at: SystemTime) {
        self.record(Run::new(tick, ScheduledRunOutcome::Succeeded, at));
    }

    /// `tick`'s run could not be launched and is not retried.
    pub fn failed(&self, tick: SystemTime, error: &str, at: SystemTime) {
        self.record(Run {
            error: Some(error.to_string()),
            ..Run::new(tick, ScheduledRunOutcome::Failed, at)
        });
    }

    /// `tick`'s run was refused at `at`: tried again at `retry_at` (before the schedule's
    /// `next_tick`), or given up when None.
    pub fn refused(&self, tick: SystemTime, error: &str, at: SystemTime, retry: Retry) {
        let (outcome, retry_at) = match retry {
            Retry::At { retry_at, .. } => (ScheduledRunOutcome::RefusedRetrying, Some(retry_at)),
            Retry::GaveUp => (ScheduledRunOutcome::GaveUp, None),
        };
        self.record(Run {
            error: Some(error.to_string()),
            retry_at,
            ..Run::new(tick, outcome, at)
        });
        if let Retry::At {
            retry_at,
            next_tick,
        } = retry
        {
            assert!(next_tick.is_none_or(|next| retry_at < next));
            self.change(|view| {
                view.next_tick = next_tick;
                view.next_run_at = Some(retry_at);
            });
        }
    }

    fn record(&self, run: Run) {
        self.change(|view| {
            assert!(view.last.as_ref().is_none_or(|last| last.tick <= run.tick));
            view.count_end(run.outcome, run.at);
            // This tick is being run: the next one is planned once it is launched or given up.
            if view.next_tick.is_some_and(|next| next <= run.tick) {
                view.next_tick = None;
                view.next_run_at = None;
            }
            view.last = Some(run);
        });
    }

    /// Job `job_id` ended at `at`: `error` is None when the backup is stored. Ignored unless
    /// it is the last run's job (a later tick's run replaced it).
    pub fn job_finished(&self, job_id: &str, error: Option<&str>, at: SystemTime) {
        self.change(|view| {
            let Some(last) = view.last.as_mut() else {
                return;
            };
            if last.job_id.as_deref() != Some(job_id) {
                return;
            }
            assert_eq!(
                last.outcome,
                ScheduledRunOutcome::Started,
                "a job ends once"
            );
            last.at = at;
            last.error = error.map(str::to_string);
            last.outcome = match error {
                None => ScheduledRunOutcome::Succeeded,
                Some(_) => ScheduledRunOutcome::Failed,
            };
            let outcome = last.outcome;
            view.count_end(outcome, at);
        });
    }

    /// The status report's object.
    pub fn report(&self) -> BackupScheduleStatus {
        let view = self.view.lock().expect("not poisoned").clone();
        BackupScheduleStatus {
            expression: view.expression,
            next_tick: view.next_tick.map(rfc3339),
            next_run_at: view.next_run_at.map(rfc3339),
            last: view.last.map(|run| ScheduledRun {
                tick: rfc3339(run.tick),
                outcome: run.outcome,
                at: rfc3339(run.at),
                backup_id: run.backup_id,
                job_id: run.job_id,
                error: run.error,
                retry_at: run.retry_at.map(rfc3339),
            }),
            last_success_at: view.last_success_at.map(rfc3339),
        }
    }

    pub fn metrics(&self) -> ScheduleMetrics {
        let view = self.view.lock().expect("not poisoned");
        ScheduleMetrics {
            scheduled: view.expression.is_some(),
            next_tick: view.next_tick,
            last_success_at: view.last_success_at,
            last_outcome: view.last.as_ref().map(|run| run.outcome),
            ticks_failed: view.ticks_failed,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl View {
    /// A tick's run reached `outcome` at `at`: a success resets the failed ticks, a failure or
    /// a run given up adds one. (Each tick ends once: launched runs end with their job.)
    fn count_end(&mut self, outcome: ScheduledRunOutcome, at: SystemTime) {
        match outcome {
            ScheduledRunOutcome::Succeeded => {
                self.last_success_at = Some(at);
                self.ticks_failed = 0;
            }
            ScheduledRunOutcome::Failed | ScheduledRunOutcome::GaveUp => {
                self.ticks_failed = self.ticks_failed.saturating_add(1);
            }
            ScheduledRunOutcome::Started | ScheduledRunOutcome::RefusedRetrying => {}
        }
    }
}

impl Run {
    fn new(tick: SystemTime, outcome: ScheduledRunOutcome, at: SystemTime) -> Run {
        Run {
            tick,
            outcome,
            at,
            backup_id: None,
            job_id: None,
            error: None,
            retry_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// 2026-03-01T00:00:00Z.
    const DAY_S: u64 = 1_772_323_200;

    fn at_s(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(DAY_S + seconds)
    }

    fn outcome(status: &ScheduleStatus) -> Option<ScheduledRunOutcome> {
        status.report().last.map(|run| run.outcome)
    }

    #[test]
    fn no_schedule_reports_nulls() {
        let status = ScheduleStatus::new(None);
        assert_eq!(status.report(), BackupScheduleStatus::default());
        assert_eq!(status.metrics().next_tick, None);
    }

    #[test]
    fn a_launched_run_ends_succeeded_or_failed_with_its_job() {
        let status = ScheduleStatus::new(Some("0 * * * *".into()));
        let tick = at_s(3600);
        status.planned(tick, tick + Duration::from_secs(5));
        let report = status.report();
        assert_eq!(report.expression.as_deref(), Some("0 * * * *"));
        assert_eq!(report.next_tick.as_deref(), Some("2026-03-01T01:00:00Z"));
        assert_eq!(report.next_run_at.as_deref(), Some("2026-03-01T01:00:05Z"));
        assert_eq!(report.last, None);

        let id = "20260301T010005Z-r0-0a0b0c0d";
        status.started(tick, id, &format!("backup-{id}"), at_s(3605));
        assert_eq!(outcome(&status), Some(ScheduledRunOutcome::Started));
        assert_eq!(
            status.report().next_tick,
            None,
            "this tick is no longer next"
        );
        status.planned(at_s(7200), at_s(7200));
        // Another job's end changes nothing.
        status.job_finished("backup-other", None, at_s(3610));
        assert_eq!(outcome(&status), Some(ScheduledRunOutcome::Started));
        assert_eq!(status.metrics().last_success_at, None);

        status.job_finished(&format!("backup-{id}"), None, at_s(3620));
        let report = status.report();
        let last = report.last.unwrap();
        assert_eq!(last.outcome, ScheduledRunOutcome::Succeeded);
        assert_eq!(last.tick, "2026-03-01T01:00:00Z");
        assert_eq!(last.at, "2026-03-01T01:00:20Z");
        assert_eq!(last.backup_id.as_deref(), Some(id));
        assert_eq!(report.next_tick.as_deref(), Some("2026-03-01T02:00:00Z"));
        assert_eq!(status.metrics().last_success_at, Some(at_s(3620)));

        // The next tick's job fails: the last success stays the earlier one.
        status.started(at_s(7200), "b", "backup-b", at_s(7200));
        status.job_finished("backup-b", Some("copy failed"), at_s(7300));
        let last = status.report().last.unwrap();
        assert_eq!(last.outcome, ScheduledRunOutcome::Failed);
        assert_eq!(last.error.as_deref(), Some("copy failed"));
        assert_eq!(status.metrics().last_success_at, Some(at_s(3620)));
        assert_eq!(status.metrics().ticks_failed, 1);
    }

    #[test]
    fn refusals_retry_then_launch_or_give_up() {
        let status = ScheduleStatus::new(Some("0 3 * * *".into()));
        let tick = at_s(3 * 3600);
        status.planned(tick, tick);
        let generation = status.generation();
        let retry = Retry::At {
            retry_at: tick + Duration::from_secs(70),
            next_tick: Some(at_s(27 * 3600)),
        };
        status.refused(tick, "lease held", tick, retry);
        assert!(status.generation() > generation);
        let report = status.report();
        let last = report.last.unwrap();
        assert_eq!(last.outcome, ScheduledRunOutcome::RefusedRetrying);
        assert_eq!(last.retry_at.as_deref(), Some("2026-03-01T03:01:10Z"));
        assert_eq!(report.next_run_at.as_deref(), Some("2026-03-01T03:01:10Z"));
        assert_eq!(report.next_tick.as_deref(), Some("2026-03-02T03:00:00Z"));
        assert_eq!(last.backup_id, None);
        assert_eq!(status.metrics().ticks_failed, 0, "not over yet");

        status.refused(tick, "lease held", at_s(4 * 3600), Retry::GaveUp);
        let last = status.report().last.unwrap();
        assert_eq!(last.outcome, ScheduledRunOutcome::GaveUp);
        assert_eq!(last.retry_at, None);
        assert_eq!(status.metrics().ticks_failed, 1);

        // A run that cannot be launched at all fails at once.
        let tomorrow = at_s(27 * 3600);
        status.failed(tomorrow, "backups are not configured", tomorrow);
        assert_eq!(outcome(&status), Some(ScheduledRunOutcome::Failed));
        assert_eq!(status.metrics().ticks_failed, 2);
        // One that answered with its result succeeded at once.
        let after = at_s(51 * 3600);
        status.succeeded_at_once(after, after);
        assert_eq!(status.metrics().last_success_at, Some(after));
        assert_eq!(status.metrics().ticks_failed, 0);
        assert_eq!(
            status.metrics().last_outcome,
            Some(ScheduledRunOutcome::Succeeded)
        );
    }
}
