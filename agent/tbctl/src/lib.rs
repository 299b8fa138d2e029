//! tbctl: the orchestrator side. It reads an inventory, calls every replica's agent over HTTP,
//! and runs a local three-replica cluster for development (`tbctl local up`).
//!
//! Every network call has a timeout and no call is retried on its own: a control action that
//! timed out may still have happened, so repeating it is the operator's decision.

mod backup;
mod bootstrap_check;
mod client;
mod client_log;
mod control;
mod drill;
mod exit;
mod generated;
#[cfg(test)]
mod help_snapshots;
mod inventory_check;
mod jobs;
mod lease;
pub mod local;
mod local_files;
pub mod output;
mod process;
mod progress;
mod recover;
mod replica_arg;
mod restore;
mod rollout_order;
mod scratch;
mod status;
mod upgrade_check;
mod upgrade_wait;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use client::{AgentClient, Token};
use replica_arg::ReplicaArg;
use tb_proto::inventory::Inventory;

/// The help section of the options every command shares to reach the agents, in one order.
const CONNECTION: &str = "Connection options";
/// The help section of the maintenance lease options every command shares.
const LEASE: &str = "Lease options";
/// The help section of `--json`.
const OUTPUT: &str = "Output options";

/// `--inventory`, on every command that reads one.
pub(crate) const INVENTORY_HELP: &str = "The inventory (inventories/<env>.json, docs/inventory.md) \
     that names every replica, its address and its agent's URL";
/// `--json`, on every command that prints a result.
pub(crate) const JSON_HELP: &str = "Print the result as JSON on stdout instead of text (progress \
     and errors still go to stderr)";

/// The largest timeout any flag accepts: one day. A recover's state sync of a large data file, or
/// a backup of one, can outlast an hour, and the playbooks pass their own (unbounded) settings.
const TIMEOUT_MAX_MS: u64 = 86_400_000;
/// How long `tbctl recover` waits for its job unless told otherwise: one hour.
const RECOVER_TIMEOUT_MS_DEFAULT: u64 = 3_600_000;

