//! The lag side of the log's fast gate (gate.rs explains the bound): while a restarted process's
//! gate is pending and its log shows it rejoined, the agent asks the other agents for the
//! cluster's newest checkpoint; the log may pass the gate once this process's own checkpoint is
//! at least that one, asked after the rejoin and at most `CLUSTER_CHECKPOINT_FRESH` ago.
//! The other agents answer with their own replica's (`checkpoint_op`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gate::{
    CLUSTER_CHECKPOINT_ASK_INTERVAL, CLUSTER_CHECKPOINT_FRESH, Checkpoints, ClusterCheckpoint,
};
use crate::peers::Peers;

/// The process's ages (since the agent first saw it) at which its unit's journal is searched for
/// the newest checkpoint line (`open_checkpoint_bound`), the larger answer kept: journald stores a
/// stream's lines asynchronously, so the last lines of the process before (written just before
/// it stopped) may not be stored yet when the next one starts. The first search serves the
/// common case, a second one lines journald stored late (a loaded host).
pub(super) const JOURNAL_SEARCH_AGES: [Duration; 2] =
    [Duration::from_secs(1), Duration::from_secs(4)];

/// What the unit's journal said about the checkpoint the current process opened at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OpenBound {
    pid: u32,
    /// Searches started for this process (`JOURNAL_SEARCH_AGES`).
    searches: usize,
    /// The largest checkpoint they found.
    checkpoint: Option<u64>,
}

/// What the agent last learned about the cluster's checkpoint, for the current process.
#[derive(Debug, Clone, Default)]
pub(super) enum ClusterAnswer {
    #[default]
    NotAsked,
    Known(ClusterCheckpoint),
    /// Asked for process `pid`, without an answer that counts: why.
    Unknown {
        pid: u32,
        why: String,
    },
}

/// Why the replica's log may not pass a check by itself: StatsD decides instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogMayNotPass {
    #[error("the log shows no rejoin of this process yet")]
    NotRejoined,
    #[error(
        "this process's checkpoint is not known (no checkpoint line of its own, and no report \
         of the process before it on this data file): waiting for its StatsD report of its lag"
    )]
    OwnCheckpointUnknown,
    #[error(
        "no [peers] to ask for the cluster's checkpoint: waiting for the replica's StatsD report \
         of its lag"
    )]
    NoPeers,
    #[error("the cluster's checkpoint is not known yet ({0}): waiting for StatsD or the answer")]
    ClusterCheckpointUnknown(String),
    #[error(
        "the replica's checkpoint ({own}) is behind the cluster's ({cluster}): it may be more than \
         a checkpoint interval behind; waiting for its log to show the cluster's checkpoint, or \
         its StatsD report of its lag"
    )]
    Behind { own: u64, cluster: u64 },
    #[error("the log may not pass a check by itself (LOG_MAY_PASS)")]
    Disabled,
}

impl super::Replica {
    /// The newest checkpoint the current process has: one its log shows it reached, or the one
    /// it opened at, at least the one its gate started from. None when neither is known.
    fn own_checkpoint(&self, tracker: &crate::replica_log::Tracker) -> Option<u64> {
        let start = self
            .gate()
            .filter(|gate| gate.pid == tracker.pid())
            .and_then(|gate| gate.start_commit_min);
        tracker
            .checkpoint_reached()
            .max(tracker.checkpoint_durable())
            .max(start)
    }

