//! `local up`'s data files: the cluster identity, formats of a new cluster's files, checks of an
//! existing cluster's, and the adoption of files an earlier tbctl named.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

use crate::local_files::{self, ClusterIdentity, FormatPlan, Layout};
use crate::process;
use tb_proto::tigerbeetle;

use super::{LOG_TAIL_LINES, LocalState, STATE_FILE_SIZE_MAX_BYTES, down_hint, shell_quote};

/// `tigerbeetle format` takes well under a second; a minute means it is stuck.
const FORMAT_TIMEOUT_MS: u64 = 120_000;

/// Formats the data files of a new cluster, or checks those of an existing one. Returns the
/// cluster identity (and its id), which is written before any format so that a crash cannot
/// orphan files.
pub(super) async fn prepare_data_files(
    layout: &Layout,
    tigerbeetle: &Path,
    previous: Option<&LocalState>,
) -> anyhow::Result<(ClusterIdentity, u128)> {
    let data_dir = layout.data_dir();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let (cluster, cluster_id, plan) = match known_identity(layout)? {
        Some((cluster, cluster_id)) => {
            adopt_legacy_data_files(layout, cluster_id, previous)?;
            let plan = local_files::format_plan(&data_files_exist(layout, cluster_id)?);
            (cluster, cluster_id, plan)
        }
        None => {
            let (cluster, cluster_id) = new_identity(layout)?;
            (cluster, cluster_id, FormatPlan::FormatAll)
        }
    };
    match plan {
        FormatPlan::ReuseAll => {
            crate::say!("reusing the data files in {}", data_dir.display());
        }
        FormatPlan::Refuse { missing } => {
            return Err(refuse_partial(layout, cluster_id, &missing, tigerbeetle));
        }
        FormatPlan::FormatAll => {
            for replica in layout.replicas() {
                format(layout, cluster_id, replica, tigerbeetle).await?;
            }
            crate::say!(
                "formatted {} data files for new cluster {} in {}",
                layout.replica_count,
                cluster.cluster_id,
                data_dir.display()
            );
        }
    }
    Ok((cluster, cluster_id))
}

/// `cluster.json`, when it exists, checked against `--replica-count`.
fn known_identity(layout: &Layout) -> anyhow::Result<Option<(ClusterIdentity, u128)>> {
    let cluster_file = layout.cluster_file();
    let Some(text) = local_files::read_optional(&cluster_file, STATE_FILE_SIZE_MAX_BYTES)? else {
        return Ok(None);
    };
    let (cluster, cluster_id) = ClusterIdentity::parse(&text)
        .with_context(|| format!("{}: not a cluster identity", cluster_file.display()))?;
    anyhow::ensure!(
        cluster.replica_count == layout.replica_count,
        "{} holds a {}-replica cluster; pass --replica-count {} or use another --state-dir",
        layout.state_dir.display(),
        cluster.replica_count,
        cluster.replica_count
    );
    Ok(Some((cluster, cluster_id)))
}

/// A new cluster's identity, written to `cluster.json`. Refused when the data directory holds
/// data files already: without `cluster.json` their cluster is unknown.
fn new_identity(layout: &Layout) -> anyhow::Result<(ClusterIdentity, u128)> {
    let data_dir = layout.data_dir();
    let existing = std::fs::read_dir(&data_dir)
        .with_context(|| format!("reading {}", data_dir.display()))?
        .filter_map(Result::ok)
        .any(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .ends_with(".tigerbeetle")
        });
    anyhow::ensure!(
        !existing,
        "{} is missing, but data files exist in {}: their cluster id is unknown. \
         Restore the file (the id is also in inventory.json and local.json), or delete \
         the whole state directory {} to start a fresh cluster",
        layout.cluster_file().display(),
        data_dir.display(),
        layout.state_dir.display()
    );
    let cluster_id = rand::random::<u128>();
    let cluster = ClusterIdentity {
        cluster_id: cluster_id.to_string(),
        replica_count: layout.replica_count,
    };
    let json = serde_json::to_string_pretty(&cluster)?;
    local_files::write_atomic(&layout.cluster_file(), json.as_bytes(), 0o600)?;
    Ok((cluster, cluster_id))
}

