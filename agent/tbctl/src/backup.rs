//! `tbctl backup` and `tbctl backups`: take one replica's backup through its agent, and list
//! the backups of the whole cluster.
//!
//! A backup stops its replica for the copy, so tbctl only ever backs up one replica at a time,
//! and without `--replica` only when the whole cluster is ready: the agent's quorum guard would
//! refuse anyway, but a degraded cluster deserves the operator's attention before a backup.

use std::cmp::Reverse;
use std::process::ExitCode;

use serde::Serialize;
use tokio::task::JoinSet;

use super::client::{AgentClient, AgentError};
use super::jobs;
use super::output;
use super::status::{self, describe, human_bytes};
use tb_proto::api;
use tb_proto::clock::now_unix_ms;
use tb_proto::endpoints::Endpoint;
use tb_proto::inventory::{Inventory, ReplicaEntry};
use tb_proto::quorum::ready_replicas_needed;

/// Readiness and backup-list requests while choosing a replica.
const QUERY_TIMEOUT_MS: u64 = 10_000;

/// What a finished backup was: its job (steps, downtime) and its record (manifest, checks).
pub struct Completed {
    pub job: api::Job,
    pub record: api::BackupRecord,
}

/// What `tbctl backup --json` prints: the finished job and the backup's record.
#[derive(Serialize)]
struct CompletedJson<'a> {
    replica: u8,
    host_name: &'a str,
    job: &'a api::Job,
    backup: &'a api::BackupRecord,
}

/// `tbctl backup`: one replica's backup, chosen (without `replica`) or named.
pub async fn backup(
    client: &AgentClient,
    inventory: &Inventory,
    replica: Option<u8>,
    timeout_ms: u64,
) -> anyhow::Result<ExitCode> {
    let entry = match replica {
        Some(index) => inventory.replica(index)?.clone(),
        None => choose(client, inventory).await?,
    };
    let completed = backup_replica(client, &entry, timeout_ms).await?;
    print_completed(&entry, &completed);
    output::emit(&CompletedJson {
        replica: entry.index,
        host_name: &entry.host_name,
        job: &completed.job,
        backup: &completed.record,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Starts a backup on `entry`'s agent and follows its job to the end. Fails with one line
/// naming the replica when the agent refuses, the job fails, or `timeout_ms` passes.
pub async fn backup_replica(
    client: &AgentClient,
    entry: &ReplicaEntry,
    timeout_ms: u64,
) -> anyhow::Result<Completed> {
    let (accepted, job) = jobs::start_and_follow(
        client,
        entry,
        Endpoint::BackupCreate,
        "tbctl backups",
        timeout_ms,
    )
    .await?;
    let backup_id = accepted.backup_id.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: the agent accepted the backup (job {}) without naming its backup id",
            describe(entry),
            accepted.job_id
        )
    })?;
    let record = client
        .backup(&entry.agent_url, &backup_id, QUERY_TIMEOUT_MS)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "{}: backup {backup_id} succeeded, but reading its record failed: {error}",
                describe(entry)
            )
        })?;
    Ok(Completed { job, record })
}

fn print_completed(entry: &ReplicaEntry, completed: &Completed) {
    let manifest = &completed.record.manifest;
    output::say(format!(
        "backup {} of replica {} complete",
        completed.record.id, entry.index
    ));
    let stopped = match completed.job.downtime_ms {
        Some(_) => format!(
            " (process stopped {:.1} s; the rest is the wait until ready)",
            manifest.timings.stopped_ms as f64 / 1000.0
        ),
        None => String::new(),
    };
    output::say(format!(
        "  replica downtime: {}{stopped}",
        jobs::downtime_text(&completed.job)
    ));
    output::say(format!(
        "  size: data {}, stored {} ({}); copied by {}",
        human_bytes(manifest.data_size_bytes),
        human_bytes(manifest.stored_size_bytes),
        manifest.compression,
        if manifest.reflink {
            "reflink clone"
        } else {
            "streamed copy"
        }
    ));
    output::say(format!(
        "  verified: {}",
        verified_text(completed.record.verification.as_ref())
    ));
    output::say(format!("  shipped: {}", shipped_text(&completed.record)));
}

/// One replica as a candidate for the next backup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    index: u8,
    ready: bool,
    /// Creation time of its newest backup; None when it has none.
    newest_backup_unix_ms: Option<u64>,
}

/// The replica to back up: one whose absence leaves enough ready replicas for a quorum, the
/// one whose newest backup is oldest (no backup counts as oldest), on a tie the highest index
/// (replica 0 is the first primary of a new cluster; stopping it costs a view change).
/// `ready_total` counts the cluster's ready replicas, candidates or not.
fn choose_replica(candidates: &[Candidate], ready_total: usize, needed: u8) -> Option<u8> {
    candidates
        .iter()
        .filter(|candidate| candidate.ready && ready_total > usize::from(needed))
        .min_by_key(|candidate| (candidate.newest_backup_unix_ms, Reverse(candidate.index)))
        .map(|candidate| candidate.index)
}

