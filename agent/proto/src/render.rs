//! Everything one host needs, computed from the inventory: the agent's configuration, the
//! replica's command lines, the data file, the firewall's sources. The agent's configuration is
//! generated here only: `tbctl local up` writes it for its agents and `tbctl inventory render
//! --host NAME` prints it (with the rest) for Ansible on the controller, so neither carries a
//! copy of the inventory's rules.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::{self, Config};
use crate::inventory::{Host, Inventory};
use crate::tigerbeetle;

/// The agent's settings that are not cluster-wide and so not in the inventory: how it runs its
/// replica, its own log, its thresholds and its backups. Each deployment sets them (Ansible's
/// role variables, the NixOS module's options, `tbctl local up`'s flags).
#[derive(Debug, Clone)]
pub struct HostSettings {
    pub run: config::Run,
    pub audit_log: Option<PathBuf>,
    pub log: config::Log,
    pub health: config::Health,
    pub control: config::Control,
    pub backup: Option<config::Backup>,
}

/// Where Ansible's roles install things by default (ansible/roles/*/defaults/main.yml): what
/// `tbctl inventory render` shows when no host settings are given.
const UNIT_DEFAULT: &str = "tigerbeetle.service";
const BINARY_DEFAULT: &str = "/usr/local/bin/tigerbeetle";
const AUDIT_LOG_DEFAULT: &str = "/var/log/tb-agent/audit.jsonl";

impl Default for HostSettings {
    /// A systemd host as the Ansible roles set it up, with the agent's defaults for the rest
    /// and no backups.
    fn default() -> Self {
        HostSettings {
            run: config::Run::Systemd {
                unit: UNIT_DEFAULT.to_string(),
                binary: PathBuf::from(BINARY_DEFAULT),
            },
            audit_log: Some(PathBuf::from(AUDIT_LOG_DEFAULT)),
            log: config::Log::default(),
            health: config::Health::default(),
            control: config::Control::default(),
            backup: None,
        }
    }
}

/// A host name the inventory does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host {name} is not in the inventory; its hosts are {}", known.join(", "))]
pub struct UnknownHost {
    pub name: String,
    /// The inventory's host names, in replica order.
    pub known: Vec<String>,
}

/// The resolved host `name`.
pub fn host<'a>(inventory: &'a Inventory, name: &str) -> Result<&'a Host, UnknownHost> {
    inventory
        .cluster
        .hosts
        .get(name)
        .ok_or_else(|| UnknownHost {
            name: name.to_string(),
            known: inventory.cluster.replica_hosts.clone(),
        })
}

/// The agent's configuration on host `host_name`: everything cluster-wide from the inventory
/// (listen address, TLS, tokens, the replica, its peers, the lease), the rest from `settings`.
pub fn agent_config(
    inventory: &Inventory,
    host_name: &str,
    settings: HostSettings,
) -> Result<Config, UnknownHost> {
    let cluster = &inventory.cluster;
    let host = host(inventory, host_name)?;
    let listen: SocketAddr = host
        .agent_listen
        .parse()
        .expect("the inventory validated the listen address as IPv4:port");
    let mut server = config::Server::new(listen);
    server.audit_log = settings.audit_log;
    server.tls = cluster.agent_tls.as_ref().map(|tls| config::Tls {
        cert_file: PathBuf::from(&tls.cert_file),
        key_file: PathBuf::from(&tls.key_file),
        client_ca_file: tls.client_ca_file.as_ref().map(PathBuf::from),
    });
    let tokens = cluster
        .agent_tokens
        .iter()
        .map(|token| config::Token {
            name: token.name.clone(),
            scopes: token.scopes.clone(),
            sha256: token.sha256.clone(),
        })
        .collect();
    let mut peers = config::Peers::new(
        cluster.agent_urls.clone(),
        &PathBuf::from(&cluster.agent_peer_token_file),
    );
    peers.ca_file = cluster.agent_peer_ca_file.as_ref().map(PathBuf::from);
    let lease = lease(cluster);
    Ok(Config {
        server,
        log: settings.log,
        tokens,
        replica: config::Replica {
            cluster_id: crate::ids::ClusterId(inventory.cluster_id),
            index: host.replica,
            count: cluster.replica_count,
            addresses: cluster.addresses.clone(),
            data_file: PathBuf::from(&host.data_file),
            statsd_port: cluster.statsd_port,
            run: settings.run,
        },
        peers: Some(peers),
        health: settings.health,
        control: settings.control,
        backup: settings.backup,
        lease,
    })
}

