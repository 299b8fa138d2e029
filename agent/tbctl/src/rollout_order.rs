//! `tbctl rollout order`: the order in which a rollout restarts the replicas, with the current
//! primary last. Restarting the primary costs a view change; restarting it first would make a
//! new primary that a later restart may remove again. Last, a rollout costs one view change
//! instead of up to one per replica.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tb_proto::inventory::Inventory;

use super::client::AgentClient;

#[derive(Debug, Args)]
pub struct RolloutOrderArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    inventory: PathBuf,
    /// Timeout of each request to an agent.
    #[arg(long, default_value_t = 5_000, value_parser = super::timeout_ms)]
    timeout_ms: u64,
}

/// Prints the inventory's host names, one per line, in inventory order with the primary moved
/// last. Without a primary to name (no replica in normal status has reported its view), the
/// inventory order, with a warning on stderr.
pub async fn order(client: &AgentClient, args: &RolloutOrderArgs) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::load(&args.inventory)?;
    let mut asks = tokio::task::JoinSet::new();
    for entry in &inventory.replicas {
        let (client, url, timeout_ms) = (client.clone(), entry.agent_url.clone(), args.timeout_ms);
        asks.spawn(async move { client.status(&url, timeout_ms).await.ok() });
    }
    let views: Vec<i64> = asks
        .join_all()
        .await
        .into_iter()
        .flatten()
        .flat_map(|status| normal_views(&status.replica))
        .collect();
    let count = inventory.replicas.len();
    let primary = primary_of(&views, count);
    if primary.is_none() {
        eprintln!("tbctl: no replica in normal status reported its view: inventory order");
    }
    let hosts: Vec<(u8, &str)> = inventory
        .replicas
        .iter()
        .map(|entry| (entry.index, entry.host_name.as_str()))
        .collect();
    let order = primary_last(&hosts, primary);
    if super::output::json() {
        // A JSON array of the host names, in order.
        super::output::emit(&order)?;
    } else {
        for host in order {
            println!("{host}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The views in which a replica reported itself normal: its last StatsD report's, and its own
/// log's. Right after a view change (the previous rollout's last turn) StatsD still names the
/// old view for up to 10 s, and the log the new one; views only grow, so the newest counts.
pub fn normal_views(replica: &tb_proto::api::ReplicaStatus) -> Vec<i64> {
    let statsd = replica
        .replica_view
        .filter(|_| replica.replica_status == Some(0));
    let log = replica.log_normal_view.map(i64::from);
    statsd.into_iter().chain(log).collect()
}

/// The primary of the newest view reported: view mod replica count (Viewstamped Replication).
pub fn primary_of(views: &[i64], replica_count: usize) -> Option<u8> {
    let view = *views.iter().max()?;
    (view >= 0 && replica_count > 0).then(|| (view as u64 % replica_count as u64) as u8)
}

/// The hosts in their order, with the primary's moved to the end.
pub fn primary_last<'a>(hosts: &[(u8, &'a str)], primary: Option<u8>) -> Vec<&'a str> {
    let is_primary = |index: u8| Some(index) == primary;
    let others = hosts.iter().filter(|(index, _)| !is_primary(*index));
    let last = hosts.iter().filter(|(index, _)| is_primary(*index));
    others.chain(last).map(|(_, name)| *name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_goes_last() {
        let hosts = [(0, "tb-1"), (1, "tb-2"), (2, "tb-3")];
        assert_eq!(primary_of(&[4, 4, 3], 3), Some(1));
        assert_eq!(primary_of(&[], 3), None);
        assert_eq!(primary_last(&hosts, Some(1)), ["tb-1", "tb-3", "tb-2"]);
        assert_eq!(primary_last(&hosts, Some(2)), ["tb-1", "tb-2", "tb-3"]);
        assert_eq!(primary_last(&hosts, None), ["tb-1", "tb-2", "tb-3"]);
    }

    #[test]
    fn the_log_names_a_view_statsd_has_not_reported_yet() {
        let replica = |status, view, log_view| tb_proto::api::ReplicaStatus {
            replica_status: status,
            replica_view: view,
            log_normal_view: log_view,
            ..tb_proto::api::ReplicaStatus::default()
        };
        // Seconds after a view change: StatsD's last report still names view 6.
        let views: Vec<i64> = [
            replica(Some(0), Some(6), Some(7)),
            replica(Some(0), Some(6), None),
            replica(Some(1), Some(7), None),
        ]
        .iter()
        .flat_map(normal_views)
        .collect();
        assert_eq!(primary_of(&views, 3), Some(1));
        // A view StatsD reported while not normal names no primary.
        assert_eq!(
            normal_views(&replica(Some(1), Some(8), None)),
            Vec::<i64>::new()
        );
    }
}
