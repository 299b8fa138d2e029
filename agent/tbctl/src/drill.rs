//! `tbctl restore-drill`: untested backups are worthless. The drill writes known records into
//! the live cluster, backs up every replica, restores those backups into a scratch cluster of
//! its own, and checks that the scratch cluster answers with the same balances.
//!
//! The live cluster is only ever touched through its agents (backups, behind their quorum
//! guards) and through a client (two accounts, a few transfers). Restored files go into a new
//! scratch directory, and the scratch cluster listens on its own 127.0.0.1 ports.

use std::cmp::Reverse;
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use tigerbeetle_unofficial as tb;

use super::backup::{self as tbctl_backup, human_age};
use super::client::AgentClient;
use super::client_log;
use super::local_files;
use super::scratch::{self, ScratchCluster};
use super::status::{self, describe, human_bytes};
use tb_proto::api;
use tb_proto::backup_files as files;
use tb_proto::clock::now_unix_ms;
use tb_proto::inventory::{Inventory, ReplicaEntry, data_file_name};
use tb_proto::quorum::ready_replicas_needed;

/// Transfers between the two drill accounts.
const TRANSFER_COUNT: usize = 10;
/// Transfer amounts are drawn from 1 to this.
const TRANSFER_AMOUNT_MAX: u128 = 1_000_000;
/// A ready cluster answers in milliseconds; the client itself retries forever, so every
/// request is bounded here.
const LIVE_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Small agent requests (readiness, backup lists).
const QUERY_TIMEOUT_MS: u64 = 10_000;
/// How often the wait for the scratch cluster checks that its replicas still run.
const SCRATCH_CHECK_INTERVAL_MS: u64 = 500;
/// How long replicas that join the scratch cluster late must keep running before the final
/// lookup: a replica whose restored state contradicts the cluster's stops within moments.
const SCRATCH_SETTLE_MS: u64 = 10_000;
/// Room left free beside a download and its extraction, so the drill never fills a disk.
const FREE_MARGIN_BYTES: u64 = 256 * 1024 * 1024;
/// Marks the drill's accounts (`user_data_128`), so they can be told from real ones: ASCII
/// "tbctl-drill".
const DRILL_ACCOUNT_MARK: u128 = 0x74_6263_746c_2d64_7269_6c6c;
const DRILL_RECORD_FORMAT_VERSION: u32 = 1;

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

/// Step 1: the drill records, written to the live cluster and to drill.json.
async fn record_drill(
    inventory: &Inventory,
    args: &DrillArgs,
    scratch: &Scratch,
) -> anyhow::Result<DrillRecord> {
    let record = write_drill_records(inventory, args.ledger, args.code).await?;
    let json = serde_json::to_string_pretty(&record)?;
    local_files::write_atomic(&scratch.record(), json.as_bytes(), 0o600)?;
    crate::say!(
        "accounts {} and {} after {TRANSFER_COUNT} transfers; recorded in {}",
        record.accounts[0].id,
        record.accounts[1].id,
        scratch.record().display()
    );
    Ok(record)
}

/// Step 2: a backup of every replica, as `tbctl backup --replica N` takes it, each only once
/// the previous replica is ready again.
async fn backup_all(
    client: &AgentClient,
    inventory: &Inventory,
    timeout_ms: u64,
) -> anyhow::Result<()> {
    for entry in &inventory.replicas {
        anyhow::ensure!(
            status::wait_ready(client, inventory, timeout_ms, || Ok(())).await?,
            "the cluster was not ready again within {timeout_ms} ms; no further replica was \
             stopped"
        );
        let completed = tbctl_backup::backup_replica(client, entry, timeout_ms).await?;
        crate::say!(
            "replica {}: backup {} complete; replica downtime {}",
            entry.index,
            completed.record.id,
            super::jobs::downtime_text(&completed.job)
        );
    }
    Ok(())
}

/// Steps 4 and 5: the scratch cluster on the restored files, started newest backups first,
/// asked for the drill accounts once every replica runs.
async fn check_restored(
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

/// Bounds one request of the TigerBeetle client, which would otherwise retry forever.
async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    timeout_ms: u64,
    request: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => anyhow::bail!("{what}: {error}"),
        Err(_) => anyhow::bail!("{what}: no answer within {timeout_ms} ms"),
    }
}

