//! `tb-agent`: the host agent beside each TigerBeetle replica.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tb_agent::config::{Config, LogFormat};
use tb_agent::replica::RunMode;
use tb_agent::state::AgentState;
use tb_agent::{auth, binary, http, probe, statsd};

mod replica_start;

/// How long the replica gets to stop when the agent shuts down (on top of its stop timeout).
const SHUTDOWN_REPLICA_MARGIN: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "tb-agent",
    version,
    about = "Host agent for a TigerBeetle replica"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the agent's configuration comes from: a configuration file, or the inventory with
/// this host's name and its settings file (`tb_proto::host_config`), so that nothing renders
/// the inventory's rules into a file first.
#[derive(Args)]
struct Source {
    /// The configuration file (examples/tb-agent.toml); without it, TB_AGENT_CONFIG's. A set
    /// TB_AGENT_CONFIG beside --inventory is an error, not a silent pick of one of them.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The inventory (inventories/<env>.json) instead of a configuration file; with --host and
    /// --settings.
    #[arg(long, conflicts_with = "config", requires_all = ["host", "settings"])]
    inventory: Option<PathBuf>,
    /// This host's name in the inventory.
    #[arg(long, requires = "inventory")]
    host: Option<String>,
    /// This host's settings (TOML: run, audit_log, log, health, control, backup).
    #[arg(long, requires = "inventory")]
    settings: Option<PathBuf>,
}

/// Why the flags and TB_AGENT_CONFIG name no one configuration.
#[derive(Debug, thiserror::Error)]
enum SourceError {
    /// TB_AGENT_CONFIG's path.
    #[error(
        "TB_AGENT_CONFIG is set ({}) and --inventory is given: the configuration comes from one \
         of them; unset TB_AGENT_CONFIG (the unit's Environment=, the shell) or drop \
         --inventory, --host and --settings",
        .0.display()
    )]
    Both(PathBuf),
    #[error(
        "give --config FILE (or set TB_AGENT_CONFIG), or --inventory FILE --host NAME \
         --settings FILE"
    )]
    Neither,
}

/// Where the configuration is read from, once the flags and TB_AGENT_CONFIG are reconciled.
enum Origin<'a> {
    File(PathBuf),
    Inventory(&'a PathBuf, &'a str, &'a PathBuf),
}

