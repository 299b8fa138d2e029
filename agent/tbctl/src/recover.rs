//! `tbctl recover`: rebuild a replica whose data file is lost. The agent runs `tigerbeetle
//! recover` (never `format`: a re-formatted replica forgets what it acknowledged), starts the
//! replica and waits until state sync has caught it up; tbctl follows that job.

use std::process::ExitCode;

use super::client::AgentClient;
use super::jobs;
use super::output;
use tb_proto::endpoints::Endpoint;
use tb_proto::inventory::ReplicaEntry;

pub async fn recover(
    client: &AgentClient,
    entry: &ReplicaEntry,
    timeout_ms: u64,
) -> anyhow::Result<ExitCode> {
    let (_, job) = jobs::start_and_follow(
        client,
        entry,
        Endpoint::ReplicaRecover,
        "tbctl status",
        timeout_ms,
    )
    .await?;
    let took_s = job
        .finished_unix_ms
        .map(|finished| finished.saturating_sub(job.started_unix_ms) as f64 / 1000.0);
    output::say(match took_s {
        Some(took_s) => format!(
            "replica {}: recovered, synced and ready after {took_s:.1} s",
            entry.index
        ),
        None => format!("replica {}: recovered, synced and ready", entry.index),
    });
    output::emit_job(entry, &job)?;
    Ok(ExitCode::SUCCESS)
}