/// A fresh id: random, never 0 or u128::MAX (TigerBeetle refuses both) nor the probe's.
fn fresh_id() -> u128 {
    loop {
        let id: u128 = rand::random();
        if id != 0 && id != u128::MAX && id != tb_proto::tigerbeetle::PROBE_ACCOUNT_ID {
            return id;
        }
    }
}

/// Step 1: two new accounts, transfers both ways between them, and their balances as the live
/// cluster reports them (checked against what was sent).
async fn write_drill_records(
    inventory: &Inventory,
    ledger: u32,
    code: u16,
) -> anyhow::Result<DrillRecord> {
    let addresses = inventory.addresses();
    let client = tb::Client::new(inventory.cluster_id, &addresses)
        .map_err(|error| anyhow::anyhow!("client of the live cluster {addresses}: {error}"))?;
    let ids = [fresh_id(), fresh_id()];
    let accounts: Vec<tb::Account> = ids
        .iter()
        .map(|id| tb::Account::new(*id, ledger, code).with_user_data_128(DRILL_ACCOUNT_MARK))
        .collect();
    bounded(
        "creating the drill accounts in the live cluster",
        LIVE_REQUEST_TIMEOUT_MS,
        client.create_accounts(accounts),
    )
    .await?;
    let mut expected = [(0u128, 0u128); 2];
    let transfers: Vec<tb::Transfer> = (0..TRANSFER_COUNT)
        .map(|n| {
            // Alternate directions, so that both accounts have debits and credits to compare.
            let (debit, credit) = if n % 2 == 0 { (0, 1) } else { (1, 0) };
            let amount = rand::random_range(1..=TRANSFER_AMOUNT_MAX);
            expected[debit].0 += amount;
            expected[credit].1 += amount;
            tb::Transfer::new(fresh_id())
                .with_debit_account_id(ids[debit])
                .with_credit_account_id(ids[credit])
                .with_amount(amount)
                .with_ledger(ledger)
                .with_code(code)
        })
        .collect();
    bounded(
        "creating the drill transfers in the live cluster",
        LIVE_REQUEST_TIMEOUT_MS,
        client.create_transfers(transfers),
    )
    .await?;
    let found = bounded(
        "looking up the drill accounts in the live cluster",
        LIVE_REQUEST_TIMEOUT_MS,
        client.lookup_accounts(ids.to_vec()),
    )
    .await?;
    let accounts: Vec<Balances> = ids
        .iter()
        .zip(expected)
        .map(|(id, (debits_posted, credits_posted))| Balances {
            id: *id,
            debits_posted,
            credits_posted,
        })
        .collect();
    let differences = compare(&accounts, &found);
    anyhow::ensure!(
        differences.is_empty(),
        "the live cluster does not report what the drill just wrote: {}",
        differences.join("; ")
    );
    Ok(DrillRecord {
        format_version: DRILL_RECORD_FORMAT_VERSION,
        cluster_id: inventory.cluster_id.to_string(),
        // Taken after the lookup: everything recorded was committed by then.
        recorded_unix_ms: now_unix_ms(),
        ledger,
        code,
        transfer_count: TRANSFER_COUNT,
        accounts,
    })
}

/// Every difference between the expected balances and the accounts found, one line each.
fn compare(expected: &[Balances], found: &[tb::Account]) -> Vec<String> {
    let found: Vec<Balances> = found.iter().map(Balances::of).collect();
    compare_balances(expected, &found)
}

fn compare_balances(expected: &[Balances], found: &[Balances]) -> Vec<String> {
    let mut differences = Vec::new();
    for want in expected {
        let Some(have) = found.iter().find(|have| have.id == want.id) else {
            differences.push(format!("account {}: missing", want.id));
            continue;
        };
        for (field, want_value, have_value) in [
            ("debits_posted", want.debits_posted, have.debits_posted),
            ("credits_posted", want.credits_posted, have.credits_posted),
        ] {
            if want_value != have_value {
                differences.push(format!(
                    "account {}: {field} is {have_value}, expected {want_value}",
                    want.id
                ));
            }
        }
    }
    differences
}

