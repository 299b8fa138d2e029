//! The files of a local cluster's state directory: where each one lives, what goes in it, and
//! how it is written (atomically, so an interrupted `tbctl local up` never leaves half a file).
//!
//! ```text
//! STATE/cluster.json            cluster id and replica count, fixed at the first up
//! STATE/admin.token, peer.token secrets (0600); agent configs hold only their SHA-256
//! STATE/agent-I.toml            agent configs
//! STATE/inventory.json          the inventory for `tbctl status`
//! STATE/local.json              agent pids, URLs and paths, for `tbctl local down` and scripts
//! STATE/data/C_I.tigerbeetle    replica data files (C: the cluster id), never deleted or
//!                               overwritten; tb_proto::inventory::data_file_name names them
//! STATE/agent-I.log, replica-I.log, audit-I.log
//! ```

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use tb_proto::auth::Scope;
use tb_proto::config;
use tb_proto::inventory::{ClusterVars, Group, HostVars, Inventory, InventoryFile, data_file_name};
use tb_proto::render::{self, HostSettings};
use tb_proto::tigerbeetle::REPLICA_COUNT_MAX;

/// `local.json`: `local down` finds it without knowing the layout's ports.
pub const STATE_FILE_NAME: &str = "local.json";

/// Where every file of the state directory lives, and every port.
#[derive(Debug, Clone)]
pub struct Layout {
    pub state_dir: PathBuf,
    pub replica_count: u8,
    replica_port_base: u16,
    agent_port_base: u16,
    statsd_port_base: u16,
}

impl Layout {
    pub fn new(
        state_dir: PathBuf,
        replica_count: u8,
        replica_port_base: u16,
        agent_port_base: u16,
        statsd_port_base: u16,
    ) -> anyhow::Result<Layout> {
        anyhow::ensure!(
            (1..=REPLICA_COUNT_MAX).contains(&replica_count),
            "--replica-count must be between 1 and {REPLICA_COUNT_MAX}"
        );
        let count = u16::from(replica_count);
        for (flag, base) in [
            ("--replica-port-base", replica_port_base),
            ("--agent-port-base", agent_port_base),
            ("--statsd-port-base", statsd_port_base),
        ] {
            anyhow::ensure!(
                base != 0 && base.checked_add(count - 1).is_some(),
                "{flag} {base}: the ports {base} to {base}+{} must be between 1 and 65535",
                count - 1
            );
        }
        // Replicas and agents both listen on TCP: their port ranges must not overlap.
        anyhow::ensure!(
            replica_port_base.abs_diff(agent_port_base) >= count,
            "--replica-port-base {replica_port_base} and --agent-port-base {agent_port_base}: \
             the {count} replica ports and the {count} agent ports overlap"
        );
        Ok(Layout {
            state_dir,
            replica_count,
            replica_port_base,
            agent_port_base,
            statsd_port_base,
        })
    }

    pub fn replicas(&self) -> std::ops::Range<u8> {
        0..self.replica_count
    }

    fn file(&self, name: impl AsRef<Path>) -> PathBuf {
        self.state_dir.join(name)
    }

