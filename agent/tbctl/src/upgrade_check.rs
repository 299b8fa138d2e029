//! `tbctl upgrade check`: everything an upgrade must know before it changes anything, in one
//! place that upgrade.yml calls. The target binary's SHA-256 is verified before it is run at all
//! (a binary that is not the one named must never execute, even for `version`); then its release,
//! the oldest client it accepts and the releases it bundles; then every agent, concurrently, for
//! the release its replica runs and the client it embeds. Unreachable agents are named with their
//! host and the reason.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tb_proto::inventory::Inventory;
use tb_proto::tigerbeetle::{CLIENT_RELEASE, RELEASES_TO_SKIP, Release, sha256_file};

use super::client::AgentClient;
use super::exit;
use super::status::describe;

/// `version --verbose` and `multiversion` print a few KiB; a binary that hangs is not one to run.
const BINARY_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub struct UpgradeCheckArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    inventory: PathBuf,
    /// The target `tigerbeetle` binary (on this machine).
    #[arg(long, value_name = "PATH")]
    binary: PathBuf,
    /// Its expected SHA-256 (64 hex digits): checked before the binary is run at all.
    #[arg(long, value_name = "HEX")]
    sha256: String,
    /// Timeout of each request to an agent.
    #[arg(long, default_value_t = 10_000, value_parser = super::timeout_ms)]
    timeout_ms: u64,
}

/// What the target binary says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub release: Release,
    pub client_min: Release,
    pub bundled: Vec<Release>,
}

pub async fn check(client: &AgentClient, args: &UpgradeCheckArgs) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::load(&args.inventory)?;
    verify_sha256(&args.binary, &args.sha256).await?;
    let target = read_target(&args.binary).await?;
    refuse_target(&target)?;
    super::output::say(format!(
        "target {}: sha256 verified; accepts clients from {}; bundles {}",
        target.release,
        target.client_min,
        list(&target.bundled)
    ));
    let mut refusals = Vec::new();
    let mut unreachable = Vec::new();
    let answers = ask_agents(client, &inventory, args.timeout_ms).await;
    for (entry, answer) in inventory.replicas.iter().zip(answers) {
        match answer {
            Ok((running, client_release)) => {
                match refuse_replica(&target, running, client_release) {
                    Ok(line) => super::output::say(format!("{}: {line}", describe(entry))),
                    Err(why) => refusals.push(format!("{}: {why}", describe(entry))),
                }
            }
            Err(why) => unreachable.push(format!("{}: {why}", describe(entry))),
        }
    }
    if !refusals.is_empty() {
        let text = refusals.join("\n");
        return Err(exit::Refused(format!("{text}\nNothing was changed.")).into());
    }
    if !unreachable.is_empty() {
        let text = unreachable.join("\n");
        return Err(exit::Unreachable(format!(
            "{text}\nEvery agent must answer before an upgrade. Nothing was changed."
        ))
        .into());
    }
    super::output::say(format!("the upgrade to {} can proceed", target.release));
    super::output::emit(&serde_json::json!({
        "release": target.release.to_string(),
        "client_min": target.client_min.to_string(),
        "can_proceed": true,
    }))?;
    Ok(ExitCode::SUCCESS)
}

fn list(releases: &[Release]) -> String {
    if releases.is_empty() {
        return "no past release".into();
    }
    let names: Vec<String> = releases.iter().map(Release::to_string).collect();
    names.join(", ")
}

async fn verify_sha256(binary: &Path, expected: &str) -> anyhow::Result<()> {
    let expected = expected.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(exit::Refused(format!("--sha256 {expected:?} is not 64 hex digits")).into());
    }
    let actual = sha256_file(binary)
        .await
        .with_context(|| format!("reading {}", binary.display()))?;
    if actual != expected {
        return Err(exit::Refused(format!(
            "{} has SHA-256 {actual}, not the expected {expected}: it was not run, and nothing \
             was changed",
            binary.display()
        ))
        .into());
    }
    Ok(())
}