#[derive(Debug, Parser)]
#[command(
    name = "tbctl",
    version,
    max_term_width = 100,
    about = "Calls the tb-agent of every TigerBeetle replica in an inventory, and runs local clusters",
    after_help = exit::help_table()
)]
struct Cli {
    /// File holding the agent token's secret. Without it, the secret is read from TBCTL_TOKEN.
    #[arg(
        long,
        global = true,
        env = "TBCTL_TOKEN_FILE",
        value_name = "FILE",
        help_heading = CONNECTION,
        display_order = 1
    )]
    token_file: Option<PathBuf>,
    /// PEM CA certificate(s) trusted for https:// agent URLs.
    #[arg(
        long,
        global = true,
        env = "TBCTL_CA_FILE",
        value_name = "FILE",
        help_heading = CONNECTION,
        display_order = 2
    )]
    ca_file: Option<PathBuf>,
    /// PEM client certificate presented to agents that require one (mutual TLS: the agent's
    /// server.tls.client_ca_file). Needs --client-key.
    #[arg(
        long,
        global = true,
        env = "TBCTL_CLIENT_CERT",
        value_name = "FILE",
        help_heading = CONNECTION,
        display_order = 3,
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(
        long,
        global = true,
        env = "TBCTL_CLIENT_KEY",
        value_name = "FILE",
        help_heading = CONNECTION,
        display_order = 4,
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// Act under this maintenance lease (held by the caller: `tbctl lease acquire`, or set by
    /// `tbctl lease run`) instead of the agent taking one of its own.
    #[arg(
        long,
        global = true,
        env = "TBCTL_LEASE_ID",
        value_name = "ID",
        help_heading = LEASE,
        display_order = 5
    )]
    lease_id: Option<String>,
    /// When the maintenance lease cannot be had (no quorum, an upgrade from an older release):
    /// proceed under the quorum guard alone. Takes the cluster id, typed out; audited.
    #[arg(
        long,
        global = true,
        value_name = "CLUSTER_ID",
        help_heading = LEASE,
        display_order = 6
    )]
    without_lease: Option<String>,
    #[arg(long, global = true, help_heading = OUTPUT, display_order = 7, help = JSON_HELP)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show every replica: readiness, replica status, sync, free disk, version, probe latency.
    ///
    /// The last column is the outcome of the replica's last scheduled backup (`[backup]
    /// schedule`; `-` without one, `not yet` before its first tick); `--json` has the whole
    /// `backup_schedule` object of each agent's status.
    Status(StatusArgs),
    /// Poll until every replica (or each --replica) is ready, or fail (exit 1) after
    /// --timeout-ms, naming each replica that is not and why.
    WaitReady(WaitReadyArgs),
    /// Start one replica (through its agent) and wait until it runs in normal status (or, while
    /// too few replicas run for a quorum, until it runs and reports its status). Exits 1 when
    /// the wait outlasts --timeout-ms (the replica may still get there: `tbctl status`).
    Start(StartArgs),
    /// Stop one replica; the agent refuses when that would cost the cluster its quorum.
    Stop(ControlArgs),
    /// Restart one replica and wait until it is ready again.
    Restart(RestartArgs),
    /// Back up one replica (stopped briefly for the copy) and wait for the backup to finish.
    /// Without --replica: only when every replica is ready, the replica whose newest backup is
    /// oldest.
    Backup(BackupArgs),
    /// List the backups of every replica.
    Backups(BackupsArgs),
    /// Rebuild a replica whose data file is lost (`tigerbeetle recover`), and wait until it has
    /// caught up with the cluster.
    Recover(RecoverArgs),
    /// Put one verified backup in place of a stopped replica's data file (disaster recovery:
    /// docs/backups.md). Refused while the replica or, without --disaster-recovery, a peer runs.
    /// Does not start the replica.
    Restore(restore::RestoreArgs),
    /// Prove the backups restore: write known records, back up every replica, restore the
    /// backups into a scratch cluster on this host, and compare. Never touches the live
    /// cluster's files or ports; it does leave two accounts and their transfers in it.
    RestoreDrill(drill::DrillArgs),
    /// A local cluster on 127.0.0.1, one agent per replica, for development.
    #[command(subcommand)]
    Local(LocalCommand),
    /// Inventory files (docs/inventory.md).
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// Whether formatting the cluster is safe (ansible/playbooks/bootstrap.yml asks before it formats):
    /// exits 0 when no replica listens, answers, runs or has a data file; 3 when one does; 4
    /// when an address or an agent could not be observed.
    BootstrapCheck(bootstrap_check::CheckArgs),
    /// The cluster-wide maintenance lease that every operation stopping a replica holds.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// TigerBeetle upgrades (docs/ansible.md).
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
    /// Rollouts (rollout.yml).
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Print tbctl's shell completion script on stdout (the packages install it).
    #[command(hide = true)]
    Completions(generated::CompletionsArgs),
    /// Print tbctl's man page (roff) on stdout, or write every command's page (the packages
    /// install them).
    #[command(hide = true)]
    Man(generated::ManArgs),
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Print the inventory's host names in the order a rollout restarts them: inventory order
    /// with the current primary last (one view change per rollout).
    Order(rollout_order::RolloutOrderArgs),
}

#[derive(Debug, Subcommand)]
enum UpgradeCommand {
    /// Check an upgrade before anything changes: the target binary's SHA-256 (before it is run
    /// at all), its release (not on the skip list), the oldest client it accepts (not newer
    /// than the agents' client), and every replica's running release (the target bundles it).
    /// Exits 0 when the upgrade can proceed, 3 when refused, 4 when an agent is unreachable.
    Check(upgrade_check::UpgradeCheckArgs),
    /// Wait until every replica (or each --replica) has the target release's binary and its
    /// process runs that release (the cluster re-executes it after the swap, when it is ready
    /// to). Exits 0 then, 1 when --timeout-ms runs out, naming each replica's binary and
    /// running release.
    Wait(upgrade_wait::UpgradeWaitArgs),
}

