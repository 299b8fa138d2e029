//! `tbctl lease`: the cluster-wide maintenance lease, through the agents (each keeps one
//! long-lived client; tbctl opens none, so it never churns the cluster's client sessions).
//!
//! `tbctl lease run --ttl T -- CMD` takes the lease, runs CMD with `TBCTL_LEASE_ID` set (every
//! tbctl inside acts under it, and so does Ansible through tbctl), renews it every third of T,
//! and releases it when CMD ends. A renewal that finds the lease lost stops CMD: whatever it
//! does next would run unprotected.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tb_proto::endpoints::Endpoint;
use tb_proto::inventory::Inventory;
use tb_proto::lease::{
    AcquireRequest, Initialized, LeaseIdRequest, LeaseStatus, LeaseView, Operation, Released,
    RenewRequest,
};

use super::client::{AgentClient, AgentError};
use super::exit;

/// A lease request waits on the cluster: each of the agent's requests to it is bounded by
/// lease.request_timeout_ms (5 s), and an acquire may make a dozen after an expiry. Past this,
/// tbctl asks the next agent, so it must outlast the slowest answer the agent can give.
const REQUEST_TIMEOUT_MS: u64 = 90_000;

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Show the lease: who holds it, for which operation, since when, until when.
    Show(LeaseArgs),
    /// Create the lease accounts and fund the pool with exactly 1 (idempotent).
    Init(LeaseArgs),
    /// Take the lease; prints its id (TBCTL_LEASE_ID for later commands).
    Acquire(AcquireArgs),
    /// Renew a lease for --ttl seconds from now.
    Renew(RenewArgs),
    /// Release a lease (idempotent).
    Release(IdArgs),
    /// End a lease whose holder is gone, before its ttl. Name it (`tbctl lease show`).
    Break(IdArgs),
    /// Take the lease, run a command under it (TBCTL_LEASE_ID set), renew it in the background,
    /// release it at the end. Exits with the command's exit code.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    inventory: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    #[command(flatten)]
    common: LeaseArgs,
    /// Seconds until the cluster expires it unless renewed.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    ttl: u32,
    /// What it is for: rollout, upgrade, manual...
    #[arg(long, default_value = "manual", value_parser = operation)]
    operation: Operation,
    /// Who holds it (shown to others); the token's name is added by the agent.
    #[arg(long)]
    holder: Option<String>,
}

/// Renew takes the lease from the global `--lease-id` (TBCTL_LEASE_ID).
#[derive(Debug, Args)]
pub struct RenewArgs {
    #[command(flatten)]
    common: LeaseArgs,
    /// Seconds from now until the cluster expires it unless renewed again.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    ttl: u32,
}

/// Release and break take the lease from the global `--lease-id` (TBCTL_LEASE_ID).
#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    common: LeaseArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    common: LeaseArgs,
    /// Seconds until the cluster expires it unless renewed; tbctl renews it every third of that
    /// while the command runs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(3..=86_400))]
    ttl: u32,
    /// What it is for: rollout, upgrade, manual...
    #[arg(long, default_value = "manual", value_parser = operation)]
    operation: Operation,
    /// Who holds it (shown to others); the token's name is added by the agent.
    #[arg(long)]
    holder: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// rollout, upgrade or manual: stop, restart, backup and recover leases are the agents' own.
fn operation(text: &str) -> Result<Operation, NotExternalOperation> {
    external_operations()
        .find(|op| op.as_str() == text)
        .ok_or(NotExternalOperation)
}

fn external_operations() -> impl Iterator<Item = Operation> + Clone {
    Operation::ALL.into_iter().filter(|op| op.external())
}

/// A `--operation` that is not one an operator may hold a lease for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("one of {}", external_operations().map(|op| op.as_str()).collect::<Vec<_>>().join(", "))]
struct NotExternalOperation;