/// The maintenance lease every agent of the cluster uses: the inventory's keys over the
/// agent's defaults. Cluster-wide: one pool for every agent.
pub fn lease(cluster: &crate::inventory::Cluster) -> config::Lease {
    let mut lease = config::Lease::default();
    if let Some(enabled) = cluster.lease.enabled {
        lease.enabled = enabled;
    }
    if let Some(ledger) = cluster.lease.ledger {
        lease.ledger = ledger;
    }
    if let Some(prefix) = &cluster.lease.id_prefix {
        lease.id_prefix = prefix.clone();
    }
    lease
}

/// What `tbctl inventory render --host NAME` prints: everything the host needs, as one JSON
/// document (docs/inventory.md, "What a host needs").
#[derive(Debug, Clone, Serialize)]
pub struct HostRender {
    pub host: String,
    pub ansible_host: String,
    pub cluster_id: String,
    pub replica: u8,
    pub replica_count: u8,
    /// This replica's address, and every replica's in replica order.
    pub address: String,
    pub addresses: Vec<String>,
    pub data_dir: String,
    pub data_file: String,
    pub cache_grid: Option<String>,
    pub statsd_port: u16,
    /// `tigerbeetle` arguments of the replica's unit, after the binary: `start`, its flags and
    /// the data file.
    pub replica_start_args: Vec<String>,
    /// `tigerbeetle` arguments of the first deploy's format (bootstrap), after the binary.
    pub replica_format_args: Vec<String>,
    pub agent_url: String,
    pub agent_listen: String,
    /// The agent's effective configuration with [`HostSettings::default`]: the sections that
    /// are host settings (`replica.run`, `server.audit_log`, `log`, `health`, `control`,
    /// `backup`) are the deployment's to set.
    pub agent_config: Config,
    pub firewall: Firewall,
    /// How `ansible/playbooks/rollout.yml` applies a change: "systemd" or "nixos".
    pub deploy: String,
    pub nixos_flake: Option<String>,
}

/// Who may reach the replica and agent ports (the `inet tigerbeetle` table).
#[derive(Debug, Clone, Serialize)]
pub struct Firewall {
    pub replica_port: u16,
    pub agent_port: u16,
    /// The other replicas' IPs (this host's own left out), each once: they reach both ports.
    pub peer_ips: Vec<String>,
    /// Also reach the replica port.
    pub client_networks: Vec<String>,
    /// Also reach the agent port.
    pub orchestrator_networks: Vec<String>,
}

/// `tigerbeetle start`'s arguments for `host` (after the binary): `start`, the cluster's flags,
/// the data file last. What `tb-agent replica-start` execs (with any extra flags put before the
/// data file) and what `tbctl inventory render` prints, so the unit's comment is what runs.
pub fn replica_start_args(inventory: &Inventory, host: &Host) -> Vec<String> {
    let cluster = &inventory.cluster;
    let mut args = vec!["start".to_string()];
    args.extend(tigerbeetle::start_flags(
        &cluster.addresses,
        cluster.cache_grid.as_deref(),
        Some(cluster.statsd_port),
    ));
    args.push(host.data_file.clone());
    args
}