#[derive(Debug, Subcommand)]
enum InventoryCommand {
    /// Check FILE against every rule of docs/inventory.md. Exits 0 and prints a summary (or,
    /// with --json, the resolved cluster) when it is valid; exits 1 with the first error on
    /// stderr when not.
    Check(inventory_check::CheckArgs),
    /// Print what host NAME needs, computed from the inventory as the agent and tbctl compute
    /// it: replica index, cluster id, addresses, data file, the replica's `tigerbeetle start`
    /// and `format` arguments, the agent's effective configuration, the firewall's sources. One
    /// JSON document on stdout (docs/inventory.md, "What a host needs"). Exits 2 when the
    /// inventory has no host NAME, 1 when the inventory is invalid.
    Render(inventory_check::RenderArgs),
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    inventory: PathBuf,
    /// Timeout of each request to an agent.
    #[arg(long, default_value_t = 5_000, value_parser = timeout_ms)]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
struct WaitReadyArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    inventory: PathBuf,
    /// Wait for this replica only (its index or inventory host name); repeat for more. Without
    /// it, every replica of the inventory.
    #[arg(long = "replica", value_name = "N|HOST")]
    replicas: Vec<ReplicaArg>,
    /// How long to wait in total.
    #[arg(long, default_value_t = 180_000, value_parser = timeout_ms)]
    timeout_ms: u64,
    #[command(flatten)]
    renew: RenewLeaseArgs,
}

#[derive(Debug, Args)]
struct ControlArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    inventory: PathBuf,
    /// The replica: its index (the inventory's tigerbeetle_replica) or its inventory host name.
    #[arg(long, value_name = "N|HOST")]
    replica: ReplicaArg,
    /// Override the agent's quorum guard. The agent records forced actions in its audit log.
    #[arg(long)]
    force: bool,
    /// How long the command may take. Defaults: 60000 for stop, 120000 for start (its wait
    /// for normal status included), 180000 for restart (the agent answers a restart only once
    /// the replica is ready again).
    #[arg(long, value_parser = timeout_ms)]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
struct RestartArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// Once restarted, wait up to MS until every replica of the inventory is ready (as `tbctl
    /// wait-ready`): a rollout's gate before its next host, in the same command. Exits 1 when one
    /// is not, naming it and why; the JSON then says the restart was done (`response` or `job`)
    /// and `cluster_ready: false`.
    #[arg(long, value_name = "MS", value_parser = timeout_ms)]
    then_wait_ready_ms: Option<u64>,
    #[command(flatten)]
    renew: RenewLeaseArgs,
}

/// The lease renewal a waiting command does once every replica it waited for is ready.
#[derive(Debug, Args)]
struct RenewLeaseArgs {
    /// Once every replica waited for is ready, renew the lease named by --lease-id for SECONDS
    /// from now (as `tbctl lease renew --ttl`): a rollout's renewal before its next host, in the
    /// same command. The JSON says whether it was (`lease_renewed`); a failed renewal is printed
    /// and changes no exit status (the lease is then renewed, or found lost, by its own command
    /// before the next host).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=86_400))]
    then_renew_lease_ttl_s: Option<u32>,
}

impl RenewLeaseArgs {
    fn renewal<'a>(&self, cli: &'a Cli) -> anyhow::Result<Option<control::Renewal<'a>>> {
        match (self.then_renew_lease_ttl_s, cli.lease_id.as_deref()) {
            (None, _) => Ok(None),
            (Some(ttl_s), Some(lease_id)) => Ok(Some(control::Renewal { lease_id, ttl_s })),
            (Some(_), None) => {
                anyhow::bail!("--then-renew-lease-ttl-s needs --lease-id (or TBCTL_LEASE_ID)")
            }
        }
    }
}

#[derive(Debug, Args)]
struct StartArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// Return once the agent has started the process, without waiting for normal status.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Args)]
struct BackupArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    inventory: PathBuf,
    /// Back up this replica (its index or inventory host name; its agent's quorum guard still
    /// decides) instead of choosing one.
    #[arg(long, value_name = "N|HOST")]
    replica: Option<ReplicaArg>,
    /// How long to wait for the backup job to finish.
    #[arg(long, default_value_t = 600_000, value_parser = timeout_ms)]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
struct BackupsArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    inventory: PathBuf,
    /// Timeout of each request to an agent.
    #[arg(long, default_value_t = 10_000, value_parser = timeout_ms)]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
struct RecoverArgs {
    #[arg(long, value_name = "FILE", env = "TBCTL_INVENTORY", help = crate::INVENTORY_HELP)]
    inventory: PathBuf,
    /// The replica: its index (the inventory's tigerbeetle_replica) or its inventory host name.
    #[arg(long, value_name = "N|HOST")]
    replica: ReplicaArg,
    /// How long to wait for the recover job, state sync included.
    #[arg(long, default_value_t = RECOVER_TIMEOUT_MS_DEFAULT, value_parser = timeout_ms)]
    timeout_ms: u64,
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Format (first time only), configure and start a local cluster, then wait until ready.
    Up(local::UpArgs),
    /// Stop the local cluster's agents and replicas. Data files are kept.
    Down(local::DownArgs),
}