    /// This replica's checkpoint as this agent can vouch for it to a peer (`checkpoint_op` of
    /// the status), never below the true one (the peer's gate compares its own checkpoint with
    /// it): the newest its current process's log shows, or the `op_checkpoint` of its StatsD
    /// reports when newer or when the log shows none since it opened (then it is the one it
    /// opened at). A process too young for either (restarted seconds ago, before its first
    /// report: the new primary, when the old one is restarted last) still has the bound its
    /// unit's journal gave (`open_checkpoint_bound`). None without a checked log (a missed
    /// checkpoint line would make the peer's bound unsound) or without any source.
    pub fn checkpoint_op(&self) -> Option<u64> {
        let tracker = self.log_tracker().filter(|tracker| tracker.usable())?;
        let reported = (self.statsd.replica_pid() == Some(tracker.pid()))
            .then(|| self.statsd.gauge("tb_replica_op_checkpoint"))
            .flatten()
            .and_then(|(value, _)| u64::try_from(value).ok());
        // Only once open, and with the process's open-time sync line: a superblock a state sync
        // wrote, cut short before its `sync: ops=A..B/C..D` line, is opened at a checkpoint no
        // earlier line names; the process names it while it opens (replica.zig's `open`), before
        // its state machine opens. Otherwise that line may name an older checkpoint than the
        // journal's.
        let opened_at_most = *self.open_checkpoint_bound.lock().expect("not poisoned");
        let opened_at_most = opened_at_most
            .filter(|bound| bound.pid == tracker.pid() && tracker.state_machine_opened())
            .and_then(|bound| bound.checkpoint)
            .map(|journal| journal.max(tracker.checkpoint_opened_at_least().unwrap_or(0)));
        // Each is at least the true checkpoint when known (the first two exactly it): the
        // largest is too.
        tracker
            .checkpoint_reached()
            .max(reported)
            .max(opened_at_most)
    }

    /// Whether a search of the unit's journal for process `pid` is due now; if so, it is counted
    /// as started (its caller runs it).
    pub(super) fn open_checkpoint_search_due(&self, pid: u32) -> bool {
        let Some(age) = self
            .gate()
            .filter(|gate| gate.pid == pid)
            .map(|gate| gate.started.elapsed())
        else {
            return false;
        };
        let mut bound = self.open_checkpoint_bound.lock().expect("not poisoned");
        let current = bound.filter(|bound| bound.pid == pid).unwrap_or(OpenBound {
            pid,
            searches: 0,
            checkpoint: None,
        });
        let due = JOURNAL_SEARCH_AGES
            .get(current.searches)
            .is_some_and(|due_age| age >= *due_age);
        if due {
            *bound = Some(OpenBound {
                searches: current.searches + 1,
                ..current
            });
        }
        due
    }

    /// systemd mode, at the process's ages `JOURNAL_SEARCH_AGES` (the caller checks
    /// `open_checkpoint_search_due`): the newest line in its unit's journal, from any process of
    /// the unit, that moves a data file's checkpoint forward. A data file's checkpoint only moves
    /// forward through a process's commits or state sync, each of which logs it (`checkpoint_data
    /// start`, before the checkpoint can become durable; a sync's `sync: ops=A..B/C..D`, or, when
    /// a stop cut that line short, the next process's `sync: ops=A..B` while it opens, before its
    /// state machine opens: see `checkpoint_op`), or back, when the file is replaced by an older
    /// one (restore, recover). So the checkpoint the current process opened at is at most that
    /// line's, and while this process's log shows no checkpoint of its own, it is still there.
    /// Like every log-based bound, it relies on no line being dropped (journald's rate limit is
    /// 10000 lines per 30 s; the replica logs a few per checkpoint) and on journald storing the
    /// previous process's last lines within the search ages.
    pub(super) async fn learn_open_checkpoint_bound(self: Arc<Self>, unit_name: String, pid: u32) {
        let found = super::journal::newest_checkpoint_line(&unit_name).await;
        let mut bound = self.open_checkpoint_bound.lock().expect("not poisoned");
        let Some(current) = bound.as_mut().filter(|bound| bound.pid == pid) else {
            // Another process runs now: the answer is not about it.
            return;
        };
        current.checkpoint = current.checkpoint.max(found);
        drop(bound);
        tracing::info!(
            target: "readiness",
            "replica pid {pid}: its unit's journal's newest checkpoint line: {found:?}"
        );
    }

