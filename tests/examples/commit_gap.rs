//! Load generator for `bench/backup`: writes transfers to a cluster without pause, one request in
//! flight, and measures the longest gap between two committed requests — how long the cluster as
//! a whole could not commit.
//!
//! ```sh
//! cargo run --release -p tb-tests --example commit_gap -- \
//!     --cluster-id 0 --addresses 127.0.0.1:3000,127.0.0.1:3001,127.0.0.1:3002 --seconds 60
//! ```
//!
//! Runs for `--seconds` at most; SIGTERM or SIGINT ends it earlier (after the request in flight).
//! Prints one JSON object on stdout:
//!
//! - `requests`, `failures`: `create_transfers` requests sent, and those that failed or got no
//!   answer within `--request-timeout-seconds` (the client retries internally; a failure here is
//!   a request the cluster did not commit);
//! - `longest_gap_ms`: the longest time between two commits (the first gap is measured from the
//!   moment the writer's accounts exist); with one request in flight, a healthy cluster's gap is
//!   one request's latency, so compare it with `p99_ms` and `max_latency_ms`;
//! - `longest_gap_end_unix_ms`: when that gap ended, to place it against a backup job's steps;
//! - `stalls`: every gap longer than `--stall-ms` (default 100), `[end_unix_ms, gap_ms]`, the
//!   first 20.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use tigerbeetle_unofficial::{Account, Client, Transfer};
use tokio::signal::unix::{SignalKind, signal};

/// Transfers per request: small, so the figures are about latency, not throughput.
const BATCH: u64 = 8;
const LEDGER: u32 = 1;
const CODE: u16 = 1;
/// Failure messages kept in the output.
const ERRORS_KEPT: usize = 5;
/// Stalls kept in the output.
const STALLS_KEPT: usize = 20;
const SECONDS_MAX: u64 = 24 * 3600;

/// Writes transfers for --seconds and prints what the client saw as JSON.
#[derive(Parser)]
struct Args {
    #[arg(long)]
    cluster_id: u128,
    /// HOST:PORT,... of every replica.
    #[arg(long)]
    addresses: String,
    /// Runs this long at most; SIGTERM or SIGINT ends it earlier.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=SECONDS_MAX))]
    seconds: u64,
    /// A request not answered in this time counts as failed.
    #[arg(long = "request-timeout-seconds", default_value = "30", value_parser = seconds)]
    request_timeout: Duration,
    /// A gap between answers longer than this is a stall.
    #[arg(long = "stall-ms", default_value = "100", value_parser = milliseconds)]
    stall: Duration,
}

fn seconds(text: &str) -> Result<Duration, std::num::ParseIntError> {
    text.parse().map(Duration::from_secs)
}

fn milliseconds(text: &str) -> Result<Duration, std::num::ParseIntError> {
    text.parse().map(Duration::from_millis)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(args))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let client = Client::new(args.cluster_id, args.addresses.as_str())
        .map_err(|error| anyhow::anyhow!("creating the client: {error:?}"))?;

    // Ids: this run's start time in the high 64 bits, a counter in the low ones. Unique across
    // runs, never 0 or u128::MAX.
    let run_id = u128::from(unix_ms()) << 64;
    let mut next = 0u64;
    let mut id = || {
        next += 1;
        run_id | u128::from(next)
    };
    let (debit, credit) = (id(), id());
    let accounts = vec![
        Account::new(debit, LEDGER, CODE),
        Account::new(credit, LEDGER, CODE),
    ];
    tokio::time::timeout(args.request_timeout, client.create_accounts(accounts))
        .await
        .context("create_accounts got no answer")?
        .map_err(|error| anyhow::anyhow!("create_accounts: {error:?}"))?;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let (mut requests, mut failures) = (0u64, 0u64);
    let mut errors: Vec<String> = Vec::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut last_commit = Instant::now();
    let (mut longest_gap, mut longest_gap_end_unix_ms) = (Duration::ZERO, unix_ms());
    let mut stalls: Vec<(u64, f64)> = Vec::new();
    let mut stopped_by = "seconds";
    while Instant::now() < deadline {
        let stop = tokio::select! {
            biased;
            _ = terminate.recv() => Some("SIGTERM"),
            _ = interrupt.recv() => Some("SIGINT"),
            _ = std::future::ready(()) => None,
        };
        if let Some(signal) = stop {
            stopped_by = signal;
            break;
        }
        let transfers: Vec<Transfer> = (0..BATCH)
            .map(|_| {
                Transfer::new(id())
                    .with_debit_account_id(debit)
                    .with_credit_account_id(credit)
                    .with_amount(1)
                    .with_ledger(LEDGER)
                    .with_code(CODE)
            })
            .collect();
        requests += 1;
        let sent = Instant::now();
        match tokio::time::timeout(args.request_timeout, client.create_transfers(transfers)).await {
            Ok(Ok(())) => {
                let now = Instant::now();
                latencies.push(now - sent);
                let gap = now - last_commit;
                if gap > args.stall && stalls.len() < STALLS_KEPT {
                    stalls.push((unix_ms(), ms(gap)));
                }
                if gap > longest_gap {
                    longest_gap = gap;
                    longest_gap_end_unix_ms = unix_ms();
                }
                last_commit = now;
            }
            Ok(Err(error)) => {
                failures += 1;
                if errors.len() < ERRORS_KEPT {
                    errors.push(format!("{error:?}"));
                }
            }
            Err(_) => {
                failures += 1;
                if errors.len() < ERRORS_KEPT {
                    errors.push(format!(
                        "no answer within {} s",
                        args.request_timeout.as_secs()
                    ));
                }
            }
        }
    }
    // A cluster that stopped committing before the end still counts until now.
    let trailing = last_commit.elapsed();
    if trailing > longest_gap {
        longest_gap = trailing;
        longest_gap_end_unix_ms = unix_ms();
    }
    latencies.sort_unstable();
    Ok(serde_json::json!({
        "requests": requests,
        "failures": failures,
        "longest_gap_ms": ms(longest_gap),
        "longest_gap_end_unix_ms": longest_gap_end_unix_ms,
        "p50_ms": ms(percentile(&latencies, 0.50)),
        "p99_ms": ms(percentile(&latencies, 0.99)),
        "max_latency_ms": ms(latencies.last().copied().unwrap_or_default()),
        "stalls": stalls,
        "transfers_per_request": BATCH,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "stopped_by": stopped_by,
        "errors": errors,
    }))
}
