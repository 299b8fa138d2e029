//! The agent's configuration: one TOML file, parsed strictly and validated before anything starts.
//!
//! Every error names the field and the reason, so an operator can fix a bad file without reading
//! source code. Unknown fields are errors: a misspelt setting silently falling back to a default
//! is how safety checks get disabled by accident.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::Scope;
pub use crate::ids::ClusterId;
use crate::tigerbeetle::REPLICA_COUNT_MAX;

mod defaults;
mod validate;

pub use validate::{ConfigError, SecretFileError, check_secret_file};
pub(crate) use validate::{invalid, parse_toml};

/// TigerBeetle's StatsD emit period, fixed in its source (`trace_emit_timeout`).
pub const STATSD_EMIT_PERIOD_MS: u64 = 10_000;
/// More tokens than this is a configuration smell, and every request compares against all of them.
pub const TOKENS_MAX: usize = 16;
/// A configuration file is a few KiB; the bound keeps a wrong path (a device, a huge file) from
/// being read whole.
pub const CONFIG_SIZE_MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    #[serde(default)]
    pub log: Log,
    pub tokens: Vec<Token>,
    pub replica: Replica,
    #[serde(default)]
    pub peers: Option<Peers>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub control: Control,
    /// Without it the backup endpoints answer 409 "backups are not configured".
    #[serde(default)]
    pub backup: Option<Backup>,
    /// The cluster-wide maintenance lease (docs/safety.md).
    #[serde(default)]
    pub lease: Lease,
}

/// The maintenance lease kept in the cluster (`tb_proto::lease`). On by default; off, stopping
/// operations rely on the quorum guard alone, which two agents acting at once can both pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    #[serde(default = "defaults::lease_enabled")]
    pub enabled: bool,
    /// The reserved ledger of the lease's accounts and transfers (exclude it from CDC consumers
    /// and reports, as the probe account).
    #[serde(default = "defaults::lease_ledger")]
    pub ledger: u32,
    /// The high 64 bits of every reserved account and transfer id, as 16 hex digits.
    #[serde(default = "defaults::lease_id_prefix")]
    pub id_prefix: String,
    /// How long one request to the cluster about the lease may wait for its answer.
    #[serde(default = "defaults::lease_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Kept between the cluster's expiry of a lease and the holder's own deadline: the cluster
    /// expires by the primary's wall clock, which may run ahead of this host's.
    #[serde(default = "defaults::lease_margin_ms")]
    pub margin_ms: u64,
}

impl Default for Lease {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// A setting that decides which lease pool an agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasePoolField {
    Enabled,
    Ledger,
    IdPrefix,
}

impl LeasePoolField {
    pub fn key(self) -> &'static str {
        match self {
            LeasePoolField::Enabled => "lease.enabled",
            LeasePoolField::Ledger => "lease.ledger",
            LeasePoolField::IdPrefix => "lease.id_prefix",
        }
    }
}

/// One pool setting that differs: its value in the running configuration, then in the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasePoolChange {
    pub field: LeasePoolField,
    pub running: String,
    pub new: String,
}

/// Two configurations on different lease pools: every setting that differs, in field order.
/// Displayed as `lease.<field> <running> -> <new>`, joined by `, `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.changes.iter().map(|change| format!("{} {} -> {}", change.field.key(), change.running, change.new)).collect::<Vec<_>>().join(", "))]
pub struct LeasePoolDiffers {
    pub changes: Vec<LeasePoolChange>,
}

impl Lease {
    /// Whether this and `running` (another config's) use the same lease pool: on or off, the
    /// ledger and the id prefix.
    pub fn same_pool_as(&self, running: &Lease) -> Result<(), LeasePoolDiffers> {
        let fields = [
            (
                LeasePoolField::Enabled,
                running.enabled.to_string(),
                self.enabled.to_string(),
            ),
            (
                LeasePoolField::Ledger,
                running.ledger.to_string(),
                self.ledger.to_string(),
            ),
            (
                LeasePoolField::IdPrefix,
                running.id_prefix.clone(),
                self.id_prefix.clone(),
            ),
        ];
        let changes: Vec<LeasePoolChange> = fields
            .into_iter()
            .filter(|(_, running, new)| running != new)
            .map(|(field, running, new)| LeasePoolChange {
                field,
                running,
                new,
            })
            .collect();
        if changes.is_empty() {
            Ok(())
        } else {
            Err(LeasePoolDiffers { changes })
        }
    }

