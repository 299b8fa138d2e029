//! The inventory: one JSON file per environment, the single source of a cluster's layout.
//!
//! It is shaped as an Ansible YAML inventory written in JSON (Ansible's `yaml` inventory plugin
//! reads `.json` files), so Ansible, Nix (`builtins.fromJSON`) and Rust all read the same file
//! with no conversion step. Other keys (for example `ansible_user`) are allowed and ignored here.
//!
//! ```json
//! { "all": {
//!     "vars": { "tigerbeetle_cluster_id": "0", "tigerbeetle_replica_count": 3 },
//!     "hosts": {
//!       "tb-0": { "ansible_host": "10.0.0.10", "tigerbeetle_replica": 0,
//!                 "tigerbeetle_address": "10.0.0.10:3000",
//!                 "tb_agent_url": "https://10.0.0.10:7443" } } } }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::tigerbeetle::REPLICA_COUNT_MAX;

/// Inventories are small; anything larger is not an inventory.
const INVENTORY_SIZE_MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InventoryFile {
    pub all: Group,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub vars: ClusterVars,
    pub hosts: BTreeMap<String, HostVars>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterVars {
    /// Decimal u128 as a string: JSON numbers and Nix integers cannot hold 128 bits.
    pub tigerbeetle_cluster_id: String,
    pub tigerbeetle_replica_count: u8,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostVars {
    pub ansible_host: String,
    pub tigerbeetle_replica: u8,
    pub tigerbeetle_address: String,
    pub tb_agent_url: String,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A validated inventory, with replicas in replica order.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub cluster_id: u128,
    pub replicas: Vec<ReplicaEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEntry {
    pub index: u8,
    pub host_name: String,
    pub host: String,
    pub address: String,
    pub agent_url: String,
}

impl Inventory {
    pub fn load(path: &Path) -> anyhow::Result<Inventory> {
        let metadata = std::fs::metadata(path)
            .map_err(|error| anyhow::anyhow!("inventory {}: {error}", path.display()))?;
        if metadata.len() > INVENTORY_SIZE_MAX_BYTES {
            anyhow::bail!(
                "inventory {}: larger than {INVENTORY_SIZE_MAX_BYTES} bytes",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("inventory {}: {error}", path.display()))?;
        Inventory::parse(&text)
            .map_err(|error| anyhow::anyhow!("inventory {}: {error}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Inventory> {
        let file: InventoryFile = serde_json::from_str(text)?;
        Inventory::from_file(&file)
    }

    pub fn from_file(file: &InventoryFile) -> anyhow::Result<Inventory> {
        let vars = &file.all.vars;
        let cluster_id: u128 = vars
            .tigerbeetle_cluster_id
            .parse()
            .ok()
            .filter(|_| {
                vars.tigerbeetle_cluster_id
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .ok_or_else(|| {
                anyhow::anyhow!("all.vars.tigerbeetle_cluster_id: must be a decimal u128 string")
            })?;
        let count = vars.tigerbeetle_replica_count;
        if count == 0 || count > REPLICA_COUNT_MAX {
            anyhow::bail!(
                "all.vars.tigerbeetle_replica_count: must be between 1 and {REPLICA_COUNT_MAX}"
            );
        }
        let mut slots: Vec<Option<ReplicaEntry>> = vec![None; usize::from(count)];
        for (name, host) in &file.all.hosts {
            let index = host.tigerbeetle_replica;
            let slot = slots.get_mut(usize::from(index)).ok_or_else(|| {
                anyhow::anyhow!(
                    "all.hosts.{name}.tigerbeetle_replica: {index} is not below the replica count {count}"
                )
            })?;
            if let Some(other) = slot {
                anyhow::bail!(
                    "all.hosts.{name}.tigerbeetle_replica: replica {index} is already host {}",
                    other.host_name
                );
            }
            if !(host.tb_agent_url.starts_with("http://")
                || host.tb_agent_url.starts_with("https://"))
            {
                anyhow::bail!("all.hosts.{name}.tb_agent_url: must start with http:// or https://");
            }
            if host.tigerbeetle_address.is_empty() || host.tigerbeetle_address.contains(',') {
                anyhow::bail!("all.hosts.{name}.tigerbeetle_address: must be one host:port");
            }
            *slot = Some(ReplicaEntry {
                index,
                host_name: name.clone(),
                host: host.ansible_host.clone(),
                address: host.tigerbeetle_address.clone(),
                agent_url: host.tb_agent_url.trim_end_matches('/').to_string(),
            });
        }
        let replicas = slots
            .into_iter()
            .enumerate()
            .map(|(index, slot)| {
                slot.ok_or_else(|| {
                    anyhow::anyhow!("all.hosts: no host has tigerbeetle_replica {index}")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Inventory {
            cluster_id,
            replicas,
        })
    }

    /// The comma-separated address list that `tigerbeetle start` and clients take.
    pub fn addresses(&self) -> String {
        self.replicas
            .iter()
            .map(|replica| replica.address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn replica(&self, index: u8) -> anyhow::Result<&ReplicaEntry> {
        self.replicas.get(usize::from(index)).ok_or_else(|| {
            anyhow::anyhow!(
                "replica {index} is not in the inventory (replicas 0 to {})",
                self.replicas.len() - 1
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"all": {
        "vars": {"tigerbeetle_cluster_id": "340282366920938463463374607431768211455",
                 "tigerbeetle_replica_count": 2, "ansible_user": "root"},
        "hosts": {
          "b": {"ansible_host": "h1", "tigerbeetle_replica": 1,
                "tigerbeetle_address": "h1:3000", "tb_agent_url": "http://h1:7000/"},
          "a": {"ansible_host": "h0", "tigerbeetle_replica": 0,
                "tigerbeetle_address": "h0:3000", "tb_agent_url": "http://h0:7000"}}}}"#;

    #[test]
    fn the_example_inventory_is_valid() {
        let inventory =
            Inventory::parse(include_str!("../../../inventories/example.json")).unwrap();
        assert_eq!(inventory.replicas.len(), 3);
        assert_eq!(
            inventory.addresses(),
            "10.0.0.10:3000,10.0.0.11:3000,10.0.0.12:3000"
        );
    }

    #[test]
    fn parses_and_orders_by_replica() {
        let inventory = Inventory::parse(GOOD).unwrap();
        assert_eq!(inventory.cluster_id, u128::MAX);
        assert_eq!(inventory.addresses(), "h0:3000,h1:3000");
        assert_eq!(inventory.replicas[1].agent_url, "http://h1:7000");
    }

    #[test]
    fn rejects_gaps_duplicates_and_bad_ids() {
        let missing = GOOD.replace("\"tigerbeetle_replica\": 1", "\"tigerbeetle_replica\": 0");
        let error = Inventory::parse(&missing).unwrap_err().to_string();
        assert!(error.contains("already host"), "{error}");
        let big = GOOD.replace(
            "\"tigerbeetle_replica_count\": 2",
            "\"tigerbeetle_replica_count\": 3",
        );
        let error = Inventory::parse(&big).unwrap_err().to_string();
        assert!(
            error.contains("no host has tigerbeetle_replica 2"),
            "{error}"
        );
        let bad_id = GOOD.replace("340282366920938463463374607431768211455", "-1");
        assert!(Inventory::parse(&bad_id).is_err());
    }
}
