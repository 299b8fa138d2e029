//! Scheduled backups (`[backup] schedule`, docs/backups.md): the agent takes a backup of its
//! replica by itself at each tick of the schedule, so every deployment (Ansible, NixOS, a local
//! cluster) gets them from the agent alone, with no timer and no client holding a token.
//!
//! A scheduled run is the job `POST /v1/backups` starts ([`launch_backup`]): the replica lock,
//! the cluster's maintenance lease, the quorum guard, retention, hooks and the audit lines, whose
//! actor is [`ACTOR`]. A run refused before anything changed (busy, the lease held by a rollout
//! or by another replica's backup, the quorum guard, free space) is logged and audited, and
//! tried again about every minute ([`RETRY_INTERVAL`] plus a random spread, so replicas on the
//! same schedule do not race in step) for at most [`RETRY_WINDOW`] after its tick and never past
//! the next tick; then that tick is given up. A retry is a new launch that takes the lease
//! itself: a scheduled backup never waits holding anything, so it can never stop a replica
//! between two steps of a rollout that holds the lease. (The timer client this replaces waited
//! up to an hour for the lease; the window keeps that.)
//!
//! What the scheduler plans and what became of its last run are in `GET /v1/status` and
//! `/metrics` ([`super::schedule_status`]): each step below records its transition there.
//!
//! The next tick is always computed from now: after downtime the agent does not catch up on the
//! ticks it missed (at most one run per tick, never a burst of backups at start).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tb_proto::api::LeaseFields;
use tb_proto::backup_schedule::BackupSchedule;

use super::schedule_status::Retry;
use super::{Answer, AppError, Caller, JobDone, Lock, Spec, Wait, launch};
use crate::api::JobKind;
use crate::backup::{self as operations, store};
use crate::state::AgentState;

/// The name scheduled runs carry in the audit log, the job and the lease (as a token's name
/// does for a request).
pub const ACTOR: &str = "schedule";
/// The remote address in a scheduled run's audit lines: no client, the agent itself.
const NO_REMOTE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
/// The wall clock is read again at least this often while waiting for a tick: a clock stepped
/// meanwhile (NTP at boot) moves the run with it instead of leaving a stale monotonic sleep.
const WALL_CLOCK_RECHECK: Duration = Duration::from_secs(30);
/// A refused run is tried again after this, plus a random 0..=[`RETRY_SPREAD`].
pub const RETRY_INTERVAL: Duration = Duration::from_secs(60);
pub const RETRY_SPREAD: Duration = Duration::from_secs(30);
/// A tick's refused run is retried for at most this long after the tick (a rollout takes
/// minutes; an operator's lease, at most its TTL).
pub const RETRY_WINDOW: Duration = Duration::from_secs(3600);

/// What a launch of a scheduled backup that was not taken means for its tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Refused before anything changed (busy, lease held, guard, space): worth a retry.
    Refused,
    /// Failed once started, or cannot run at all: the next tick tries again.
    Failed,
}

/// The job of `POST /v1/backups`, whoever asks: a request or the schedule. Answers once the
/// backup's checks passed (the lease, the guard, the space) or it was refused.
pub async fn launch_backup(
    state: &Arc<AgentState>,
    caller: Caller,
    lease: LeaseFields,
) -> Result<Answer<JobDone>, AppError> {
    let backup_id = store::new_backup_id(state.config.replica.index);
    let id = backup_id.clone();
    launch(
        state,
        caller,
        Spec {
            kind: JobKind::Backup,
            forced: false,
            lock: Lock::ReplicaAndBackup(backup_id.clone()),
            wait: Wait::Accept,
            backup_id: Some(backup_id),
        },
        move |job| operations::backup(job, id, lease),
    )
    .await
}

/// One planned run: the tick it is for, and when it fires (the tick plus its random delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub tick: SystemTime,
    pub fire_at: SystemTime,
}

/// The run after `after`: the schedule's first tick strictly after it, fired `delay` later.
/// None when the schedule has no further tick.
pub fn plan(schedule: &BackupSchedule, after: SystemTime, delay: Duration) -> Option<Planned> {
    let tick = schedule.next_tick_after(after)?;
    Some(Planned {
        tick,
        fire_at: tick + delay,
    })
}

