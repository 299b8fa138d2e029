//! `tbctl status` and `tbctl wait-ready`: ask every agent at once, show one line per replica.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use super::client::{AgentClient, AgentError};
use super::output;
use super::progress::Progress;
use tb_proto::api;
use tb_proto::inventory::{Inventory, ReplicaEntry};

/// Timeout of each readiness request while waiting: an agent that takes longer is not ready.
const WAIT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Shortest request timeout of a poll, however close the deadline.
const WAIT_REQUEST_TIMEOUT_FLOOR_MS: u64 = 1_000;
/// How often a wait asks. An agent computes readiness when asked, from evidence it takes in as
/// it comes (the replica's log within a second of a transition): a gate in a rollout's serial
/// part passes within this of it. Each round is one small request per agent.
const WAIT_POLL_INTERVAL_MS: u64 = 250;

/// One element of `tbctl status --json`. `error` is set when the agent could not be asked;
/// `checks` and `status` are null when their request failed.
#[derive(Serialize)]
struct ReplicaJson<'a> {
    replica: u8,
    host: &'a str,
    agent_url: &'a str,
    ready: bool,
    error: Option<String>,
    checks: Option<&'a Vec<api::Check>>,
    status: Option<&'a api::StatusReport>,
}

/// What one agent answered, or why it did not.
struct ReplicaReport {
    entry: ReplicaEntry,
    ready: Result<api::ReadyReport, AgentError>,
    status: Result<api::StatusReport, AgentError>,
}

impl ReplicaReport {
    fn is_ready(&self) -> bool {
        matches!(&self.ready, Ok(report) if report.ready)
    }

    /// Why this replica is not ready, or None when it is.
    fn problem(&self) -> Option<String> {
        match (&self.ready, &self.status) {
            (Err(error), _) | (Ok(_), Err(error)) => Some(error.to_string()),
            (Ok(report), Ok(_)) if !report.ready => {
                Some(format!("not ready: {}", not_ready_reason(report)))
            }
            (Ok(_), Ok(_)) => None,
        }
    }

    fn json(&self) -> ReplicaJson<'_> {
        let error = match (&self.ready, &self.status) {
            (Err(error), _) | (Ok(_), Err(error)) => Some(error.to_string()),
            _ => None,
        };
        ReplicaJson {
            replica: self.entry.index,
            host: &self.entry.host_name,
            agent_url: &self.entry.agent_url,
            ready: self.is_ready(),
            error,
            checks: self.ready.as_ref().ok().map(|report| &report.checks),
            status: self.status.as_ref().ok(),
        }
    }

    fn row(&self) -> [String; 9] {
        let ready = match &self.ready {
            Ok(report) if report.ready => "yes",
            Ok(_) => "no",
            Err(_) => "error",
        };
        let status = self.status.as_ref().ok();
        let replica = status.map(|status| &status.replica);
        let free_disk = status
            .and_then(|status| status.host.filesystem.as_ref())
            .map_or("-".to_string(), |filesystem| {
                human_bytes(filesystem.available_bytes)
            });
        let probe = match replica {
            None => "-".to_string(),
            Some(replica) if !replica.probe_ok => "failed".to_string(),
            // The cluster runs an older release than the agents' client (an upgrade is due or
            // under way): it answers, and this says why the probe's latency is not a lookup's.
            Some(replica) if replica.version_skew => "version skew".to_string(),
            Some(replica) => replica
                .probe_latency_ms
                .map_or("-".to_string(), |ms| format!("{ms} ms")),
        };
        [
            self.entry.index.to_string(),
            self.entry.host_name.clone(),
            ready.to_string(),
            replica
                .map_or("-", |replica| status_text(replica.replica_status))
                .to_string(),
            replica.map_or("-".to_string(), |replica| {
                sync_text(replica.replica_sync_stage)
            }),
            free_disk,
            replica
                .and_then(|replica| replica.binary_version.clone())
                .unwrap_or_else(|| "-".to_string()),
            probe,
            status.map_or("-".to_string(), |status| {
                scheduled_backup_text(&status.backup_schedule)
            }),
        ]
    }
}

