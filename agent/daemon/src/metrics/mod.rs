//! `GET /metrics`: host figures under node_exporter's names, the agent's own `tb_agent_*`, and the
//! replica's StatsD stream re-exposed as `tb_*`. docs/metrics.md lists every name.
//!
//! The body is encoded once per change and served from a cache: the StatsD store, the host
//! monitor, the prober, the replica supervisor and the counters each bump a generation when what
//! they hold changes, and a scrape re-encodes only when one of them moved or the cached body is
//! older than `BODY_AGE_MAX` (for what is read at encode time and what ages by itself: the
//! replica's /proc figures, the data file's size, readiness). A scrape storm costs a copy-free
//! clone of the cached bytes per request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub mod cache;

pub use cache::{BODY_AGE_MAX, Cache, ChangeKey, Counters, Format, openmetrics_to_text};

use crate::api::{HostStatus, ScheduledRunOutcome};
use crate::health;
use crate::state::AgentState;
use crate::statsd;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;
/// StatsD series grouped by metric name: one Prometheus family each.
type Families<'a> = BTreeMap<&'a str, (statsd::Kind, Vec<(Labels, f64)>)>;

/// Builds the registry piece by piece; one gauge per name keeps call sites short.
struct Builder {
    registry: Registry,
}

impl Builder {
    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.gauge_family(name, help, [(Vec::new(), value)]);
    }

    fn gauge_family(
        &mut self,
        name: &str,
        help: &str,
        values: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let family = Family::<Labels, FloatGauge>::default();
        for (labels, value) in values {
            family.get_or_create(&labels).set(value);
        }
        self.registry.register(name, help, family);
    }

    /// `name` without `_total`: the encoder appends it, as OpenMetrics requires.
    fn counter_family(
        &mut self,
        name: &str,
        help: &str,
        values: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let family = Family::<Labels, FloatCounter>::default();
        for (labels, value) in values {
            family.get_or_create(&labels).inc_by(value);
        }
        self.registry.register(name, help, family);
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.counter_family(name, help, [(Vec::new(), value)]);
    }
}

fn label(key: &str, value: impl ToString) -> (String, String) {
    (key.to_string(), value.to_string())
}

/// The /metrics body in `format`, from the agent's cache.
pub async fn body_as(state: &AgentState, format: Format) -> Bytes {
    state
        .metrics_cache
        .body_as(change_key(state), format, || render(state))
        .await
}

/// The OpenMetrics body.
pub async fn body(state: &AgentState) -> Bytes {
    body_as(state, Format::OpenMetrics).await
}

fn change_key(state: &AgentState) -> ChangeKey {
    [
        state.statsd.generation(),
        state.host.generation(),
        state.prober.generation(),
        state.replica.generation(),
        state.counters.control_generation(),
        state.counters.auth_failures_total.load(Ordering::Acquire),
        state.audit.lost_lines(),
        state.backup_schedule.generation(),
    ]
}

pub fn render(state: &AgentState) -> String {
    let mut builder = Builder {
        registry: Registry::default(),
    };
    host_metrics(&mut builder, state);
    agent_metrics(&mut builder, state);
    statsd_metrics(&mut builder, &state.statsd.snapshot());
    // Size the buffer from the previous scrape: the body grows as the replica reports more.
    static LAST_SIZE_BYTES: AtomicU64 = AtomicU64::new(32 * 1024);
    let mut text = String::with_capacity(LAST_SIZE_BYTES.load(Ordering::Relaxed) as usize + 4096);
    encode(&mut text, &builder.registry).expect("writing to a String cannot fail");
    LAST_SIZE_BYTES.store(text.len() as u64, Ordering::Relaxed);
    text
}

