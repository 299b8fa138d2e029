//! Steps 2 and 3 of the drill: a backup of every live replica, then each replica's newest
//! verified backup downloaded, checked and extracted into the scratch directory.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::backup::{self as tbctl_backup, human_age};
use crate::client::AgentClient;
use crate::status::{self, describe, human_bytes};
use tb_proto::api;
use tb_proto::backup_files as files;
use tb_proto::clock::now_unix_ms;
use tb_proto::inventory::{Inventory, ReplicaEntry};

use super::{DrillArgs, DrillRecord, QUERY_TIMEOUT_MS, Scratch};

/// Room left free beside a download and its extraction, so the drill never fills a disk.
const FREE_MARGIN_BYTES: u64 = 256 * 1024 * 1024;

/// Step 2: a backup of every replica, as `tbctl backup --replica N` takes it, each only once
/// the previous replica is ready again.
pub(super) async fn backup_all(
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
            crate::jobs::downtime_text(&completed.job)
        );
    }
    Ok(())
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
pub(super) async fn restore_replica(
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
pub(super) async fn warn_on_version(tigerbeetle: &Path, manifests: &[api::Manifest]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::tests::record;

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