fn data_files_exist(layout: &Layout, cluster_id: u128) -> anyhow::Result<Vec<bool>> {
    layout
        .replicas()
        .map(|replica| {
            let path = layout.data_file(cluster_id, replica);
            path.try_exists()
                .with_context(|| format!("checking {}", path.display()))
        })
        .collect()
}

/// Gives data files of an earlier tbctl, which named every cluster's files as cluster 0's,
/// their inventory name (`<cluster>_<replica>.tigerbeetle`). A hard link, then the old name
/// removed: nothing is overwritten, and an interruption leaves both names of one file, which
/// the next up finishes. Refused while an agent of an earlier up runs on the old names.
fn adopt_legacy_data_files(
    layout: &Layout,
    cluster_id: u128,
    previous: Option<&LocalState>,
) -> anyhow::Result<()> {
    for replica in layout.replicas() {
        let (legacy, path) = (
            layout.legacy_data_file(replica),
            layout.data_file(cluster_id, replica),
        );
        if legacy == path || !legacy.try_exists()? {
            continue;
        }
        let running: Vec<i32> = previous
            .map(|state| state.agents.iter())
            .into_iter()
            .flatten()
            .filter(|agent| process::is_agent(agent.pid, &agent.config))
            .map(|agent| agent.pid)
            .collect();
        anyhow::ensure!(
            running.is_empty(),
            "{} has the name an earlier tbctl gave it and moves to {}, but agents of an \
             earlier up still run (pids {running:?}): run {} first, then `tbctl local up` again",
            legacy.display(),
            path.display(),
            down_hint(layout)
        );
        if !path.try_exists()? {
            std::fs::hard_link(&legacy, &path)
                .with_context(|| format!("linking {} to {}", legacy.display(), path.display()))?;
        }
        anyhow::ensure!(
            same_file(&legacy, &path)?,
            "both {} and {} exist and are different files: keep the right one under the \
             second name and move the other away",
            legacy.display(),
            path.display()
        );
        std::fs::remove_file(&legacy).with_context(|| format!("removing {}", legacy.display()))?;
        local_files::sync_parent(&path).with_context(|| format!("syncing {}", path.display()))?;
        crate::say!("renamed {} to {}", legacy.display(), path.display());
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Why `up` refuses when some replicas' files are gone, and how to rebuild them.
fn refuse_partial(
    layout: &Layout,
    cluster_id: u128,
    missing: &[u8],
    tigerbeetle: &Path,
) -> anyhow::Error {
    let addresses: Vec<String> = layout
        .replicas()
        .map(|i| layout.replica_address(i))
        .collect();
    let recover: Vec<String> = missing
        .iter()
        .map(|&replica| {
            let flags =
                tigerbeetle::recover_flags(cluster_id, &addresses, replica, layout.replica_count);
            format!(
                "  {} recover {} {}",
                shell_quote(tigerbeetle),
                flags.join(" "),
                shell_quote(&layout.data_file(cluster_id, replica))
            )
        })
        .collect();
    anyhow::anyhow!(
        "data files of replicas {missing:?} are missing while the others exist. \
         Refusing to format them: a freshly formatted replica has forgotten what it \
         acknowledged, and the cluster can lose committed transfers. Rebuild a lost file \
         from the other replicas (they must be running) with:\n{}\n\
         or delete the whole state directory {} to start a fresh, empty cluster",
        recover.join("\n"),
        layout.state_dir.display()
    )
}

/// Formats into `PATH.formatting` and links it to PATH only when complete: an interrupted
/// format never leaves a file that looks like a real replica.
async fn format(
    layout: &Layout,
    cluster_id: u128,
    replica: u8,
    tigerbeetle: &Path,
) -> anyhow::Result<()> {
    let path = layout.data_file(cluster_id, replica);
    let mut partial = path.as_os_str().to_owned();
    partial.push(".formatting");
    let partial = PathBuf::from(partial);
    match std::fs::remove_file(&partial) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("removing {}", partial.display()));
        }
        _ => {}
    }
    let mut command = tokio::process::Command::new(tigerbeetle);
    command
        .arg("format")
        .args(tigerbeetle::format_flags(
            cluster_id,
            replica,
            layout.replica_count,
        ))
        .arg(&partial)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the future on timeout kills the process instead of leaving it behind.
        .kill_on_drop(true);
    let output = tokio::time::timeout(
        Duration::from_millis(FORMAT_TIMEOUT_MS),
        command.output(),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "`tigerbeetle format` of replica {replica} did not finish within {FORMAT_TIMEOUT_MS} ms"
        )
    })?
    .with_context(|| format!("running {}", tigerbeetle.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "`{} format` of replica {replica} failed ({}):\n{}",
            tigerbeetle.display(),
            output.status,
            output_tail(&output)
        );
    }
    // A hard link fails if PATH exists, where a rename would replace it: an existing data
    // file is never overwritten, even by a race with another process.
    std::fs::hard_link(&partial, &path)
        .with_context(|| format!("linking {} to {}", partial.display(), path.display()))?;
    std::fs::remove_file(&partial).with_context(|| format!("removing {}", partial.display()))?;
    local_files::sync_parent(&path).with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// The last lines a failed command printed: TigerBeetle logs to stderr; stdout is the fallback.