/// Refuses a degraded cluster, then asks every agent for its backups and picks the replica
/// `choose_replica` names.
async fn choose(client: &AgentClient, inventory: &Inventory) -> anyhow::Result<ReplicaEntry> {
    let problems = status::not_ready(client, inventory, QUERY_TIMEOUT_MS).await;
    anyhow::ensure!(
        problems.is_empty(),
        "cluster degraded: {}. A backup stops one more replica: bring the cluster back first, \
         or name one with --replica N (its agent's quorum guard still decides)",
        problems.join("; ")
    );
    let replica_count = inventory.replicas.len();
    let needed = ready_replicas_needed(replica_count as u8);
    anyhow::ensure!(
        replica_count > usize::from(needed),
        "a {replica_count}-replica cluster loses its quorum while any replica is stopped for a \
         backup; agents refuse such a backup"
    );
    let mut candidates = Vec::new();
    let mut newest = Vec::new();
    for (entry, listed) in list_all(client, inventory, QUERY_TIMEOUT_MS).await {
        match listed {
            Ok(records) => {
                let newest_backup_unix_ms = records
                    .first()
                    .map(|record| record.manifest.created_unix_ms);
                newest.push(format!(
                    "replica {}: {}",
                    entry.index,
                    newest_backup_unix_ms.map_or("no backup".to_string(), |created| {
                        format!("newest {} old", human_age(now_unix_ms(), created))
                    })
                ));
                candidates.push(Candidate {
                    index: entry.index,
                    ready: true,
                    newest_backup_unix_ms,
                });
            }
            Err(AgentError::Refused { code, message }) if code == "not_configured" => {
                eprintln!("{}: skipped: {message}", describe(&entry));
            }
            Err(error) => anyhow::bail!("{}: listing backups: {error}", describe(&entry)),
        }
    }
    let index = choose_replica(&candidates, replica_count, needed)
        .ok_or_else(|| anyhow::anyhow!("no replica has backups configured"))?;
    let entry = inventory.replica(index)?.clone();
    let has_backup = candidates
        .iter()
        .any(|candidate| candidate.index == index && candidate.newest_backup_unix_ms.is_some());
    output::say(format!(
        "backing up {}: {} ({})",
        describe(&entry),
        if has_backup {
            "its newest backup is the oldest"
        } else {
            "it has no backup yet"
        },
        newest.join(", ")
    ));
    Ok(entry)
}

/// Every agent's backup list, asked concurrently, in replica order.
pub async fn list_all(
    client: &AgentClient,
    inventory: &Inventory,
    timeout_ms: u64,
) -> Vec<(ReplicaEntry, Result<Vec<api::BackupRecord>, AgentError>)> {
    let mut tasks = JoinSet::new();
    for entry in &inventory.replicas {
        let (client, entry) = (client.clone(), entry.clone());
        tasks.spawn(async move {
            let listed = client.backups(&entry.agent_url, timeout_ms).await;
            (entry, listed)
        });
    }
    let mut lists = tasks.join_all().await;
    lists.sort_by_key(|(entry, _)| entry.index);
    lists
}

/// One element of `tbctl backups --json`: the agent's record with the replica it belongs to.
#[derive(Serialize)]
struct BackupJson<'a> {
    replica: u8,
    agent_url: &'a str,
    #[serde(flatten)]
    record: &'a api::BackupRecord,
}