async fn run_binary(binary: &Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<String> {
    let output = tokio::time::timeout(
        BINARY_QUERY_TIMEOUT,
        tokio::process::Command::new(binary)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{} did not answer within 30 s", binary.display()))?
    .with_context(|| format!("running {}", binary.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} {:?} failed: {}",
        binary.display(),
        args,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn read_target(binary: &Path) -> anyhow::Result<Target> {
    let verbose = run_binary(binary, &["version".as_ref(), "--verbose".as_ref()]).await?;
    // A binary without past releases answers `multiversion` with an error: it bundles none.
    let bundle = run_binary(binary, &["multiversion".as_ref(), binary.as_os_str()])
        .await
        .unwrap_or_default();
    parse_target(&verbose, &bundle)
}

/// From `version --verbose` (`process.release=`, `process.release_client_min=`) and
/// `multiversion` (`multiversion.releases_bundled=...`).
pub fn parse_target(verbose: &str, bundle: &str) -> anyhow::Result<Target> {
    let field = |name: &str| {
        verbose
            .lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .and_then(Release::parse)
            .with_context(|| format!("the target binary's `version --verbose` has no {name}"))
    };
    let bundled = bundle
        .lines()
        .find_map(|line| line.split_once("releases_bundled="))
        .map(|(_, list)| {
            list.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .filter_map(Release::parse)
                .collect()
        })
        .unwrap_or_default();
    Ok(Target {
        release: field("process.release=")?,
        client_min: field("process.release_client_min=")?,
        bundled,
    })
}

/// Refusals that need no agent: a release upstream advises to skip; a target that would refuse
/// the agents' own client (every later gate would lose its probe).
pub fn refuse_target(target: &Target) -> Result<(), exit::Refused> {
    if RELEASES_TO_SKIP.contains(&target.release.to_string().as_str()) {
        return Err(exit::Refused(format!(
            "{} is on the skip list (upstream: potential liveness issues); upgrade to a later \
             release. Nothing was changed",
            target.release
        )));
    }
    let client = Release::parse(CLIENT_RELEASE).expect("a release");
    if target.client_min > client {
        return Err(exit::Refused(format!(
            "{} accepts clients from {} on, but the agents embed client {client}: they would \
             lose their probe and every later gate. Deploy agents with a newer client first. \
             Nothing was changed",
            target.release, target.client_min
        )));
    }
    Ok(())
}

/// Why one replica may take the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaFits {
    #[error("runs {0} already")]
    RunsTarget(Release),
    #[error("runs {0}: the target bundles it")]
    Bundled(Release),
}

/// Why one replica cannot take the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaRefusal {
    #[error(
        "its agent embeds client {client}, newer than the target release {target}: the cluster \
         would refuse it (a client must never be newer than the cluster)"
    )]
    ClientNewer { client: Release, target: Release },
    #[error("runs {running}, newer than the target {target}: TigerBeetle never downgrades")]
    Downgrade { running: Release, target: Release },
    #[error(
        "runs {running}, which the target does not bundle ({}): the target cannot upgrade \
         this replica; upgrade through an intermediate release that bundles {running}",
        list(bundled)
    )]
    NotBundled {
        running: Release,
        bundled: Vec<Release>,
    },
}

/// One replica: the release it runs now can reach the target, and its agent's client is not
/// newer than the target.
pub fn refuse_replica(
    target: &Target,
    running: Release,
    client_release: Release,
) -> Result<ReplicaFits, ReplicaRefusal> {
    if client_release > target.release {
        return Err(ReplicaRefusal::ClientNewer {
            client: client_release,
            target: target.release,
        });
    }
    if running == target.release {
        return Ok(ReplicaFits::RunsTarget(running));
    }
    if running > target.release {
        return Err(ReplicaRefusal::Downgrade {
            running,
            target: target.release,
        });
    }
    if !target.bundled.contains(&running) {
        return Err(ReplicaRefusal::NotBundled {
            running,
            bundled: target.bundled.clone(),
        });
    }
    Ok(ReplicaFits::Bundled(running))
}

