//! `tbctl restore-drill`: untested backups are worthless. The drill writes known records into
//! the live cluster, backs up every replica, restores those backups into a scratch cluster of
//! its own, and checks that the scratch cluster answers with the same balances.
//!
//! The live cluster is only ever touched through its agents (backups, behind their quorum
//! guards) and through a client (two accounts, a few transfers). Restored files go into a new
//! scratch directory, and the scratch cluster listens on its own 127.0.0.1 ports.

mod backups;
mod records;
mod scratch_cluster;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use tigerbeetle_unofficial as tb;

use super::client::AgentClient;
use super::client_log;
use super::local_files;
use super::scratch;
use super::status;
use backups::{backup_all, restore_replica, warn_on_version};
use records::record_drill;
use scratch_cluster::check_restored;
use tb_proto::clock::now_unix_ms;
use tb_proto::inventory::{Inventory, data_file_name};

/// Small agent requests (readiness, backup lists).
const QUERY_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Args)]
pub struct DrillArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    pub inventory: PathBuf,
    /// Where drill.json, downloads, restored data files and scratch replica logs go. It must
    /// be new or empty, on a filesystem with room for every replica's data file. Default: a
    /// new directory in $TMPDIR (or /tmp).
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,
    /// Scratch replica i listens on 127.0.0.1 at this port + i. None may be a live address.
    /// The default is below Linux's ephemeral range (32768-60999), where a live cluster's own
    /// loopback connections take their source ports and can hold a scratch port.
    #[arg(long, default_value_t = 24000)]
    replica_port_base: u16,
    /// The `tigerbeetle` binary for the scratch cluster: the live cluster's release.
    #[arg(long, env = "TIGERBEETLE_BIN", value_name = "PATH")]
    tigerbeetle: PathBuf,
    /// Each scratch replica's grid cache. Each replica also needs about 2 GiB beyond it, on
    /// the host running tbctl.
    #[arg(long, default_value = "256MiB")]
    cache_grid: String,
    /// Bounds each wait: every backup job, every download, the scratch cluster's answer.
    #[arg(long, default_value_t = 600_000, value_parser = super::timeout_ms)]
    timeout_ms: u64,
    /// Keep the scratch directory after a passed drill (a failed one always keeps it).
    #[arg(long)]
    keep: bool,
    /// Ledger of the drill's accounts and transfers in the live cluster.
    #[arg(long, default_value_t = 1)]
    ledger: u32,
    /// Code of the drill's accounts and transfers in the live cluster.
    #[arg(long, default_value_t = 1)]
    code: u16,
}

/// `drill.json`: what the live cluster said after the drill's transfers, to be found again
/// in the restored cluster. u128 values are decimal strings, as JSON numbers cannot hold them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DrillRecord {
    format_version: u32,
    cluster_id: String,
    recorded_unix_ms: u64,
    ledger: u32,
    code: u16,
    transfer_count: usize,
    accounts: Vec<Balances>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Balances {
    #[serde(with = "decimal")]
    id: u128,
    #[serde(with = "decimal")]
    debits_posted: u128,
    #[serde(with = "decimal")]
    credits_posted: u128,
}

impl Balances {
    fn of(account: &tb::Account) -> Balances {
        Balances {
            id: account.id(),
            debits_posted: account.debits_posted(),
            credits_posted: account.credits_posted(),
        }
    }
}

mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Files of the scratch directory.
struct Scratch {
    dir: PathBuf,
    /// The live cluster's id, which the restored files keep.
    cluster_id: u128,
}

impl Scratch {
    fn record(&self) -> PathBuf {
        self.dir.join("drill.json")
    }
    fn download(&self, replica: u8) -> PathBuf {
        self.dir.join(format!("replica-{replica}.download"))
    }
    fn data_file(&self, replica: u8) -> PathBuf {
        self.dir
            .join("data")
            .join(data_file_name(self.cluster_id, replica))
    }
    fn log(&self, replica: u8) -> PathBuf {
        self.dir.join(format!("replica-{replica}.log"))
    }
    fn client_log(&self) -> PathBuf {
        self.dir.join("client.log")
    }
}