/// Where the next plan starts once the run for `planned` was launched at `now`: past both, so
/// the same tick never runs twice (a clock stepped back) and the ticks that passed while this
/// run waited for its delay are not caught up.
pub fn resume_after(planned: &Planned, now: SystemTime) -> SystemTime {
    now.max(planned.fire_at)
}

/// When a run refused at `now` is tried again: `now` + [`RETRY_INTERVAL`] + `spread`, if that is
/// still within [`RETRY_WINDOW`] of the planned tick and before the next tick (`next_tick`, so a
/// tick never runs twice and retries never overlap the next tick's run); None gives it up.
pub fn retry_at(
    planned: &Planned,
    next_tick: Option<SystemTime>,
    now: SystemTime,
    spread: Duration,
) -> Option<SystemTime> {
    assert!(spread <= RETRY_SPREAD);
    let at = now + RETRY_INTERVAL + spread;
    let window_end = planned.tick + RETRY_WINDOW;
    let before_next = next_tick.is_none_or(|next| at < next);
    (at <= window_end && before_next).then_some(at)
}

/// A random delay of 0..=`max_s` seconds (millisecond steps), drawn per tick.
pub fn draw_delay(max_s: u32) -> Duration {
    let max_ms = u64::from(max_s) * 1000;
    Duration::from_millis(rand::random_range(0..=max_ms))
}

/// The scheduler task, started by `serve`: returns at once when no schedule is configured, and
/// when the agent shuts down (no backup starts once `shutdown` is set).
pub async fn run(state: Arc<AgentState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(backup) = state.config.backup.as_ref() else {
        return;
    };
    let Some(schedule) = backup.schedule.clone() else {
        return;
    };
    let delay_max_s = backup.schedule_randomized_delay_s;
    let mut after = SystemTime::now();
    loop {
        let Some(planned) = plan(&schedule, after, draw_delay(delay_max_s)) else {
            tracing::warn!(schedule = ?schedule, "the backup schedule has no further tick");
            state.backup_schedule.exhausted();
            return;
        };
        state.backup_schedule.planned(planned.tick, planned.fire_at);
        tracing::info!(
            schedule = ?schedule,
            tick_unix_s = unix_s(planned.tick),
            fire_unix_s = unix_s(planned.fire_at),
            "next scheduled backup"
        );
        if !sleep_until_or_shutdown(planned.fire_at, &mut shutdown).await {
            return;
        }
        if !run_tick(&state, &schedule, &planned, &mut shutdown).await {
            return;
        }
        after = resume_after(&planned, SystemTime::now());
    }
}

/// This tick's run and its retries. False when the agent is shutting down.
async fn run_tick(
    state: &Arc<AgentState>,
    schedule: &BackupSchedule,
    planned: &Planned,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let next_tick = schedule.next_tick_after(planned.tick);
    loop {
        let Err(refused) = run_once(state, planned.tick).await else {
            return true;
        };
        let refusal = refused.to_string();
        let spread = Duration::from_millis(rand::random_range(0..=RETRY_SPREAD.as_millis() as u64));
        let now = SystemTime::now();
        let Some(at) = retry_at(planned, next_tick, now, spread) else {
            tracing::warn!(
                tick_unix_s = unix_s(planned.tick),
                "scheduled backup refused until the end of its retry window; the next tick tries again"
            );
            let status = &state.backup_schedule;
            status.refused(planned.tick, &refusal, now, Retry::GaveUp);
            return true;
        };
        let retry = Retry::At {
            retry_at: at,
            next_tick,
        };
        state
            .backup_schedule
            .refused(planned.tick, &refusal, now, retry);
        tracing::info!(
            retry_unix_s = unix_s(at),
            "scheduled backup refused; retrying"
        );
        if !sleep_until_or_shutdown(at, shutdown).await {
            return false;
        }
    }
}

