//! What the replica binary is: its `tigerbeetle version` and SHA-256. Upgrades replace the binary
//! atomically (`mv`), so the identity is recomputed whenever the file changes.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tb_proto::tigerbeetle::identify;

use crate::state::AgentState;

const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Keeps `state.binary_identity` current: recomputed when the binary's inode or mtime changes.
pub async fn watch(state: Arc<AgentState>, binary: PathBuf) {
    let mut seen: Option<(u64, i64)> = None;
    loop {
        let current = std::fs::metadata(&binary)
            .ok()
            .map(|metadata| (metadata.ino(), metadata.mtime()));
        if current != seen {
            let identity = identify(&binary).await;
            *state.binary_identity.write().expect("not poisoned") = Some(identity);
            seen = current;
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}