/// The newest backup whose verification passed. The agent lists backups newest first, by their
/// sequence: not by creation time, which a stepped clock can reorder.
fn latest_verified(records: &[api::BackupRecord]) -> Option<&api::BackupRecord> {
    records
        .iter()
        .find(|record| record.verification.as_ref().is_some_and(|v| v.ok))
}

/// Step 3 for one replica: its newest verified backup, downloaded, hash-checked and extracted
/// to the scratch data file. Returns the backup's manifest.
async fn restore_replica(
    client: &AgentClient,
    inventory: &Inventory,
    entry: &ReplicaEntry,
    record: &DrillRecord,
    scratch: &Scratch,
    args: &DrillArgs,
) -> anyhow::Result<api::Manifest> {
    let records = client
        .backups(&entry.agent_url, QUERY_TIMEOUT_MS)
        .await
        .map_err(|error| anyhow::anyhow!("{}: listing backups: {error}", describe(entry)))?;
    let backup = latest_verified(&records).ok_or_else(|| {
        anyhow::anyhow!("{}: no backup with a passed verification", describe(entry))
    })?;
    let manifest = &backup.manifest;
    anyhow::ensure!(
        manifest.created_unix_ms > record.recorded_unix_ms,
        "{}: the newest verified backup {} was created at {} ms, before the drill records \
         ({} ms): it cannot hold them",
        describe(entry),
        backup.id,
        manifest.created_unix_ms,
        record.recorded_unix_ms
    );
    check_manifest(manifest, inventory, entry)?;
    check_room(entry, backup, scratch)?;

    crate::say!(
        "replica {}: backup {} ({} old; stored {}, data {}): downloading",
        entry.index,
        backup.id,
        human_age(now_unix_ms(), manifest.created_unix_ms),
        human_bytes(manifest.stored_size_bytes),
        human_bytes(manifest.data_size_bytes)
    );
    let started = Instant::now();
    fetch(client, entry, backup, scratch, args.timeout_ms).await?;
    crate::say!(
        "replica {}: restored to {} in {:.1} s; BLAKE3 of download and data match the manifest",
        entry.index,
        scratch.data_file(entry.index).display(),
        started.elapsed().as_secs_f64()
    );
    Ok(manifest.clone())
}

/// The scratch directory has room for the download and its extraction, with a margin.
fn check_room(
    entry: &ReplicaEntry,
    backup: &api::BackupRecord,
    scratch: &Scratch,
) -> anyhow::Result<()> {
    let manifest = &backup.manifest;
    let needed = manifest.stored_size_bytes + manifest.data_size_bytes + FREE_MARGIN_BYTES;
    let available = files::available_bytes(&scratch.dir)
        .with_context(|| format!("free space of {}", scratch.dir.display()))?;
    anyhow::ensure!(
        available >= needed,
        "{}: {} free in {}, but backup {} needs {} (stored {} + data {} + {} margin)",
        describe(entry),
        human_bytes(available),
        scratch.dir.display(),
        backup.id,
        human_bytes(needed),
        human_bytes(manifest.stored_size_bytes),
        human_bytes(manifest.data_size_bytes),
        human_bytes(FREE_MARGIN_BYTES)
    );
    Ok(())
}

