//! What the replica binary is: its `tigerbeetle version` and SHA-256. Upgrades replace the binary
//! atomically (`mv`), so the identity is recomputed whenever the file changes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::state::AgentState;

const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
const CHECK_INTERVAL: Duration = Duration::from_secs(10);
const READ_CHUNK_SIZE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct BinaryIdentity {
    pub version: Option<String>,
    pub sha256: Option<String>,
}

pub async fn identify(path: &Path) -> BinaryIdentity {
    let version = tokio::time::timeout(
        VERSION_TIMEOUT,
        tokio::process::Command::new(path)
            .arg("version")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .filter(|output| output.status.success())
    .and_then(|output| {
        // "TigerBeetle version 0.16.78+c3d9b09" → "0.16.78+c3d9b09"
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.split_whitespace().last().map(str::to_string)
    });
    BinaryIdentity {
        version,
        sha256: sha256_file(path).await.ok(),
    }
}

pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; READ_CHUNK_SIZE_BYTES];
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

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
