//! `GET /v1/status`: what the agent knows about itself, its host and its replica, in one report.

use crate::api::{self, StatusReport};
use crate::state::AgentState;
use tb_proto::tigerbeetle::Release;

pub fn status_report(state: &AgentState) -> StatusReport {
    StatusReport {
        agent: api::AgentStatus {
            version: crate::AGENT_VERSION.to_string(),
            tigerbeetle_client_version: crate::TIGERBEETLE_CLIENT_VERSION.to_string(),
            uptime_seconds: state.started.elapsed().as_secs(),
            lease: Some(api::LeasePool {
                enabled: state.config.lease.enabled,
                ledger: state.config.lease.ledger,
                id_prefix: state.config.lease.id_prefix.clone(),
            }),
        },
        host: (*state.host.latest()).clone(),
        replica: replica_status(state),
        backup_schedule: state.backup_schedule.report(),
    }
}

fn replica_status(state: &AgentState) -> api::ReplicaStatus {
    let config = &state.config;
    let info = state.replica.process_info();
    let identity = state.binary_identity();
    let verdict = crate::health::probe_verdict(state);
    let now_unix_seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |duration| duration.as_secs_f64());
    api::ReplicaStatus {
        cluster_id: config.replica.cluster_id.to_string(),
        index: config.replica.index,
        count: config.replica.count,
        addresses: config.replica.addresses.clone(),
        run_mode: state.replica.mode().as_str().to_string(),
        running: info.is_some(),
        pid: info.as_ref().map(|info| info.pid),
        uptime_seconds: info
            .as_ref()
            .and_then(|info| info.start_time_unix_seconds)
            .map(|start| (now_unix_seconds - start).max(0.0) as u64),
        resident_bytes: info.as_ref().map(|info| info.resident_bytes),
        locked_bytes: info.as_ref().map(|info| info.locked_bytes),
        memlock_limit_bytes: info.as_ref().and_then(|info| info.memlock_limit_bytes),
        binary: state.replica.binary().display().to_string(),
        binary_version: identity
            .as_ref()
            .and_then(|identity| identity.version.clone()),
        binary_sha256: identity
            .as_ref()
            .and_then(|identity| identity.sha256.clone()),
        data_file: config.replica.data_file.display().to_string(),
        data_file_size_bytes: std::fs::metadata(&config.replica.data_file)
            .ok()
            .map(|metadata| metadata.len()),
        replica_status: state
            .statsd
            .gauge("tb_replica_status")
            .map(|(value, _)| value),
        replica_sync_stage: state
            .statsd
            .gauge("tb_replica_sync_stage")
            .map(|(value, _)| value),
        replica_view: state
            .statsd
            .gauge("tb_replica_view")
            .map(|(value, _)| value),
        running_release: state
            .statsd
            .gauge("tb_release")
            .and_then(|(value, _)| Release::from_packed(value))
            .map(|release| release.to_string()),
        statsd_age_ms: state
            .statsd
            .last_packet_age()
            .map(|age| age.as_millis() as u64),
        probe_latency_ms: verdict.latency.map(|latency| latency.as_millis() as u64),
        probe_ok: verdict.ok,
        version_skew: verdict.version_skew,
        checkpoint_op: state.replica.checkpoint_op(),
        log_normal_view: state
            .replica
            .log_tracker()
            .and_then(|tracker| tracker.normal_view()),
    }
}
