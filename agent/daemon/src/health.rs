//! Readiness: every check must pass. Each check says what it saw, so an operator reading a 503
//! knows what to fix without logging into the host.

use std::time::{Duration, Instant};

use crate::api::{Check, ReadyReport};
use crate::replica::ProcessState;
use crate::replica::checkpoint::LogMayNotPass;
use crate::replica::gate::{CHECKPOINT_OPS, Source};
use crate::replica_log;
use tb_proto::tigerbeetle::status_name;

use crate::state::AgentState;

/// The readiness checks, in the order of the report; `Firewall` only when the config names a
/// firewall record (crate::firewall). The wire carries `as_str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckName {
    ReplicaProcess,
    ReplicaStatus,
    ReplicaSync,
    ClientProbe,
    DiskSpace,
    MemoryLock,
    Firewall,
}

impl CheckName {
    pub const ALL: [CheckName; 7] = [
        CheckName::ReplicaProcess,
        CheckName::ReplicaStatus,
        CheckName::ReplicaSync,
        CheckName::ClientProbe,
        CheckName::DiskSpace,
        CheckName::MemoryLock,
        CheckName::Firewall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::ReplicaProcess => "replica_process",
            CheckName::ReplicaStatus => "replica_status",
            CheckName::ReplicaSync => "replica_sync",
            CheckName::ClientProbe => "client_probe",
            CheckName::DiskSpace => "disk_space",
            CheckName::MemoryLock => "memory_lock",
            CheckName::Firewall => "firewall",
        }
    }
}

/// Why a StatsD gauge cannot be trusted for a check; `rejected` is the note on datagrams the
/// agent refused (empty when none).
#[derive(Debug, thiserror::Error)]
enum GaugeProblem {
    #[error(
        "no {name} received from this replica process yet (TigerBeetle emits every 10 s; is it \
         started with --experimental --statsd=127.0.0.1:{port}?){rejected}"
    )]
    Missing {
        name: String,
        port: u16,
        rejected: String,
    },
    #[error("the last {name} from the replica is {age_ms} ms old (limit {limit_ms} ms){rejected}")]
    Stale {
        name: String,
        age_ms: u128,
        limit_ms: u128,
        rejected: String,
    },
}

/// What a fresh StatsD gauge says for a check, and when it arrived.
struct GaugeVerdict {
    ok: bool,
    detail: String,
    received: Instant,
}

pub fn ready_report(state: &AgentState) -> ReadyReport {
    let (status, source) = replica_status(state);
    let mut checks = vec![
        replica_process(state),
        status,
        replica_sync(state),
        client_probe(state),
        disk_space(state),
        memory_lock(state),
    ];
    checks.extend(firewall(state));
    debug_assert!(
        checks
            .iter()
            .map(|check| check.name.as_str())
            .eq(CheckName::ALL
                .into_iter()
                .map(CheckName::as_str)
                .take(checks.len()))
    );
    let ready = checks.iter().all(|check| check.ok);
    if ready {
        state.replica.note_ready(source);
    }
    ReadyReport { ready, checks }
}

fn check(name: CheckName, ok: bool, detail: String) -> Check {
    Check {
        name: name.as_str().to_string(),
        ok,
        detail,
    }
}

