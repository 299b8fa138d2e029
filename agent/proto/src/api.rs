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
    /// Acts under this maintenance lease (held by the caller, e.g. a rollout) instead of taking
    /// one of its own. A malformed id refuses the request before anything is done.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lease_id_field"
    )]
    pub lease_id: Option<String>,
    /// The cluster id, typed out: proceed when the lease cannot be had (no quorum, an upgrade
    /// from an older release), under the quorum guard alone. Audited as lease-less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_lease: Option<String>,
}

/// How an operation that stops a replica relates to the maintenance lease (the lease fields of
/// its request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseFields {
    pub lease_id: Option<String>,
    pub without_lease: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlResponse {
    pub action: JobKind,
    pub outcome: Outcome,
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
    /// Absent from agents older than the scheduler's status: read as no schedule.
    #[serde(default)]
    pub backup_schedule: BackupScheduleStatus,
}

/// `[backup] schedule`: what the agent's scheduler plans and what became of its last run. Times
/// are RFC 3339 in UTC, to the second. Kept in memory: an agent that restarts starts with no
/// last run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupScheduleStatus {
    /// The cron expression as configured; null when the agent takes no scheduled backups.
    pub expression: Option<String>,
    /// The schedule's next tick that no run has been launched for.
    pub next_tick: Option<String>,
    /// When the scheduler launches its next backup: the next tick plus its random delay, or a
    /// refused run's retry.
    pub next_run_at: Option<String>,
    /// The last tick's run; null until the first tick since the agent started.
    pub last: Option<ScheduledRun>,
    /// When the last scheduled backup that succeeded finished.
    pub last_success_at: Option<String>,
}

/// One tick's run and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRun {
    /// The tick this run is for.
    pub tick: String,
    pub outcome: ScheduledRunOutcome,
    /// When the outcome was reached (the launch, the job's end, the refusal).
    pub at: String,
    /// The backup's id and job once launched; null for a run refused before it began.
    pub backup_id: Option<String>,
    pub job_id: Option<String>,
    /// Why it was refused or failed.
    pub error: Option<String>,
    /// For `refused_retrying`: when it is tried again.
    pub retry_at: Option<String>,
}

/// What became of a tick's scheduled backup, as far as the agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduledRunOutcome {
    /// Launched; its job runs.
    Started,
    /// Its job finished and the backup is stored.
    Succeeded,
    /// It could not be launched for a reason a retry would not change, or its job failed: the
    /// next tick tries again.
    Failed,
    /// Refused before anything changed (busy, the lease held, the quorum guard, free space):
    /// tried again at `retry_at`.
    RefusedRetrying,
    /// Refused until the end of its retry window: the next tick tries again.
    GaveUp,
}