fn host_metrics(builder: &mut Builder, state: &AgentState) {
    let host = state.host.latest();
    if let Some(filesystem) = &host.filesystem {
        let labels = vec![
            label("device", &filesystem.device),
            label("fstype", &filesystem.fs_type),
            label("mountpoint", &filesystem.mount_point),
        ];
        builder.gauge_family(
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes (the data file's filesystem).",
            [(labels.clone(), filesystem.available_bytes as f64)],
        );
        builder.gauge_family(
            "node_filesystem_size_bytes",
            "Filesystem size in bytes (the data file's filesystem).",
            [(labels, filesystem.size_bytes as f64)],
        );
    }
    builder.gauge(
        "node_memory_MemTotal_bytes",
        "Memory information field MemTotal_bytes.",
        host.memory_total_bytes as f64,
    );
    builder.gauge(
        "node_memory_MemAvailable_bytes",
        "Memory information field MemAvailable_bytes.",
        host.memory_available_bytes as f64,
    );
    builder.gauge(
        "node_memory_SwapTotal_bytes",
        "Memory information field SwapTotal_bytes.",
        host.swap_total_bytes as f64,
    );
    builder.gauge(
        "node_memory_SwapFree_bytes",
        "Memory information field SwapFree_bytes.",
        host.swap_free_bytes as f64,
    );
    builder.gauge("node_load1", "1m load average.", host.load_average[0]);
    builder.gauge("node_load5", "5m load average.", host.load_average[1]);
    builder.gauge("node_load15", "15m load average.", host.load_average[2]);
    host_time_and_cpu_metrics(builder, &host);
}

/// Boot time, clock synchronisation, CPU usage and io_uring.
fn host_time_and_cpu_metrics(builder: &mut Builder, host: &HostStatus) {
    if let Some(boot) = crate::replica::boot_time_unix_seconds() {
        builder.gauge(
            "node_boot_time_seconds",
            "Node boot time, in unixtime.",
            boot,
        );
    }
    if let Some(clock) = &host.clock {
        builder.gauge(
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            f64::from(u8::from(clock.synchronised)),
        );
        builder.gauge(
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            clock.offset_seconds,
        );
        builder.gauge(
            "node_timex_maxerror_seconds",
            "Maximum error in seconds.",
            clock.max_error_seconds,
        );
        builder.gauge(
            "node_timex_estimated_error_seconds",
            "Estimated error in seconds.",
            clock.estimated_error_seconds,
        );
    }
    builder.gauge_family(
        "tb_agent_host_cpu_usage_ratio",
        "CPU usage per core over the last refresh interval (0 to 1).",
        host.cpu_usage_percent
            .iter()
            .enumerate()
            .map(|(cpu, usage)| (vec![label("cpu", cpu)], f64::from(*usage) / 100.0)),
    );
    if let Some(disabled) = host.io_uring_disabled {
        builder.gauge(
            "tb_agent_io_uring_disabled",
            "Value of kernel.io_uring_disabled; TigerBeetle needs 0.",
            f64::from(disabled),
        );
    }
}

fn agent_metrics(builder: &mut Builder, state: &AgentState) {
    builder.gauge_family(
        "tb_agent_build_info",
        "Agent build; the client version must not be newer than the cluster.",
        [(
            vec![
                label("version", crate::AGENT_VERSION),
                label(
                    "tigerbeetle_client_version",
                    crate::TIGERBEETLE_CLIENT_VERSION,
                ),
            ],
            1.0,
        )],
    );
    let report = health::ready_report(state);
    builder.gauge(
        "tb_agent_ready",
        "1 when every readiness check passes.",
        f64::from(u8::from(report.ready)),
    );
    builder.gauge_family(
        "tb_agent_check_ok",
        "1 per passing readiness check.",
        report.checks.iter().map(|check| {
            (
                vec![label("check", &check.name)],
                f64::from(u8::from(check.ok)),
            )
        }),
    );
    if let Some(firewall) = state.firewall.verdict(&state.config) {
        builder.gauge(
            "tb_agent_firewall_rules_loaded",
            "1 when the last firewall record says the table inet tigerbeetle drops the replica \
             and agent ports (0 also when the record is unreadable).",
            f64::from(u8::from(firewall.rules_loaded)),
        );
        if let Some(age_ms) = firewall.age_ms {
            builder.gauge(
                "tb_agent_firewall_record_age_seconds",
                "Age of the last firewall record (tb-agent firewall-record runs every 30 s).",
                age_ms as f64 / 1000.0,
            );
        }
    }
    replica_metrics(builder, state);
    probe_and_counter_metrics(builder, state);
    backup_schedule_metrics(builder, state);
}

/// `[backup] schedule`'s plan and last run; nothing without a schedule.
fn backup_schedule_metrics(builder: &mut Builder, state: &AgentState) {
    let schedule = state.backup_schedule.metrics();
    let unix_s = |time: std::time::SystemTime| {
        time.duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64())
    };
    if let Some(next_tick) = schedule.next_tick {
        builder.gauge(
            "tb_agent_backup_schedule_next_tick_timestamp_seconds",
            "The backup schedule's next tick (Unix seconds).",
            unix_s(next_tick),
        );
    }
    if let Some(last_success) = schedule.last_success_at {
        builder.gauge(
            "tb_agent_backup_schedule_last_success_timestamp_seconds",
            "When the last scheduled backup that succeeded finished (Unix seconds), since the \
             agent started.",
            unix_s(last_success),
        );
    }
    if schedule.scheduled {
        builder.gauge(
            "tb_agent_backup_schedule_failed_ticks",
            "Ticks in a row whose scheduled backup failed or was given up, since the last \
             success or the agent's start.",
            f64::from(schedule.ticks_failed),
        );
    }
    if let Some(last) = schedule.last_outcome {
        builder.gauge_family(
            "tb_agent_backup_schedule_last_outcome",
            "1 for the outcome of the last tick's scheduled backup, 0 for the others.",
            ScheduledRunOutcome::ALL.map(|outcome| {
                (
                    vec![label("outcome", outcome.as_str())],
                    f64::from(u8::from(outcome == last)),
                )
            }),
        );
    }
}

