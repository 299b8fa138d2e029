//! The stopped-for-backup marker: written before a copy stops the replica, removed once it runs
//! again, so an agent killed in between starts the replica it stopped (and no other) when it
//! comes back.

use std::path::Path;
use std::sync::Arc;

use super::configured::store;
use super::store::{self};
use crate::config::Run;
use crate::state::AgentState;

/// A marker holds one backup id.
const MARKER_SIZE_MAX_BYTES: u64 = 256;

/// At start-up: removes half-written backups and brings back a replica that a killed agent had
/// stopped for a copy.
pub async fn recover_after_crash(state: &Arc<AgentState>) {
    let Ok(store) = store(state) else {
        return;
    };
    match store.remove_partials() {
        Ok(removed) if !removed.is_empty() => {
            tracing::warn!(
                ?removed,
                "removed incomplete backups left by an earlier run"
            )
        }
        Ok(_) => {}
        Err(error) => tracing::error!(%error, "cannot remove incomplete backups"),
    }
    let marker = store.marker();
    let complete = |id: &str| store.backup_dir(id).join(store::MANIFEST_FILE).exists();
    let backup_id = match marker_action(read_marker(&marker), complete) {
        MarkerAction::Nothing => return,
        MarkerAction::Stale(backup_id) => {
            tracing::error!(backup = %backup_id, "a stale stopped-for-backup marker names a \
                complete backup; the replica is left as it is");
            remove_marker(&marker);
            return;
        }
        MarkerAction::StartReplica(backup_id) => backup_id,
    };
    tracing::warn!(backup = %backup_id, "the agent stopped during a backup copy; starting the \
        replica again");
    // In process mode the supervisor starts the replica at start-up anyway.
    if matches!(state.config.replica.run, Run::Systemd { .. })
        && let Err(error) = state.replica.start().await
    {
        tracing::error!(%error, "cannot start the replica after an interrupted backup");
        return;
    }
    remove_marker(&marker);
}

#[derive(Debug, PartialEq, Eq)]
enum MarkerAction {
    Nothing,
    /// The marker outlived its copy (its removal failed): the replica was started again after
    /// that copy, so whoever stopped it since was not a backup. Leave the replica alone.
    Stale(String),
    /// A copy was interrupted with the replica stopped: start it again.
    StartReplica(String),
}

fn marker_action(marker: Option<String>, complete: impl Fn(&str) -> bool) -> MarkerAction {
    match marker {
        None => MarkerAction::Nothing,
        Some(id) if complete(&id) => MarkerAction::Stale(id),
        Some(id) => MarkerAction::StartReplica(id),
    }
}

/// The backup id a stopped-for-backup marker names (its whole content, bounded), if there is one.
fn read_marker(marker: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(marker).ok()?;
    let mut text = String::new();
    let read = file.take(MARKER_SIZE_MAX_BYTES).read_to_string(&mut text);
    let id = text.trim().to_string();
    match read {
        Ok(_) if store::validate_backup_id(&id).is_ok() => Some(id),
        // Unreadable or not an id: an interrupted copy is the only writer, so start the replica.
        _ => Some(String::from("(unreadable marker)")),
    }
}

/// Removes the stopped-for-backup marker; a failure is logged: the marker would make a
/// restarted agent start a replica that someone else stopped.
pub fn remove_marker(marker: &Path) {
    if let Err(error) = std::fs::remove_file(marker)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(%error, marker = %marker.display(), "cannot remove the \
            stopped-for-backup marker: remove it by hand, or a restarted agent starts the replica");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_its_backup_and_a_missing_one_nothing() {
        let dir = std::env::temp_dir().join(format!("tb-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join(store::REPLICA_STOPPED_MARKER);
        assert_eq!(read_marker(&marker), None);
        let id = store::new_backup_id(1);
        std::fs::write(&marker, &id).unwrap();
        assert_eq!(read_marker(&marker), Some(id));
        // Anything else is still an interrupted copy's marker: the replica is started.
        std::fs::write(&marker, "x".repeat(1000)).unwrap();
        assert_eq!(read_marker(&marker).as_deref(), Some("(unreadable marker)"));
        remove_marker(&marker);
        assert!(!marker.exists());
        remove_marker(&marker);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_marker_never_starts_a_replica_someone_else_stopped() {
        let done = |id: &str| id == "complete";
        assert_eq!(marker_action(None, done), MarkerAction::Nothing);
        assert_eq!(
            marker_action(Some("complete".into()), done),
            MarkerAction::Stale("complete".into())
        );
        assert_eq!(
            marker_action(Some("partial".into()), done),
            MarkerAction::StartReplica("partial".into())
        );
    }
}