/// One scheduled backup for `tick`: launched as a request's would be; its refusal is logged here
/// and audited by the operations layer. Err: refused, worth a retry.
async fn run_once(state: &Arc<AgentState>, tick: SystemTime) -> Result<(), AppError> {
    let caller = Caller {
        token: ACTOR.to_string(),
        remote: NO_REMOTE,
    };
    let answer = launch_backup(state, caller, LeaseFields::default()).await;
    let status = &state.backup_schedule;
    match answer {
        Ok(Answer::Accepted(accepted)) => {
            tracing::info!(job = %accepted.job_id, "scheduled backup started");
            let backup_id = accepted
                .backup_id
                .as_deref()
                .expect("a backup job names its backup");
            status.started(tick, backup_id, &accepted.job_id, SystemTime::now());
            tokio::spawn(follow_job(Arc::clone(state), accepted.job_id));
            Ok(())
        }
        Ok(Answer::Done(done)) => {
            tracing::info!(detail = %done.detail, "scheduled backup done");
            status.succeeded_at_once(tick, SystemTime::now());
            Ok(())
        }
        Err(error) => {
            let outcome = outcome_of(&error);
            tracing::warn!(%error, ?outcome, "scheduled backup not taken");
            match outcome {
                RunOutcome::Refused => Err(error),
                RunOutcome::Failed => {
                    status.failed(tick, &error.to_string(), SystemTime::now());
                    Ok(())
                }
            }
        }
    }
}

/// Records how a scheduled backup's job ended, once it has.
async fn follow_job(state: Arc<AgentState>, job_id: String) {
    let Some(job) = state.jobs.finished(&job_id).await else {
        unreachable!("job {job_id} was begun by its launch");
    };
    let finished = job
        .finished_unix_ms
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .expect("a finished job has its end time");
    state
        .backup_schedule
        .job_finished(&job_id, job.error.as_deref(), finished);
}

/// Refusals that nothing changed for and that end by themselves are retried; the rest wait for
/// the next tick.
fn outcome_of(error: &AppError) -> RunOutcome {
    match error {
        AppError::Busy(_)
        | AppError::LeaseHeld(_)
        | AppError::LeaseUnavailable(_)
        | AppError::Refused(_) => RunOutcome::Refused,
        AppError::NotConfigured
        | AppError::NotFound(_)
        | AppError::BadRequest(_)
        | AppError::Corrupt(_)
        | AppError::Failed(_)
        | AppError::Io { .. }
        | AppError::LeaseLost(_) => RunOutcome::Failed,
    }
}

/// Sleeps until the wall clock reads `at`, following a clock that is stepped meanwhile. False
/// when the agent began shutting down first.
async fn sleep_until_or_shutdown(
    at: SystemTime,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if *shutdown.borrow() {
            return false;
        }
        if left.is_zero() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(left.min(WALL_CLOCK_RECHECK)) => {}
            _ = shutdown.changed() => {}
        }
    }
    !*shutdown.borrow()
}