/// The replica's process and data file, read at encode time.
fn replica_metrics(builder: &mut Builder, state: &AgentState) {
    let running = state
        .replica
        .process_state()
        .is_some_and(|(_, process)| process.is_running());
    builder.gauge(
        "tb_agent_replica_running",
        "1 while the replica process exists and is neither stopped (SIGSTOP) nor a zombie.",
        f64::from(u8::from(running)),
    );
    let info = state.replica.process_info();
    if let Some(info) = &info {
        if let Some(start) = info.start_time_unix_seconds {
            builder.gauge(
                "tb_agent_replica_start_time_seconds",
                "Start time of the replica process, Unix seconds.",
                start,
            );
        }
        builder.gauge(
            "tb_agent_replica_resident_bytes",
            "VmRSS of the replica process.",
            info.resident_bytes as f64,
        );
        builder.gauge(
            "tb_agent_replica_locked_bytes",
            "VmLck of the replica process: memory actually locked.",
            info.locked_bytes as f64,
        );
        if let Some(limit) = info.memlock_limit_bytes {
            builder.gauge(
                "tb_agent_replica_memlock_limit_bytes",
                "RLIMIT_MEMLOCK of the replica process (CAP_IPC_LOCK bypasses it).",
                limit as f64,
            );
        }
    }
    gate_metrics(builder, state);
    if let Ok(metadata) = std::fs::metadata(&state.config.replica.data_file) {
        builder.gauge(
            "tb_agent_data_file_size_bytes",
            "Size of the replica's data file.",
            metadata.len() as f64,
        );
    }
}

/// The client probe and the agent's own counters.
/// The current replica process's readiness gate (replica/gate.rs): when and on which evidence
/// it passed, and its commit lag then once the process's first StatsD report bounds it.
fn gate_metrics(builder: &mut Builder, state: &AgentState) {
    let Some(gate) = state.replica.gate() else {
        return;
    };
    builder.gauge(
        "tb_agent_replica_gate_start_time_seconds",
        "Start of the replica process the gate series describe, Unix seconds (as the agent saw it).",
        gate.started_unix_ms as f64 / 1000.0,
    );
    let Some((after, source)) = gate.ready else {
        return;
    };
    builder.gauge(
        "tb_agent_replica_gate_ready_seconds",
        "Seconds from the replica process's start to its first passed readiness (its gate).",
        after.as_secs_f64(),
    );
    builder.gauge_family(
        "tb_agent_replica_gate_source",
        "1 for the evidence that passed replica_status at the gate: the replica's log or StatsD.",
        vec![(vec![label("source", source.as_str())], 1.0)],
    );
    if let Some(lag) = gate.lag_at_gate_ops_max() {
        builder.gauge(
            "tb_agent_replica_gate_commit_lag_ops",
            "Commit lag of the replica behind the cluster at its gate, at most (a gate on the log: \
             reconstructed from the first StatsD report, docs/architecture.md).",
            lag as f64,
        );
    }
    if let Some(lag) = gate.lag_at_gate_estimate_ops() {
        builder.gauge(
            "tb_agent_replica_gate_commit_lag_estimate_ops",
            "At a gate on the log: the commit lag at the gate, estimated from the process's first \
             two StatsD reports after it (the cluster's commit taken back to the gate at their \
             rate, less the replica's checkpoint), docs/architecture.md.",
            lag as f64,
        );
    }
    if let Some(checkpoints) = gate.checkpoints_at_gate {
        builder.gauge(
            "tb_agent_replica_gate_checkpoint_lag_bound_ops",
            "At a gate on the log: the bound on the commit lag it passed on (the replica on the \
             cluster's newest checkpoint is less than this many ops behind, docs/architecture.md).",
            checkpoints.lag_bound_ops() as f64,
        );
    }
}