fn replica_process(state: &AgentState) -> Check {
    match state.replica.process_state() {
        Some((pid, ProcessState::Running(code))) => check(
            CheckName::ReplicaProcess,
            true,
            format!("pid {pid}, state {code}"),
        ),
        Some((pid, ProcessState::Stopped(code))) => check(
            CheckName::ReplicaProcess,
            false,
            format!(
                "pid {pid} is stopped (state {code}: SIGSTOP, SIGTSTP or a debugger); it serves \
                 nothing until it gets SIGCONT"
            ),
        ),
        Some((pid, ProcessState::Exited(code))) => check(
            CheckName::ReplicaProcess,
            false,
            format!("pid {pid} has exited (state {code}) and is not reaped yet"),
        ),
        None => check(
            CheckName::ReplicaProcess,
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

/// The latest StatsD gauge if it is fresh (with when it arrived), else why it cannot be trusted.
fn fresh_gauge(state: &AgentState, name: &str) -> Result<(i64, Instant), GaugeProblem> {
    let rejected = || match state.statsd.last_rejection() {
        Some((reason, from, total)) => format!(
            "; the agent has rejected {total} StatsD datagrams, the latest from {from} ({}): \
             only the replica process's own socket is trusted",
            reason.as_str()
        ),
        None => String::new(),
    };
    match state.statsd.gauge(name) {
        None => Err(GaugeProblem::Missing {
            name: name.to_string(),
            port: state.config.replica.statsd_port,
            rejected: rejected(),
        }),
        Some((_, age)) if age > stale_after(state) => Err(GaugeProblem::Stale {
            name: name.to_string(),
            age_ms: age.as_millis(),
            limit_ms: stale_after(state).as_millis(),
            rejected: rejected(),
        }),
        Some((value, age)) => Ok((value, Instant::now() - age)),
    }
}

/// Whether the log's verdict may pass a check by itself (the fast gate). It may since the lag
/// gate exists: the log's "rejoined" needs the state machine open (replica_log), and the log may
/// pass only a process on the cluster's newest checkpoint (replica/gate.rs, checkpoint.rs).
const LOG_MAY_PASS: bool = true;

/// One definition of each replica check from its two sources. The newer evidence wins: the log
/// says within a second what StatsD says every 10 s. The log never stands alone for longer than
/// the StatsD staleness limit after the process could first report (its state machine open, as
/// its log says; else its start): a hung replica logs nothing either, and
/// StatsD's staleness is what detects it. Without log evidence (dropped lines, unknown format),
/// StatsD decides, as it always did.
fn combine(
    state: &AgentState,
    name: CheckName,
    verdict_of: fn(&replica_log::Tracker, Instant) -> Option<replica_log::Verdict>,
    statsd: Result<GaugeVerdict, GaugeProblem>,
) -> (Check, Source) {
    let now = Instant::now();
    // One copy of the tracker per check: its verdict, why it has none, and its age agree.
    let tracker = state.replica.log_tracker();
    let may_pass = if LOG_MAY_PASS {
        state.replica.log_may_pass()
    } else {
        Err(LogMayNotPass::Disabled)
    };
    let log = tracker
        .as_ref()
        .and_then(|tracker| verdict_of(tracker, now))
        .filter(|verdict| may_pass.is_ok() || !verdict.ok);
    // Young: its first StatsD report may still be on its way (the staleness limit, counted from
    // when the process could first report).
    let process_young = tracker
        .as_ref()
        .is_some_and(|tracker| tracker.reporting_since().elapsed() <= stale_after(state));
    let from_log = |log: replica_log::Verdict| (check(name, log.ok, log.detail), Source::Log);
    let from_statsd = |ok, detail| (check(name, ok, detail), Source::Statsd);
    match (log, statsd) {
        (Some(log), Ok(gauge)) if log.at > gauge.received => from_log(log),
        (_, Ok(gauge)) => from_statsd(gauge.ok, format!("{} (StatsD gauge)", gauge.detail)),
        (Some(log), Err(_)) if process_young => from_log(log),
        (_, Err(statsd)) if process_young => {
            let why_no_log = match (tracker, may_pass) {
                (None, _) => "no replica process".to_string(),
                (Some(tracker), Ok(()) | Err(LogMayNotPass::NotRejoined)) => {
                    tracker.why_no_verdict(now)
                }
                (Some(_), Err(why)) => why.to_string(),
            };
            from_statsd(
                false,
                format!("{statsd}; no verdict from the log either: {why_no_log}"),
            )
        }
        (_, Err(statsd)) => from_statsd(false, statsd.to_string()),
    }
}

fn replica_status(state: &AgentState) -> (Check, Source) {
    let statsd = fresh_gauge(state, "tb_replica_status").map(|(value, received)| match value {
        0 => GaugeVerdict {
            ok: true,
            detail: "normal".to_string(),
            received,
        },
        value => GaugeVerdict {
            ok: false,
            detail: format!("replica_status is {value} ({})", status_name(value)),
            received,
        },
    });
    combine(
        state,
        CheckName::ReplicaStatus,
        replica_log::Tracker::status_verdict,
        statsd,
    )
}

fn replica_sync(state: &AgentState) -> Check {
    // The replica's own lag (ops it knows committed that it has not), from the same reports:
    // beyond one checkpoint interval it is not caught up, whatever its sync stage says.
    let lag = match (
        fresh_gauge(state, "tb_replica_commit_min"),
        fresh_gauge(state, "tb_replica_commit_max"),
    ) {
        (Ok((commit_min, _)), Ok((commit_max, _))) => Some(commit_max.saturating_sub(commit_min)),
        _ => None,
    };
    let statsd =
        fresh_gauge(state, "tb_replica_sync_stage").map(|(stage, received)| match (stage, lag) {
            (0, Some(lag)) if lag > CHECKPOINT_OPS as i64 => GaugeVerdict {
                ok: false,
                detail: format!(
                    "not syncing, but {lag} ops behind the commits it knows of (more than one \
                     checkpoint interval, {CHECKPOINT_OPS})"
                ),
                received,
            },
            (0, Some(lag)) => GaugeVerdict {
                ok: true,
                detail: format!("not syncing, commit lag {lag} ops"),
                received,
            },
            (0, None) => GaugeVerdict {
                ok: true,
                detail: "not syncing".to_string(),
                received,
            },
            (stage, _) => GaugeVerdict {
                ok: false,
                detail: format!("state sync in progress (stage {stage})"),
                received,
            },
        });
    combine(
        state,
        CheckName::ReplicaSync,
        replica_log::Tracker::sync_verdict,
        statsd,
    )
    .0
}

/// The client probe's verdict, one definition for readiness, status and /metrics: the cluster
/// answers a client, since the current replica process started (see `Prober::verdict_since`).
pub fn probe_verdict(state: &AgentState) -> crate::probe::Verdict {
    let health = &state.config.health;
    let timeout = Duration::from_millis(health.probe_timeout_ms);
    let interval = Duration::from_millis(health.probe_interval_ms);
    match state.replica.gate() {
        Some(gate) => state.prober.verdict_since(timeout, interval, gate.started),
        None => state.prober.verdict(timeout, interval),
    }
}

fn client_probe(state: &AgentState) -> Check {
    let verdict = probe_verdict(state);
    check(CheckName::ClientProbe, verdict.ok, verdict.detail)
}

fn disk_space(state: &AgentState) -> Check {
    let host = state.host.latest();
    let Some(filesystem) = &host.filesystem else {
        return check(
            CheckName::DiskSpace,
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
        CheckName::DiskSpace,
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
        return check(
            CheckName::MemoryLock,
            false,
            "the replica is not running".into(),
        );
    };
    if state.replica.memlock_warning_seen() {
        return check(
            CheckName::MemoryLock,
            false,
            "the replica logged \"Unable to lock pages\": grant CAP_IPC_LOCK or raise \
             LimitMEMLOCK, or its memory may be swapped out"
                .into(),
        );
    }
    let ratio_min = state.config.health.memlock_ratio_min;
    let ok = info.locked_bytes as f64 >= info.resident_bytes as f64 * ratio_min;
    check(
        CheckName::MemoryLock,
        ok,
        format!(
            "VmLck {} bytes, VmRSS {} bytes (locked must be at least {:.0}% of resident)",
            info.locked_bytes,
            info.resident_bytes,
            ratio_min * 100.0
        ),
    )
}

/// The readiness check `firewall`, when the config names a record (crate::firewall).
pub fn firewall(state: &AgentState) -> Option<Check> {
    let config = &state.config;
    let verdict = state.firewall.verdict(config)?;
    let path = config.health.firewall_record.as_deref()?;
    Some(check(
        CheckName::Firewall,
        verdict.problem.is_none(),
        crate::firewall::detail(&verdict, path, &crate::firewall::own_ports(config)),
    ))
}
