//! `tbctl inventory check [--json] FILE`: the Rust reader of `inventories/<env>.json`, on its
//! own. `scripts/check-nix` compares its `--json` output with the Nix reader's, field by field.
//! `tbctl inventory render --host NAME`: everything one host needs, computed from it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tb_proto::inventory::{Cluster, Inventory};
use tb_proto::render::render_host;

use super::exit::Usage;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The inventory, e.g. inventories/prod.json.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    pub inventory: PathBuf,
    /// The host, by its inventory name (a key of all.hosts).
    #[arg(long, value_name = "NAME")]
    pub host: String,
}

/// `tbctl inventory render --host NAME`: what the host needs, as one JSON document on stdout
/// (with or without `--json`: this command's result is JSON), from `tb_proto::render`, the
/// functions the agent's configuration and `tbctl local` come from. An unknown host exits 2
/// (usage), naming the inventory's hosts.
pub fn render(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::load(&args.inventory)?;
    let render = render_host(&inventory, &args.host).map_err(|error| {
        anyhow::Error::new(Usage(format!(
            "--host {}: {error} ({})",
            args.host,
            args.inventory.display()
        )))
    })?;
    println!("{}", serde_json::to_string_pretty(&render)?);
    Ok(ExitCode::SUCCESS)
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