fn unix_s(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at_s(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn schedule(text: &str) -> BackupSchedule {
        BackupSchedule::parse(text).unwrap().unwrap()
    }

    /// 2026-03-01T00:00:00Z.
    const DAY_S: u64 = 1_772_323_200;

    #[test]
    fn the_next_tick_is_the_first_after_now_never_a_missed_one() {
        let daily = schedule("0 3 * * *");
        // The agent starts at 10:00, after today's 03:00 tick: no catch-up, tomorrow's.
        let started = at_s(DAY_S + 10 * 3600);
        let planned = plan(&daily, started, Duration::ZERO).unwrap();
        assert_eq!(planned.tick, at_s(DAY_S + 86_400 + 3 * 3600));
        // Before today's tick: today's.
        let early = plan(&daily, at_s(DAY_S + 3600), Duration::ZERO).unwrap();
        assert_eq!(early.tick, at_s(DAY_S + 3 * 3600));
        // Down for a week: still one run, the next tick from now.
        let after_week = at_s(DAY_S + 7 * 86_400 + 4 * 3600);
        let planned = plan(&daily, after_week, Duration::ZERO).unwrap();
        assert_eq!(planned.tick, at_s(DAY_S + 8 * 86_400 + 3 * 3600));
    }

    #[test]
    fn at_most_one_run_per_tick() {
        let every_minute = schedule("* * * * *");
        let planned = plan(&every_minute, at_s(DAY_S + 1), Duration::ZERO).unwrap();
        assert_eq!(planned.tick, at_s(DAY_S + 60));
        // Launched at its tick: the next plan is the next tick, not the same one again.
        let resumed = resume_after(&planned, planned.tick);
        let next = plan(&every_minute, resumed, Duration::ZERO).unwrap();
        assert_eq!(next.tick, planned.tick + MINUTE);
        // The clock stepped back after the run: still not the same tick again.
        let stepped_back = resume_after(&planned, planned.tick - 10 * MINUTE);
        assert!(
            plan(&every_minute, stepped_back, Duration::ZERO)
                .unwrap()
                .tick
                > planned.tick
        );
        // A run that took five ticks long: the next is the one after it ends, none in between.
        let resumed = resume_after(&planned, planned.tick + 5 * MINUTE + Duration::from_secs(1));
        let next = plan(&every_minute, resumed, Duration::ZERO).unwrap();
        assert_eq!(next.tick, planned.tick + 6 * MINUTE);
    }

    #[test]
    fn a_refused_run_is_retried_within_its_window_and_before_the_next_tick() {
        let hourly = schedule("0 * * * *");
        let planned = plan(&hourly, at_s(DAY_S + 1), Duration::ZERO).unwrap();
        let next = hourly.next_tick_after(planned.tick);
        // Refused at its tick: tried again a minute (plus the spread) later.
        let spread = Duration::from_secs(7);
        assert_eq!(
            retry_at(&planned, next, planned.tick, spread),
            Some(planned.tick + RETRY_INTERVAL + spread)
        );
        // Never at or past the next tick: that tick's own run comes then.
        let late = planned.tick + 59 * MINUTE;
        assert_eq!(retry_at(&planned, next, late, Duration::ZERO), None);
        // A daily tick: retries for the window, then given up until tomorrow.
        let daily = schedule("0 3 * * *");
        let planned = plan(&daily, at_s(DAY_S), Duration::ZERO).unwrap();
        let next = daily.next_tick_after(planned.tick);
        let within = planned.tick + RETRY_WINDOW - RETRY_INTERVAL - RETRY_SPREAD;
        assert!(retry_at(&planned, next, within, RETRY_SPREAD).is_some());
        let past = planned.tick + RETRY_WINDOW - RETRY_INTERVAL + Duration::from_secs(1);
        assert_eq!(retry_at(&planned, next, past, Duration::ZERO), None);
    }

    #[test]
    fn only_refusals_that_end_by_themselves_are_retried() {
        let refused = [
            AppError::Busy("copying".into()),
            AppError::LeaseHeld("rollout".into()),
            AppError::LeaseUnavailable("no quorum".into()),
            AppError::Refused("quorum guard".into()),
        ];
        assert!(refused.iter().all(|e| outcome_of(e) == RunOutcome::Refused));
        let failed = [
            AppError::Failed("copy".into()),
            AppError::Corrupt("hash".into()),
            AppError::NotConfigured,
            AppError::LeaseLost("gone".into()),
        ];
        assert!(failed.iter().all(|e| outcome_of(e) == RunOutcome::Failed));
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait_for_a_tick() {
        let (sender, mut shutdown) = tokio::sync::watch::channel(false);
        let far = SystemTime::now() + Duration::from_secs(3600);
        let waiter = tokio::spawn(async move { sleep_until_or_shutdown(far, &mut shutdown).await });
        sender.send_replace(true);
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert!(!woke.expect("woke at shutdown").unwrap());
    }

    #[test]
    fn the_random_delay_stays_within_its_bounds() {
        assert_eq!(draw_delay(0), Duration::ZERO);
        let draws: Vec<Duration> = (0..2000).map(|_| draw_delay(10)).collect();
        assert!(draws.iter().all(|delay| *delay <= Duration::from_secs(10)));
        // Spread over the range, not a constant.
        assert!(draws.iter().any(|delay| *delay < Duration::from_secs(3)));
        assert!(draws.iter().any(|delay| *delay > Duration::from_secs(7)));
        let hourly = schedule("0 * * * *");
        let delay = draw_delay(600);
        let planned = plan(&hourly, at_s(DAY_S + 1), delay).unwrap();
        assert_eq!(planned.fire_at, planned.tick + delay);
        // A delay longer than the period skips the ticks it covers, it never doubles up.
        let long = plan(&hourly, at_s(DAY_S + 1), 2 * 3600 * Duration::from_secs(1)).unwrap();
        let next = plan(&hourly, resume_after(&long, long.fire_at), Duration::ZERO).unwrap();
        assert_eq!(next.tick, long.fire_at + 3600 * Duration::from_secs(1));
    }
}
