//! The JSON bodies of the agent's HTTP API, shared by the agent (server) and tbctl (client).
//! `docs/openapi.json` describes the same shapes; a test checks the running agent against it.

use serde::{Deserialize, Serialize};

/// `GET /v1/health/ready`: 200 when `ready`, else 503.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyReport {
    pub ready: bool,
    pub checks: Vec<Check>,
}

impl ReadyReport {
    /// The failing checks as one line, `name: detail; name: detail`, for errors and logs.
    pub fn failing_summary(&self) -> String {
        let failing: Vec<String> = self
            .checks
            .iter()
            .filter(|check| !check.ok)
            .map(|check| format!("{}: {}", check.name, check.detail))
            .collect();
        failing.join("; ")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Every error answer: a stable machine-readable `error` code and a sentence for people.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// Body of `POST /v1/replica/{start,stop,restart}`; an empty body means the defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    /// Overrides the quorum guard. Recorded in the audit log.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlResponse {
    pub action: String,
    pub outcome: String,
    pub detail: String,
    /// For restart: from the moment the replica stopped until it was ready again.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub downtime_ms: Option<u64>,
    #[serde(default)]
    pub forced: bool,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub agent: AgentStatus,
    pub host: HostStatus,
    pub replica: ReplicaStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    /// The TigerBeetle release of the client embedded in the agent: never newer than the cluster.
    pub tigerbeetle_client_version: String,
    pub uptime_seconds: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostStatus {
    pub hostname: String,
    pub uptime_seconds: u64,
    pub load_average: [f64; 3],
    pub cpu_usage_percent: Vec<f32>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_free_bytes: u64,
    pub filesystem: Option<FilesystemStatus>,
    pub clock: Option<ClockStatus>,
    /// `kernel.io_uring_disabled`: 0 allows io_uring, which TigerBeetle needs. None when absent.
    pub io_uring_disabled: Option<u8>,
    /// When these figures were taken (Unix seconds); they refresh on a timer.
    pub refreshed_at_unix_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilesystemStatus {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub size_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClockStatus {
    pub synchronised: bool,
    pub offset_seconds: f64,
    pub max_error_seconds: f64,
    pub estimated_error_seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub cluster_id: String,
    pub index: u8,
    pub count: u8,
    pub addresses: Vec<String>,
    pub run_mode: String,
    pub running: bool,
    pub pid: Option<u32>,
    pub uptime_seconds: Option<u64>,
    pub resident_bytes: Option<u64>,
    pub locked_bytes: Option<u64>,
    pub memlock_limit_bytes: Option<u64>,
    pub binary: String,
    pub binary_version: Option<String>,
    pub binary_sha256: Option<String>,
    pub data_file: String,
    pub data_file_size_bytes: Option<u64>,
    /// Latest `tb.replica_status`: 0 normal, 1 view_change, 2 recovering, 3 recovering_head.
    pub replica_status: Option<i64>,
    /// Latest `tb.replica_sync_stage`: non-zero while state sync runs.
    pub replica_sync_stage: Option<i64>,
    pub statsd_age_ms: Option<u64>,
    pub probe_latency_ms: Option<u64>,
    pub probe_ok: bool,
}
