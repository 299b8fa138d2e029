//! The evidence of every readiness gate: when a replica process first passed readiness, on which
//! evidence (its own log or StatsD), and its commit lag behind the cluster at that moment.
//!
//! At a gate passed on the log, no StatsD report of the new process exists yet (TigerBeetle emits
//! every 10 s, the first ~10 s after it opened), so the lag is reconstructed afterwards from the
//! process's first report, as an upper bound:
//!
//! - a restarted replica starts committing from its checkpoint (replica.zig `open`: commit_min is
//!   the superblock's checkpoint op; it then replays its WAL and repairs the rest), and
//!   checkpoints only advance, so its commit at the gate is at least the checkpoint op the
//!   previous process last reported (`start_commit_min`);
//! - the cluster's commit only advances, so its commit at the gate is at most the commit_max of
//!   the first report after the gate.
//!
//! `lag_at_gate_ops_max` = first report's commit_max − start_commit_min. It counts the ops the
//! cluster committed between the gate and the report too, so it overstates the lag.
//!
//! Before the log may pass a gate, the lag is also estimated from what the previous process
//! reported (its replay distance, commit_max − op_checkpoint, plus the cluster's commit rate times
//! the time since that report): beyond one checkpoint interval, the gate waits for StatsD instead,
//! whose verdict includes the replica's own lag (commit_max − commit_min).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// TigerBeetle's checkpoint interval in ops (`constants.vsr_checkpoint_ops` of the production
/// config, 0.16: journal_slot_count 1024 − lsm_compaction_ops 32 − 32 × ⌈2 × 8 / 32⌉).
pub const CHECKPOINT_OPS: u64 = 960;

/// Which evidence passed `replica_status` at the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Log,
    Statsd,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Log => "log",
            Source::Statsd => "statsd",
        }
    }
}

/// One StatsD report's commit gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commits {
    pub commit_min: u64,
    pub commit_max: u64,
    pub op_checkpoint: u64,
}

impl Commits {
    /// The replica's own lag: ops it knows the cluster committed that it has not.
    pub fn lag_ops(&self) -> u64 {
        self.commit_max.saturating_sub(self.commit_min)
    }
}

/// The gate of one replica process.
#[derive(Debug, Clone)]
pub struct Gate {
    pub pid: u32,
    /// The process's start time (/proc/PID/stat, clock ticks after boot) when the agent first
    /// saw it: with the pid, which process this gate is (replica/handover.rs).
    pub start_ticks: Option<u64>,
    pub started: Instant,
    pub started_unix_ms: u64,
    /// A lower bound of the commit this process starts from (the checkpoint op the previous
    /// process last reported); None when unknown (the agent's first process, a replaced file).
    pub start_commit_min: Option<u64>,
    /// When readiness first passed, after the start, and on which evidence.
    pub ready: Option<(Duration, Source)>,
    /// The commit gauges at the gate, when StatsD passed it (its report preceded the gate).
    pub at_gate: Option<Commits>,
    /// The process's first StatsD report and when it arrived, after the start.
    pub first_report: Option<(Duration, Commits)>,
}

impl Gate {
    pub fn new(pid: u32, start_commit_min: Option<u64>) -> Gate {
        Gate {
            pid,
            start_ticks: super::proc::process_start_ticks(pid),
            started: Instant::now(),
            started_unix_ms: unix_ms(),
            start_commit_min,
            ready: None,
            at_gate: None,
            first_report: None,
        }
    }

    /// The commit lag at the gate, at most: measured (StatsD gate) or reconstructed (log gate).
    pub fn lag_at_gate_ops_max(&self) -> Option<u64> {
        let (ready_after, source) = self.ready?;
        if let Some(commits) = self.at_gate {
            return Some(commits.lag_ops());
        }
        let (report_after, first) = self.first_report?;
        // Only a report after the gate bounds the cluster's commit at the gate from above.
        let start_commit_min = self.start_commit_min?;
        (source == Source::Log && report_after >= ready_after)
            .then(|| first.commit_max.saturating_sub(start_commit_min))
    }