/// Why a `--timeout-ms` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidTimeout {
    #[error("`{text}` is not a whole number")]
    NotWholeNumber { text: String },
    #[error("must be between 1 and {TIMEOUT_MAX_MS}")]
    OutOfRange,
}

pub(crate) fn timeout_ms(text: &str) -> Result<u64, InvalidTimeout> {
    let value: u64 = text.parse().map_err(|_| InvalidTimeout::NotWholeNumber {
        text: text.to_string(),
    })?;
    if value == 0 || value > TIMEOUT_MAX_MS {
        return Err(InvalidTimeout::OutOfRange);
    }
    Ok(value)
}

/// The entry point of the `tbctl` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    output::set_json(cli.json);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tbctl: {error:#}");
            exit::code_of(&error)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // reqwest is built without a default crypto provider so that the whole binary uses ring.
    // An error only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    match &cli.command {
        Command::Completions(args) => return generated::completions::<Cli>(args),
        Command::Man(args) => return generated::man_page::<Cli>(args),
        _ => {}
    }
    // `local down` only signals local processes: no runtime needed.
    if let Command::Local(LocalCommand::Down(args)) = &cli.command {
        return local::down(args);
    }
    // Reading one file needs no runtime, no token and no network.
    match &cli.command {
        Command::Inventory(InventoryCommand::Check(args)) => return inventory_check::check(args),
        Command::Inventory(InventoryCommand::Render(args)) => {
            return inventory_check::render(args);
        }
        _ => {}
    }
    // One thread is plenty: tbctl waits on a handful of sockets and child processes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(cli))
}

async fn run_async(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Status(args) => {
            let (client, inventory) = connect(&cli, &args.inventory)?;
            status::status(&client, &inventory, args.timeout_ms).await
        }
        Command::WaitReady(args) => wait_ready_command(&cli, args).await,
        Command::Start(args) => start_command(&cli, args).await,
        Command::Stop(args) => control_command(&cli, control::Action::Stop, args).await,
        Command::Restart(args) => restart_command(&cli, args).await,
        Command::Backup(args) => {
            let (client, inventory) = connect(&cli, &args.inventory)?;
            let replica = match &args.replica {
                Some(replica) => Some(replica.resolve(&inventory)?.index),
                None => None,
            };
            backup::backup(&client, &inventory, replica, args.timeout_ms).await
        }
        Command::Backups(args) => {
            let (client, inventory) = connect(&cli, &args.inventory)?;
            backup::backups(&client, &inventory, args.timeout_ms).await
        }
        Command::Recover(args) => {
            let (client, inventory) = connect(&cli, &args.inventory)?;
            let replica = args.replica.resolve(&inventory)?;
            recover::recover(&client, replica, args.timeout_ms).await
        }
        Command::Restore(args) => {
            let (client, inventory) = connect(&cli, &args.inventory)?;
            restore::restore(&client, &inventory, args).await
        }
        Command::RestoreDrill(args) => {
            let (client, inventory) = connect(&cli, &args.inventory)?;
            drill::restore_drill(&client, &inventory, args).await
        }
        Command::BootstrapCheck(args) => {
            let (client, inventory) = connect(&cli, &args.inventory)?;
            bootstrap_check::check(&client, &inventory, args).await
        }
        Command::Rollout(RolloutCommand::Order(args)) => {
            let client = agent_client(&cli)?;
            rollout_order::order(&client, args).await
        }
        Command::Upgrade(UpgradeCommand::Check(args)) => {
            let client = agent_client(&cli)?;
            upgrade_check::check(&client, args).await
        }
        Command::Upgrade(UpgradeCommand::Wait(args)) => {
            let client = agent_client(&cli)?;
            upgrade_wait::wait(&client, args).await
        }
        Command::Lease(command) => {
            let client = agent_client(&cli)?;
            lease::run(&client, command, cli.lease_id.as_deref()).await
        }
        Command::Local(LocalCommand::Up(args)) => local::up(args).await,
        Command::Local(LocalCommand::Down(_))
        | Command::Inventory(_)
        | Command::Completions(_)
        | Command::Man(_) => {
            unreachable!("handled without a runtime")
        }
    }
}