/// Downloads `backup`, checks its hash, extracts it to the scratch data file and checks that
/// hash too; the download is removed after.
async fn fetch(
    client: &AgentClient,
    entry: &ReplicaEntry,
    backup: &api::BackupRecord,
    scratch: &Scratch,
    timeout_ms: u64,
) -> anyhow::Result<()> {
    let manifest = &backup.manifest;
    let download = scratch.download(entry.index);
    client
        .download(
            &entry.agent_url,
            &backup.id,
            &download,
            manifest.stored_size_bytes,
            timeout_ms,
        )
        .await
        .with_context(|| format!("{}: downloading backup {}", describe(entry), backup.id))?;
    let stored_blake3 = {
        let download = download.clone();
        blocking(move || files::blake3_file(&download)).await?
    };
    anyhow::ensure!(
        stored_blake3 == manifest.stored_blake3,
        "{}: the download of backup {} hashes to {stored_blake3}, not the manifest's {}",
        describe(entry),
        backup.id,
        manifest.stored_blake3
    );
    let data_blake3 = {
        let (download, data_file) = (download.clone(), scratch.data_file(entry.index));
        let compression = manifest.compression.clone();
        blocking(move || files::extract(&download, &compression, &data_file)).await?
    };
    anyhow::ensure!(
        data_blake3 == manifest.data_blake3,
        "{}: backup {} extracts to data hashing to {data_blake3}, not the manifest's {}",
        describe(entry),
        backup.id,
        manifest.data_blake3
    );
    // Only the extracted file is needed from here on; the disk may be tight.
    std::fs::remove_file(&download).with_context(|| format!("removing {}", download.display()))?;
    Ok(())
}

/// The backup must be of this cluster and this replica, or the scratch cluster means nothing.
fn check_manifest(
    manifest: &api::Manifest,
    inventory: &Inventory,
    entry: &ReplicaEntry,
) -> anyhow::Result<()> {
    let expected = (
        inventory.cluster_id.to_string(),
        entry.index,
        inventory.replicas.len(),
    );
    let actual = (
        manifest.cluster_id.clone(),
        manifest.replica_index,
        usize::from(manifest.replica_count),
    );
    anyhow::ensure!(
        expected == actual,
        "{}: backup {} is of cluster {} replica {} of {}, not cluster {} replica {} of {}",
        describe(entry),
        manifest.backup_id,
        actual.0,
        actual.1,
        actual.2,
        expected.0,
        expected.1,
        expected.2
    );
    Ok(())
}

/// File work (hashing, decompression) on the blocking pool, with its I/O error as context.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(work).await??)
}

/// A different release may refuse the restored files (older) or upgrade them (newer): worth a
/// warning, not a failure, since the operator may be testing exactly that.
async fn warn_on_version(tigerbeetle: &Path, manifests: &[api::Manifest]) {
    let Some(version) = tb_proto::tigerbeetle::identify(tigerbeetle).await.version else {
        eprintln!(
            "warning: `{} version` did not answer; cannot compare it with the backups' release",
            tigerbeetle.display()
        );
        return;
    };
    for manifest in manifests {
        if let Some(backup_version) = &manifest.tigerbeetle_version
            && *backup_version != version
        {
            eprintln!(
                "warning: backup {} was taken from TigerBeetle {backup_version}; the scratch \
                 cluster runs {version}",
                manifest.backup_id
            );
        }
    }
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

    fn balances(id: u128, debits_posted: u128, credits_posted: u128) -> Balances {
        Balances {
            id,
            debits_posted,
            credits_posted,
        }
    }

    #[test]
    fn compare_names_every_difference() {
        let expected = [balances(1, 10, 20), balances(2, 20, 10)];
        assert!(
            compare_balances(&expected, &[balances(2, 20, 10), balances(1, 10, 20)]).is_empty()
        );
        assert_eq!(
            compare_balances(&expected, &[balances(1, 10, 21)]),
            vec![
                "account 1: credits_posted is 21, expected 20",
                "account 2: missing"
            ]
        );
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

    #[test]
    fn fresh_ids_are_valid() {
        for _ in 0..100 {
            let id = fresh_id();
            assert!(id != 0 && id != u128::MAX);
        }
    }

    fn record(id: &str, created_unix_ms: u64, verified: Option<bool>) -> api::BackupRecord {
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

    #[test]
    fn latest_verified_skips_unverified_and_corrupt_backups() {
        // Newest first, as the agent lists them; "a" was taken after the clock was stepped back.
        let records = [
            record("c", 300, None),
            record("b", 200, Some(false)),
            record("a", 100, Some(true)),
            record("z", 900, Some(true)),
        ];
        assert_eq!(latest_verified(&records).map(|r| r.id.as_str()), Some("a"));
        assert!(latest_verified(&records[..2]).is_none());
    }
}