impl ScheduledRunOutcome {
    pub const ALL: [ScheduledRunOutcome; 5] = [
        ScheduledRunOutcome::Started,
        ScheduledRunOutcome::Succeeded,
        ScheduledRunOutcome::Failed,
        ScheduledRunOutcome::RefusedRetrying,
        ScheduledRunOutcome::GaveUp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScheduledRunOutcome::Started => "started",
            ScheduledRunOutcome::Succeeded => "succeeded",
            ScheduledRunOutcome::Failed => "failed",
            ScheduledRunOutcome::RefusedRetrying => "refused_retrying",
            ScheduledRunOutcome::GaveUp => "gave_up",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    /// The TigerBeetle release of the client embedded in the agent: never newer than the cluster.
    pub tigerbeetle_client_version: String,
    pub uptime_seconds: u64,
    /// The maintenance lease pool this agent runs with (its configuration as loaded at start,
    /// not the files on its disk). Absent from older agents.
    #[serde(default)]
    pub lease: Option<LeasePool>,
}

/// What decides which lease pool an agent uses (`[lease]`, docs/safety.md): agents of one
/// cluster must agree on all three.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasePool {
    pub enabled: bool,
    pub ledger: u32,
    pub id_prefix: String,
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
    /// Latest `tb.replica_view`: the primary of view v is replica v mod replica count.
    #[serde(default)]
    pub replica_view: Option<i64>,
    /// The view in which the replica process's own log last showed it enter normal status
    /// (`transition_to_normal_from_*`), if that is its status now as far as the log says: seconds
    /// fresher than `replica_view`, which StatsD reports every 10 s. Null without a checked log,
    /// or while the log shows no normal status.
    #[serde(default)]
    pub log_normal_view: Option<u32>,
    /// The release the replica process runs (`tb.release`), which may be older than the binary
    /// on disk until the process re-executes it.
    #[serde(default)]
    pub running_release: Option<String>,
    pub statsd_age_ms: Option<u64>,
    pub probe_latency_ms: Option<u64>,
    pub probe_ok: bool,
    /// The cluster evicted the agent's client as newer than its release: it answers on an
    /// older release (expected during an upgrade; see the probe's documentation).
    #[serde(default)]
    pub version_skew: bool,
    /// The newest checkpoint of the running replica process as its agent can vouch for it, never
    /// below the true one: what its log shows (checkpoint and state sync lines), StatsD's
    /// `op_checkpoint` when newer, or for a process with neither yet (systemd mode, restarted
    /// seconds ago) the newest checkpoint line in its unit's journal, at least the one it opened
    /// at. What a restarted peer compares its own with before its log may pass its readiness.
    /// Null when the agent cannot vouch for it (a release whose log the agent was not checked
    /// against; no report or checkpoint line of this process, nor one in its unit's journal).
    #[serde(default)]
    pub checkpoint_op: Option<u64>,
}

/// `POST /v1/backups` and `POST /v1/replica/recover` answer 202 with the job to follow; the
/// other operations answer 202 too when they outlast the agent's wait for them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobAccepted {
    pub job_id: String,
    /// For backups: the id the backup will have once complete.
    pub backup_id: Option<String>,
}

/// What a state-changing operation is. Also the `action` of audit lines and of
/// `tb_agent_control_actions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Start,
    Stop,
    Restart,
    Backup,
    Recover,
    Restore,
    BackupVerify,
    BackupDelete,
    /// The maintenance lease's requests (audit lines and counters only: they run no job).
    LeaseInit,
    LeaseAcquire,
    LeaseRenew,
    LeaseRelease,
    LeaseBreak,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Start => "start",
            JobKind::Stop => "stop",
            JobKind::Restart => "restart",
            JobKind::Backup => "backup",
            JobKind::Recover => "recover",
            JobKind::Restore => "restore",
            JobKind::BackupVerify => "backup_verify",
            JobKind::BackupDelete => "backup_delete",
            JobKind::LeaseInit => "lease_init",
            JobKind::LeaseAcquire => "lease_acquire",
            JobKind::LeaseRenew => "lease_renew",
            JobKind::LeaseRelease => "lease_release",
            JobKind::LeaseBreak => "lease_break",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Where a job is: `running` until its last step has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

impl std::fmt::Display for JobState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        })
    }
}

/// How an operation ended (or, for the audit line written when it begins, `running`). Also the
/// `outcome` label of `tb_agent_control_actions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The operation began (first audit line of every operation).
    Running,
    Started,
    Stopped,
    Restarted,
    /// Nothing to do: start of a running replica, stop of a stopped one.
    Unchanged,
    Succeeded,
    /// A verification found the stored file corrupt.
    Corrupt,
    /// Another operation holds the lock it needs; nothing was done.
    Busy,
    /// Refused before anything was changed (quorum guard, a missing file, a bad request).
    Refused,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Started => "started",
            Outcome::Stopped => "stopped",
            Outcome::Restarted => "restarted",
            Outcome::Unchanged => "unchanged",
            Outcome::Succeeded => "succeeded",
            Outcome::Corrupt => "corrupt",
            Outcome::Busy => "busy",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// `GET /v1/jobs/{id}`: every state-changing operation runs as a job owned by the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    /// What the job is doing now (or did last).
    pub step: String,
    pub started_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
    /// How it ended; null while it runs.
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    pub backup_id: Option<String>,
    /// From the moment the replica stopped until it was ready again.
    pub downtime_ms: Option<u64>,
}