pub async fn restore_drill(
    client: &AgentClient,
    inventory: &Inventory,
    args: &DrillArgs,
) -> anyhow::Result<ExitCode> {
    // Every check that needs no cluster comes first: a bad flag must not cost a backup.
    local_files::check_cache_grid(&args.cache_grid)?;
    let tigerbeetle = super::local::executable(&args.tigerbeetle, "--tigerbeetle")?;
    let ports = scratch::ports(args.replica_port_base, inventory.replicas.len())?;
    check_ports(&ports, inventory)?;
    let scratch = Scratch {
        dir: create_scratch_dir(args.scratch_dir.as_deref())?,
        cluster_id: inventory.cluster_id,
    };
    crate::say!("restore drill: scratch directory {}", scratch.dir.display());

    // Ctrl-C or SIGTERM drops the drill, whose scratch cluster guard then stops the replicas.
    let outcome = tokio::select! {
        outcome = drill(client, inventory, args, &tigerbeetle, &ports, &scratch) => outcome,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    let keep_hint = format!("scratch directory kept: {}", scratch.dir.display());
    let mut result = DrillJson {
        passed: false,
        backups: inventory.replicas.len(),
        accounts: 0,
        differences: Vec::new(),
        error: None,
        scratch_dir: scratch.dir.clone(),
        kept: true,
    };
    match outcome {
        Ok(verdict) if verdict.differences.is_empty() => {
            crate::say!(
                "restore drill PASSED: {} backups restored, {} accounts match",
                inventory.replicas.len(),
                verdict.accounts
            );
            (result.passed, result.accounts, result.kept) = (true, verdict.accounts, args.keep);
            if args.keep {
                crate::say!("{keep_hint}");
            } else {
                std::fs::remove_dir_all(&scratch.dir)
                    .with_context(|| format!("removing {}", scratch.dir.display()))?;
            }
        }
        Ok(verdict) => {
            crate::say!(
                "restore drill FAILED: the restored cluster differs from the live one:\n  {}",
                verdict.differences.join("\n  ")
            );
            crate::say!("{keep_hint}");
            (result.accounts, result.differences) = (verdict.accounts, verdict.differences);
        }
        Err(error) => {
            crate::say!("restore drill FAILED: {error:#}");
            crate::say!("{keep_hint}");
            result.error = Some(format!("{error:#}"));
        }
    }
    super::output::emit(&result)?;
    Ok(if result.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What `tbctl restore-drill --json` prints.
#[derive(Serialize)]
struct DrillJson {
    passed: bool,
    /// Backups taken and restored: one per replica.
    backups: usize,
    /// Drill accounts compared between the live and the restored cluster.
    accounts: usize,
    differences: Vec<String>,
    /// Why the drill stopped before comparing, when it did.
    error: Option<String>,
    scratch_dir: PathBuf,
    kept: bool,
}

/// What the restored cluster answered, compared with the drill records.
struct Verdict {
    accounts: usize,
    /// One line per difference; none on a pass.
    differences: Vec<String>,
}

/// The drill's steps, each a function below.
async fn drill(
    client: &AgentClient,
    inventory: &Inventory,
    args: &DrillArgs,
    tigerbeetle: &Path,
    ports: &[u16],
    scratch: &Scratch,
) -> anyhow::Result<Verdict> {
    let problems = status::not_ready(client, inventory, QUERY_TIMEOUT_MS).await;
    anyhow::ensure!(
        problems.is_empty(),
        "cluster degraded: {}. The drill backs up every replica: bring the cluster back first",
        problems.join("; ")
    );
    client_log::redirect_to(&scratch.client_log())?;

    step(1, "writing drill records to the live cluster");
    let record = record_drill(inventory, args, scratch).await?;
    step(2, "backing up every replica, one at a time");
    backup_all(client, inventory, args.timeout_ms).await?;
    step(3, "downloading, checking and extracting the backups");
    let mut manifests = Vec::new();
    for entry in &inventory.replicas {
        manifests.push(restore_replica(client, inventory, entry, &record, scratch, args).await?);
    }
    warn_on_version(tigerbeetle, &manifests).await;
    step(4, "starting the scratch cluster, newest backups first");
    check_restored(
        inventory,
        args,
        tigerbeetle,
        ports,
        scratch,
        &record,
        &manifests,
    )
    .await
}

fn step(number: u32, what: &str) {
    crate::say!("\n[{number}/5] {what}");
}

/// Refuses scratch ports that a live replica uses, or that anything else holds now.
fn check_ports(ports: &[u16], inventory: &Inventory) -> anyhow::Result<()> {
    let live: Vec<(&str, u16)> = inventory
        .cluster
        .hosts
        .values()
        .map(|host| (host.address.as_str(), host.port))
        .collect();
    let clashes = scratch::clashes(ports, &live);
    anyhow::ensure!(
        clashes.is_empty(),
        "--replica-port-base {}: the scratch ports {ports:?} include live replica addresses \
         ({}): pick another base",
        ports[0],
        clashes.join(", ")
    );
    scratch::check_free(ports)
}

/// A new directory, or an empty existing one: the drill removes it at the end, so it must
/// hold nothing but the drill's files.
fn create_scratch_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::temp_dir().join(format!("tbctl-restore-drill-{}", now_unix_ms())),
    };
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(&dir).with_context(|| format!("--scratch-dir {}", dir.display()))?;
        anyhow::ensure!(
            entries.next().is_none(),
            "--scratch-dir {}: not empty; the drill removes its scratch directory, so it must \
             be new or empty",
            dir.display()
        );
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir.join("data"))
        .with_context(|| format!("creating {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("{}", dir.display()))
}

/// Waits for SIGINT or SIGTERM; returns the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        },
        // Without handlers the default action (exit) applies, and the replicas die with tbctl
        // through their parent-death signal.
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tb_proto::api;

    // `balances` and `record` also serve the tests of the submodules.
    pub(super) fn balances(id: u128, debits_posted: u128, credits_posted: u128) -> Balances {
        Balances {
            id,
            debits_posted,
            credits_posted,
        }
    }

    #[test]
    fn drill_record_keeps_u128_as_decimal_strings() {
        let record = DrillRecord {
            format_version: 1,
            cluster_id: "7".into(),
            recorded_unix_ms: 5,
            ledger: 1,
            code: 1,
            transfer_count: 10,
            accounts: vec![balances(u128::MAX - 1, 3, 4)],
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json["accounts"][0]["id"],
            "340282366920938463463374607431768211454"
        );
        let back: DrillRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.accounts, record.accounts);
    }

    pub(super) fn record(
        id: &str,
        created_unix_ms: u64,
        verified: Option<bool>,
    ) -> api::BackupRecord {
        api::BackupRecord {
            id: id.into(),
            manifest: api::Manifest {
                format_version: 1,
                backup_id: id.into(),
                cluster_id: "7".into(),
                replica_index: 0,
                replica_count: 3,
                tigerbeetle_version: None,
                host: "h".into(),
                agent_version: "0".into(),
                created_unix_ms,
                sequence: None,
                file: "data.tigerbeetle.zst".into(),
                compression: "zstd".into(),
                data_size_bytes: 0,
                data_blake3: String::new(),
                stored_size_bytes: 0,
                stored_blake3: String::new(),
                reflink: false,
                timings: api::BackupTimings::default(),
            },
            verification: verified.map(|ok| api::Verification {
                ok,
                verified_unix_ms: 0,
                detail: String::new(),
            }),
            shipped: true,
            hooks: Vec::new(),
        }
    }
}