    /// One line for the agent's log once the lag is known.
    pub fn describe(&self) -> String {
        let ready = self.ready.map_or_else(
            || "not ready yet".to_string(),
            |(after, source)| {
                format!(
                    "ready {} ms after start on {}",
                    after.as_millis(),
                    source.as_str()
                )
            },
        );
        let lag = self.lag_at_gate_ops_max().map_or_else(
            || "unknown".to_string(),
            |lag| format!("<= {lag} ops (checkpoint interval {CHECKPOINT_OPS})"),
        );
        format!(
            "replica pid {}: {ready}; commit lag at the gate {lag}",
            self.pid
        )
    }
}

/// The cluster's commit rate and the previous process's replay distance, from its reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trend {
    /// The latest report of the process and when it arrived.
    pub last: Option<(Instant, Commits)>,
    /// commit_max's growth per second between the last two reports.
    pub ops_per_second: f64,
}

impl Trend {
    pub fn update(&mut self, received: Instant, commits: Commits) {
        if let Some((at, last)) = self.last {
            if received <= at {
                return;
            }
            let seconds = received.duration_since(at).as_secs_f64();
            if seconds > 0.5 {
                self.ops_per_second =
                    commits.commit_max.saturating_sub(last.commit_max) as f64 / seconds;
            }
        }
        self.last = Some((received, commits));
    }

    /// The lag a process that starts now from the last reported checkpoint would have: its
    /// replay from the checkpoint plus what the cluster committed since the report. None if the
    /// previous process never reported.
    pub fn lag_estimate_ops(&self, now: Instant) -> Option<u64> {
        let (at, last) = self.last?;
        let since = now.saturating_duration_since(at).as_secs_f64();
        let replay = last.commit_max.saturating_sub(last.op_checkpoint);
        Some(replay + (self.ops_per_second * since).ceil() as u64)
    }
}

impl super::Replica {
    /// The commit gauges of the current process's latest report, if all three are fresh, and
    /// when that report arrived.
    fn commit_gauges(&self) -> Option<(Instant, Commits)> {
        let stale = Duration::from_millis(self.config.health.statsd_stale_ms);
        let gauge = |name: &str| {
            let (value, age) = self.statsd.gauge(name)?;
            (age <= stale).then_some((u64::try_from(value).ok()?, age))
        };
        let (commit_min, age_min) = gauge("tb_replica_commit_min")?;
        let (commit_max, age_max) = gauge("tb_replica_commit_max")?;
        let (op_checkpoint, age_checkpoint) = gauge("tb_replica_op_checkpoint")?;
        let age = age_min.max(age_max).max(age_checkpoint);
        let received = Instant::now().checked_sub(age)?;
        let commits = Commits {
            commit_min,
            commit_max,
            op_checkpoint,
        };
        Some((received, commits))
    }

    /// Follows the current process's StatsD commit gauges (called every second and before a
    /// process is replaced): the trend for the next process's estimate, and the first report of
    /// this one, which completes the evidence of a gate passed on the log.
    pub fn sample_commits(&self) {
        let Some((received, commits)) = self.commit_gauges() else {
            return;
        };
        self.trend
            .lock()
            .expect("not poisoned")
            .update(received, commits);
        let mut gate = self.gate.lock().expect("not poisoned");
        let Some(gate) = gate.as_mut() else {
            return;
        };
        if gate.first_report.is_some() || Some(gate.pid) != self.statsd.replica_pid() {
            return;
        }
        gate.first_report = Some((received.saturating_duration_since(gate.started), commits));
        if gate.ready.is_some() {
            tracing::info!(target: "readiness", "{}", gate.describe());
        }
        self.changed();
    }