    /// Why a gate passed on StatsD was not passed on the log first (the rollout bench reads
    /// it): the checkpoint rule's refusal, or else what the log's own checks said.
    pub(super) fn why_not_on_log(&self) -> String {
        let now = Instant::now();
        match (self.checkpoints_now(), self.log_tracker()) {
            (Err(LogMayNotPass::NotRejoined), Some(tracker)) => format!(
                "{}: {}",
                LogMayNotPass::NotRejoined,
                tracker.why_not_rejoined(now)
            ),
            (Err(why), _) => why.to_string(),
            (Ok(_), None) => "no log of this process".into(),
            (Ok(_), Some(tracker)) => {
                let said = |verdict: Option<crate::replica_log::Verdict>| {
                    verdict.map_or_else(
                        || "none".to_string(),
                        |verdict| format!("ok={} {}", verdict.ok, verdict.detail),
                    )
                };
                let status = tracker.status_verdict(now);
                let status = match status {
                    None => format!("none ({})", tracker.why_no_verdict(now)),
                    status => said(status),
                };
                format!(
                    "the checkpoints allowed it; the log's status: {status}; its sync: {}",
                    said(tracker.sync_verdict(now))
                )
            }
        }
    }

    /// This process's checkpoint and the cluster's, if the log may pass its gate on them.
    pub(super) fn checkpoints_now(&self) -> Result<Checkpoints, LogMayNotPass> {
        let tracker = self.log_tracker().ok_or(LogMayNotPass::NotRejoined)?;
        let (_, rejoined_at) = tracker
            .rejoined(Instant::now())
            .ok_or(LogMayNotPass::NotRejoined)?;
        let answer = self.cluster_answer.lock().expect("not poisoned").clone();
        decide(
            tracker.pid(),
            rejoined_at,
            self.own_checkpoint(&tracker),
            &answer,
            self.config.peers.is_some(),
            Instant::now(),
        )
    }

    /// Whether the log may pass this process's readiness (Err says why not). Once its gate
    /// passed, the decision stands: readiness does not flip back while the answer ages.
    pub fn log_may_pass(&self) -> Result<(), LogMayNotPass> {
        let passed = self
            .gate()
            .is_some_and(|gate| gate.ready.is_some() && Some(gate.pid) == self.pid());
        if passed {
            return Ok(());
        }
        self.checkpoints_now().map(|_| ())
    }

    /// Asks the other agents for the cluster's checkpoint, every
    /// `CLUSTER_CHECKPOINT_ASK_INTERVAL`, while the current process's gate is pending and its log
    /// shows it rejoined; for as long as the agent runs.
    pub async fn follow_cluster_checkpoint(self: Arc<Self>, peers: Option<Arc<Peers>>) {
        let Some(peers) = peers else { return };
        let this_replica = self.config.replica.index;
        loop {
            tokio::time::sleep(CLUSTER_CHECKPOINT_ASK_INTERVAL).await;
            let Some(tracker) = self.log_tracker() else {
                continue;
            };
            let pending = self
                .gate()
                .is_some_and(|gate| gate.pid == tracker.pid() && gate.ready.is_none());
            // Asked once the rejoin settled: a stale view would name the wrong primary.
            let Some((view, _)) = tracker.rejoined(Instant::now()).filter(|_| pending) else {
                continue;
            };
            let asked = Instant::now();
            let answer = match peers.cluster_checkpoint(this_replica, view).await {
                Ok(checkpoint) => ClusterAnswer::Known(ClusterCheckpoint {
                    pid: tracker.pid(),
                    checkpoint,
                    asked,
                }),
                Err(why) => ClusterAnswer::Unknown {
                    pid: tracker.pid(),
                    why: why.to_string(),
                },
            };
            *self.cluster_answer.lock().expect("not poisoned") = answer;
            self.changed();
        }
    }
}