    pub fn ids(&self) -> crate::lease::Ids {
        crate::lease::Ids {
            ledger: self.ledger,
            prefix: u64::from_str_radix(&self.id_prefix, 16).expect("validated"),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.ledger == 0 {
            return Err(invalid(
                "lease.ledger",
                "must not be 0 (TigerBeetle refuses it)",
            ));
        }
        let prefix_ok = self.id_prefix.len() == 16
            && self.id_prefix.bytes().all(|byte| byte.is_ascii_hexdigit())
            && u64::from_str_radix(&self.id_prefix, 16).is_ok_and(|p| p != 0 && p != u64::MAX);
        if !prefix_ok {
            return Err(invalid(
                "lease.id_prefix",
                "must be 16 hex digits, not all 0 and not all f",
            ));
        }
        for (field, value) in [
            ("lease.request_timeout_ms", self.request_timeout_ms),
            ("lease.margin_ms", self.margin_ms),
        ] {
            if value == 0 || value > 600_000 {
                return Err(invalid(field, "must be between 1 and 600000"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Where backups live: one directory per backup. Must not be inside the data directory.
    pub dir: PathBuf,
    /// zstd-compress the stored copy (TigerBeetle data files are mostly zeros at first).
    #[serde(default = "defaults::compress")]
    pub compress: bool,
    #[serde(default = "defaults::zstd_level")]
    pub zstd_level: i32,
    /// Retention: keep at most this many complete backups...
    #[serde(default = "defaults::keep_last")]
    pub keep_last: u32,
    /// ...and none older than this, except the newest verified one, which is always kept.
    #[serde(default)]
    pub max_age_days: Option<u32>,
    /// Free space the destination must have beyond the data file's size.
    #[serde(default = "defaults::free_margin_bytes")]
    pub free_margin_bytes: u64,
    /// How long the copy may keep the replica stopped. Past it, the copy is abandoned, the
    /// partial backup removed and the replica started again (the backup fails).
    #[serde(default = "defaults::copy_timeout_ms")]
    pub copy_timeout_ms: u64,
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// When the agent takes a backup by itself: a 5-field cron expression, UTC (absent or "":
    /// never). The same job as `POST /v1/backups` (docs/backups.md, "Scheduled backups").
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::backup_schedule::optional"
    )]
    pub schedule: Option<crate::backup_schedule::BackupSchedule>,
    /// Each tick is delayed by a random 0..=this many seconds, so that the replicas of a
    /// cluster with one schedule do not all ask for the lease at the same second.
    #[serde(default)]
    pub schedule_randomized_delay_s: u32,
}

/// A shipping command run after each backup (rclone, restic, aws-cli...). It gets
/// TB_BACKUP_ID, TB_BACKUP_DIR and TB_BACKUP_MANIFEST in its environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub name: String,
    /// Program and arguments; no shell is involved.
    pub command: Vec<String>,
    #[serde(default = "defaults::hook_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: SocketAddr,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default = "defaults::connections_max")]
    pub connections_max: u32,
    /// Connections one client address may hold at once; more are closed as soon as they are
    /// accepted, so that one slow or hostile client cannot take every slot. Default: a quarter
    /// of `connections_max`. IPv6 clients count per /64 (one host usually holds a whole /64).
    #[serde(default)]
    pub connections_per_address_max: Option<u32>,
    /// Time a client gets to send a request head (and, with TLS, to finish the handshake), and
    /// the longest an idle keep-alive connection is kept: a client that sends its headers a
    /// byte at a time holds a connection slot for at most this long.
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "defaults::body_size_max_bytes")]
    pub body_size_max_bytes: u64,
    /// Failed authentications from one address within a minute before it is refused with 429.
    #[serde(default = "defaults::auth_failures_per_minute_max")]
    pub auth_failures_per_minute_max: u32,
    /// Where control actions are recorded, one JSON line each. Without it they go to the log.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default)]
    pub format: LogFormat,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Hex SHA-256 of the secret (`tb-agent hash-token`). The secret itself never appears here.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    /// Decimal u128, as a string: TOML integers stop at 2^63. Parsed (and so checked) once,
    /// when the file is read.
    pub cluster_id: ClusterId,
    pub index: u8,
    pub count: u8,
    /// Every replica's address, in replica order, exactly as passed to `tigerbeetle start`.
    pub addresses: Vec<String>,
    pub data_file: PathBuf,
    /// The UDP port on 127.0.0.1 where the agent receives the replica's DogStatsD metrics.
    pub statsd_port: u16,
    pub run: Run,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Run {
    /// The agent supervises `tigerbeetle start` itself (hosts without systemd, local clusters).
    Process {
        binary: PathBuf,
        #[serde(default)]
        extra_args: Vec<String>,
        /// Where the replica's output goes; the agent also keeps the last lines in memory.
        #[serde(default)]
        log_file: Option<PathBuf>,
    },
    /// systemd runs the replica; the agent asks systemctl to start and stop it.
    Systemd {
        unit: String,
        /// The binary the unit runs, for version and checksum reporting.
        binary: PathBuf,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peers {
    /// Every replica's agent URL, in replica order (this agent's own entry is not called).
    pub agent_urls: Vec<String>,
    /// File holding a `read` token accepted by the peer agents.
    pub token_file: PathBuf,
    /// CA for peer agents served over TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to peer agents that require one (mutual TLS:
    /// their `server.tls.client_ca_file`). Needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM), readable by its owner only.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    #[serde(default = "defaults::peer_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "defaults::free_bytes_min")]
    pub free_bytes_min: u64,
    #[serde(default = "defaults::free_percent_min")]
    pub free_percent_min: f64,
    #[serde(default = "defaults::probe_interval_ms")]
    pub probe_interval_ms: u64,
    #[serde(default = "defaults::probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// StatsD values older than this no longer count: TigerBeetle emits every 10 s, so this must
    /// be above 10 s (see the default's comment).
    #[serde(default = "defaults::statsd_stale_ms")]
    pub statsd_stale_ms: u64,
    /// VmLck must be at least this fraction of VmRSS for memory to count as locked.
    #[serde(default = "defaults::memlock_ratio_min")]
    pub memlock_ratio_min: f64,
    /// How often host data (CPU, memory, disks, clock) is refreshed in the background.
    #[serde(default = "defaults::host_refresh_interval_ms")]
    pub host_refresh_interval_ms: u64,
    /// Where `tb-agent firewall-record` (run as root by a timer: reading nftables needs
    /// CAP_NET_ADMIN, which the agent does not have) records whether the firewall table
    /// `inet tigerbeetle` drops the replica and agent ports. When set, readiness has a
    /// `firewall` check that fails when the table or a port is missing, or the record is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_record: Option<PathBuf>,
    /// A firewall record older than this fails the check: the recorder stopped running.
    #[serde(default = "defaults::firewall_record_stale_ms")]
    pub firewall_record_stale_ms: u64,
}

impl Default for Health {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

/// A section with its required fields from `required` and every other field at its default:
/// the defaults stay where serde reads them, not copied into constructors.
fn with_defaults<T: DeserializeOwned>(required: toml::Table) -> T {
    T::deserialize(toml::Value::Table(required)).expect("required fields of the right types")
}

impl Server {
    pub fn new(listen: SocketAddr) -> Server {
        with_defaults(toml::Table::from_iter([(
            "listen".to_string(),
            toml::Value::String(listen.to_string()),
        )]))
    }
}

impl Backup {
    pub fn new(dir: &Path) -> Backup {
        with_defaults(toml::Table::from_iter([(
            "dir".to_string(),
            toml::Value::String(dir.to_string_lossy().into_owned()),
        )]))
    }
}

impl Peers {
    pub fn new(agent_urls: Vec<String>, token_file: &Path) -> Peers {
        with_defaults(toml::Table::from_iter([
            (
                "agent_urls".to_string(),
                toml::Value::Array(agent_urls.into_iter().map(toml::Value::String).collect()),
            ),
            (
                "token_file".to_string(),
                toml::Value::String(token_file.to_string_lossy().into_owned()),
            ),
        ]))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// How long a replica gets to exit after SIGTERM (process mode) before SIGKILL.
    #[serde(default = "defaults::stop_timeout_ms")]
    pub stop_timeout_ms: u64,
    /// How long restart waits for the replica to become ready again.
    #[serde(default = "defaults::ready_timeout_ms")]
    pub ready_timeout_ms: u64,
    /// How long a recover may take, state sync included (it grows with the data).
    #[serde(default = "defaults::recover_timeout_ms")]
    pub recover_timeout_ms: u64,
    /// How long a control request waits for its operation before answering 202 with the job to
    /// follow (the operation goes on either way). Unset: stop_timeout_ms + ready_timeout_ms +
    /// 30 s, so a restart answers 200. Lower it below the idle timeout of a proxy in front of
    /// the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_wait_ms: Option<u64>,
}

impl Default for Control {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../../examples/tb-agent.toml");

    #[test]
    fn the_example_config_is_valid() {
        let config = Config::parse(EXAMPLE).unwrap();
        assert_eq!(config.replica.count, 3);
        assert!(matches!(config.replica.run, Run::Systemd { .. }));
        assert_eq!(config.health.probe_timeout_ms, 2000);
    }

    fn error_of(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let cases = [
            (
                "index = 0",
                "index = 3",
                "replica.index: must be below replica.count",
            ),
            (
                "cluster_id = \"0\"",
                "cluster_id = \"0x10\"",
                "replica.cluster_id: must be a decimal u128",
            ),
            (
                "count = 3",
                "count = 7",
                "replica.count: must be between 1 and 6",
            ),
            (
                "request_timeout_ms = 10000",
                "request_timeout_ms = 0",
                "server.request_timeout_ms",
            ),
            (
                "statsd_port = 8125",
                "statsd_port = 8125\ncolour = 1",
                "unknown field `colour`",
            ),
            (
                "mode = \"systemd\"",
                "mode = \"docker\"",
                "unknown variant `docker`",
            ),
            (
                "recover_timeout_ms = 3600000",
                "recover_timeout_ms = 3600000\nanswer_wait_ms = 0",
                "control.answer_wait_ms: must be between 1 and 3600000",
            ),
            (
                "memlock_ratio_min = 0.9",
                "memlock_ratio_min = 1.5",
                "health.memlock_ratio_min",
            ),
            (
                "memlock_ratio_min = 0.9",
                "memlock_ratio_min = 0.9\nfirewall_record = \"run/record.json\"",
                "health.firewall_record: must be an absolute path",
            ),
        ];
        for (from, to, expected) in cases {
            let text = EXAMPLE.replacen(from, to, 1);
            assert_ne!(text, EXAMPLE, "{from} not in the example");
            let error = error_of(&text);
            assert!(error.contains(expected), "{to}: {error}");
        }
        let secret_instead_of_hash = EXAMPLE.replacen(
            "8d3b2b7c8ea0c7f4f9b6b5a0e4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5",
            "hunter2",
            1,
        );
        assert!(error_of(&secret_instead_of_hash).contains("tokens[0].sha256"));
        let three_addresses_for_two = EXAMPLE.replacen("count = 3", "count = 2", 1);
        assert!(error_of(&three_addresses_for_two).contains("replica.addresses: has 3 entries"));
    }

    #[test]
    fn a_lease_pool_is_on_off_ledger_and_prefix() {
        let running = Lease::default();
        let mut new = Lease::default();
        new.request_timeout_ms += 1;
        new.margin_ms += 1;
        assert_eq!(new.same_pool_as(&running), Ok(()));
        new.ledger = 7;
        new.enabled = false;
        let differs = new.same_pool_as(&running).unwrap_err();
        assert_eq!(
            differs.to_string(),
            "lease.enabled true -> false, lease.ledger 1952607232 -> 7"
        );
        assert_eq!(differs.changes[1].field, LeasePoolField::Ledger);
        let other_prefix = Lease {
            id_prefix: "0123456789abcdef".into(),
            ..Lease::default()
        };
        assert!(
            other_prefix
                .same_pool_as(&running)
                .unwrap_err()
                .to_string()
                .contains("lease.id_prefix 74622d6c65617365 -> 0123456789abcdef")
        );
    }
}