/// The `scheduled backup` column: the last tick's outcome; `-` without a schedule.
fn scheduled_backup_text(schedule: &api::BackupScheduleStatus) -> String {
    match (&schedule.expression, &schedule.last) {
        (None, _) => "-".to_string(),
        (Some(_), None) => "not yet".to_string(),
        (Some(_), Some(last)) => last.outcome.as_str().to_string(),
    }
}

pub async fn status(
    client: &AgentClient,
    inventory: &Inventory,
    timeout_ms: u64,
) -> anyhow::Result<ExitCode> {
    let reports = query_all(client, inventory, timeout_ms).await;
    if output::json() {
        let array: Vec<ReplicaJson> = reports.iter().map(ReplicaReport::json).collect();
        println!("{}", serde_json::to_string_pretty(&array)?);
    } else {
        let header = [
            "replica",
            "host",
            "ready",
            "status",
            "sync",
            "free disk",
            "version",
            "probe",
            "scheduled backup",
        ];
        let rows: Vec<[String; 9]> = reports.iter().map(ReplicaReport::row).collect();
        print!("{}", table(&header, &rows));
    }
    // Problems go to stderr so that `--json` output stays parseable.
    for report in &reports {
        if let Some(problem) = report.problem() {
            eprintln!("{}: {problem}", describe(&report.entry));
        }
    }
    let ready_count = reports.iter().filter(|report| report.is_ready()).count();
    if ready_count == reports.len() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{ready_count} of {} replicas ready", reports.len());
        Ok(ExitCode::FAILURE)
    }
}

/// Polls until every replica is ready (true) or `timeout_ms` passes (false, after printing
/// which replicas are not ready and why). `each_poll` runs before every round so a caller can
/// stop early, for example when an agent it started has exited. A rejected token ends the wait
/// at once: polling cannot fix it.
pub async fn wait_ready(
    client: &AgentClient,
    inventory: &Inventory,
    timeout_ms: u64,
    each_poll: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    wait_for(
        client,
        &inventory.replicas,
        Goal::Ready,
        timeout_ms,
        each_poll,
    )
    .await
}

/// What a wait waits for, per replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Every readiness check passes (`wait-ready`, `local up`, restart's agent side).
    Ready,
    /// The replica process runs and reports normal status (`start`): less than readiness,
    /// which also needs the cluster to answer a client.
    Normal,
    /// The replica process runs and has reported its status, whatever it is (`start` while
    /// too few replicas run for a quorum: normal status may need the others).
    Reporting,
    /// The binary on disk is this release and the replica process runs it (`upgrade wait`):
    /// after a binary swap the old release serves until the cluster re-executes the new one.
    Release(#[serde(serialize_with = "release_text")] tb_proto::tigerbeetle::Release),
}

fn release_text<S: serde::Serializer>(
    release: &tb_proto::tigerbeetle::Release,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(release)
}

/// One replica's answer in one round of a wait.
pub(crate) struct Observation {
    pub reached: bool,
    /// A short line that changes only when the replica's situation does (printed on change).
    pub progress: String,
    /// Why the goal is not reached, with the details, for the message at the deadline.
    pub problem: Option<String>,
}