/// The rule (gate.rs): process `pid`, rejoined at `rejoined_at`, with its own checkpoint `own`,
/// may pass on its log if the other agents' answer is for it, asked after the rejoin, fresh at
/// `now`, and not above `own`.
fn decide(
    pid: u32,
    rejoined_at: Instant,
    own: Option<u64>,
    answer: &ClusterAnswer,
    peers_configured: bool,
    now: Instant,
) -> Result<Checkpoints, LogMayNotPass> {
    let own = own.ok_or(LogMayNotPass::OwnCheckpointUnknown)?;
    let cluster = match answer {
        ClusterAnswer::Known(answer)
            if answer.pid == pid
                && answer.asked >= rejoined_at
                && now.saturating_duration_since(answer.asked) <= CLUSTER_CHECKPOINT_FRESH =>
        {
            answer.checkpoint
        }
        ClusterAnswer::Unknown {
            pid: asked_for,
            why,
        } if *asked_for == pid => {
            return Err(LogMayNotPass::ClusterCheckpointUnknown(why.clone()));
        }
        _ if peers_configured => {
            return Err(LogMayNotPass::ClusterCheckpointUnknown(
                "no fresh answer since the rejoin".into(),
            ));
        }
        _ => return Err(LogMayNotPass::NoPeers),
    };
    if own < cluster {
        return Err(LogMayNotPass::Behind { own, cluster });
    }
    Ok(Checkpoints { own, cluster })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn known(pid: u32, checkpoint: u64, asked: Instant) -> ClusterAnswer {
        ClusterAnswer::Known(ClusterCheckpoint {
            pid,
            checkpoint,
            asked,
        })
    }

    #[test]
    fn the_log_passes_only_on_the_clusters_newest_checkpoint() {
        let rejoined = Instant::now();
        let asked = rejoined + Duration::from_millis(100);
        let now = asked + Duration::from_millis(300);
        let on = |own, cluster| decide(7, rejoined, own, &known(7, cluster, asked), true, now);
        assert_eq!(
            on(Some(1919), 1919),
            Ok(Checkpoints {
                own: 1919,
                cluster: 1919
            })
        );
        assert!(on(Some(2879), 1919).is_ok(), "ahead of a backup's answer");
        // The load started after the last report: the cluster checkpointed during the restart.
        assert_eq!(
            on(Some(1919), 2879),
            Err(LogMayNotPass::Behind {
                own: 1919,
                cluster: 2879
            })
        );
        assert_eq!(on(None, 1919), Err(LogMayNotPass::OwnCheckpointUnknown));
    }

    #[test]
    fn an_answer_counts_only_for_this_process_after_its_rejoin_while_fresh() {
        let rejoined = Instant::now() + Duration::from_secs(1);
        let before = rejoined - Duration::from_millis(10);
        let after = rejoined + Duration::from_millis(10);
        let unknown = |result: Result<Checkpoints, LogMayNotPass>| {
            matches!(result, Err(LogMayNotPass::ClusterCheckpointUnknown(_)))
        };
        let fresh = after + CLUSTER_CHECKPOINT_FRESH;
        let stale = fresh + Duration::from_millis(1);
        assert!(decide(7, rejoined, Some(9), &known(7, 9, after), true, fresh).is_ok());
        assert!(unknown(decide(
            7,
            rejoined,
            Some(9),
            &known(7, 9, after),
            true,
            stale
        )));
        assert!(unknown(decide(
            7,
            rejoined,
            Some(9),
            &known(7, 9, before),
            true,
            after
        )));
        assert!(unknown(decide(
            7,
            rejoined,
            Some(9),
            &known(6, 9, after),
            true,
            after
        )));
        let failed = ClusterAnswer::Unknown {
            pid: 7,
            why: "replica 1 (the primary of view): unreachable".into(),
        };
        assert_eq!(
            decide(7, rejoined, Some(9), &failed, true, after),
            Err(LogMayNotPass::ClusterCheckpointUnknown(
                "replica 1 (the primary of view): unreachable".into()
            ))
        );
        assert_eq!(
            decide(7, rejoined, Some(9), &ClusterAnswer::NotAsked, false, after),
            Err(LogMayNotPass::NoPeers)
        );
    }
}
