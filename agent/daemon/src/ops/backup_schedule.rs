//! Scheduled backups (`[backup] schedule`, docs/backups.md): the agent takes a backup of its
//! replica by itself at each tick of the schedule, so every deployment (Ansible, NixOS, a local
//! cluster) gets them from the agent alone, with no timer and no client holding a token.
//!
//! A scheduled run is the job `POST /v1/backups` starts ([`launch_backup`]): the replica lock,
//! the cluster's maintenance lease, the quorum guard, retention, hooks and the audit lines, whose
//! actor is [`ACTOR`]. A run refused (busy, the lease held by a rollout, the guard) is logged
//! and audited, and the next tick tries again: a scheduled backup never waits for the lease,
//! so it can never stop a replica between two steps of a rollout that holds it.
//!
//! The next tick is always computed from now: after downtime the agent does not catch up on the
//! ticks it missed (at most one run per tick, never a burst of backups at start).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tb_proto::api::LeaseFields;
use tb_proto::backup_schedule::BackupSchedule;

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

/// A random delay of 0..=`max_s` seconds (millisecond steps), drawn per tick.
pub fn draw_delay(max_s: u32) -> Duration {
    let max_ms = u64::from(max_s) * 1000;
    Duration::from_millis(rand::random_range(0..=max_ms))
}

/// The scheduler task, started by `serve`: returns at once when no schedule is configured.
pub async fn run(state: Arc<AgentState>) {
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
            return;
        };
        tracing::info!(
            schedule = ?schedule,
            tick_unix_s = unix_s(planned.tick),
            fire_unix_s = unix_s(planned.fire_at),
            "next scheduled backup"
        );
        sleep_until(planned.fire_at).await;
        run_once(&state).await;
        after = resume_after(&planned, SystemTime::now());
    }
}

/// One scheduled backup: launched as a request's would be; its refusal is logged here and
/// audited by the operations layer.
async fn run_once(state: &Arc<AgentState>) {
    let caller = Caller {
        token: ACTOR.to_string(),
        remote: NO_REMOTE,
    };
    match launch_backup(state, caller, LeaseFields::default()).await {
        Ok(Answer::Accepted(accepted)) => {
            tracing::info!(job = %accepted.job_id, "scheduled backup started");
        }
        Ok(Answer::Done(done)) => tracing::info!(detail = %done.detail, "scheduled backup done"),
        Err(error) => tracing::warn!(
            %error,
            "scheduled backup refused or failed; the next tick tries again"
        ),
    }
}

/// Sleeps until the wall clock reads `at`, following a clock that is stepped meanwhile.
async fn sleep_until(at: SystemTime) {
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(WALL_CLOCK_RECHECK)).await;
    }
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
