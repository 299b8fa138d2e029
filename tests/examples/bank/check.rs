//! The checker: does the cluster hold what the client's log says it was told, and nothing else?
//!
//! From the log, every transfer sent is `Created` (acknowledged), `Refused` (an error result:
//! certainly absent) or `Indeterminate` (no answer: either). The cluster is asked for every id
//! sent and, account by account, for every transfer it holds. Then:
//! - lost: a created transfer absent, or present with other fields;
//! - phantoms: a refused transfer present, or a transfer present that was never sent;
//! - chains: a linked chain partly present;
//! - balances: each account's four balances recomputed from the transfers present (pending ones
//!   counted only while neither posted, voided nor expired) must equal what the cluster reports.
//!   Funding comes from a source account without limits, so money moves; that debits equal credits
//!   overall is TigerBeetle's own guarantee and is not what this checks.
//!
//! Run it after every pending timeout has passed (the runner waits `PENDING_TIMEOUT_S_MAX`
//! after the last request): an unresolved pending transfer then counts as expired.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tigerbeetle_unofficial::account::{Filter, FilterFlags};
use tigerbeetle_unofficial::{Client, Transfer};

use crate::events::{Event, Kind, Sent};
use crate::workload::{CODE, LEDGER, to_wire};

/// Ids per lookup, and transfers per page of an account's history: below the 8189 a 1 MiB
/// message holds.
const BATCH_MAX: usize = 4096;
/// Examples of each kind of violation kept in the report.
const EXAMPLES_MAX: usize = 20;
/// Pages of one account's history, at most: a bound on a runaway loop, far above any campaign.
const PAGES_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Created,
    Refused,
    Indeterminate,
}

/// What the log says was sent and answered.
pub struct Model {
    source: u128,
    accounts: Vec<u128>,
    sent: HashMap<u128, (Sent, Outcome)>,
    /// Each linked chain's ids, in order.
    chains: Vec<Vec<u128>>,
}

pub fn model(events: &[Event]) -> anyhow::Result<Model> {
    let mut setup = None;
    let mut requests: HashMap<u64, Vec<Sent>> = HashMap::new();
    let mut sent = HashMap::new();
    let mut chains = Vec::new();
    for event in events {
        match event {
            Event::Setup {
                source, accounts, ..
            } => setup = Some((*source, accounts.clone())),
            Event::Request {
                request, transfers, ..
            } => {
                chains.extend(chains_of(transfers));
                for transfer in transfers {
                    let previous =
                        sent.insert(transfer.id, (transfer.clone(), Outcome::Indeterminate));
                    anyhow::ensure!(previous.is_none(), "transfer {} sent twice", transfer.id);
                }
                requests.insert(*request, transfers.clone());
            }
            Event::Reply {
                request, errors, ..
            } => {
                let transfers = requests
                    .get(request)
                    .with_context(|| format!("a reply to request {request}, never sent"))?;
                for (index, transfer) in transfers.iter().enumerate() {
                    let refused = errors.iter().any(|(at, _)| *at as usize == index);
                    let outcome = if refused {
                        Outcome::Refused
                    } else {
                        Outcome::Created
                    };
                    sent.get_mut(&transfer.id)
                        .expect("logged with its request")
                        .1 = outcome;
                }
            }
            Event::Indeterminate { .. } => {}
        }
    }
    let (source, accounts) = setup.context("the log has no setup: the bank never opened")?;
    Ok(Model {
        source,
        accounts,
        sent,
        chains,
    })
}

fn chains_of(transfers: &[Sent]) -> Vec<Vec<u128>> {
    let mut chains = Vec::new();
    let mut chain = Vec::new();
    for transfer in transfers {
        chain.push(transfer.id);
        if !transfer.linked {
            if chain.len() > 1 {
                chains.push(std::mem::take(&mut chain));
            }
            chain.clear();
        }
    }
    chains
}

/// The verdict, with examples of each violation.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub sent: u64,
    pub acknowledged: u64,
    pub refused: u64,
    pub indeterminate: u64,
    pub indeterminate_present: u64,
    pub present: u64,
    pub lost: u64,
    pub phantoms: u64,
    pub broken_chains: u64,
    pub balance_errors: u64,
    pub pending_posted: u64,
    pub pending_voided: u64,
    pub pending_expired: u64,
    pub examples: Vec<String>,
}

impl Report {
    fn violation(&mut self, example: String) {
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(example);
        }
    }

    pub fn passed(&self) -> bool {
        self.lost == 0 && self.phantoms == 0 && self.broken_chains == 0 && self.balance_errors == 0
    }
}

pub async fn check(model: &Model, client: &Client) -> anyhow::Result<Report> {
    let ids: Vec<u128> = model.sent.keys().copied().collect();
    let mut present: HashMap<u128, Transfer> = HashMap::new();
    for chunk in ids.chunks(BATCH_MAX) {
        let found = client
            .lookup_transfers(chunk.to_vec())
            .await
            .map_err(|error| anyhow::anyhow!("lookup_transfers: {error:?}"))?;
        present.extend(found.into_iter().map(|transfer| (transfer.id(), transfer)));
    }
    let mut report = Report::default();
    compare_sent(model, &present, &mut report);
    // Each transfer appears in two accounts' histories: judged once.
    let mut seen: HashSet<u128> = HashSet::new();
    for account in std::iter::once(model.source).chain(model.accounts.iter().copied()) {
        for transfer in history(client, account).await? {
            if seen.insert(transfer.id()) && !model.sent.contains_key(&transfer.id()) {
                report.phantoms += 1;
                report.violation(format!("transfer {} present, never sent", transfer.id()));
            }
        }
    }
    check_chains(model, &present, &mut report);
    check_balances(model, &present, client, &mut report).await?;
    Ok(report)
}

