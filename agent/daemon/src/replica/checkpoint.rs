//! The lag side of the log's fast gate (gate.rs explains the bound): while a restarted process's
//! gate is pending and its log shows it rejoined, the agent asks the other agents for the
//! cluster's newest checkpoint; the log may pass the gate once this process's own checkpoint is
//! at least that one, asked after the rejoin and at most `CLUSTER_CHECKPOINT_FRESH` ago.
//! The other agents answer with their own replica's (`checkpoint_op`).

use std::sync::Arc;
use std::time::Instant;

use super::gate::{
    CLUSTER_CHECKPOINT_ASK_INTERVAL, CLUSTER_CHECKPOINT_FRESH, Checkpoints, ClusterCheckpoint,
};
use crate::peers::Peers;

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
        tracker.checkpoint_reached().max(start)
    }

    /// This replica's checkpoint as this agent can vouch for it to a peer (`checkpoint_op` of
    /// the status): the newest its current process's log shows, or the `op_checkpoint` of its
    /// StatsD reports when newer or when the log shows none since it opened (then it is the one
    /// it opened at). None without a checked log (a missed checkpoint line would make the peer's
    /// bound unsound) or without either source.
    pub fn checkpoint_op(&self) -> Option<u64> {
        let tracker = self.log_tracker().filter(|tracker| tracker.usable())?;
        let reported = (self.statsd.replica_pid() == Some(tracker.pid()))
            .then(|| self.statsd.gauge("tb_replica_op_checkpoint"))
            .flatten()
            .and_then(|(value, _)| u64::try_from(value).ok());
        tracker.checkpoint_reached().max(reported)
    }

    /// This process's checkpoint and the cluster's, if the log may pass its gate on them.
    pub(super) fn checkpoints_now(&self) -> Result<Checkpoints, LogMayNotPass> {
        let tracker = self.log_tracker().ok_or(LogMayNotPass::NotRejoined)?;
        let (_, rejoined_at) = tracker.rejoined().ok_or(LogMayNotPass::NotRejoined)?;
        let own = self
            .own_checkpoint(&tracker)
            .ok_or(LogMayNotPass::OwnCheckpointUnknown)?;
        let cluster = match self.cluster_answer.lock().expect("not poisoned").clone() {
            ClusterAnswer::Known(answer)
                if answer.pid == tracker.pid()
                    && answer.asked >= rejoined_at
                    && answer.asked.elapsed() <= CLUSTER_CHECKPOINT_FRESH =>
            {
                answer.checkpoint
            }
            ClusterAnswer::Unknown { pid, why } if pid == tracker.pid() => {
                return Err(LogMayNotPass::ClusterCheckpointUnknown(why));
            }
            _ if self.peers_configured() => {
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

    fn peers_configured(&self) -> bool {
        self.config.peers.is_some()
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
            let Some((view, _)) = tracker.rejoined().filter(|_| pending) else {
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