    pub fn cluster_file(&self) -> PathBuf {
        self.file("cluster.json")
    }
    pub fn admin_token_file(&self) -> PathBuf {
        self.file("admin.token")
    }
    pub fn peer_token_file(&self) -> PathBuf {
        self.file("peer.token")
    }
    pub fn inventory_file(&self) -> PathBuf {
        self.file("inventory.json")
    }
    pub fn state_file(&self) -> PathBuf {
        self.file(STATE_FILE_NAME)
    }
    pub fn data_dir(&self) -> PathBuf {
        self.file("data")
    }
    pub fn data_file(&self, cluster_id: u128, replica: u8) -> PathBuf {
        self.data_dir().join(data_file_name(cluster_id, replica))
    }
    /// Where tbctl before the inventory's naming kept the data files: every cluster's as if
    /// its id were 0. `tbctl local up` renames them (local/data_files.rs,
    /// `adopt_legacy_data_files`).
    pub fn legacy_data_file(&self, replica: u8) -> PathBuf {
        self.data_dir().join(data_file_name(0, replica))
    }
    /// The replica's host name in the local inventory.
    pub fn host_name(&self, replica: u8) -> String {
        format!("replica-{replica}")
    }
    pub fn agent_config(&self, replica: u8) -> PathBuf {
        self.file(format!("agent-{replica}.toml"))
    }
    pub fn agent_log(&self, replica: u8) -> PathBuf {
        self.file(format!("agent-{replica}.log"))
    }
    pub fn replica_log(&self, replica: u8) -> PathBuf {
        self.file(format!("replica-{replica}.log"))
    }
    fn audit_log(&self, replica: u8) -> PathBuf {
        self.file(format!("audit-{replica}.log"))
    }
    /// Each replica's backups, outside the data directory (as the agent requires).
    pub fn backup_dir(&self, replica: u8) -> PathBuf {
        self.file(format!("backups/replica-{replica}"))
    }

    pub fn replica_address(&self, replica: u8) -> String {
        format!("127.0.0.1:{}", self.replica_port_base + u16::from(replica))
    }
    pub fn agent_url(&self, replica: u8) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.agent_port_base + u16::from(replica)
        )
    }
    fn statsd_port(&self, replica: u8) -> u16 {
        self.statsd_port_base + u16::from(replica)
    }
}

/// What to do with the data files, given which of them exist (index = replica).
#[derive(Debug, PartialEq, Eq)]
pub enum FormatPlan {
    /// A new cluster: format every replica.
    FormatAll,
    /// An existing cluster: start on the files as they are.
    ReuseAll,
    /// Some replicas' files are gone. Formatting them anew could lose acknowledged data.
    Refuse { missing: Vec<u8> },
}

pub fn format_plan(exists: &[bool]) -> FormatPlan {
    let missing: Vec<u8> = (0u8..)
        .zip(exists)
        .filter(|(_, exists)| !**exists)
        .map(|(replica, _)| replica)
        .collect();
    if missing.is_empty() {
        FormatPlan::ReuseAll
    } else if missing.len() == exists.len() {
        FormatPlan::FormatAll
    } else {
        FormatPlan::Refuse { missing }
    }
}

/// The identity fixed when the cluster's data files are formatted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterIdentity {
    /// Decimal u128 as a string, as in agent configs and inventories.
    pub cluster_id: String,
    pub replica_count: u8,
}

impl ClusterIdentity {
    /// Reads `cluster.json`'s text, checking the cluster id once, here.
    pub fn parse(text: &str) -> anyhow::Result<(ClusterIdentity, u128)> {
        let identity: ClusterIdentity = serde_json::from_str(text)?;
        let id = identity
            .cluster_id
            .parse::<u128>()
            .ok()
            .filter(|id| id.to_string() == identity.cluster_id)
            .with_context(|| {
                format!(
                    "cluster_id {:?} is not a decimal u128 without leading zeros",
                    identity.cluster_id
                )
            })?;
        Ok((identity, id))
    }
}

/// The secrets' hashes the local inventory lists as its tokens.
pub struct TokenHashes<'a> {
    pub admin_sha256: &'a str,
    pub peer_sha256: &'a str,
}

/// Everything an agent config needs beyond the layout and the inventory.
pub struct AgentSettings<'a> {
    pub tigerbeetle: &'a Path,
    pub cache_grid: &'a str,
}

/// Paths go into TOML as strings: a path that is not UTF-8 cannot be written faithfully.
fn utf8(path: &Path) -> anyhow::Result<&Path> {
    anyhow::ensure!(
        path.to_str().is_some(),
        "path {} is not UTF-8",
        path.display()
    );
    Ok(path)
}