fn compare_sent(model: &Model, present: &HashMap<u128, Transfer>, report: &mut Report) {
    for (id, (sent, outcome)) in &model.sent {
        report.sent += 1;
        let found = present.get(id);
        if found.is_some() {
            report.present += 1;
        }
        match (outcome, found) {
            (Outcome::Created, None) => {
                report.lost += 1;
                report.violation(format!("acknowledged transfer {id} is missing"));
            }
            (Outcome::Created, Some(found)) if !same_fields(sent, found) => {
                report.lost += 1;
                report.violation(format!(
                    "transfer {id} differs: sent {sent:?}, found {found:?}"
                ));
            }
            (Outcome::Refused, Some(_)) => {
                report.phantoms += 1;
                report.violation(format!("transfer {id} was refused but is present"));
            }
            (Outcome::Indeterminate, Some(found)) if !same_fields(sent, found) => {
                report.phantoms += 1;
                report.violation(format!(
                    "transfer {id} differs: sent {sent:?}, found {found:?}"
                ));
            }
            _ => {}
        }
        match outcome {
            Outcome::Created => report.acknowledged += 1,
            Outcome::Refused => report.refused += 1,
            Outcome::Indeterminate => {
                report.indeterminate += 1;
                report.indeterminate_present += u64::from(found.is_some());
            }
        }
    }
}

fn same_fields(sent: &Sent, found: &Transfer) -> bool {
    let wire = to_wire(sent);
    found.debit_account_id() == wire.debit_account_id()
        && found.credit_account_id() == wire.credit_account_id()
        && found.amount() == wire.amount()
        && found.pending_id() == wire.pending_id()
        && found.flags() == wire.flags()
        && found.timeout() == wire.timeout()
        && found.ledger() == LEDGER
        && found.code() == CODE
}

/// Every transfer the cluster holds for an account, oldest first, page by page.
async fn history(client: &Client, account: u128) -> anyhow::Result<Vec<Transfer>> {
    let mut all = Vec::new();
    let mut after = SystemTime::UNIX_EPOCH;
    for _ in 0..PAGES_MAX {
        let filter = Filter::new(account, BATCH_MAX as u32)
            .with_flags(FilterFlags::DEBITS | FilterFlags::CREDITS)
            .with_timestamp_min(after);
        let page = client
            .get_account_transfers(Box::new(filter))
            .await
            .map_err(|error| anyhow::anyhow!("get_account_transfers: {error:?}"))?;
        let full = page.len() == BATCH_MAX;
        if let Some(last) = page.last() {
            after = last.timestamp() + Duration::from_nanos(1);
        }
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
    anyhow::bail!("account {account} has more than {PAGES_MAX} pages of transfers")
}

fn check_chains(model: &Model, present: &HashMap<u128, Transfer>, report: &mut Report) {
    for chain in &model.chains {
        let held = chain.iter().filter(|id| present.contains_key(id)).count();
        if held != 0 && held != chain.len() {
            report.broken_chains += 1;
            report.violation(format!(
                "linked chain {chain:?}: {held} of {} present",
                chain.len()
            ));
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Balance {
    debits_pending: u128,
    debits_posted: u128,
    credits_pending: u128,
    credits_posted: u128,
}

/// Balances from the transfers present. Every pending transfer neither posted nor voided has
/// expired by now (see the module's comment), so it holds nothing.
fn expected_balances(
    model: &Model,
    present: &HashMap<u128, Transfer>,
    report: &mut Report,
) -> HashMap<u128, Balance> {
    let mut balances: HashMap<u128, Balance> = HashMap::new();
    let mut resolved: HashSet<u128> = HashSet::new();
    for transfer in present.values() {
        let (sent, _) = &model.sent[&transfer.id()];
        match sent.kind {
            Kind::Plain | Kind::Post => {
                balances.entry(sent.debit).or_default().debits_posted += sent.amount;
                balances.entry(sent.credit).or_default().credits_posted += sent.amount;
                if sent.kind == Kind::Post {
                    report.pending_posted += 1;
                    resolved.insert(sent.pending_id);
                }
            }
            Kind::Void => {
                report.pending_voided += 1;
                resolved.insert(sent.pending_id);
            }
            Kind::Pending => {}
        }
    }
    report.pending_expired = present
        .values()
        .filter(|transfer| model.sent[&transfer.id()].0.kind == Kind::Pending)
        .filter(|transfer| !resolved.contains(&transfer.id()))
        .count() as u64;
    balances
}

async fn check_balances(
    model: &Model,
    present: &HashMap<u128, Transfer>,
    client: &Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let expected = expected_balances(model, present, report);
    let ids: Vec<u128> = std::iter::once(model.source)
        .chain(model.accounts.iter().copied())
        .collect();
    for chunk in ids.chunks(BATCH_MAX) {
        let accounts = client
            .lookup_accounts(chunk.to_vec())
            .await
            .map_err(|error| anyhow::anyhow!("lookup_accounts: {error:?}"))?;
        anyhow::ensure!(
            accounts.len() == chunk.len(),
            "an account of the bank is missing"
        );
        for account in accounts {
            let found = Balance {
                debits_pending: account.debits_pending(),
                debits_posted: account.debits_posted(),
                credits_pending: account.credits_pending(),
                credits_posted: account.credits_posted(),
            };
            let want = expected.get(&account.id()).copied().unwrap_or_default();
            if found != want {
                report.balance_errors += 1;
                report.violation(format!(
                    "account {}: the cluster reports {found:?}, its transfers give {want:?}",
                    account.id()
                ));
            }
        }
    }
    Ok(())
}
