//! `tbctl upgrade wait`: after upgrade.yml swapped the binary on every replica, wait until each
//! replica's binary on disk is the target release and its process runs it. The binary alone is
//! not enough: the old release serves until the cluster re-executes the new one, and a play that
//! went on at the swap would hand over a cluster in the middle of its upgrade.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tb_proto::api;
use tb_proto::tigerbeetle::Release;

use super::client::AgentClient;
use super::replica_arg::{ReplicaArg, resolve_all};
use super::status::{Goal, Observation, wait_for};

#[derive(Debug, Args)]
pub struct UpgradeWaitArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    inventory: PathBuf,
    /// The release to wait for, e.g. 0.16.78 (`upgrade check --json` names it).
    #[arg(long, value_name = "X.Y.Z", value_parser = release)]
    release: Release,
    /// Wait for this replica only (its index or inventory host name); repeat for more. Without
    /// it, every replica of the inventory.
    #[arg(long = "replica", value_name = "N|HOST")]
    replicas: Vec<ReplicaArg>,
    /// How long to wait in all.
    #[arg(long, default_value_t = 180_000, value_parser = super::timeout_ms)]
    timeout_ms: u64,
}

/// A `--release` that is not `major.minor.patch`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a release like 0.16.78")]
struct InvalidRelease {
    text: String,
}

fn release(text: &str) -> Result<Release, InvalidRelease> {
    // Exactly major.minor.patch: a build suffix would say more than the wait compares.
    Release::parse(text)
        .filter(|_| !text.contains('+'))
        .ok_or_else(|| InvalidRelease {
            text: text.to_string(),
        })
}

/// Exits 0 once every replica asked for runs the release, 1 when the wait runs out (naming
/// what each replica's binary and process are), like `wait-ready`.
pub async fn wait(client: &AgentClient, args: &UpgradeWaitArgs) -> anyhow::Result<ExitCode> {
    let inventory = tb_proto::inventory::Inventory::load(&args.inventory)?;
    let entries = resolve_all(&args.replicas, &inventory)?;
    let goal = Goal::Release(args.release);
    let reached = wait_for(client, &entries, goal, args.timeout_ms, || Ok(())).await?;
    super::output::emit(&serde_json::json!({
        "release": args.release.to_string(),
        "reached": reached,
    }))?;
    Ok(if reached {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One replica against the target: its binary's version (`0.16.78+<commit>`) and the release its
/// process reports (`tb.release`, decoded by the agent) must both be the target.
pub(crate) fn observe(replica: &api::ReplicaStatus, target: Release) -> Observation {
    let binary = replica.binary_version.as_deref();
    let running = replica.running_release.as_deref();
    let reached = binary.and_then(Release::parse) == Some(target)
        && running.and_then(Release::parse) == Some(target);
    let progress = format!(
        "binary {}, process runs {}",
        binary.unwrap_or("unknown"),
        running.unwrap_or("no reported release")
    );
    Observation {
        reached,
        problem: (!reached).then(|| format!("{progress}, not {target}")),
        progress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(binary: Option<&str>, running: Option<&str>) -> api::ReplicaStatus {
        api::ReplicaStatus {
            running: true,
            binary_version: binary.map(str::to_string),
            running_release: running.map(str::to_string),
            ..api::ReplicaStatus::default()
        }
    }

    #[test]
    fn reached_only_when_the_binary_and_the_process_are_the_target() {
        let target = Release(0, 16, 78);
        let on_target = observe(&replica(Some("0.16.78+c3d9b09"), Some("0.16.78")), target);
        assert!(on_target.reached && on_target.problem.is_none());
        for (binary, running) in [
            // Right after the swap: the new binary, the old release still serving.
            (Some("0.16.78+c3d9b09"), Some("0.16.70")),
            (Some("0.16.70+0a1b2c3"), Some("0.16.70")),
            (Some("0.16.78+c3d9b09"), None),
            (None, Some("0.16.78")),
            (Some("0.16.780+c3d9b09"), Some("0.16.78")),
        ] {
            let seen = observe(&replica(binary, running), target);
            assert!(!seen.reached, "{binary:?} {running:?}");
            assert!(seen.problem.unwrap().ends_with("not 0.16.78"));
        }
    }

    #[test]
    fn the_release_flag_takes_major_minor_patch_only() {
        assert_eq!(release("0.16.78"), Ok(Release(0, 16, 78)));
        for bad in ["", "0.16", "0.16.78+c3d9b09", "v0.16.78", "0.16.78.1"] {
            assert!(release(bad).is_err(), "{bad}");
        }
    }
}
