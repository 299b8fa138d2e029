//! `tbctl inventory check [--json] FILE`: the Rust reader of `inventories/<env>.json`, on its
//! own. `scripts/check-nix` compares its `--json` output with the Nix reader's, field by field.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tb_proto::inventory::{Cluster, Inventory};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The inventory, e.g. inventories/prod.json.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

pub fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::load(&args.file)?;
    // `--json`: the resolved cluster (every key, defaults filled in), the same JSON as
    // `(import ./nix/inventory.nix).fromFile FILE`, on one line.
    if super::output::json() {
        println!("{}", serde_json::to_string(&inventory.cluster)?);
    } else {
        print!(
            "{}",
            summary(&args.file.display().to_string(), &inventory.cluster)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(file: &str, cluster: &Cluster) -> String {
    let mut text = String::new();
    let transport = if cluster.agent_tls.is_some() {
        "agents serve HTTPS"
    } else {
        "agents serve plain HTTP on private addresses"
    };
    // Writing to a String cannot fail.
    let _ = writeln!(text, "{file}: valid");
    let _ = writeln!(
        text,
        "cluster {}: {} replica(s), {transport}, {} token(s)",
        cluster.cluster_id,
        cluster.replica_count,
        cluster.agent_tokens.len()
    );
    for (index, name) in cluster.replica_hosts.iter().enumerate() {
        let host = &cluster.hosts[name];
        assert_eq!(usize::from(host.replica), index);
        let _ = writeln!(
            text,
            "  replica {index}  {name}  {}  agent {} (listens on {})",
            host.address, host.agent_url, host.agent_listen
        );
    }
    if cluster.agent_tokens.is_empty() {
        let _ = writeln!(
            text,
            "note: no tb_agent_tokens: fine for tbctl, but the NixOS agent module needs at least one"
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_replicas_in_order() {
        let inventory =
            Inventory::parse(include_str!("../../../inventories/example.json")).unwrap();
        let text = summary("example.json", &inventory.cluster);
        assert!(text.starts_with("example.json: valid\n"), "{text}");
        assert!(
            text.contains("3 replica(s), agents serve HTTPS, 2 token(s)"),
            "{text}"
        );
        let zero = text.find("replica 0  tb-0  10.0.0.10:3000").unwrap();
        let two = text.find("replica 2  tb-2  10.0.0.12:3000").unwrap();
        assert!(zero < two, "{text}");
    }
}
