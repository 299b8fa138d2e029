//! Quorum arithmetic shared by the agent's guard and tbctl.

/// Replicas that must stay ready, besides the one being stopped, for the cluster to keep
/// committing even if the stopped replica was the primary: the larger of TigerBeetle's
/// replication and view-change quorums (src/vsr.zig, `quorums`).
pub fn ready_replicas_needed(replica_count: u8) -> u8 {
    assert!(replica_count > 0);
    const QUORUM_REPLICATION_MAX: u8 = 3;
    let replication = if replica_count == 2 {
        2
    } else {
        QUORUM_REPLICATION_MAX.min(replica_count.div_ceil(2))
    };
    let view_change = if replica_count == 2 {
        2
    } else {
        replica_count - replication + 1
    };
    replication.max(view_change)
}

#[cfg(test)]
mod tests {
    use super::ready_replicas_needed;

    #[test]
    fn quorum_sizes_match_tigerbeetle() {
        let needed: Vec<u8> = (1..=6).map(ready_replicas_needed).collect();
        assert_eq!(needed, vec![1, 2, 2, 3, 3, 4]);
    }
}