/// `tbctl backups`: every replica's backups, newest first within each replica.
pub async fn backups(
    client: &AgentClient,
    inventory: &Inventory,
    timeout_ms: u64,
) -> anyhow::Result<ExitCode> {
    let lists = list_all(client, inventory, timeout_ms).await;
    let listed: Vec<(&ReplicaEntry, &api::BackupRecord)> = lists
        .iter()
        .filter_map(|(entry, listed)| listed.as_ref().ok().map(|records| (entry, records)))
        .flat_map(|(entry, records)| records.iter().map(move |record| (entry, record)))
        .collect();
    if output::json() {
        let array: Vec<BackupJson> = listed
            .iter()
            .map(|(entry, record)| BackupJson {
                replica: entry.index,
                agent_url: &entry.agent_url,
                record,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&array)?);
    } else {
        let header = [
            "replica", "id", "age", "data", "stored", "verified", "shipped",
        ];
        let now = now_unix_ms();
        let rows: Vec<[String; 7]> = listed
            .iter()
            .map(|(entry, record)| row(entry, record, now))
            .collect();
        if rows.is_empty() {
            println!("no backups");
        } else {
            print!("{}", status::table(&header, &rows));
        }
    }
    // Problems go to stderr so that `--json` output stays parseable.
    let mut failed = false;
    for (entry, listed) in &lists {
        if let Err(error) = listed {
            eprintln!("{}: cannot list backups: {error}", describe(entry));
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn row(entry: &ReplicaEntry, record: &api::BackupRecord, now_unix_ms: u64) -> [String; 7] {
    let manifest = &record.manifest;
    [
        entry.index.to_string(),
        record.id.clone(),
        human_age(now_unix_ms, manifest.created_unix_ms),
        human_bytes(manifest.data_size_bytes),
        human_bytes(manifest.stored_size_bytes),
        verified_text(record.verification.as_ref()).to_string(),
        shipped_text(record),
    ]
}

/// An age in the largest two units that matter: "45 s", "12 min", "3 h 5 min", "2 d 4 h".
pub fn human_age(now_unix_ms: u64, then_unix_ms: u64) -> String {
    // Hosts' clocks differ a little; a second in the future is "0 s", more is worth showing.
    if then_unix_ms > now_unix_ms + 1_000 {
        return format!(
            "{} s in the future (clock skew?)",
            (then_unix_ms - now_unix_ms) / 1000
        );
    }
    let seconds = now_unix_ms.saturating_sub(then_unix_ms) / 1000;
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{minutes} min"),
        3600..86_400 => format!("{hours} h {} min", minutes % 60),
        _ => format!("{days} d {} h", hours % 24),
    }
}

fn verified_text(verification: Option<&api::Verification>) -> &'static str {
    match verification {
        Some(verification) if verification.ok => "yes",
        Some(_) => "no",
        None => "never",
    }
}

/// "yes" or "no"; "no hooks" when none is configured, since then nothing left the host even
/// though the agent reports the backup as (vacuously) shipped.
fn shipped_text(record: &api::BackupRecord) -> String {
    if record.hooks.is_empty() {
        "no hooks".to_string()
    } else if record.shipped {
        "yes".to_string()
    } else {
        "no".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(index: u8, ready: bool, newest: Option<u64>) -> Candidate {
        Candidate {
            index,
            ready,
            newest_backup_unix_ms: newest,
        }
    }

    #[test]
    fn chooses_the_oldest_newest_backup() {
        let candidates = [
            candidate(0, true, Some(300)),
            candidate(1, true, Some(100)),
            candidate(2, true, Some(200)),
        ];
        assert_eq!(choose_replica(&candidates, 3, 2), Some(1));
    }

    #[test]
    fn no_backup_counts_as_oldest_and_ties_go_to_the_highest_index() {
        let candidates = [
            candidate(0, true, None),
            candidate(1, true, Some(100)),
            candidate(2, true, None),
        ];
        assert_eq!(choose_replica(&candidates, 3, 2), Some(2));
        let same = [
            candidate(0, true, Some(5)),
            candidate(1, true, Some(5)),
            candidate(2, true, Some(5)),
        ];
        assert_eq!(choose_replica(&same, 3, 2), Some(2));
    }

    #[test]
    fn never_chooses_a_replica_whose_absence_costs_the_quorum() {
        let candidates = [candidate(0, true, None), candidate(1, false, None)];
        // Two replicas need both: neither may stop.
        assert_eq!(choose_replica(&candidates, 2, 2), None);
        // Not ready replicas are never chosen.
        let candidates = [candidate(0, true, Some(9)), candidate(1, false, None)];
        assert_eq!(choose_replica(&candidates, 3, 2), Some(0));
        // Three of five ready, three needed: stopping any one leaves two.
        let candidates = [candidate(0, true, None)];
        assert_eq!(choose_replica(&candidates, 3, 3), None);
        assert_eq!(choose_replica(&[], 3, 2), None);
    }

    #[test]
    fn ages_use_two_units() {
        let now = 10_000_000_000;
        assert_eq!(human_age(now, now), "0 s");
        assert_eq!(human_age(now, now + 500), "0 s");
        assert_eq!(human_age(now, now - 45_000), "45 s");
        assert_eq!(human_age(now, now - 59_999), "59 s");
        assert_eq!(human_age(now, now - 60_000), "1 min");
        assert_eq!(human_age(now, now - 3_599_000), "59 min");
        assert_eq!(
            human_age(now, now - (3 * 3600 + 5 * 60) * 1000),
            "3 h 5 min"
        );
        assert_eq!(human_age(now, now - 86_400_000), "1 d 0 h");
        assert_eq!(
            human_age(now, now - (2 * 86_400 + 4 * 3600) * 1000),
            "2 d 4 h"
        );
        assert_eq!(human_age(now, 0), "115 d 17 h");
        assert_eq!(
            human_age(now, now + 5_000),
            "5 s in the future (clock skew?)"
        );
    }

    #[test]
    fn verified_and_shipped_texts() {
        let verification = |ok| api::Verification {
            ok,
            verified_unix_ms: 0,
            detail: String::new(),
        };
        assert_eq!(verified_text(Some(&verification(true))), "yes");
        assert_eq!(verified_text(Some(&verification(false))), "no");
        assert_eq!(verified_text(None), "never");
    }
}