/// The agent config for one replica: `tb_proto::render::agent_config` from the local inventory
/// (the one generator of agent configs), with this machine's settings. Only the StatsD port
/// differs from what the inventory says: every replica runs on this one host, so each gets its
/// own (the inventory's port + the replica index).
pub fn agent_config(
    layout: &Layout,
    inventory: &Inventory,
    replica: u8,
    settings: &AgentSettings,
) -> anyhow::Result<String> {
    // A development machine is not a production host: a smaller disk floor. The memory-lock
    // check stays on: run as root (or with CAP_IPC_LOCK) so the replicas can lock their memory.
    const FREE_BYTES_MIN: u64 = 256 * 1024 * 1024;
    let mut backup = config::Backup::new(utf8(&layout.backup_dir(replica))?);
    backup.keep_last = 3;
    backup.free_margin_bytes = FREE_BYTES_MIN;
    let host_settings = HostSettings {
        run: config::Run::Process {
            binary: utf8(settings.tigerbeetle)?.to_path_buf(),
            extra_args: vec![format!("--cache-grid={}", settings.cache_grid)],
            log_file: Some(utf8(&layout.replica_log(replica))?.to_path_buf()),
        },
        audit_log: Some(utf8(&layout.audit_log(replica))?.to_path_buf()),
        log: config::Log::default(),
        health: config::Health {
            free_bytes_min: FREE_BYTES_MIN,
            free_percent_min: 0.0,
            ..config::Health::default()
        },
        control: config::Control::default(),
        backup: Some(backup),
    };
    let mut config = render::agent_config(inventory, &layout.host_name(replica), host_settings)?;
    config.replica.statsd_port = layout.statsd_port(replica);
    let text = toml::to_string(&config).context("serialising the agent config")?;
    Ok(format!(
        "# Written by `tbctl local up`, and rewritten by every `up`: edit the flags, not this file.\n\n{text}"
    ))
}

/// The local cluster's inventory: its layout, its tokens (the hashes only), the state
/// directory's data directory and peer token file.
pub fn inventory(
    layout: &Layout,
    cluster_id: &str,
    tokens: &TokenHashes,
) -> anyhow::Result<InventoryFile> {
    let hosts = layout
        .replicas()
        .map(|replica| {
            let host = HostVars {
                ansible_host: "127.0.0.1".to_string(),
                tigerbeetle_replica: replica,
                tigerbeetle_address: layout.replica_address(replica),
                tb_agent_url: layout.agent_url(replica),
                other: BTreeMap::new(),
            };
            (layout.host_name(replica), host)
        })
        .collect();
    let token = |name: &str, scopes: &[Scope], sha256: &str| serde_json::json!({"name": name, "scopes": scopes, "sha256": sha256});
    let other = BTreeMap::from([
        (
            "tigerbeetle_data_dir".to_string(),
            serde_json::json!(inventory_path(&layout.data_dir())?),
        ),
        (
            "tb_agent_peer_token_file".to_string(),
            serde_json::json!(inventory_path(&layout.peer_token_file())?),
        ),
        (
            "tb_agent_statsd_port".to_string(),
            serde_json::json!(layout.statsd_port(0)),
        ),
        (
            "tb_agent_tokens".to_string(),
            serde_json::json!([
                token(
                    "admin",
                    &[Scope::Read, Scope::Control, Scope::Backup],
                    tokens.admin_sha256
                ),
                // Agents ask each other for readiness before a stop or restart (the quorum guard).
                token("peer", &[Scope::Read], tokens.peer_sha256),
            ]),
        ),
    ]);
    Ok(InventoryFile {
        all: Group {
            vars: ClusterVars {
                tigerbeetle_cluster_id: cluster_id.to_string(),
                tigerbeetle_replica_count: layout.replica_count,
                other,
            },
            hosts,
        },
    })
}

/// A path of the state directory as the inventory takes it (docs/inventory.md's path rule).
fn inventory_path(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .filter(|text| tb_proto::inventory::is_inventory_path(text))
        .with_context(|| {
            format!(
                "{}: the state directory goes into the local inventory, whose paths must be \
                 absolute with components of A-Z a-z 0-9 . _ + - only: pass another --state-dir",
                path.display()
            )
        })
}