impl Source {
    /// The origin from the flags and `env_config` (TB_AGENT_CONFIG's value): both forms at once
    /// is an error naming the variable (clap's own error named only --config, which the operator
    /// never typed), as is neither.
    fn origin(&self, env_config: Option<std::ffi::OsString>) -> Result<Origin<'_>, SourceError> {
        // Empty is unset, as for a unit's `Environment=TB_AGENT_CONFIG=`.
        let env_config = env_config
            .filter(|value| !value.is_empty())
            .map(PathBuf::from);
        match (
            &self.config,
            env_config,
            &self.inventory,
            &self.host,
            &self.settings,
        ) {
            (None, Some(env_config), Some(_), ..) => Err(SourceError::Both(env_config)),
            (_, _, Some(inventory), Some(host), Some(settings)) => {
                Ok(Origin::Inventory(inventory, host, settings))
            }
            (Some(config), ..) => Ok(Origin::File(config.clone())),
            (None, Some(env_config), ..) => Ok(Origin::File(env_config)),
            _ => Err(SourceError::Neither),
        }
    }

    /// The configuration, checked; the secret files it names are not read.
    fn load(&self) -> Result<Config, tb_agent::config::ConfigError> {
        let origin = self
            .origin(std::env::var_os("TB_AGENT_CONFIG"))
            .map_err(|why| tb_agent::config::ConfigError {
                field: "source".to_string(),
                reason: why.to_string(),
            })?;
        match origin {
            Origin::Inventory(inventory, host, settings) => {
                tb_proto::host_config::load(inventory, host, settings)
            }
            Origin::File(config) => Config::load(&config),
        }
    }

    /// What the configuration was read from, for messages.
    fn describe(&self) -> String {
        match self.origin(std::env::var_os("TB_AGENT_CONFIG")) {
            Ok(Origin::Inventory(inventory, host, _)) => {
                format!("{} (host {host})", inventory.display())
            }
            Ok(Origin::File(config)) => config.display().to_string(),
            Err(_) => "(none)".to_string(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Serve {
        #[command(flatten)]
        source: Source,
    },
    /// Validate a configuration (file, or inventory with host and settings) and exit.
    CheckConfig {
        #[command(flatten)]
        source: Source,
        /// Check the file alone, not the secret files it names: for configs generated on a
        /// build host (Nix, Ansible's renders) before the secrets are deployed. `serve` always
        /// checks them.
        #[arg(long)]
        without_secret_files: bool,
        /// Print the config as the agent reads it, every default filled in, as JSON (token
        /// hashes and file paths only: the config holds no secret). Tests compare the configs
        /// the NixOS module and the Ansible role generate with it.
        #[arg(long)]
        print_effective: bool,
        /// Refuse a config whose maintenance lease (on/off, ledger, id prefix) differs from the
        /// running agent's, given as its configuration file (TOML) or the inventory it runs
        /// from (JSON): a rollout changes one agent at a time, and agents on two lease pools
        /// could each grant a lease at once. A missing file passes (a new host).
        #[arg(long)]
        same_lease_as: Option<PathBuf>,
    },
    /// Record whether the nftables table inet tigerbeetle drops this agent's replica and agent
    /// ports, in the config's health.firewall_record (JSON, 0644), for the agent's `firewall`
    /// check. Runs as root from a timer: reading nftables needs CAP_NET_ADMIN.
    FirewallRecord {
        #[command(flatten)]
        source: Source,
    },
    /// Read a token secret from standard input and print its SHA-256 for the config file.
    HashToken,
    /// Print a new random token secret.
    GenerateToken,
    /// The replica unit's main process: refuse without the data file (78) or with another
    /// user's (77), else exec `tigerbeetle start` with the inventory's flags (replica_start.rs).
    ReplicaStart(replica_start::ReplicaStart),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A unit's wrong command line exits 64, which the unit does not restart.
        Err(error) if replica_start::is_invoked() && error.use_stderr() => {
            let _ = error.print();
            return replica_start::usage_status();
        }
        Err(error) => error.exit(),
    };
    match cli.command {
        Command::ReplicaStart(args) => replica_start::run(&args),
        Command::Serve { source } => match load(&source) {
            Ok(config) => serve(config),
            Err(error) => {
                eprintln!("tb-agent: invalid config {}: {error}", source.describe());
                ExitCode::from(2)
            }
        },
        Command::CheckConfig {
            source,
            without_secret_files,
            print_effective,
            same_lease_as,
        } => check_config(
            &source,
            without_secret_files,
            print_effective,
            same_lease_as.as_deref(),
        ),
        Command::FirewallRecord { source } => firewall_record(&source),
        Command::HashToken => {
            let mut secret = String::new();
            let limit = 4096;
            if std::io::stdin()
                .take(limit)
                .read_to_string(&mut secret)
                .is_err()
            {
                eprintln!("tb-agent: pass the secret on standard input");
                return ExitCode::from(2);
            }
            // The same reading of a secret as tbctl's token files and the peer token file.
            match tb_proto::auth::token_sha256(&secret) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("tb-agent: no usable secret on standard input: {error}");
                    ExitCode::from(2)
                }
            }
        }
        Command::GenerateToken => {
            println!("{}", auth::generate_secret());
            ExitCode::SUCCESS
        }
    }
}

fn check_config(
    source: &Source,
    without_secret_files: bool,
    print_effective: bool,
    same_lease_as: Option<&std::path::Path>,
) -> ExitCode {
    let loaded = if without_secret_files {
        source.load()
    } else {
        load(source)
    };
    let effective = match loaded {
        Ok(effective) => effective,
        Err(error) => {
            eprintln!("tb-agent: invalid config {}: {error}", source.describe());
            return ExitCode::from(2);
        }
    };
    if let Some(running) = same_lease_as {
        if let Err(why) = same_lease(&effective, running) {
            eprintln!("tb-agent: refused config {}: {why}", source.describe());
            return ExitCode::from(2);
        }
    }
    if print_effective {
        let json = serde_json::to_string_pretty(&effective).expect("a config serializes");
        println!("{json}");
    } else {
        println!("{}: ok", source.describe());
    }
    ExitCode::SUCCESS
}