fn probe_and_counter_metrics(builder: &mut Builder, state: &AgentState) {
    let verdict = crate::health::probe_verdict(state);
    builder.gauge(
        "tb_agent_probe_ok",
        "1 when the last client probe answered within the timeout, after the current replica \
         process started.",
        f64::from(u8::from(verdict.ok)),
    );
    if let Some(latency) = verdict.latency {
        builder.gauge(
            "tb_agent_probe_latency_seconds",
            "Latency of the last answered client probe.",
            latency.as_secs_f64(),
        );
    }
    builder.counter(
        "tb_agent_probe_failures",
        "Client probes that failed.",
        state.prober.state().failures_total as f64,
    );
    builder.counter(
        "tb_agent_auth_failures",
        "Requests refused with 401, 403 or 429.",
        state.counters.auth_failures_total.load(Ordering::Relaxed) as f64,
    );
    builder.counter(
        "tb_agent_audit_lines_lost",
        "Audit lines not written: the writer was behind or had stopped, or the file refused the write.",
        state.audit.lost_lines() as f64,
    );
    let actions = state.counters.control_actions();
    builder.counter_family(
        "tb_agent_control_actions",
        "Control actions by action and outcome.",
        actions.into_iter().map(|((action, outcome), count)| {
            (
                vec![label("action", action), label("outcome", outcome)],
                count as f64,
            )
        }),
    );
}