pub async fn run(
    client: &AgentClient,
    command: &LeaseCommand,
    lease_id: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let named = || {
        lease_id
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("name the lease with --lease-id (or TBCTL_LEASE_ID)"))
    };
    match command {
        LeaseCommand::Show(args) => show(client, args).await,
        LeaseCommand::Init(args) => {
            let done: Initialized = post(client, args, Endpoint::LeaseInit, &()).await?;
            print(args, &done, &done.detail)
        }
        LeaseCommand::Acquire(args) => {
            let request = AcquireRequest {
                ttl_s: args.ttl,
                operation: Some(args.operation),
                holder: args.holder.clone(),
                ..AcquireRequest::default()
            };
            let view: LeaseView =
                post(client, &args.common, Endpoint::LeaseAcquire, &request).await?;
            print(&args.common, &view, &view.lease_id)
        }
        LeaseCommand::Renew(args) => {
            let request = RenewRequest {
                lease_id: named()?,
                ttl_s: args.ttl,
            };
            let view: LeaseView =
                post(client, &args.common, Endpoint::LeaseRenew, &request).await?;
            print(&args.common, &view, &describe(&view))
        }
        LeaseCommand::Release(args) => void(client, args, named()?, Endpoint::LeaseRelease).await,
        LeaseCommand::Break(args) => void(client, args, named()?, Endpoint::LeaseBreak).await,
        LeaseCommand::Run(args) => run_under_lease(client, args).await,
    }
}

fn print<T: serde::Serialize>(_: &LeaseArgs, value: &T, text: &str) -> anyhow::Result<ExitCode> {
    if super::output::json() {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn describe(view: &LeaseView) -> String {
    format!(
        "lease {} for {} by {} (granted by replica {}), since {} until {} (unix ms)",
        view.lease_id,
        view.operation
            .map_or("an unknown operation", Operation::as_str),
        view.holder,
        view.granted_by_replica,
        view.since_unix_ms,
        view.expires_unix_ms
    )
}

async fn void(
    client: &AgentClient,
    args: &IdArgs,
    lease_id: String,
    endpoint: Endpoint,
) -> anyhow::Result<ExitCode> {
    let request = LeaseIdRequest { lease_id };
    let done: Released = post(client, &args.common, endpoint, &request).await?;
    print(&args.common, &done, &done.detail)
}

async fn show(client: &AgentClient, args: &LeaseArgs) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::load(&args.inventory)?;
    let (_, status): (_, LeaseStatus) = first_answer(&inventory, |url| {
        let url = url.to_string();
        async move { client.lease_status(&url, REQUEST_TIMEOUT_MS).await }
    })
    .await?;
    // The agent that granted the lease knows its holder's name.
    let status = match &status.lease {
        Some(view) => match inventory.replica(view.granted_by_replica) {
            Ok(entry) => client
                .lease_status(&entry.agent_url, REQUEST_TIMEOUT_MS)
                .await
                .unwrap_or(status),
            Err(_) => status,
        },
        None => status,
    };
    let text = match (&status.lease, status.enabled, status.initialized) {
        (_, false, _) => "the maintenance lease is disabled (lease.enabled = false)".into(),
        (_, true, false) => "the lease accounts do not exist yet (tbctl lease init)".into(),
        (None, true, true) => "the maintenance lease is free".into(),
        (Some(view), true, true) => describe(view),
    };
    print(args, &status, &text)
}

/// Renews `lease_id` for `ttl_s` from now (as `tbctl lease renew`), for a command that renews
/// the lease it works under once its own work is done (`restart --then-renew-lease-ttl-s`).
pub async fn renew(
    client: &AgentClient,
    inventory: &Inventory,
    lease_id: &str,
    ttl_s: u32,
) -> anyhow::Result<LeaseView> {
    let request = RenewRequest {
        lease_id: lease_id.to_string(),
        ttl_s,
    };
    post_to(client, inventory, Endpoint::LeaseRenew, &request).await
}

async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
    client: &AgentClient,
    args: &LeaseArgs,
    endpoint: Endpoint,
    body: &B,
) -> anyhow::Result<T> {
    let inventory = Inventory::load(&args.inventory)?;
    post_to(client, &inventory, endpoint, body).await
}

