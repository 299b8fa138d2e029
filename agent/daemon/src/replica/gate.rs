//! The evidence of every readiness gate: when a replica process first passed readiness, on which
//! evidence (its own log or StatsD), and its commit lag behind the cluster at that moment.
//!
//! The log may pass a gate only for a process on the cluster's newest checkpoint (`log_may_pass`):
//!
//! - every replica logs `commit_checkpoint_data: checkpoint_data start (checkpoint=A..B ...)` when
//!   its commits reach the trigger of checkpoint B (B + 32, `vsr.Checkpoint.trigger_for_checkpoint`),
//!   and `checkpoint_superblock done (... new_checkpoint=B)` once B is durable (replica.zig);
//! - the primary commits first, so until its log shows the next checkpoint the cluster's commit
//!   is below that checkpoint's trigger: with B the newest checkpoint the other replicas' agents
//!   report (asked after this process rejoined, the primary's answer among them), the cluster's
//!   commit is below B + 960 + 32;
//! - this process commits at least from its own newest checkpoint: one its log shows it reached,
//!   or the one it opened at, at least the newest the process before it made durable (its done
//!   lines, its StatsD `op_checkpoint`);
//! - so a process whose checkpoint is at least B was at most `LAG_BOUND_OPS` (992) behind the
//!   cluster when the primary answered (plus the commits of the answer's age, at most
//!   `CLUSTER_CHECKPOINT_FRESH`), and is on the primary's checkpoint (or writing it), which bounds
//!   what it can prepare (`op_prepare_max`): the next replica may go down. Otherwise StatsD
//!   decides: its `replica_sync` check includes the replica's own lag (commit_max − commit_min).
//!
//! The gate records that bound. The lag is also reconstructed afterwards from the process's first
//! StatsD report, as an upper bound: the replica's commit at the gate is at least the checkpoint it
//! started from (`start_commit_min`), and the cluster's at most the first report's commit_max.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// TigerBeetle's checkpoint interval in ops (`constants.vsr_checkpoint_ops` of the production
/// config, 0.16: journal_slot_count 1024 − lsm_compaction_ops 32 − 32 × ⌈2 × 8 / 32⌉).
pub const CHECKPOINT_OPS: u64 = 960;
/// Ops from a checkpoint to its trigger (`constants.lsm_compaction_ops`).
pub const TRIGGER_OPS: u64 = 32;
/// A replica on the primary's newest checkpoint is at most this many ops behind it: from that
/// checkpoint to the next one's trigger, where the primary logs before it commits further.
pub const LAG_BOUND_OPS: u64 = CHECKPOINT_OPS + TRIGGER_OPS;
/// How old the other agents' answer about the cluster's checkpoint may be when the log passes a
/// gate on it: the cluster commits on meanwhile, and a newer checkpoint would show in a newer
/// answer (the agent asks every `CLUSTER_CHECKPOINT_ASK_INTERVAL` while a gate is pending).
pub const CLUSTER_CHECKPOINT_FRESH: Duration = Duration::from_secs(1);
/// Two StatsD reports of a process come 10 s apart (TigerBeetle's fixed period); a sample this
/// much later than the first is a newer report, not the same one read again.
const MIN_REPORT_SPACING: Duration = Duration::from_secs(2);
pub const CLUSTER_CHECKPOINT_ASK_INTERVAL: Duration = Duration::from_millis(250);

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
    /// Its next report (the cluster's commit rate between the two).
    pub second_report: Option<(Duration, Commits)>,
    /// At a gate passed on the log: this process's checkpoint and the cluster's, as the log
    /// evidence compared them.
    pub checkpoints_at_gate: Option<Checkpoints>,
}

/// This process's newest checkpoint and the cluster's (the other agents' answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoints {
    pub own: u64,
    pub cluster: u64,
}

impl Checkpoints {
    /// The lag this comparison bounds: the cluster commits below its checkpoint's successor's
    /// trigger, this process at least from its own checkpoint.
    pub fn lag_bound_ops(&self) -> u64 {
        (self.cluster + LAG_BOUND_OPS).saturating_sub(self.own)
    }
}