/// `manifest.json` of a backup, written atomically once the backup is complete. Unknown fields
/// are accepted so that older readers can list backups written by newer agents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub backup_id: String,
    pub cluster_id: String,
    pub replica_index: u8,
    pub replica_count: u8,
    pub tigerbeetle_version: Option<String>,
    pub host: String,
    pub agent_version: String,
    pub created_unix_ms: u64,
    /// Orders the backups of one backup directory: one more than any before it, whatever the
    /// clock says. Absent in manifests written before it existed; those order before every
    /// backup that has one, and among themselves by `created_unix_ms`, then id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The stored file's name inside the backup directory.
    pub file: String,
    /// `zstd` or `none`.
    pub compression: String,
    pub data_size_bytes: u64,
    pub data_blake3: String,
    pub stored_size_bytes: u64,
    pub stored_blake3: String,
    /// Whether the copy was an atomic reflink clone (FICLONE) rather than a streamed copy.
    pub reflink: bool,
    pub timings: BackupTimings,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackupTimings {
    /// How long the replica process was not running: stop, copy, start.
    #[serde(default)]
    pub stopped_ms: u64,
    pub copy_ms: u64,
    pub downtime_ms: u64,
    pub hash_ms: u64,
    pub compress_ms: u64,
}

/// One shipping hook's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookResult {
    pub name: String,
    pub ok: bool,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The end of its combined output, bounded.
    pub output: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub ok: bool,
    pub verified_unix_ms: u64,
    pub detail: String,
}

/// `GET /v1/backups/{id}` and the items of `GET /v1/backups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: String,
    pub manifest: Manifest,
    pub verification: Option<Verification>,
    /// True when every configured hook succeeded (vacuously true without hooks).
    pub shipped: bool,
    pub hooks: Vec<HookResult>,
}

/// Body of `POST /v1/backups/{id}/restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Must be `disaster-recovery` to restore while any peer replica may be running.
    #[serde(default)]
    pub mode: Option<String>,
    /// With `mode`: the cluster id, typed out as confirmation.
    #[serde(default)]
    pub cluster_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreResponse {
    pub backup_id: String,
    pub data_file: String,
    /// Where the previous data file was moved (never deleted), if there was one.
    pub previous_moved_to: Option<String>,
}

/// Body of `POST /v1/backups` and `POST /v1/replica/recover`: the lease fields, as for
/// `ControlRequest`. Unknown fields are refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lease_id_field"
    )]
    pub lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_lease: Option<String>,
}

impl ControlRequest {
    pub fn lease(&self) -> LeaseFields {
        LeaseFields {
            lease_id: self.lease_id.clone(),
            without_lease: self.without_lease.clone(),
        }
    }
}

impl BackupRequest {
    pub fn lease(&self) -> LeaseFields {
        LeaseFields {
            lease_id: self.lease_id.clone(),
            without_lease: self.without_lease.clone(),
        }
    }
}

/// An optional `lease_id` of a request body, refused unless it is a lease id
/// (`crate::ids::LEASE_ID_PATTERN`): a request that would act under a lease must name one.
fn lease_id_field<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    if let Some(text) = &text {
        crate::lease::parse_id(text).map_err(serde::de::Error::custom)?;
    }
    Ok(text)
}

/// A count such as `ttl_s`: JSON has one number type, and JSON Schema's `integer` includes
/// `60.0`, so a number with no fractional part is accepted as the integer it is.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = match (number.as_u64(), number.as_f64()) {
        (Some(value), _) => Some(value),
        (None, Some(value))
            if value.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&value) =>
        {
            Some(value as u64)
        }
        _ => None,
    };
    whole
        .and_then(|value| u32::try_from(value).ok())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{number} is not a whole number of 0 to {}",
                u32::MAX
            ))
        })
}
