//! Readiness: every check must pass. Each check says what it saw, so an operator reading a 503
//! knows what to fix without logging into the host.

use std::time::Duration;

use crate::api::{Check, ReadyReport};
use crate::replica::ProcessState;
use tb_proto::tigerbeetle::status_name;

use crate::state::AgentState;

/// `firewall` only when the config names a firewall record (crate::firewall).
pub const CHECK_NAMES: [&str; 7] = [
    "replica_process",
    "replica_status",
    "replica_sync",
    "client_probe",
    "disk_space",
    "memory_lock",
    "firewall",
];

pub fn ready_report(state: &AgentState) -> ReadyReport {
    let mut checks = vec![
        replica_process(state),
        replica_status(state),
        replica_sync(state),
        client_probe(state),
        disk_space(state),
        memory_lock(state),
    ];
    checks.extend(crate::firewall::check(state));
    debug_assert!(
        checks
            .iter()
            .map(|check| check.name.as_str())
            .eq(CHECK_NAMES.into_iter().take(checks.len()))
    );
    ReadyReport {
        ready: checks.iter().all(|check| check.ok),
        checks,
    }
}

fn check(name: &str, ok: bool, detail: String) -> Check {
    Check {
        name: name.to_string(),
        ok,
        detail,
    }
}

fn replica_process(state: &AgentState) -> Check {
    match state.replica.process_state() {
        Some((pid, ProcessState::Running(code))) => {
            check("replica_process", true, format!("pid {pid}, state {code}"))
        }
        Some((pid, ProcessState::Stopped(code))) => check(
            "replica_process",
            false,
            format!(
                "pid {pid} is stopped (state {code}: SIGSTOP, SIGTSTP or a debugger); it serves \
                 nothing until it gets SIGCONT"
            ),
        ),
        Some((pid, ProcessState::Exited(code))) => check(
            "replica_process",
            false,
            format!("pid {pid} has exited (state {code}) and is not reaped yet"),
        ),
        None => check(
            "replica_process",
            false,
            state
                .replica
                .last_error()
                .unwrap_or_else(|| "the replica is not running".into()),
        ),
    }
}

fn stale_after(state: &AgentState) -> Duration {
    Duration::from_millis(state.config.health.statsd_stale_ms)
}

/// The latest StatsD gauge if it is fresh, else why it cannot be trusted.
fn fresh_gauge(state: &AgentState, name: &str) -> Result<i64, String> {
    let rejected = || match state.statsd.last_rejection() {
        Some((reason, from, total)) => format!(
            "; the agent has rejected {total} StatsD datagrams, the latest from {from} ({}): \
             only the replica process's own socket is trusted",
            reason.as_str()
        ),
        None => String::new(),
    };
    match state.statsd.gauge(name) {
        None => Err(format!(
            "no {name} received from this replica process yet (TigerBeetle emits every 10 s; is it \
             started with --experimental --statsd=127.0.0.1:{}?){}",
            state.config.replica.statsd_port,
            rejected()
        )),
        Some((_, age)) if age > stale_after(state) => Err(format!(
            "the last {name} from the replica is {} ms old (limit {} ms){}",
            age.as_millis(),
            stale_after(state).as_millis(),
            rejected()
        )),
        Some((value, _)) => Ok(value),
    }
}

fn replica_status(state: &AgentState) -> Check {
    match fresh_gauge(state, "tb_replica_status") {
        Ok(0) => check("replica_status", true, "normal".into()),
        Ok(value) => check(
            "replica_status",
            false,
            format!("replica_status is {value} ({})", status_name(value)),
        ),
        Err(detail) => check("replica_status", false, detail),
    }
}

fn replica_sync(state: &AgentState) -> Check {
    match fresh_gauge(state, "tb_replica_sync_stage") {
        Ok(0) => check("replica_sync", true, "not syncing".into()),
        Ok(stage) => check(
            "replica_sync",
            false,
            format!("state sync in progress (stage {stage})"),
        ),
        Err(detail) => check("replica_sync", false, detail),
    }
}

fn client_probe(state: &AgentState) -> Check {
    let health = &state.config.health;
    let verdict = state.prober.verdict(
        Duration::from_millis(health.probe_timeout_ms),
        Duration::from_millis(health.probe_interval_ms),
    );
    check("client_probe", verdict.ok, verdict.detail)
}

fn disk_space(state: &AgentState) -> Check {
    let host = state.host.latest();
    let Some(filesystem) = &host.filesystem else {
        return check(
            "disk_space",
            false,
            "the filesystem of the data file is not known yet".into(),
        );
    };
    let health = &state.config.health;
    let percent = if filesystem.size_bytes == 0 {
        0.0
    } else {
        filesystem.available_bytes as f64 * 100.0 / filesystem.size_bytes as f64
    };
    let ok =
        filesystem.available_bytes >= health.free_bytes_min && percent >= health.free_percent_min;
    check(
        "disk_space",
        ok,
        format!(
            "{} bytes ({percent:.1}%) free on {}; minimum {} bytes and {}%",
            filesystem.available_bytes,
            filesystem.mount_point,
            health.free_bytes_min,
            health.free_percent_min
        ),
    )
}

fn memory_lock(state: &AgentState) -> Check {
    let Some(info) = state.replica.process_info() else {
        return check("memory_lock", false, "the replica is not running".into());
    };
    if state.replica.memlock_warning_seen() {
        return check(
            "memory_lock",
            false,
            "the replica logged \"Unable to lock pages\": grant CAP_IPC_LOCK or raise \
             LimitMEMLOCK, or its memory may be swapped out"
                .into(),
        );
    }
    let ratio_min = state.config.health.memlock_ratio_min;
    let ok = info.locked_bytes as f64 >= info.resident_bytes as f64 * ratio_min;
    check(
        "memory_lock",
        ok,
        format!(
            "VmLck {} bytes, VmRSS {} bytes (locked must be at least {:.0}% of resident)",
            info.locked_bytes,
            info.resident_bytes,
            ratio_min * 100.0
        ),
    )
}