fn output_tail(output: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    if text.trim().is_empty() {
        text = "(no output)".to_string();
    }
    let start = text.lines().count().saturating_sub(LOG_TAIL_LINES);
    let tail: Vec<&str> = text.lines().skip(start).collect();
    tail.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_layout(name: &str) -> Layout {
        let dir = std::env::temp_dir().join(format!("tbctl-legacy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        Layout::new(dir, 2, 3000, 7000, 8125).unwrap()
    }

    /// Files named as an earlier tbctl named them (cluster 0's names, whatever the cluster)
    /// get the inventory's names, contents and inodes kept; an up finds them, not a format.
    #[test]
    fn legacy_data_files_are_adopted_under_their_inventory_names() {
        let layout = legacy_layout("adopt");
        for replica in layout.replicas() {
            std::fs::write(layout.legacy_data_file(replica), [replica; 8]).unwrap();
        }
        adopt_legacy_data_files(&layout, 42, None).unwrap();
        for replica in layout.replicas() {
            assert!(!layout.legacy_data_file(replica).exists());
            let path = layout.data_file(42, replica);
            assert!(path.ends_with(format!("data/42_{replica}.tigerbeetle")));
            assert_eq!(std::fs::read(&path).unwrap(), [replica; 8]);
        }
        assert_eq!(
            local_files::format_plan(&data_files_exist(&layout, 42).unwrap()),
            FormatPlan::ReuseAll
        );
        // Again: nothing left to adopt. Cluster 0's files already have their names.
        adopt_legacy_data_files(&layout, 42, None).unwrap();
        std::fs::write(layout.legacy_data_file(0), b"zero").unwrap();
        adopt_legacy_data_files(&layout, 0, None).unwrap();
        assert_eq!(std::fs::read(layout.data_file(0, 0)).unwrap(), b"zero");
        std::fs::remove_dir_all(&layout.state_dir).unwrap();
    }

    /// Two different files under the old and the new name: neither is touched.
    #[test]
    fn legacy_and_new_data_files_that_differ_are_refused() {
        let layout = legacy_layout("differ");
        std::fs::write(layout.legacy_data_file(0), b"old").unwrap();
        std::fs::write(layout.data_file(7, 0), b"new").unwrap();
        let error = adopt_legacy_data_files(&layout, 7, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("are different files"), "{error}");
        assert_eq!(std::fs::read(layout.legacy_data_file(0)).unwrap(), b"old");
        assert_eq!(std::fs::read(layout.data_file(7, 0)).unwrap(), b"new");
        std::fs::remove_dir_all(&layout.state_dir).unwrap();
    }
}