/// Polls `entries` until every one has reached `goal` (true) or `timeout_ms` passes (false,
/// after printing what each still waits for). Prints a line whenever a replica's progress
/// changes. The one waiting loop of tbctl: wait-ready, local up and start use it.
pub async fn wait_for(
    client: &AgentClient,
    entries: &[ReplicaEntry],
    goal: Goal,
    timeout_ms: u64,
    mut each_poll: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut progress = Progress::new(
        entries
            .iter()
            .map(|entry| format!("replica {}", entry.index)),
    );
    loop {
        each_poll()?;
        let remaining_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis();
        // The last poll before the deadline still gets a real request timeout: one of 1 ms
        // made every agent "no answer within 1 ms" in the final report, hiding the verdicts
        // (found by the fault campaign). The wait may end up to the floor after the deadline.
        let request_timeout_ms = WAIT_REQUEST_TIMEOUT_MS
            .min(remaining_ms as u64)
            .max(WAIT_REQUEST_TIMEOUT_FLOOR_MS);
        let answers = observe_all(client, entries, goal, request_timeout_ms).await;

        let mut problems = Vec::new();
        for (position, (entry, answer)) in entries.iter().zip(answers).enumerate() {
            let observation = match answer {
                Err(error) if error.is_permanent() => {
                    anyhow::bail!("{}: {error}", describe(entry))
                }
                Err(error) => Observation {
                    reached: false,
                    progress: error.to_string(),
                    problem: Some(error.to_string()),
                },
                Ok(observation) => observation,
            };
            progress.update(position, &observation.progress);
            if let (false, Some(problem)) = (observation.reached, observation.problem) {
                problems.push(format!("{}: {problem}", describe(entry)));
            }
        }
        if problems.is_empty() {
            let elapsed_s = progress.elapsed().as_secs_f64();
            drop(progress);
            output::say(format!(
                "{} after {elapsed_s:.1} s",
                goal.reached_text(entries)
            ));
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            drop(progress);
            eprintln!("{} within {timeout_ms} ms:", goal.missed_text(entries));
            for problem in &problems {
                eprintln!("  {problem}");
            }
            return Ok(false);
        }
        let pause = Duration::from_millis(WAIT_POLL_INTERVAL_MS).min(deadline - now);
        tokio::time::sleep(pause).await;
    }
}

impl Goal {
    fn reached_text(self, entries: &[ReplicaEntry]) -> String {
        match (self, entries) {
            (Goal::Ready, [entry]) => format!("replica {} ready", entry.index),
            (Goal::Ready, _) => format!("all {} replicas ready", entries.len()),
            (Goal::Release(release), _) => {
                format!("{} on release {release}", replicas_text(entries))
            }
            (Goal::Normal, [entry]) => format!("replica {} runs, in normal status", entry.index),
            (Goal::Reporting, [entry]) => format!("replica {} runs", entry.index),
            (_, _) => format!("all {} replicas run", entries.len()),
        }
    }

    fn missed_text(self, entries: &[ReplicaEntry]) -> String {
        match (self, entries) {
            (Goal::Ready, [entry]) => format!("replica {} was not ready", entry.index),
            (Goal::Ready, _) => "not every replica was ready".to_string(),
            (Goal::Release(release), _) => {
                format!("not every replica ran release {release}")
            }
            (Goal::Normal, [entry]) => {
                format!("replica {} was not running in normal status", entry.index)
            }
            (Goal::Reporting, [entry]) => format!("replica {} was not running", entry.index),
            (_, _) => "not every replica was running".to_string(),
        }
    }
}

/// "all 3 replicas", or "replica 1" for one.
fn replicas_text(entries: &[ReplicaEntry]) -> String {
    match entries {
        [entry] => format!("replica {}", entry.index),
        _ => format!("all {} replicas", entries.len()),
    }
}

