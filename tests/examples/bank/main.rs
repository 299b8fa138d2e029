//! A bank workload and its checker, for the fault campaign (tests/chaos) and by hand:
//!
//! ```sh
//! cargo run --release -p tb-tests --example bank -- run --cluster-id 0 \
//!     --addresses 127.0.0.1:3000,127.0.0.1:3001,127.0.0.1:3002 --seconds 60 --seed 1 --log bank.jsonl
//! cargo run --release -p tb-tests --example bank -- check --cluster-id 0 \
//!     --addresses 127.0.0.1:3000,127.0.0.1:3001,127.0.0.1:3002 --log bank.jsonl
//! ```
//!
//! `run` opens `--accounts` accounts (default 300) and moves money among them from `--writers`
//! concurrent writers (default 4) for `--seconds`, logging every request before it is sent and
//! every answer (events.rs); it prints what the client saw as JSON. `check` waits until every
//! pending transfer's timeout has passed since the log's last request, then compares the cluster
//! with the log (check.rs) and prints the report as JSON; it exits 1 when an invariant fails.

mod check;
mod events;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

const ACCOUNTS_MAX: usize = 100_000;
const WRITERS_MAX: usize = 64;
const SECONDS_MAX: u64 = 24 * 3600;

#[derive(Parser)]
#[command(about = "A bank workload and its checker (tests/chaos)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Move money among the accounts for --seconds, logging every request and answer.
    Run(RunArgs),
    /// Compare the cluster with the log once every pending transfer has expired.
    Check(Cluster),
}

/// The cluster and the log both commands need (no defaults: a wrong cluster id would make the
/// client wait on a cluster that never answers).
#[derive(Args)]
struct Cluster {
    #[arg(long)]
    cluster_id: u128,
    /// HOST:PORT,... of every replica.
    #[arg(long)]
    addresses: String,
    /// The event log (JSON lines): written by `run`, read by `check`.
    #[arg(long)]
    log: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    cluster: Cluster,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=SECONDS_MAX))]
    seconds: u64,
    #[arg(long)]
    seed: u64,
    #[arg(long, default_value_t = 300)]
    accounts: usize,
    #[arg(long, default_value_t = 4)]
    writers: usize,
    #[arg(long, default_value_t = 30)]
    request_timeout_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => run(&runtime, args),
        Command::Check(cluster) => check(&runtime, cluster),
    }
}

fn run(runtime: &tokio::runtime::Runtime, args: RunArgs) -> anyhow::Result<()> {
    if !(2..=ACCOUNTS_MAX).contains(&args.accounts) || !(1..=WRITERS_MAX).contains(&args.writers) {
        bail!("--accounts must be 2..={ACCOUNTS_MAX}, --writers 1..={WRITERS_MAX}");
    }
    let log = events::Writer::create(&args.cluster.log)?;
    let settings = workload::Settings {
        cluster_id: args.cluster.cluster_id,
        addresses: args.cluster.addresses,
        accounts: args.accounts,
        writers: args.writers,
        seconds: args.seconds,
        seed: args.seed,
        request_timeout: Duration::from_secs(args.request_timeout_seconds),
    };
    let summary = runtime.block_on(workload::run(settings, log))?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn check(runtime: &tokio::runtime::Runtime, cluster: Cluster) -> anyhow::Result<()> {
    let events = events::read(&cluster.log)?;
    let model = check::model(&events)?;
    let last_ms = events
        .iter()
        .filter_map(|event| match event {
            events::Event::Request { unix_ms, .. } => Some(*unix_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    // Every pending transfer has expired (or been resolved) once its longest timeout passed
    // since the last request, plus a second for the cluster to run its expiry.
    let settled_ms = last_ms + u64::from(workload::PENDING_TIMEOUT_S_MAX) * 1000 + 1000;
    let wait_ms = settled_ms.saturating_sub(workload::unix_ms());
    std::thread::sleep(Duration::from_millis(wait_ms));
    let report = runtime.block_on(async {
        let client =
            tigerbeetle_unofficial::Client::new(cluster.cluster_id, cluster.addresses.as_str())
                .map_err(|error| anyhow::anyhow!("creating the client: {error:?}"))?;
        check::check(&model, &client).await
    })?;
    println!("{}", serde_json::to_string(&report)?);
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}
