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

use anyhow::{Context, bail};

const USAGE: &str = "usage: bank run|check --cluster-id ID --addresses HOST:PORT,... --log FILE \
     [run: --seconds N --seed N --accounts N (300) --writers N (4) --request-timeout-seconds N (30)]";
const ACCOUNTS_MAX: usize = 100_000;
const WRITERS_MAX: usize = 64;

struct Args {
    command: String,
    cluster_id: u128,
    addresses: String,
    log: PathBuf,
    seconds: u64,
    seed: u64,
    accounts: usize,
    writers: usize,
    request_timeout_s: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = std::env::args().skip(1);
    let command = args.next().context(USAGE)?;
    if !matches!(command.as_str(), "run" | "check") {
        bail!("unknown command {command}; {USAGE}");
    }
    let mut parsed = Args {
        command,
        cluster_id: 0,
        addresses: String::new(),
        log: PathBuf::new(),
        seconds: 0,
        seed: 0,
        accounts: 300,
        writers: 4,
        request_timeout_s: 30,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value; {USAGE}"))?;
        let number = || {
            value
                .parse::<u64>()
                .with_context(|| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--cluster-id" => parsed.cluster_id = value.parse().context("--cluster-id")?,
            "--addresses" => parsed.addresses = value,
            "--log" => parsed.log = PathBuf::from(value),
            "--seconds" => parsed.seconds = number()?,
            "--seed" => parsed.seed = number()?,
            "--accounts" => parsed.accounts = number()? as usize,
            "--writers" => parsed.writers = number()? as usize,
            "--request-timeout-seconds" => parsed.request_timeout_s = number()?,
            other => bail!("unknown argument {other}; {USAGE}"),
        }
    }
    if parsed.addresses.is_empty() || parsed.log.as_os_str().is_empty() {
        bail!("--addresses and --log are required; {USAGE}");
    }
    if !(2..=ACCOUNTS_MAX).contains(&parsed.accounts)
        || !(1..=WRITERS_MAX).contains(&parsed.writers)
    {
        bail!("--accounts must be 2..={ACCOUNTS_MAX}, --writers 1..={WRITERS_MAX}");
    }
    if parsed.command == "run" && !(1..=24 * 3600).contains(&parsed.seconds) {
        bail!("--seconds must be between 1 and 86400");
    }
    Ok(parsed)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.command == "run" {
        let log = events::Writer::create(&args.log)?;
        let settings = workload::Settings {
            cluster_id: args.cluster_id,
            addresses: args.addresses,
            accounts: args.accounts,
            writers: args.writers,
            seconds: args.seconds,
            seed: args.seed,
            request_timeout: Duration::from_secs(args.request_timeout_s),
        };
        let summary = runtime.block_on(workload::run(settings, log))?;
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    let events = events::read(&args.log)?;
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
        let client = tigerbeetle_unofficial::Client::new(args.cluster_id, args.addresses.as_str())
            .map_err(|error| anyhow::anyhow!("creating the client: {error:?}"))?;
        check::check(&model, &client).await
    })?;
    println!("{}", serde_json::to_string(&report)?);
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}