/// The cluster's newest checkpoint as the other replicas' agents reported it to this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterCheckpoint {
    /// The replica process of this host that it was asked for.
    pub pid: u32,
    pub checkpoint: u64,
    /// When the question was sent: the answer is at least that fresh.
    pub asked: Instant,
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
            second_report: None,
            checkpoints_at_gate: None,
        }
    }

    /// At a gate passed on the checkpoints, the commit lag at the gate as reconstructed from the
    /// process's first two StatsD reports after it: the cluster's commit at the gate is the first
    /// report's `commit_max` taken back to the gate at the rate between the two reports, and the
    /// replica had committed at least its checkpoint. At least the real lag while the cluster's
    /// commit rate held from the gate to the second report (a steady load); an estimate, beside
    /// the bound the gate passed on (`Checkpoints::lag_bound_ops`).
    pub fn lag_at_gate_estimate_ops(&self) -> Option<u64> {
        let (ready_after, source) = self.ready?;
        let own = self.checkpoints_at_gate?.own;
        let (first_after, first) = self.first_report?;
        let (second_after, second) = self.second_report?;
        if source != Source::Log || first_after < ready_after || second_after <= first_after {
            return None;
        }
        let rate_per_second = second.commit_max.saturating_sub(first.commit_max) as f64
            / (second_after - first_after).as_secs_f64();
        let since_gate_ops = rate_per_second * (first_after - ready_after).as_secs_f64();
        let cluster_at_gate = (first.commit_max as f64 - since_gate_ops).max(0.0).round() as u64;
        Some(cluster_at_gate.saturating_sub(own))
    }

    /// The commit lag at the gate, at most: measured (StatsD gate) or reconstructed afterwards
    /// from the first report (log gate; `checkpoints_at_gate` holds the bound it passed on).
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
        let checkpoints = self.checkpoints_at_gate.map_or_else(String::new, |c| {
            let estimate = self
                .lag_at_gate_estimate_ops()
                .map_or_else(String::new, |lag| format!(", about {lag} from StatsD"));
            format!(
                " (checkpoint {}, the cluster's {}: at most {} ops behind when asked{estimate})",
                c.own,
                c.cluster,
                c.lag_bound_ops()
            )
        });
        format!(
            "replica pid {}: {ready}; commit lag at the gate {lag}{checkpoints}",
            self.pid
        )
    }
}