/// `tbctl wait-ready`: every replica, or each --replica, ready before --timeout-ms.
async fn wait_ready_command(cli: &Cli, args: &WaitReadyArgs) -> anyhow::Result<ExitCode> {
    let renewal = args.renew.renewal(cli)?;
    let (client, inventory) = connect(cli, &args.inventory)?;
    let entries = replica_arg::resolve_all(&args.replicas, &inventory)?;
    let goal = status::Goal::Ready;
    let ready = status::wait_for(&client, &entries, goal, args.timeout_ms, || Ok(())).await?;
    let mut result = serde_json::json!({ "ready": ready });
    if let (true, Some(renewal)) = (ready, renewal) {
        result["lease_renewed"] = control::renew_lease(&client, &inventory, &renewal)
            .await
            .into();
    }
    output::emit(&result)?;
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

impl ControlArgs {
    /// --timeout-ms, or the action's default.
    fn timeout_ms_for(&self, action: control::Action) -> u64 {
        self.timeout_ms
            .unwrap_or(control::default_timeout_ms(action))
    }
}

async fn start_command(cli: &Cli, args: &StartArgs) -> anyhow::Result<ExitCode> {
    let control = &args.control;
    let (client, inventory) = connect(cli, &control.inventory)?;
    let replica = control.replica.resolve(&inventory)?;
    let timeout_ms = control.timeout_ms_for(control::Action::Start);
    let wait = !args.no_wait;
    control::start(
        &client,
        &inventory,
        replica,
        control.force,
        timeout_ms,
        wait,
    )
    .await
}

async fn restart_command(cli: &Cli, args: &RestartArgs) -> anyhow::Result<ExitCode> {
    let control = &args.control;
    let (client, inventory) = connect(cli, &control.inventory)?;
    let replica = control.replica.resolve(&inventory)?;
    let timeout_ms = control.timeout_ms_for(control::Action::Restart);
    let renew = args.renew.renewal(cli)?;
    if renew.is_some() && args.then_wait_ready_ms.is_none() {
        anyhow::bail!(
            "--then-renew-lease-ttl-s needs --then-wait-ready-ms (it renews once every replica is ready)"
        );
    }
    let then_wait = args.then_wait_ready_ms.map(|wait_ms| control::ThenWait {
        inventory: &inventory,
        wait_ms,
        renew,
    });
    control::restart(&client, replica, control.force, timeout_ms, then_wait).await
}

async fn control_command(
    cli: &Cli,
    action: control::Action,
    args: &ControlArgs,
) -> anyhow::Result<ExitCode> {
    let (client, inventory) = connect(cli, &args.inventory)?;
    let replica = args.replica.resolve(&inventory)?;
    let timeout_ms = args.timeout_ms_for(action);
    control::run(&client, replica, action, args.force, timeout_ms).await
}

/// Loads the token and the inventory, and builds the client: everything a remote command needs,
/// checked before the first request so that a bad flag fails fast with one clear message.
fn connect(cli: &Cli, inventory: &Path) -> anyhow::Result<(AgentClient, Inventory)> {
    let client = agent_client(cli)?;
    let inventory = Inventory::load(inventory)?;
    Ok((client, inventory))
}

fn agent_client(cli: &Cli) -> anyhow::Result<AgentClient> {
    let token = match &cli.token_file {
        Some(path) => Token::from_file(path)?,
        None => Token::from_env("TBCTL_TOKEN")?,
    };
    let tls = client::Tls {
        ca_file: cli.ca_file.as_deref(),
        client_cert: cli.client_cert.as_deref().zip(cli.client_key.as_deref()),
    };
    let lease = tb_proto::api::LeaseFields {
        lease_id: cli.lease_id.clone(),
        without_lease: cli.without_lease.clone(),
    };
    Ok(AgentClient::new(token, tls)?.with_lease(lease))
}

#[cfg(test)]
mod timeouts {
    /// A day is the bound: a recover's state sync of a large data file can outlast an hour, and
    /// the playbooks pass the operator's own timeout through (tb_recover_timeout_s).
    #[test]
    fn a_timeout_is_bounded_by_a_day() {
        assert_eq!(super::timeout_ms("7200000"), Ok(7_200_000));
        assert_eq!(super::timeout_ms("86400000"), Ok(86_400_000));
        assert!(super::timeout_ms("86400001").is_err());
        assert!(super::timeout_ms("0").is_err());
        assert!(super::timeout_ms("1h").is_err());
    }
}