/// `--cache-grid` takes a size like `256MiB` or `1GiB`; anything else would only fail later,
/// inside the replica, with the error buried in its log.
pub fn check_cache_grid(size: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        tb_proto::inventory::is_cache_grid_size(size),
        "--cache-grid {size}: must be 1 to 6 digits (no leading 0) followed by KiB, MiB, GiB or \
         TiB, e.g. 256MiB, as the inventory's tigerbeetle_cache_grid"
    );
    Ok(())
}

/// Writes `path` so that it either keeps its old contents or has all the new ones: write a
/// temporary file, flush it to disk, rename it over `path`, flush the directory.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let write = || -> std::io::Result<()> {
        // A leftover from an interrupted write is ours and holds nothing of value.
        match std::fs::remove_file(&temporary) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        sync_parent(path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// Makes a rename or link in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)?.sync_all()
}

/// Reads a small file, or None when it does not exist.
pub fn read_optional(path: &Path, size_max_bytes: u64) -> anyhow::Result<Option<String>> {
    match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("{}", path.display())),
        Ok(metadata) => anyhow::ensure!(
            metadata.len() <= size_max_bytes,
            "{}: larger than {size_max_bytes} bytes; not a file tbctl wrote",
            path.display()
        ),
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tb_proto::config::{Config, Run};

    fn layout() -> Layout {
        Layout::new(PathBuf::from("/tmp/tbctl-local"), 3, 3000, 7000, 8125).unwrap()
    }

    const ADMIN_SHA256: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const PEER_SHA256: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn parsed_inventory(layout: &Layout, cluster_id: &str) -> Inventory {
        let tokens = TokenHashes {
            admin_sha256: ADMIN_SHA256,
            peer_sha256: PEER_SHA256,
        };
        let file = inventory(layout, cluster_id, &tokens).unwrap();
        let text = serde_json::to_string_pretty(&file).unwrap();
        Inventory::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
    }

    #[test]
    fn format_plan_formats_none_reuses_all_refuses_some() {
        assert_eq!(format_plan(&[false, false, false]), FormatPlan::FormatAll);
        assert_eq!(format_plan(&[true, true, true]), FormatPlan::ReuseAll);
        assert_eq!(
            format_plan(&[true, false, true]),
            FormatPlan::Refuse { missing: vec![1] }
        );
        assert_eq!(
            format_plan(&[false, false, true]),
            FormatPlan::Refuse {
                missing: vec![0, 1]
            }
        );
    }

    #[test]
    fn agent_config_is_valid() {
        let layout = layout();
        let inventory = parsed_inventory(&layout, "340282366920938463463374607431768211455");
        let settings = AgentSettings {
            tigerbeetle: Path::new("/opt/tigerbeetle"),
            cache_grid: "256MiB",
        };
        let text = agent_config(&layout, &inventory, 2, &settings).unwrap();
        let config = Config::parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(config.cluster_id(), u128::MAX);
        assert_eq!(config.replica.index, 2);
        assert_eq!(config.replica.addresses[2], "127.0.0.1:3002");
        assert_eq!(config.replica.statsd_port, 8127);
        assert_eq!(config.server.listen.port(), 7002);
        // The inventory's data file, named by the one rule.
        assert_eq!(config.replica.data_file, layout.data_file(u128::MAX, 2));
        assert_eq!(
            config.replica.data_file,
            Path::new(
                "/tmp/tbctl-local/data/340282366920938463463374607431768211455_2.tigerbeetle"
            )
        );
        assert_eq!(config.tokens[0].sha256, ADMIN_SHA256);
        assert_eq!(config.tokens[1].name, "peer");
        let peers = config.peers.clone().unwrap();
        assert_eq!(peers.token_file, layout.peer_token_file());
        assert_eq!(config.peers.unwrap().agent_urls[0], "http://127.0.0.1:7000");
        let Run::Process { extra_args, .. } = config.replica.run else {
            panic!("not process mode");
        };
        assert_eq!(extra_args, ["--cache-grid=256MiB"]);
        let backup = config.backup.expect("backups configured");
        assert_eq!(backup.keep_last, 3);
        assert_eq!(config.health.free_percent_min, 0.0);
        // Unset options are left out rather than written as empty values.
        assert!(!text.contains("tls"), "{text}");
    }

    #[test]
    fn inventory_is_valid() {
        let parsed = parsed_inventory(&layout(), "42");
        assert_eq!(parsed.cluster_id, 42);
        assert_eq!(
            parsed.addresses(),
            "127.0.0.1:3000,127.0.0.1:3001,127.0.0.1:3002"
        );
        assert_eq!(parsed.replicas[1].host_name, "replica-1");
        assert_eq!(parsed.replicas[1].agent_url, "http://127.0.0.1:7001");
    }

    /// Every layout `tbctl local up` accepts gives an inventory that passes every rule of
    /// docs/inventory.md (the ones the Nix reader applies too), and the listen address that the
    /// inventory implies is where the local agent really listens.
    #[test]
    fn inventory_passes_the_shared_rules_for_every_layout() {
        let dir = PathBuf::from("/tmp/x");
        for replica_count in 1..=REPLICA_COUNT_MAX {
            for (replica_port_base, agent_port_base) in
                [(3000, 7000), (1, 7), (65530, 1), (7000, 3000)]
            {
                let layout = Layout::new(
                    dir.clone(),
                    replica_count,
                    replica_port_base,
                    agent_port_base,
                    8125,
                )
                .unwrap();
                let parsed = parsed_inventory(&layout, "340282366920938463463374607431768211455");
                assert_eq!(parsed.replicas.len(), usize::from(replica_count));
                for replica in layout.replicas() {
                    let host = &parsed.cluster.hosts[&format!("replica-{replica}")];
                    assert_eq!(host.replica, replica);
                    assert_eq!(host.address, layout.replica_address(replica));
                    assert_eq!(
                        host.agent_listen,
                        format!("127.0.0.1:{}", agent_port_base + u16::from(replica))
                    );
                }
            }
        }
    }

    #[test]
    fn a_state_dir_outside_the_inventory_path_rule_is_refused() {
        let layout = Layout::new(PathBuf::from("/tmp/a b"), 1, 3000, 7000, 8125).unwrap();
        let tokens = TokenHashes {
            admin_sha256: ADMIN_SHA256,
            peer_sha256: PEER_SHA256,
        };
        let error = inventory(&layout, "1", &tokens).unwrap_err().to_string();
        assert!(error.contains("pass another --state-dir"), "{error}");
    }

    #[test]
    fn cluster_identity_checks_the_id() {
        let (identity, id) =
            ClusterIdentity::parse(r#"{"cluster_id": "42", "replica_count": 3}"#).unwrap();
        assert_eq!((identity.replica_count, id), (3, 42));
        for bad in ["042", "-1", "x", "340282366920938463463374607431768211456"] {
            let text = format!(r#"{{"cluster_id": "{bad}", "replica_count": 3}}"#);
            assert!(ClusterIdentity::parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_rejects_bad_ports() {
        let dir = PathBuf::from("/tmp/x");
        assert!(Layout::new(dir.clone(), 0, 3000, 7000, 8125).is_err());
        assert!(Layout::new(dir.clone(), 7, 3000, 7000, 8125).is_err());
        assert!(Layout::new(dir.clone(), 3, 65534, 7000, 8125).is_err());
        assert!(Layout::new(dir.clone(), 3, 3000, 3002, 8125).is_err());
        assert!(Layout::new(dir, 3, 0, 7000, 8125).is_err());
    }

    #[test]
    fn cache_grid_sizes() {
        assert!(check_cache_grid("256MiB").is_ok());
        assert!(check_cache_grid("1GiB").is_ok());
        assert!(check_cache_grid("MiB").is_err());
        assert!(check_cache_grid("256").is_err());
        assert!(check_cache_grid("256 MiB").is_err());
        assert!(check_cache_grid("--x").is_err());
        assert!(check_cache_grid("0256MiB").is_err());
    }
}