/// Everything host `host_name` needs, from the inventory alone.
pub fn render_host(inventory: &Inventory, host_name: &str) -> Result<HostRender, UnknownHost> {
    let cluster = &inventory.cluster;
    let host = host(inventory, host_name)?;
    let agent_config = agent_config(inventory, host_name, HostSettings::default())?;
    let replica_start_args = replica_start_args(inventory, host);
    let mut replica_format_args = vec!["format".to_string()];
    replica_format_args.extend(tigerbeetle::format_flags(
        inventory.cluster_id,
        host.replica,
        cluster.replica_count,
    ));
    replica_format_args.push(host.data_file.clone());
    Ok(HostRender {
        host: host_name.to_string(),
        ansible_host: host.ansible_host.clone(),
        cluster_id: cluster.cluster_id.clone(),
        replica: host.replica,
        replica_count: cluster.replica_count,
        address: host.address.clone(),
        addresses: cluster.addresses.clone(),
        data_dir: cluster.data_dir.clone(),
        data_file: host.data_file.clone(),
        cache_grid: cluster.cache_grid.clone(),
        statsd_port: cluster.statsd_port,
        replica_start_args,
        replica_format_args,
        agent_url: host.agent_url.clone(),
        agent_listen: host.agent_listen.clone(),
        agent_config,
        firewall: Firewall {
            replica_port: host.port,
            agent_port: host.agent_port,
            peer_ips: host.peer_ips.clone(),
            client_networks: cluster.client_networks.clone(),
            orchestrator_networks: cluster.orchestrator_networks.clone(),
        },
        deploy: host.deploy.clone(),
        nixos_flake: cluster.nixos_flake.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Inventory {
        Inventory::parse(include_str!("../../../inventories/example.json")).unwrap()
    }

    /// The rendered configuration is one the agent accepts, and says what the inventory says.
    #[test]
    fn agent_config_from_the_inventory_parses_and_matches_it() {
        let inventory = example();
        for (index, name) in inventory.cluster.replica_hosts.iter().enumerate() {
            let config = agent_config(&inventory, name, HostSettings::default()).unwrap();
            let text = toml::to_string(&config).unwrap();
            let parsed = Config::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
            let host = &inventory.cluster.hosts[name];
            assert_eq!(parsed.cluster_id(), inventory.cluster_id);
            assert_eq!(usize::from(parsed.replica.index), index);
            assert_eq!(parsed.replica.addresses, inventory.cluster.addresses);
            assert_eq!(parsed.replica.data_file, PathBuf::from(&host.data_file));
            assert_eq!(parsed.server.listen.to_string(), host.agent_listen);
            assert_eq!(
                parsed.server.tls.is_some(),
                inventory.cluster.agent_tls.is_some()
            );
            assert_eq!(parsed.tokens.len(), inventory.cluster.agent_tokens.len());
            let peers = parsed.peers.unwrap();
            assert_eq!(peers.agent_urls, inventory.cluster.agent_urls);
        }
    }

    #[test]
    fn render_host_has_the_command_lines_and_the_firewall() {
        let inventory = example();
        let name = &inventory.cluster.replica_hosts[1];
        let host = &inventory.cluster.hosts[name];
        let render = render_host(&inventory, name).unwrap();
        assert_eq!(render.replica, 1);
        assert_eq!(render.replica_start_args[0], "start");
        assert_eq!(
            render.replica_start_args[1],
            format!("--addresses={}", inventory.addresses())
        );
        assert_eq!(
            render.replica_start_args.last(),
            Some(&host.data_file.clone())
        );
        assert!(
            render
                .replica_start_args
                .contains(&format!("--statsd=127.0.0.1:{}", render.statsd_port)),
            "{:?}",
            render.replica_start_args
        );
        assert_eq!(
            render.replica_format_args[1..4],
            [
                format!("--cluster={}", inventory.cluster_id),
                "--replica=1".to_string(),
                format!("--replica-count={}", inventory.cluster.replica_count),
            ]
        );
        assert!(!render.firewall.peer_ips.contains(&host.ip));
        assert_eq!(render.firewall.replica_port, host.port);
    }

    #[test]
    fn unknown_host_names_the_known_ones() {
        let inventory = example();
        let error = render_host(&inventory, "nope").unwrap_err();
        assert_eq!(error.known, inventory.cluster.replica_hosts);
        assert!(
            error
                .to_string()
                .starts_with("host nope is not in the inventory; its hosts are "),
            "{error}"
        );
    }
}