/// The new config's lease pool is the running agent's (`running`, its config file).
fn same_lease(new: &Config, running: &std::path::Path) -> anyhow::Result<()> {
    if !running.exists() {
        return Ok(());
    }
    // The running agent's configuration file or the inventory it runs from (either form).
    let running_lease = match tb_proto::host_config::running_lease(running) {
        Ok(lease) => lease,
        // The running agent's file is for its own (older) binary: its pool cannot be read, so
        // the change is not judged here; the lease settings are then the defaults on both
        // sides unless the inventory sets them.
        Err(error) => {
            eprintln!(
                "tb-agent: warning: {} cannot be read to compare the lease settings: {error}",
                running.display()
            );
            return Ok(());
        }
    };
    new.lease.same_pool_as(&running_lease).map_err(|differences| {
        anyhow::anyhow!(
            "its maintenance lease settings differ from the running agent's ({}): {differences}. \
             A rollout changes one agent at a time, and agents on two lease pools could each \
             grant a lease at once: change them on every agent together, with site.yml while \
             no lease is held, then run tbctl lease init (docs/safety.md)",
            running.display()
        )
    })
}

fn firewall_record(source: &Source) -> ExitCode {
    let config = match source.load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tb-agent: invalid config {}: {error}", source.describe());
            return ExitCode::from(2);
        }
    };
    let Some(output) = config.health.firewall_record.as_deref() else {
        eprintln!(
            "tb-agent: {}: health.firewall_record is not set",
            source.describe()
        );
        return ExitCode::from(2);
    };
    let record = tb_agent::firewall::record_now(&config);
    if let Err(error) = tb_agent::firewall::write_record(output, &record) {
        eprintln!("tb-agent: cannot write {}: {error}", output.display());
        return ExitCode::FAILURE;
    }
    println!(
        "{}",
        serde_json::to_string(&record).expect("a record serializes")
    );
    ExitCode::SUCCESS
}

/// The configuration, checked as a whole: the file itself, then the secret files it names
/// (which must be open to their owner only).
/// The configuration with the secret files it names checked, as `serve` needs it.
fn load(source: &Source) -> Result<Config, tb_agent::config::ConfigError> {
    let config = source.load()?;
    config.check_secret_files()?;
    Ok(config)
}

fn init_logging(format: &LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TB_AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(config: Config) -> ExitCode {
    init_logging(&config.log.format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tb-agent: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("tb-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let statsd_address = std::net::SocketAddr::from(([127, 0, 0, 1], config.replica.statsd_port));
    let statsd_socket = tokio::net::UdpSocket::bind(statsd_address)
        .await
        .map_err(|error| {
            anyhow::anyhow!("replica.statsd_port: cannot bind {statsd_address}: {error}")
        })?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "server.listen: cannot bind {}: {error}",
                config.server.listen
            )
        })?;
    let state = AgentState::new(config)?;
    let config = Arc::clone(&state.config);
    tracing::info!(
        listen = %config.server.listen,
        replica = config.replica.index,
        mode = state.replica.mode().as_str(),
        "tb-agent {} starting",
        tb_agent::AGENT_VERSION
    );

    let (shutdown_sender, shutdown) = tokio::sync::watch::channel(false);
    let mut background = spawn_background(&state, statsd_socket);
    let handover_dir = handover_dir(state.replica.mode());
    if let Some(dir) = &handover_dir {
        state.replica.take_over(dir).await;
    }
    // Before the replica starts: clean up after a backup the previous run did not finish.
    tb_agent::backup::recover_after_crash(&state).await;
    background.spawn(tb_agent::ops::backup_schedule::run(
        Arc::clone(&state),
        shutdown.clone(),
    ));
    let server = http::prepare(listener, Arc::clone(&state))?;
    let replica_task = tokio::spawn(Arc::clone(&state.replica).run(shutdown.clone()));
    let server_task = tokio::spawn(server.run(shutdown));

    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    shutdown_sender.send_replace(true);
    let replica_grace =
        Duration::from_millis(config.control.stop_timeout_ms) + SHUTDOWN_REPLICA_MARGIN;
    if tokio::time::timeout(replica_grace, replica_task)
        .await
        .is_err()
    {
        tracing::error!("the replica did not stop in time");
    }
    let served = server_task.await;
    // After the last request: none may replace the process the evidence describes.
    if let Some(dir) = &handover_dir
        && let Err(error) = state.replica.hand_over(dir)
    {
        tracing::warn!(%error, "cannot hand the replica's readiness evidence to the next run");
    }
    match served {
        Ok(result) => result?,
        Err(error) => tracing::error!(%error, "server task failed"),
    }
    background.shutdown().await;
    Ok(())
}