/// One round of a wait: every replica asked concurrently, answers in `entries`' order.
async fn observe_all(
    client: &AgentClient,
    entries: &[ReplicaEntry],
    goal: Goal,
    timeout_ms: u64,
) -> Vec<Result<Observation, AgentError>> {
    let mut tasks = JoinSet::new();
    for (position, entry) in entries.iter().enumerate() {
        let client = client.clone();
        let url = entry.agent_url.clone();
        tasks.spawn(async move {
            let observation = match goal {
                Goal::Ready => client
                    .ready(&url, timeout_ms)
                    .await
                    .map(|report| observe_ready(&report)),
                Goal::Normal | Goal::Reporting => client
                    .status(&url, timeout_ms)
                    .await
                    .map(|status| observe_running(&status.replica, goal)),
                Goal::Release(release) => client
                    .status(&url, timeout_ms)
                    .await
                    .map(|status| crate::upgrade_wait::observe(&status.replica, release)),
            };
            (position, observation)
        });
    }
    let mut answers = tasks.join_all().await;
    answers.sort_by_key(|(position, _)| *position);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

fn observe_ready(report: &api::ReadyReport) -> Observation {
    // Progress names the failing checks only: their details hold changing figures (elapsed
    // ms) and would print a line every poll. The details come at the deadline.
    if report.ready {
        return Observation {
            reached: true,
            progress: "ready".to_string(),
            problem: None,
        };
    }
    Observation {
        reached: false,
        progress: format!("not ready: {}", failed_check_names(report)),
        problem: Some(format!("not ready: {}", not_ready_reason(report))),
    }
}

/// What `start` waits for, from `GET /v1/status`: the agent forgets the StatsD values of a
/// previous process, so a status seen here is the new process's own.
fn observe_running(replica: &api::ReplicaStatus, goal: Goal) -> Observation {
    let waiting = |what: String| Observation {
        reached: false,
        progress: format!("waiting for {what}"),
        problem: Some(format!("still waiting for {what}")),
    };
    match (replica.running, replica.replica_status) {
        (false, _) => waiting("the replica process to run".to_string()),
        (true, None) => waiting(
            "its first status report (TigerBeetle sends one every 10 s to the agent)".to_string(),
        ),
        (true, Some(status)) if status != 0 && goal == Goal::Normal => {
            waiting(format!("normal status (now {})", status_text(Some(status))))
        }
        (true, Some(status)) => Observation {
            reached: true,
            progress: format!("runs, status {}", status_text(Some(status))),
            problem: None,
        },
    }
}

/// Readiness and status of every replica, asked concurrently, in replica order.
async fn query_all(
    client: &AgentClient,
    inventory: &Inventory,
    timeout_ms: u64,
) -> Vec<ReplicaReport> {
    let mut tasks = JoinSet::new();
    for entry in &inventory.replicas {
        let client = client.clone();
        let entry = entry.clone();
        tasks.spawn(async move {
            let (ready, status) = tokio::join!(
                client.ready(&entry.agent_url, timeout_ms),
                client.status(&entry.agent_url, timeout_ms)
            );
            ReplicaReport {
                entry,
                ready,
                status,
            }
        });
    }
    let mut reports = tasks.join_all().await;
    reports.sort_by_key(|report| report.entry.index);
    reports
}

/// How many of the inventory's replicas other than `except` run, as their agents say; an
/// agent that does not answer counts as not running.
pub(super) async fn running_others(
    client: &AgentClient,
    inventory: &Inventory,
    except: u8,
    timeout_ms: u64,
) -> usize {
    let mut tasks = JoinSet::new();
    for entry in inventory
        .replicas
        .iter()
        .filter(|entry| entry.index != except)
    {
        let client = client.clone();
        let url = entry.agent_url.clone();
        tasks.spawn(async move { client.status(&url, timeout_ms).await });
    }
    let answers = tasks.join_all().await;
    answers
        .iter()
        .filter(|answer| matches!(answer, Ok(status) if status.replica.running))
        .count()
}

async fn ready_all(
    client: &AgentClient,
    inventory: &Inventory,
    timeout_ms: u64,
) -> Vec<Result<api::ReadyReport, AgentError>> {
    let mut tasks = JoinSet::new();
    for entry in &inventory.replicas {
        let client = client.clone();
        let entry = entry.clone();
        tasks.spawn(async move {
            let answer = client.ready(&entry.agent_url, timeout_ms).await;
            (entry.index, answer)
        });
    }
    let mut answers = tasks.join_all().await;
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

/// Every replica that is not ready, each as "replica N (URL): why", asked concurrently.
pub(super) async fn not_ready(
    client: &AgentClient,
    inventory: &Inventory,
    timeout_ms: u64,
) -> Vec<String> {
    let answers = ready_all(client, inventory, timeout_ms).await;
    inventory
        .replicas
        .iter()
        .zip(&answers)
        .filter_map(|(entry, answer)| {
            let problem = match answer {
                Ok(report) if report.ready => return None,
                Ok(report) => format!("not ready: {}", not_ready_reason(report)),
                Err(error) => error.to_string(),
            };
            Some(format!("{}: {problem}", describe(entry)))
        })
        .collect()
}

/// How every message names a replica: index and agent URL, the two things an operator checks.
/// "replica 1 (tb-1, https://10.0.0.11:7000)": the index, the inventory host name (which the
/// playbooks and `--replica` use) and the agent asked.
pub fn describe(entry: &ReplicaEntry) -> String {
    format!(
        "replica {} ({}, {})",
        entry.index, entry.host_name, entry.agent_url
    )
}

fn failed_check_names(report: &api::ReadyReport) -> String {
    let names: Vec<&str> = report
        .checks
        .iter()
        .filter(|check| !check.ok)
        .map(|check| check.name.as_str())
        .collect();
    if names.is_empty() {
        "no failed check".to_string()
    } else {
        names.join(", ")
    }
}

fn not_ready_reason(report: &api::ReadyReport) -> String {
    let failing = report.failing_summary();
    if failing.is_empty() {
        "no check failed, but the agent reports not ready".to_string()
    } else {
        failing
    }
}

/// `tb.replica_status`, as TigerBeetle's `Status` enum names it.
pub fn status_text(replica_status: Option<i64>) -> &'static str {
    replica_status.map_or("unknown", tb_proto::tigerbeetle::status_name)
}

/// `tb.replica_sync_stage`, as TigerBeetle's `SyncStage` enum names it.
fn sync_text(stage: Option<i64>) -> String {
    match stage {
        None => "-".to_string(),
        Some(0) => "idle".to_string(),
        Some(1) => "canceling_commit".to_string(),
        Some(2) => "canceling_grid".to_string(),
        Some(3) => "updating_checkpoint".to_string(),
        Some(stage) => format!("stage {stage}"),
    }
}

/// Bytes in binary units with one decimal: "512 B", "1.5 KiB", "20.0 GiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub(super) fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduled_backup_column_names_the_last_outcome() {
        let mut schedule = api::BackupScheduleStatus::default();
        assert_eq!(scheduled_backup_text(&schedule), "-");
        schedule.expression = Some("30 2 * * *".into());
        assert_eq!(scheduled_backup_text(&schedule), "not yet");
        schedule.last = Some(api::ScheduledRun {
            tick: "2026-03-01T02:30:00Z".into(),
            outcome: api::ScheduledRunOutcome::RefusedRetrying,
            at: "2026-03-01T02:30:01Z".into(),
            backup_id: None,
            job_id: None,
            error: Some("busy".into()),
            retry_at: Some("2026-03-01T02:31:10Z".into()),
        });
        assert_eq!(scheduled_backup_text(&schedule), "refused_retrying");
    }

    #[test]
    fn status_text_names_every_status() {
        assert_eq!(status_text(Some(0)), "normal");
        assert_eq!(status_text(Some(1)), "view_change");
        assert_eq!(status_text(Some(2)), "recovering");
        assert_eq!(status_text(Some(3)), "recovering_head");
        assert_eq!(status_text(Some(4)), "unknown");
        assert_eq!(status_text(Some(-1)), "unknown");
        assert_eq!(status_text(None), "unknown");
    }

    #[test]
    fn sync_text_names_stages() {
        assert_eq!(sync_text(None), "-");
        assert_eq!(sync_text(Some(0)), "idle");
        assert_eq!(sync_text(Some(3)), "updating_checkpoint");
        assert_eq!(sync_text(Some(9)), "stage 9");
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(256 * 1024 * 1024), "256.0 MiB");
        assert_eq!(human_bytes(20 * 1024 * 1024 * 1024), "20.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn not_ready_reason_lists_failed_checks() {
        let check = |name: &str, ok: bool, detail: &str| api::Check {
            name: name.to_string(),
            ok,
            detail: detail.to_string(),
        };
        let report = api::ReadyReport {
            ready: false,
            checks: vec![
                check("replica_process", true, "running"),
                check("replica_status", false, "view_change"),
                check("client_probe", false, "timed out"),
            ],
        };
        assert_eq!(
            not_ready_reason(&report),
            "replica_status: view_change; client_probe: timed out"
        );
    }

    #[test]
    fn table_aligns_columns() {
        let rows = [["0".to_string(), "replica-0".to_string()]];
        assert_eq!(
            table(&["replica", "host"], &rows),
            "replica  host\n0        replica-0\n"
        );
    }
}