/// Why an agent's answer gives no releases.
#[derive(Debug, thiserror::Error)]
enum AgentAnswerError {
    /// The request failed: the client's reason.
    #[error("{0}")]
    Request(super::client::AgentError),
    #[error("its agent reports no release (no StatsD report yet, and no readable binary)")]
    NoRelease,
    #[error("its agent reports no client release")]
    NoClientRelease,
}

/// Per replica, in inventory order: the release its process runs (else its binary's) and its
/// agent's client release, or why not. Asked concurrently, each bounded by `timeout_ms`.
async fn ask_agents(
    client: &AgentClient,
    inventory: &Inventory,
    timeout_ms: u64,
) -> Vec<Result<(Release, Release), AgentAnswerError>> {
    let mut asks = tokio::task::JoinSet::new();
    for (position, entry) in inventory.replicas.iter().enumerate() {
        let (client, url) = (client.clone(), entry.agent_url.clone());
        asks.spawn(async move { (position, ask_agent(&client, &url, timeout_ms).await) });
    }
    let mut answers = asks.join_all().await;
    answers.sort_by_key(|(position, _)| *position);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

async fn ask_agent(
    client: &AgentClient,
    url: &str,
    timeout_ms: u64,
) -> Result<(Release, Release), AgentAnswerError> {
    let status = client
        .status(url, timeout_ms)
        .await
        .map_err(AgentAnswerError::Request)?;
    let running = status
        .replica
        .running_release
        .as_deref()
        .or(status.replica.binary_version.as_deref())
        .and_then(Release::parse)
        .ok_or(AgentAnswerError::NoRelease)?;
    let client_release = Release::parse(&status.agent.tigerbeetle_client_version)
        .ok_or(AgentAnswerError::NoClientRelease)?;
    Ok((running, client_release))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERBOSE: &str = "TigerBeetle version 0.16.78+c3d9b09\n\nprocess.release=0.16.78\n\
                           process.release_client_min=0.16.4\n";

    #[test]
    fn the_target_reads_from_its_own_output() {
        let target =
            parse_target(VERBOSE, "multiversion.releases_bundled=0.16.70, 0.16.78\n").unwrap();
        assert_eq!(target.release, Release(0, 16, 78));
        assert_eq!(target.client_min, Release(0, 16, 4));
        assert_eq!(target.bundled, vec![Release(0, 16, 70), Release(0, 16, 78)]);
        assert!(parse_target("nothing", "").is_err());
        assert_eq!(parse_target(VERBOSE, "").unwrap().bundled, vec![]);
    }

    #[test]
    fn skipped_releases_and_a_too_new_client_min_are_refused() {
        let target = |release, client_min| Target {
            release,
            client_min,
            bundled: vec![],
        };
        assert!(refuse_target(&target(Release(0, 16, 78), Release(0, 16, 4))).is_ok());
        let skipped = refuse_target(&target(Release(0, 16, 77), Release(0, 16, 4))).unwrap_err();
        assert!(skipped.0.contains("skip list"), "{}", skipped.0);
        let newer = refuse_target(&target(Release(0, 17, 5), Release(0, 17, 0))).unwrap_err();
        assert!(newer.0.contains("lose their probe"), "{}", newer.0);
    }

    #[test]
    fn each_replica_must_reach_the_target() {
        let target = Target {
            release: Release(0, 16, 78),
            client_min: Release(0, 16, 4),
            bundled: vec![Release(0, 16, 70)],
        };
        let client = Release(0, 16, 78);
        assert!(refuse_replica(&target, Release(0, 16, 70), client).is_ok());
        assert!(refuse_replica(&target, Release(0, 16, 78), client).is_ok());
        assert!(refuse_replica(&target, Release(0, 16, 60), client).is_err());
        assert!(refuse_replica(&target, Release(0, 16, 79), client).is_err());
        assert!(refuse_replica(&target, Release(0, 16, 70), Release(0, 16, 80)).is_err());
    }
}
