//! Facts about TigerBeetle that the agent and tbctl share: release, replica status names, the
//! probe account, and how a binary identifies itself.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// The TigerBeetle release of the embedded client. The cluster must be this release or newer.
pub const CLIENT_RELEASE: &str = "0.16.78";
/// TigerBeetle supports clusters of 1 to 6 replicas.
pub const REPLICA_COUNT_MAX: u8 = 6;

/// The account id probes look up. Reserved: never create an account with this id.
/// (ASCII "tb-agent-probe", so it is recognisable in traces.)
pub const PROBE_ACCOUNT_ID: u128 = 0x0000_7462_2d61_6765_6e74_2d70_726f_6265;

/// Releases upstream advises not to upgrade to (0.16.77: potential liveness issues).
pub const RELEASES_TO_SKIP: [&str; 1] = ["0.16.77"];

/// A release as TigerBeetle orders them: major, minor, patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release(pub u16, pub u16, pub u16);

impl Release {
    /// "0.16.78", or the start of "0.16.78+c3d9b09".
    pub fn parse(text: &str) -> Option<Release> {
        let core = text.split('+').next()?;
        let mut parts = core.split('.').map(|part| part.parse::<u16>().ok());
        let release = Release(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(release)
    }

    /// `tb.release` packs a release as major << 16 | minor << 8 | patch.
    pub fn from_packed(value: i64) -> Option<Release> {
        (value > 0 && value < 1 << 32).then_some({
            Release(
                (value >> 16) as u16,
                (value >> 8 & 0xff) as u16,
                (value & 0xff) as u16,
            )
        })
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}.{}.{}", self.0, self.1, self.2)
    }
}

pub fn status_name(value: i64) -> &'static str {
    match value {
        0 => "normal",
        1 => "view_change",
        2 => "recovering",
        3 => "recovering_head",
        _ => "unknown",
    }
}

/// The flags of `tigerbeetle start` that follow from the cluster's layout, in the order the
/// units write them: `--addresses`, `--cache-grid` (when set), and `--experimental --statsd`
/// (when the agent reads the replica's metrics on `statsd_port` of 127.0.0.1). The data file
/// comes last, after any extra flags. One rule for the agent's process mode, `tbctl inventory
/// render` (what the systemd unit runs) and the restore drill's scratch replicas.
pub fn start_flags(
    addresses: &[String],
    cache_grid: Option<&str>,
    statsd_port: Option<u16>,
) -> Vec<String> {
    let mut flags = vec![format!("--addresses={}", addresses.join(","))];
    if let Some(size) = cache_grid {
        flags.push(format!("--cache-grid={size}"));
    }
    if let Some(port) = statsd_port {
        flags.push("--experimental".to_string());
        flags.push(format!("--statsd=127.0.0.1:{port}"));
    }
    flags
}

/// The flags of `tigerbeetle format` for one replica; the new file's path comes after them.
pub fn format_flags(cluster_id: u128, replica: u8, replica_count: u8) -> Vec<String> {
    vec![
        format!("--cluster={cluster_id}"),
        format!("--replica={replica}"),
        format!("--replica-count={replica_count}"),
    ]
}

/// The flags of `tigerbeetle recover` for one replica (the running cluster's `addresses`); the
/// new file's path comes after them.
pub fn recover_flags(
    cluster_id: u128,
    addresses: &[String],
    replica: u8,
    replica_count: u8,
) -> Vec<String> {
    vec![
        format!("--cluster={cluster_id}"),
        format!("--addresses={}", addresses.join(",")),
        format!("--replica={replica}"),
        format!("--replica-count={replica_count}"),
    ]
}

const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_unpack_and_order() {
        assert_eq!(Release::parse("0.16.78+c3d9b09"), Some(Release(0, 16, 78)));
        assert_eq!(Release::parse("0.16"), None);
        assert_eq!(Release::parse("0.16.78.1"), None);
        assert_eq!(Release::from_packed(16 << 8 | 78), Some(Release(0, 16, 78)));
        assert_eq!(Release::from_packed(0), None);
        assert!(Release(0, 16, 70) < Release(0, 16, 78));
        assert!(Release(0, 16, 78) < Release(0, 17, 0));
        assert_eq!(Release(0, 16, 4).to_string(), "0.16.4");
    }

    #[test]
    fn command_lines() {
        let addresses = ["10.0.0.1:3000".to_string(), "10.0.0.2:3000".to_string()];
        assert_eq!(
            start_flags(&addresses, Some("4GiB"), Some(8125)),
            [
                "--addresses=10.0.0.1:3000,10.0.0.2:3000",
                "--cache-grid=4GiB",
                "--experimental",
                "--statsd=127.0.0.1:8125"
            ]
        );
        assert_eq!(
            start_flags(&addresses[..1], None, None),
            ["--addresses=10.0.0.1:3000"]
        );
        assert_eq!(
            format_flags(7, 1, 3),
            ["--cluster=7", "--replica=1", "--replica-count=3"]
        );
        assert_eq!(
            recover_flags(7, &addresses, 1, 2),
            [
                "--cluster=7",
                "--addresses=10.0.0.1:3000,10.0.0.2:3000",
                "--replica=1",
                "--replica-count=2"
            ]
        );
    }
}
