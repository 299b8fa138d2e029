//! The locks of the operations layer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// The locks of the operations layer: one for the replica (a second operation on it gets 409
/// busy) and one per backup (verify, delete and restore of one backup exclude each other).
#[derive(Default)]
pub struct Locks {
    replica: Arc<tokio::sync::Mutex<()>>,
    backups: Arc<Mutex<HashSet<String>>>,
}

/// A held per-backup lock; released on drop.
pub struct BackupLease {
    backups: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for BackupLease {
    fn drop(&mut self) {
        let removed = self.backups.lock().expect("not poisoned").remove(&self.id);
        assert!(removed, "a backup lease is released once");
    }
}

impl Locks {
    pub fn replica(&self) -> Option<OwnedMutexGuard<()>> {
        Arc::clone(&self.replica).try_lock_owned().ok()
    }

    pub fn backup(&self, id: &str) -> Option<BackupLease> {
        let inserted = self
            .backups
            .lock()
            .expect("not poisoned")
            .insert(id.to_string());
        inserted.then(|| BackupLease {
            backups: Arc::clone(&self.backups),
            id: id.to_string(),
        })
    }
}

/// Which locks an operation holds from its start to its end.
#[derive(Debug, Clone)]
pub enum Lock {
    Replica,
    Backup(String),
    ReplicaAndBackup(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_lock_excludes_a_second_holder_until_released() {
        let locks = Locks::default();
        let lease = locks.backup("a").expect("free");
        assert!(locks.backup("a").is_none(), "held twice");
        assert!(locks.backup("b").is_some(), "another backup is independent");
        drop(lease);
        assert!(locks.backup("a").is_some(), "released on drop");
        let guard = locks.replica().expect("free");
        assert!(locks.replica().is_none(), "held twice");
        drop(guard);
        assert!(locks.replica().is_some());
    }
}
