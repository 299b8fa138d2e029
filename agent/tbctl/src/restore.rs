//! `tbctl restore`: put one verified backup in place of a stopped replica's data file, for a
//! cluster that lost more than `recover` can rebuild (docs/backups.md, "Disaster-recovery
//! restore"). The agent does every check (its own cluster, replica and replica count; the local
//! replica stopped; every peer stopped, or the typed-out confirmation; the backup verifies) and
//! the work, within the request: the answer comes once the file is in place. It never starts the
//! replica: the order of the starts (newest backups first) is the operator's.

use std::process::ExitCode;

use clap::Args;

use super::client::{AgentClient, AgentError, RestoreAnswer};
use super::exit;
use super::jobs;
use super::output;
use super::replica_arg::ReplicaArg;
use super::status::describe;
use tb_proto::api;
use tb_proto::inventory::Inventory;

/// The agent answers within its ready, stop and 30 s budgets (160 s by default): the result, or
/// 202 with the job when the restore takes longer (a large file), which tbctl then follows up to
/// this bound in all.
pub const RESTORE_TIMEOUT_MS_DEFAULT: u64 = 3_600_000;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    pub inventory: std::path::PathBuf,
    /// The replica: its index (the inventory's tigerbeetle_replica) or its inventory host name.
    #[arg(long, value_name = "N|HOST")]
    pub replica: ReplicaArg,
    /// The backup to restore: one of this replica's own (`tbctl backups`).
    #[arg(long, value_name = "ID", value_parser = backup_id)]
    pub backup: String,
    /// Restore although a peer replica's agent cannot say that its replica is stopped (its host
    /// is gone): make sure no replica of the cluster runs anywhere first. Takes the cluster id,
    /// typed out; the agent audits the restore as forced.
    #[arg(long, value_name = "CLUSTER_ID")]
    pub disaster_recovery: Option<String>,
    /// How long to wait for the agent's answer.
    #[arg(long, default_value_t = RESTORE_TIMEOUT_MS_DEFAULT, value_parser = crate::timeout_ms)]
    pub timeout_ms: u64,
}

fn backup_id(text: &str) -> Result<String, tb_proto::ids::InvalidBackupId> {
    tb_proto::ids::validate_backup_id(text)?;
    Ok(text.to_string())
}

pub async fn restore(
    client: &AgentClient,
    inventory: &Inventory,
    args: &RestoreArgs,
) -> anyhow::Result<ExitCode> {
    let entry = args.replica.resolve(inventory)?;
    let request = api::RestoreRequest {
        mode: args
            .disaster_recovery
            .as_ref()
            .map(|_| "disaster-recovery".to_string()),
        cluster_id: args.disaster_recovery.clone(),
    };
    output::say(format!(
        "replica {}: restoring backup {} (the agent verifies it first; up to {} s)",
        entry.index,
        args.backup,
        args.timeout_ms / 1000
    ));
    let answer = client
        .restore(&entry.agent_url, &args.backup, &request, args.timeout_ms)
        .await;
    let restored = match answer {
        Ok(RestoreAnswer::Done(restored)) => restored,
        Ok(RestoreAnswer::Accepted(accepted)) => {
            return follow_restore(client, entry, &args.backup, &accepted, args.timeout_ms).await;
        }
        Err(AgentError::Refused { code, message }) => {
            return Err(exit::refusal(
                &code,
                format!(
                    "{}: restore refused ({code}): {message}; nothing was changed",
                    describe(entry)
                ),
            ));
        }
        Err(error @ AgentError::Unreachable(_)) => {
            return Err(exit::Unreachable(format!("{}: restore: {error}", describe(entry))).into());
        }
        Err(error @ AgentError::Timeout(_)) => anyhow::bail!(
            "{}: restore: {error}; the agent swaps the data file only in its last step, so it \
             may have finished: check `tbctl backups` and its audit log before repeating it",
            describe(entry)
        ),
        Err(error) => anyhow::bail!("{}: restore: {error}", describe(entry)),
    };
    output::say(restored_text(entry.index, &restored));
    output::emit(&serde_json::json!({
        "replica": entry.index,
        "host_name": entry.host_name,
        "restore": restored,
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// A restore that outlasted the agent's answer wait goes on as a job: follow it to the end.
async fn follow_restore(
    client: &AgentClient,
    entry: &tb_proto::inventory::ReplicaEntry,
    backup: &str,
    accepted: &api::JobAccepted,
    timeout_ms: u64,
) -> anyhow::Result<ExitCode> {
    output::say(format!(
        "replica {}: the restore goes on as job {}; following it",
        entry.index, accepted.job_id
    ));
    let job = jobs::follow(client, entry, &accepted.job_id, timeout_ms).await?;
    anyhow::ensure!(
        job.state == jobs::STATE_SUCCEEDED,
        "{}: restore of {backup}: {}",
        describe(entry),
        jobs::failure(&job)
    );
    output::say(format!(
        "replica {}: restored backup {backup}; the previous data file, if any, is kept beside it \
         as *.replaced-<unix ms> (remove it once the cluster is back). Not started: start the \
         replicas with the newest backups first (docs/backups.md)",
        entry.index
    ));
    output::emit_job(entry, &job)?;
    Ok(ExitCode::SUCCESS)
}

fn restored_text(index: u8, restored: &api::RestoreResponse) -> String {
    let previous = match &restored.previous_moved_to {
        Some(path) => format!(
            "; the previous data file is kept at {path} (remove it once the cluster is back)"
        ),
        None => String::new(),
    };
    format!(
        "replica {index}: restored backup {} into {}{previous}. Not started: start the replicas \
         with the newest backups first (docs/backups.md)",
        restored.backup_id, restored.data_file
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_id_is_checked_before_any_request() {
        assert!(backup_id("../../etc/passwd").is_err());
        assert!(backup_id("").is_err());
    }

    #[test]
    fn the_answer_says_where_the_previous_file_is_and_that_nothing_started() {
        let restored = api::RestoreResponse {
            backup_id: "b".into(),
            data_file: "/d/0_1.tigerbeetle".into(),
            previous_moved_to: Some("/d/0_1.tigerbeetle.replaced-1".into()),
        };
        let text = restored_text(1, &restored);
        assert!(text.contains("/d/0_1.tigerbeetle.replaced-1"), "{text}");
        assert!(text.contains("Not started"), "{text}");
    }
}