/// A process's latest commit gauges (its `op_checkpoint` is the next process's start bound) and
/// the cluster's commit rate (kept in the handover's format; no decision reads it since the lag
/// gate compares checkpoints instead).
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
        if Some(gate.pid) != self.statsd.replica_pid() || gate.second_report.is_some() {
            return;
        }
        let after = received.saturating_duration_since(gate.started);
        if let Some((first_after, _)) = gate.first_report {
            // A report newer than the first (the same one is sampled every second until then).
            if after > first_after + MIN_REPORT_SPACING {
                gate.second_report = Some((after, commits));
                if gate.ready.is_some() {
                    tracing::info!(target: "readiness", "{}", gate.describe());
                }
                self.changed();
            }
            return;
        }
        gate.first_report = Some((after, commits));
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
        // Before the gate's lock: set_pid holds the pid's lock while it replaces the gate, so
        // taking them the other way round could deadlock the two.
        let pid = self.pid();
        // Every readiness request that passes calls this: the evidence below is gathered only
        // for a gate still pending (checked again under the lock).
        if self
            .gate()
            .is_none_or(|gate| gate.ready.is_some() || Some(gate.pid) != pid)
        {
            return;
        }
        let commits = self.commit_gauges().map(|(_, commits)| commits);
        let checkpoints = (source == Source::Log)
            .then(|| self.checkpoints_now().ok())
            .flatten();
        let log_refused = (source == Source::Statsd).then(|| self.why_not_on_log());
        let mut gate = self.gate.lock().expect("not poisoned");
        let Some(gate) = gate.as_mut() else {
            return;
        };
        if gate.ready.is_some() || Some(gate.pid) != pid {
            return;
        }
        gate.ready = Some((gate.started.elapsed(), source));
        match source {
            Source::Statsd => gate.at_gate = commits,
            Source::Log => gate.checkpoints_at_gate = checkpoints,
        }
        match log_refused {
            Some(why) => {
                tracing::info!(target: "readiness", "{} (not on the log: {why})", gate.describe())
            }
            None => tracing::info!(target: "readiness", "{}", gate.describe()),
        }
        self.changed();
    }

    /// The current process's gate, for status and metrics.
    pub fn gate(&self) -> Option<Gate> {
        self.gate.lock().expect("not poisoned").clone()
    }

    /// A new process (or none): the current trend becomes the previous process's, and a new gate
    /// starts from the newest checkpoint the process before made durable, as far as the agent
    /// saw it (its last StatsD `op_checkpoint`, its log's `checkpoint_superblock done` lines).
    pub(super) fn new_gate(&self, pid: Option<u32>) {
        self.sample_commits();
        let trend = std::mem::take(&mut *self.trend.lock().expect("not poisoned"));
        let mut previous = self.previous_trend.lock().expect("not poisoned");
        if trend.last.is_some() {
            *previous = trend;
        }
        // The tracker still held is the process before's (or older): never the new one's.
        let logged_durable = self
            .log
            .lock()
            .expect("not poisoned")
            .as_ref()
            .filter(|tracker| Some(tracker.pid()) != pid && tracker.usable())
            .and_then(|tracker| tracker.checkpoint_durable());
        let mut durable = self.durable_checkpoint.lock().expect("not poisoned");
        *durable = (*durable).max(logged_durable);
        if pid.is_some() && self.data_replaced.swap(false, Ordering::Relaxed) {
            *previous = Trend::default();
            *durable = None;
        }
        let reported = previous.last.map(|(_, commits)| commits.op_checkpoint);
        let start_commit_min = reported.max(*durable);
        drop((previous, durable));
        let mut gate = self.gate.lock().expect("not poisoned");
        if let Some(old) = gate.as_ref() {
            tracing::info!(target: "readiness", "{} (ended)", old.describe());
        }
        *gate = pid.map(|pid| Gate::new(pid, start_commit_min));
    }
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
    fn the_lag_at_a_checkpoint_gate_is_estimated_back_from_the_next_two_reports() {
        let mut gate = Gate::new(7, Some(1919));
        gate.ready = Some((Duration::from_secs(2), Source::Log));
        gate.checkpoints_at_gate = Some(Checkpoints {
            own: 2879,
            cluster: 2879,
        });
        gate.first_report = Some((Duration::from_secs(10), commits(6000, 6100, 5759)));
        assert_eq!(gate.lag_at_gate_estimate_ops(), None, "one report: no rate");
        // 500 ops/s: the cluster was at 6100 - 8 s x 500 = 2100 at the gate, below the
        // replica's checkpoint (the load started after it).
        gate.second_report = Some((Duration::from_secs(20), commits(11000, 11100, 10559)));
        assert_eq!(gate.lag_at_gate_estimate_ops(), Some(0));
        // 300 ops/s: 6100 - 2400 = 3700 at the gate, 821 ops past the replica's checkpoint.
        gate.second_report = Some((Duration::from_secs(20), commits(9000, 9100, 8639)));
        assert_eq!(gate.lag_at_gate_estimate_ops(), Some(821));
        // A gate on StatsD has its own measure.
        gate.ready = Some((Duration::from_secs(2), Source::Statsd));
        assert_eq!(gate.lag_at_gate_estimate_ops(), None);
    }

    #[test]
    fn the_lag_at_a_statsd_gate_is_the_reports_own() {
        let mut gate = Gate::new(7, None);
        gate.ready = Some((Duration::from_secs(11), Source::Statsd));
        gate.at_gate = Some(commits(1490, 1500, 960));
        assert_eq!(gate.lag_at_gate_ops_max(), Some(10));
    }

    #[test]
    fn the_checkpoints_bound_the_lag_at_a_log_gate() {
        let same = Checkpoints {
            own: 2879,
            cluster: 2879,
        };
        assert_eq!(same.lag_bound_ops(), LAG_BOUND_OPS);
        let ahead = Checkpoints {
            own: 3839,
            cluster: 2879,
        };
        assert_eq!(ahead.lag_bound_ops(), LAG_BOUND_OPS - CHECKPOINT_OPS);
    }
}