    /// Samples the commit gauges every second, for as long as the agent runs: the evidence of
    /// every process's gate.
    pub async fn follow_commits(self: std::sync::Arc<Self>) {
        loop {
            self.sample_commits();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Readiness passed for the current process: the first time, the gate's evidence is recorded.
    pub fn note_ready(&self, source: Source) {
        let commits = self.commit_gauges().map(|(_, commits)| commits);
        // Before the gate's lock: set_pid holds the pid's lock while it replaces the gate, so
        // taking them the other way round could deadlock the two.
        let pid = self.pid();
        let mut gate = self.gate.lock().expect("not poisoned");
        let Some(gate) = gate.as_mut() else {
            return;
        };
        if gate.ready.is_some() || Some(gate.pid) != pid {
            return;
        }
        gate.ready = Some((gate.started.elapsed(), source));
        if source == Source::Statsd {
            gate.at_gate = commits;
        }
        tracing::info!(target: "readiness", "{}", gate.describe());
        self.changed();
    }

    /// The current process's gate, for status and metrics.
    pub fn gate(&self) -> Option<Gate> {
        self.gate.lock().expect("not poisoned").clone()
    }

    /// Whether the log may pass this process's readiness: not when the lag it would start with,
    /// estimated from the previous process's reports, exceeds one checkpoint interval (then
    /// StatsD, which reports the lag itself, decides). Err says why.
    pub fn log_may_pass(&self) -> Result<(), LogMayNotPass> {
        let estimate = self
            .previous_trend
            .lock()
            .expect("not poisoned")
            .lag_estimate_ops(Instant::now());
        match estimate {
            None => Err(LogMayNotPass::NoEstimate),
            Some(lag_ops) if lag_ops > CHECKPOINT_OPS => {
                Err(LogMayNotPass::MayBeBehind { lag_ops })
            }
            Some(_) => Ok(()),
        }
    }

    /// A new process (or none): the current trend becomes the previous process's, and a new gate
    /// starts from the checkpoint that process last reported.
    pub(super) fn new_gate(&self, pid: Option<u32>) {
        self.sample_commits();
        let trend = std::mem::take(&mut *self.trend.lock().expect("not poisoned"));
        let mut previous = self.previous_trend.lock().expect("not poisoned");
        if trend.last.is_some() {
            *previous = trend;
        }
        if pid.is_some() && self.data_replaced.swap(false, Ordering::Relaxed) {
            *previous = Trend::default();
        }
        let start_commit_min = previous.last.map(|(_, commits)| commits.op_checkpoint);
        drop(previous);
        let mut gate = self.gate.lock().expect("not poisoned");
        if let Some(old) = gate.as_ref() {
            tracing::info!(target: "readiness", "{} (ended)", old.describe());
        }
        *gate = pid.map(|pid| Gate::new(pid, start_commit_min));
    }
}

/// Why the replica's log may not pass a check by itself: StatsD decides instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogMayNotPass {
    #[error(
        "no StatsD report of a previous process of this replica to estimate its lag from: \
         waiting for its own report"
    )]
    NoEstimate,
    #[error(
        "the replica may be about {lag_ops} ops behind the cluster (its replay from the last \
         checkpoint plus the cluster's commits since), more than one checkpoint interval \
         ({CHECKPOINT_OPS}): waiting for its StatsD report of its lag"
    )]
    MayBeBehind { lag_ops: u64 },
    #[error("the log may not pass a check by itself (LOG_MAY_PASS)")]
    Disabled,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits(commit_min: u64, commit_max: u64, op_checkpoint: u64) -> Commits {
        Commits {
            commit_min,
            commit_max,
            op_checkpoint,
        }
    }

    #[test]
    fn the_lag_at_a_log_gate_is_bounded_by_the_first_report_after_it() {
        let mut gate = Gate::new(7, Some(1000));
        assert_eq!(gate.lag_at_gate_ops_max(), None);
        gate.ready = Some((Duration::from_millis(900), Source::Log));
        assert_eq!(gate.lag_at_gate_ops_max(), None, "no report yet");
        gate.first_report = Some((Duration::from_secs(10), commits(1500, 1500, 1000)));
        assert_eq!(gate.lag_at_gate_ops_max(), Some(500));
        // Without the start's checkpoint there is no bound.
        gate.start_commit_min = None;
        assert_eq!(gate.lag_at_gate_ops_max(), None);
    }

    #[test]
    fn the_lag_at_a_statsd_gate_is_the_reports_own() {
        let mut gate = Gate::new(7, None);
        gate.ready = Some((Duration::from_secs(11), Source::Statsd));
        gate.at_gate = Some(commits(1490, 1500, 960));
        assert_eq!(gate.lag_at_gate_ops_max(), Some(10));
    }

    #[test]
    fn the_estimate_adds_the_commit_rate_since_the_last_report() {
        let base = Instant::now();
        let mut trend = Trend::default();
        assert_eq!(trend.lag_estimate_ops(base), None);
        trend.update(base, commits(1000, 1000, 960));
        trend.update(base + Duration::from_secs(10), commits(1100, 1100, 960));
        let later = base + Duration::from_secs(15);
        // Replay 1100 - 960 = 140, plus 10 ops/s for 5 s.
        assert_eq!(trend.lag_estimate_ops(later), Some(190));
    }
}