async fn post_to<B: serde::Serialize, T: serde::de::DeserializeOwned>(
    client: &AgentClient,
    inventory: &Inventory,
    endpoint: Endpoint,
    body: &B,
) -> anyhow::Result<T> {
    let body = serde_json::to_value(body)?;
    let (_, value) = first_answer(inventory, |url| {
        let (url, body) = (url.to_string(), body.clone());
        async move {
            client
                .lease_post(&url, endpoint, body, REQUEST_TIMEOUT_MS)
                .await
        }
    })
    .await?;
    Ok(value)
}

/// Asks the agents in inventory order until one answers; a refusal is an answer.
async fn first_answer<T, F, Fut>(inventory: &Inventory, mut ask: F) -> anyhow::Result<(String, T)>
where
    F: FnMut(&str) -> Fut,
    Fut: std::future::Future<Output = Result<T, AgentError>>,
{
    let mut unreachable = Vec::new();
    for entry in &inventory.replicas {
        match ask(&entry.agent_url).await {
            Ok(value) => return Ok((entry.agent_url.clone(), value)),
            Err(error @ (AgentError::Unreachable(_) | AgentError::Timeout(_))) => {
                unreachable.push(format!("{}: {error}", entry.agent_url));
            }
            Err(AgentError::Refused { code, message }) => {
                return Err(exit::refusal(&code, format!("refused ({code}): {message}")));
            }
            Err(error) => anyhow::bail!("{}: {error}", entry.agent_url),
        }
    }
    Err(exit::Unreachable(format!("no agent answered: {}", unreachable.join("; "))).into())
}

/// `tbctl lease run`: the lease around a command.
async fn run_under_lease(client: &AgentClient, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let request = AcquireRequest {
        ttl_s: args.ttl,
        operation: Some(args.operation),
        holder: args.holder.clone(),
        ..AcquireRequest::default()
    };
    let view: LeaseView = post(client, &args.common, Endpoint::LeaseAcquire, &request).await?;
    eprintln!("tbctl: took {}", describe(&view));
    let mut child = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("TBCTL_LEASE_ID", &view.lease_id)
        .kill_on_drop(true)
        .spawn();
    let outcome = match &mut child {
        Ok(child) => supervise(client, args, &view.lease_id, child).await,
        Err(error) => Err(anyhow::anyhow!("cannot run {:?}: {error}", args.command[0])),
    };
    let release = LeaseIdRequest {
        lease_id: view.lease_id.clone(),
    };
    match post::<_, Released>(client, &args.common, Endpoint::LeaseRelease, &release).await {
        Ok(done) => eprintln!("tbctl: {}", done.detail),
        Err(error) => eprintln!(
            "tbctl: releasing lease {}: {error:#}; it expires at its ttl",
            view.lease_id
        ),
    }
    outcome
}

/// Waits for the command, renewing the lease every third of its ttl. A lost lease stops it.
async fn supervise(
    client: &AgentClient,
    args: &RunArgs,
    lease_id: &str,
    child: &mut tokio::process::Child,
) -> anyhow::Result<ExitCode> {
    let period = Duration::from_secs(args.ttl.into()) / 3;
    let renew = RenewRequest {
        lease_id: lease_id.to_string(),
        ttl_s: args.ttl,
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                return Ok(ExitCode::from(status.code().map_or(1, |code| code as u8)));
            }
            () = tokio::time::sleep(period) => {
                let renewed =
                    post::<_, LeaseView>(client, &args.common, Endpoint::LeaseRenew, &renew).await;
                match renewed {
                    Ok(_) => {}
                    Err(error) if error.to_string().contains("lease_lost") => {
                        eprintln!("tbctl: the lease was lost ({error:#}); stopping the command");
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        return Ok(exit::refused());
                    }
                    // Unavailable for now: the lease holds until its ttl; try again next period.
                    Err(error) => eprintln!("tbctl: renewing lease {lease_id}: {error:#}"),
                }
            }
        }
    }
}
