//! `tbctl recover`: rebuild a replica whose data file is lost. The agent runs `tigerbeetle
//! recover` (never `format`: a re-formatted replica forgets what it acknowledged), starts the
//! replica and waits until state sync has caught it up; tbctl follows that job.

use std::process::ExitCode;

use super::client::AgentClient;
use super::jobs;
use super::status::describe;
use tb_proto::endpoints::Endpoint;
use tb_proto::inventory::ReplicaEntry;

/// Starting a recover runs the agent's checks and quorum guard: seconds at most.
const START_TIMEOUT_MS: u64 = 30_000;

pub async fn recover(
    client: &AgentClient,
    entry: &ReplicaEntry,
    timeout_ms: u64,
) -> anyhow::Result<ExitCode> {
    let result = client
        .start_job(&entry.agent_url, Endpoint::ReplicaRecover, START_TIMEOUT_MS)
        .await;
    let accepted = jobs::accepted(entry, "recover", "tbctl status", result)?;
    println!(
        "replica {}: recover started (job {}; waiting up to {} s for state sync)",
        entry.index,
        accepted.job_id,
        timeout_ms / 1000
    );
    let job = jobs::follow(client, entry, &accepted.job_id, timeout_ms).await?;
    anyhow::ensure!(
        job.state == jobs::STATE_SUCCEEDED,
        "{}: recover: {}",
        describe(entry),
        jobs::failure(&job)
    );
    let took_s = job
        .finished_unix_ms
        .map(|finished| finished.saturating_sub(job.started_unix_ms) as f64 / 1000.0);
    match took_s {
        Some(took_s) => println!(
            "replica {}: recovered, synced and ready after {took_s:.1} s",
            entry.index
        ),
        None => println!("replica {}: recovered, synced and ready", entry.index),
    }
    Ok(ExitCode::SUCCESS)
}
