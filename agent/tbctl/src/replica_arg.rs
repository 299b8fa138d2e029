//! `--replica N` or `--replica HOST`: a replica chosen by its index (the inventory's
//! tigerbeetle_replica) or by its inventory host name, as kubectl and patronictl name members.
//! Resolved against the inventory once, before the first request.

use std::fmt;
use std::str::FromStr;

use tb_proto::inventory::{Inventory, ReplicaEntry};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaArg {
    Index(u8),
    HostName(String),
}

impl FromStr for ReplicaArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err("give a replica index or an inventory host name".into());
        }
        if text.bytes().all(|byte| byte.is_ascii_digit()) {
            return text
                .parse()
                .map(ReplicaArg::Index)
                .map_err(|_| format!("replica index {text} is out of range (0 to 255)"));
        }
        Ok(ReplicaArg::HostName(text.to_string()))
    }
}

impl fmt::Display for ReplicaArg {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaArg::Index(index) => write!(formatter, "{index}"),
            ReplicaArg::HostName(name) => formatter.write_str(name),
        }
    }
}

impl ReplicaArg {
    /// The inventory's entry, or an error naming every replica the inventory knows.
    pub fn resolve<'a>(&self, inventory: &'a Inventory) -> anyhow::Result<&'a ReplicaEntry> {
        let found = match self {
            ReplicaArg::Index(index) => inventory.replicas.get(usize::from(*index)),
            ReplicaArg::HostName(name) => inventory
                .replicas
                .iter()
                .find(|entry| &entry.host_name == name),
        };
        found.ok_or_else(|| {
            let known: Vec<String> = inventory
                .replicas
                .iter()
                .map(|entry| format!("{} ({})", entry.index, entry.host_name))
                .collect();
            anyhow::anyhow!(
                "--replica {self}: no such replica in the inventory; it has {}",
                known.join(", ")
            )
        })
    }
}

/// The replicas `--replica` names (each once, in replica order), or every replica of the
/// inventory when none is named: the set a wait waits for.
pub fn resolve_all(
    replicas: &[ReplicaArg],
    inventory: &Inventory,
) -> anyhow::Result<Vec<ReplicaEntry>> {
    if replicas.is_empty() {
        return Ok(inventory.replicas.clone());
    }
    let mut entries = Vec::new();
    for replica in replicas {
        let entry = replica.resolve(inventory)?;
        if !entries.contains(entry) {
            entries.push(entry.clone());
        }
    }
    entries.sort_by_key(|entry| entry.index);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Inventory {
        Inventory::parse(include_str!("../../../inventories/example.json")).unwrap()
    }

    #[test]
    fn by_index_or_host_name() {
        let inventory = inventory();
        let second = &inventory.replicas[1];
        let by_index: ReplicaArg = "1".parse().unwrap();
        assert_eq!(by_index.resolve(&inventory).unwrap(), second);
        let by_name: ReplicaArg = second.host_name.parse().unwrap();
        assert_eq!(by_name, ReplicaArg::HostName(second.host_name.clone()));
        assert_eq!(by_name.resolve(&inventory).unwrap(), second);
    }

    #[test]
    fn unknown_replica_names_the_known_ones() {
        let inventory = inventory();
        for text in ["9", "no-such-host"] {
            let error = text
                .parse::<ReplicaArg>()
                .unwrap()
                .resolve(&inventory)
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(&format!("--replica {text}: no such replica")));
            let first = &inventory.replicas[0];
            assert!(
                error.contains(&format!("0 ({})", first.host_name)),
                "{error}"
            );
        }
        assert!("256".parse::<ReplicaArg>().is_err());
        assert!("".parse::<ReplicaArg>().is_err());
    }

    #[test]
    fn a_set_of_replicas_is_each_once_in_replica_order_or_every_one() {
        let inventory = inventory();
        let every = resolve_all(&[], &inventory).unwrap();
        assert_eq!(every, inventory.replicas);
        let named: Vec<ReplicaArg> = [inventory.replicas[2].host_name.as_str(), "0", "2"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        let indexes: Vec<u8> = resolve_all(&named, &inventory)
            .unwrap()
            .iter()
            .map(|entry| entry.index)
            .collect();
        assert_eq!(indexes, [0, 2]);
        let unknown = ["no-such-host".parse().unwrap()];
        assert!(resolve_all(&unknown, &inventory).is_err());
    }
}