fn statsd_metrics(builder: &mut Builder, snapshot: &statsd::Snapshot) {
    builder.counter(
        "tb_agent_statsd_packets",
        "StatsD datagrams accepted from the replica.",
        snapshot.packets_total as f64,
    );
    builder.counter_family(
        "tb_agent_statsd_rejected",
        "StatsD datagrams rejected, by reason: not from a socket of the replica's current \
         process, wrong cluster or replica tags, no replica running, not loopback, or an owner \
         /proc could not tell.",
        snapshot
            .rejected_total
            .iter()
            .map(|(reason, count)| (vec![label("reason", reason.as_str())], *count as f64)),
    );
    builder.counter(
        "tb_agent_statsd_dropped",
        "StatsD lines dropped: malformed, or over the series limit.",
        snapshot.dropped_total as f64,
    );
    builder.gauge(
        "tb_agent_statsd_last_packet_timestamp_seconds",
        "Unix time of the last StatsD datagram (0 if none since the replica started).",
        snapshot.last_packet_unix_seconds.unwrap_or(0.0),
    );
    // Group series by name: one family per metric name.
    let mut families: Families = BTreeMap::new();
    for (key, sample) in &snapshot.series {
        let entry = families
            .entry(key.name.as_str())
            .or_insert_with(|| (sample.kind, Vec::new()));
        if entry.0 == sample.kind {
            entry.1.push((key.labels.clone(), sample.value));
        }
    }
    for (name, (kind, values)) in families {
        match kind {
            statsd::Kind::Gauge => builder.gauge_family(name, "TigerBeetle StatsD gauge.", values),
            statsd::Kind::Counter => builder.counter_family(
                name.strip_suffix("_total").unwrap_or(name),
                "TigerBeetle StatsD counter, summed since the agent started.",
                values,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::origin::RejectReason;
    use std::time::Duration;

    const CONFIG: &str = "[server]\nlisten = \"127.0.0.1:1\"\n\
         [replica]\ncluster_id = \"0\"\nindex = 0\ncount = 1\naddresses = [\"3000\"]\n\
         data_file = \"/nonexistent/0_0.tigerbeetle\"\nstatsd_port = 2\n\
         [replica.run]\nmode = \"process\"\nbinary = \"/nonexistent/tigerbeetle\"\n\
         [[tokens]]\nname = \"reader\"\nscopes = [\"read\"]\n\
         sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

    fn state() -> std::sync::Arc<AgentState> {
        let config = crate::config::Config::parse(CONFIG).unwrap();
        AgentState::new(config).unwrap()
    }

    #[tokio::test]
    async fn the_backup_schedule_is_exposed_once_configured() {
        let state = state();
        let text = render(&state);
        assert!(
            !text.contains("tb_agent_backup_schedule"),
            "no schedule: {text}"
        );
        let config = crate::config::Config::parse(&format!(
            "{}[backup]\ndir = \"/nonexistent-backups\"\nschedule = \"0 3 * * *\"\n",
            CONFIG
        ))
        .unwrap();
        let state = AgentState::new(config).unwrap();
        let tick = std::time::UNIX_EPOCH + Duration::from_secs(1_772_334_000);
        state.backup_schedule.planned(tick, tick);
        state.backup_schedule.started(tick, "b", "backup-b", tick);
        state
            .backup_schedule
            .job_finished("backup-b", None, tick + Duration::from_secs(20));
        let tomorrow = tick + Duration::from_secs(86_400);
        state.backup_schedule.planned(tomorrow, tomorrow);
        let text = render(&state);
        for line in [
            "tb_agent_backup_schedule_next_tick_timestamp_seconds{} 1772420400.0",
            "tb_agent_backup_schedule_last_success_timestamp_seconds{} 1772334020.0",
            "tb_agent_backup_schedule_last_outcome{outcome=\"succeeded\"} 1.0",
            "tb_agent_backup_schedule_last_outcome{outcome=\"gave_up\"} 0.0",
            "tb_agent_backup_schedule_failed_ticks{} 0.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}: {text}");
        }
    }

    #[test]
    fn accept_chooses_the_format_as_client_golang_does() {
        // What Prometheus 2.x and 3.x send, then what curl and browsers send.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        for (accept, expected) in [
            (None, Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some("application/json"), Format::Text),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("text/plain;q=0.5, application/openmetrics-text"),
                Format::OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;q=0.2, text/plain"),
                Format::Text,
            ),
            (Some("application/openmetrics-text;q=0, */*"), Format::Text),
        ] {
            assert_eq!(Format::negotiate(accept), expected, "{accept:?}");
        }
    }

    #[tokio::test]
    async fn the_text_format_names_counters_by_their_samples() {
        let state = state();
        state.counters.record_control("restart", "ok");
        let cache = &state.metrics_cache;
        let openmetrics = body_as(&state, Format::OpenMetrics).await;
        let openmetrics = std::str::from_utf8(&openmetrics).unwrap();
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        assert!(openmetrics.contains("# TYPE tb_agent_control_actions counter\n"));
        let text = body_as(&state, Format::Text).await;
        let text = std::str::from_utf8(&text).unwrap();
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tb_agent_control_actions_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP tb_agent_control_actions_total "),
            "{text}"
        );
        assert!(text.contains("# TYPE tb_agent_ready gauge\n"), "{text}");
        // Only the comments differ.
        let samples = |body: &str| -> Vec<String> {
            body.lines()
                .filter(|line| !line.starts_with('#'))
                .map(String::from)
                .collect()
        };
        assert_eq!(samples(text), samples(openmetrics));
        assert_eq!(cache.encodes_total(), 1, "one encode serves both formats");
    }

    #[tokio::test]
    async fn the_body_is_encoded_once_per_change() {
        let state = state();
        let cache = &state.metrics_cache;
        let first = body(&state).await;
        for _ in 0..100 {
            assert_eq!(body(&state).await, first);
        }
        assert_eq!(cache.encodes_total(), 1);

        // A change from any source: the next scrape encodes anew and shows it.
        let from = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        state.statsd.reject(RejectReason::NotReplicaSocket, from);
        let second = body(&state).await;
        assert_eq!(cache.encodes_total(), 2);
        let text = std::str::from_utf8(&second).unwrap();
        assert!(
            text.contains("tb_agent_statsd_rejected_total{reason=\"not_replica_socket\"} 1"),
            "{text}"
        );
        body(&state).await;
        assert_eq!(cache.encodes_total(), 2);
        state.counters.record_control("restart", "ok");
        body(&state).await;
        assert_eq!(cache.encodes_total(), 3);
        state
            .counters
            .auth_failures_total
            .fetch_add(1, Ordering::Relaxed);
        body(&state).await;
        assert_eq!(cache.encodes_total(), 4);

        // Nothing changed, but what is read at encode time ages: re-encoded after BODY_AGE_MAX.
        tokio::time::sleep(BODY_AGE_MAX + Duration::from_millis(50)).await;
        body(&state).await;
        assert_eq!(cache.encodes_total(), 5);
    }
}