/// The agent's tasks besides the replica, the API and the backup schedule, for as long as it
/// runs.
fn spawn_background(
    state: &Arc<AgentState>,
    statsd_socket: tokio::net::UdpSocket,
) -> tokio::task::JoinSet<()> {
    let config = &state.config;
    let mut background = tokio::task::JoinSet::new();
    background.spawn(statsd::receive(statsd_socket, Arc::clone(&state.statsd)));
    background.spawn(Arc::clone(&state.host).run(
        config.replica.data_file.clone(),
        Duration::from_millis(config.health.host_refresh_interval_ms),
    ));
    background.spawn(probe::run(
        Arc::clone(&state.prober),
        Arc::clone(&state.cluster_client),
        Duration::from_millis(config.health.probe_interval_ms),
    ));
    background.spawn(binary::watch(
        Arc::clone(state),
        state.replica.binary().to_path_buf(),
    ));
    background.spawn(Arc::clone(&state.replica).follow_commits());
    background.spawn(Arc::clone(&state.replica).follow_cluster_checkpoint(state.peers.clone()));
    background
}

/// systemd mode: the agent's runtime directory (`RuntimeDirectory=`, the first if several), where
/// one run hands its evidence about the running replica to the next (replica/handover.rs). In
/// process mode the replica stops with the agent: there is nothing to hand over.
fn handover_dir(mode: RunMode) -> Option<PathBuf> {
    let directories = std::env::var_os("RUNTIME_DIRECTORY")?;
    let first = std::env::split_paths(&directories).next()?;
    (mode == RunMode::Systemd && first.is_absolute()).then_some(first)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(args: &[&str]) -> Source {
        let cli = Cli::try_parse_from([&["tb-agent", "check-config"][..], args].concat()).unwrap();
        match cli.command {
            Command::CheckConfig { source, .. } => source,
            _ => unreachable!(),
        }
    }

    /// TB_AGENT_CONFIG and --inventory together are refused naming the variable, never one of
    /// them picked silently; each alone, and --config over the variable, are taken.
    #[test]
    fn the_config_variable_beside_the_inventory_is_a_clear_error() {
        let inventory = [
            "--inventory",
            "i.json",
            "--host",
            "tb-0",
            "--settings",
            "s.toml",
        ];
        let set = || Some(std::ffi::OsString::from("/etc/tb-agent/tb-agent.toml"));
        let refused = source(&inventory).origin(set()).err().unwrap().to_string();
        assert!(
            refused.starts_with(
                "TB_AGENT_CONFIG is set (/etc/tb-agent/tb-agent.toml) and --inventory"
            ),
            "{refused}"
        );
        assert!(matches!(
            source(&inventory).origin(None),
            Ok(Origin::Inventory(..))
        ));
        let (bare, flag) = (source(&[]), source(&["--config", "c.toml"]));
        let from_env = bare.origin(set());
        assert!(matches!(from_env, Ok(Origin::File(path)) if path.ends_with("tb-agent.toml")));
        let from_flag = flag.origin(set());
        assert!(matches!(from_flag, Ok(Origin::File(path)) if path.ends_with("c.toml")));
        assert!(source(&[]).origin(None).is_err());
        assert!(source(&[]).origin(Some("".into())).is_err());
        assert!(matches!(
            source(&inventory).origin(Some("".into())),
            Ok(Origin::Inventory(..))
        ));
        // Both flags at once stay clap's usage error.
        let both = [
            "--config",
            "c.toml",
            "--inventory",
            "i.json",
            "--host",
            "h",
            "--settings",
            "s",
        ];
        assert!(Cli::try_parse_from([&["tb-agent", "serve"][..], &both[..]].concat()).is_err());
    }
}
