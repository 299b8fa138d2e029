//! Steps 4 and 5 of the drill: the scratch cluster started on the restored files, newest
//! backups first, and asked for the drill accounts.

use std::cmp::Reverse;
use std::path::Path;
use std::time::{Duration, Instant};

use tigerbeetle_unofficial as tb;

use crate::scratch::{self, ScratchCluster};
use tb_proto::api;
use tb_proto::inventory::Inventory;
use tb_proto::quorum::ready_replicas_needed;

use super::records::compare;
use super::{DrillArgs, DrillRecord, Scratch, Verdict, step};

/// How often the wait for the scratch cluster checks that its replicas still run.
const SCRATCH_CHECK_INTERVAL_MS: u64 = 500;
/// How long replicas that join the scratch cluster late must keep running before the final
/// lookup: a replica whose restored state contradicts the cluster's stops within moments.
const SCRATCH_SETTLE_MS: u64 = 10_000;

/// Steps 4 and 5: the scratch cluster on the restored files, started newest backups first,
/// asked for the drill accounts once every replica runs.
pub(super) async fn check_restored(
    inventory: &Inventory,
    args: &DrillArgs,
    tigerbeetle: &Path,
    ports: &[u16],
    scratch: &Scratch,
    record: &DrillRecord,
    manifests: &[api::Manifest],
) -> anyhow::Result<Verdict> {
    // Checked again: something may have taken a port while the backups ran.
    scratch::check_free(ports)?;
    let addresses: Vec<String> = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let addresses = addresses.join(",");
    let quorum = ready_replicas_needed(inventory.replicas.len() as u8);
    let (first, rest) = start_order(manifests, quorum);
    // Declared before the client, so dropped after it: the client never outlives the cluster
    // it talks to.
    let mut cluster = ScratchCluster::new(tigerbeetle, &addresses, &args.cache_grid);
    for index in &first {
        cluster.start_replica(*index, &scratch.data_file(*index), &scratch.log(*index))?;
    }
    let scratch_client = tb::Client::new(inventory.cluster_id, &addresses)
        .map_err(|error| anyhow::anyhow!("client of the scratch cluster {addresses}: {error}"))?;
    let ids: Vec<u128> = record.accounts.iter().map(|account| account.id).collect();
    crate::say!("waiting until replicas {first:?} have formed a view and answer");
    lookup_scratch(&scratch_client, &ids, &mut cluster, args.timeout_ms).await?;
    for index in &rest {
        cluster.start_replica(*index, &scratch.data_file(*index), &scratch.log(*index))?;
    }
    if !rest.is_empty() {
        settle(&mut cluster).await?;
    }

    step(5, "looking up the drill accounts in the scratch cluster");
    let found = lookup_scratch(&scratch_client, &ids, &mut cluster, args.timeout_ms).await?;
    Ok(Verdict {
        accounts: ids.len(),
        differences: compare(&record.accounts, &found),
    })
}

/// The order to start the scratch replicas in: first the replicas with the newest backups,
/// as many as a quorum needs, then the others (each list in start order).
///
/// Each backup is a replica's state at a different moment. A replica backed up later knows of
/// operations committed after the others' backups. If the older backups formed the first view
/// of the scratch cluster, that view would lack operations the newer replica knows to be
/// committed, and TigerBeetle stops that replica on an assertion (seen in practice). Started
/// first, the newest backups form the view, and the older ones join it and catch up.
fn start_order(manifests: &[api::Manifest], quorum: u8) -> (Vec<u8>, Vec<u8>) {
    let mut order: Vec<&api::Manifest> = manifests.iter().collect();
    order.sort_by_key(|manifest| Reverse((manifest.created_unix_ms, manifest.replica_index)));
    let order: Vec<u8> = order
        .iter()
        .map(|manifest| manifest.replica_index)
        .collect();
    let split = usize::from(quorum).min(order.len());
    (order[..split].to_vec(), order[split..].to_vec())
}

/// Gives replicas that just joined time to catch up, failing if any exits meanwhile: a joining
/// replica whose restored state contradicts the cluster's stops within moments.
async fn settle(cluster: &mut ScratchCluster) -> anyhow::Result<()> {
    crate::say!(
        "letting the other replicas join for {} s",
        SCRATCH_SETTLE_MS / 1000
    );
    let deadline = Instant::now() + Duration::from_millis(SCRATCH_SETTLE_MS);
    while Instant::now() < deadline {
        cluster.check_running()?;
        tokio::time::sleep(Duration::from_millis(SCRATCH_CHECK_INTERVAL_MS)).await;
    }
    cluster.check_running()
}

/// One lookup against the scratch cluster. The client retries until the cluster answers;
/// meanwhile its replicas must keep running, and the wait ends at `timeout_ms`.
async fn lookup_scratch(
    client: &tb::Client,
    ids: &[u128],
    cluster: &mut ScratchCluster,
    timeout_ms: u64,
) -> anyhow::Result<Vec<tb::Account>> {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(timeout_ms);
    let lookup = client.lookup_accounts(ids.to_vec());
    tokio::pin!(lookup);
    loop {
        let pause = Duration::from_millis(SCRATCH_CHECK_INTERVAL_MS);
        tokio::select! {
            answer = &mut lookup => {
                let accounts = answer.map_err(|error| {
                    anyhow::anyhow!("looking up the drill accounts in the scratch cluster: {error}")
                })?;
                crate::say!(
                    "scratch cluster answered after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(accounts);
            }
            _ = tokio::time::sleep(pause) => {}
        }
        cluster.check_running()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "the scratch cluster did not answer within {timeout_ms} ms; see the replica logs"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::tests::record;

    #[test]
    fn the_newest_backups_start_first() {
        let manifest = |replica_index: u8, created_unix_ms: u64| {
            let mut manifest = record("x", created_unix_ms, None).manifest;
            manifest.replica_index = replica_index;
            manifest
        };
        let manifests = [manifest(0, 100), manifest(1, 300), manifest(2, 200)];
        assert_eq!(start_order(&manifests, 2), (vec![1, 2], vec![0]));
        assert_eq!(start_order(&manifests, 3), (vec![1, 2, 0], vec![]));
        assert_eq!(start_order(&manifests[..1], 1), (vec![0], vec![]));
        // Same creation time: the higher index first, so the order is always the same.
        let tied = [manifest(0, 5), manifest(1, 5)];
        assert_eq!(start_order(&tied, 1), (vec![1], vec![0]));
    }
}
