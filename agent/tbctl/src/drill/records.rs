//! Step 1 of the drill: known records written to the live cluster, and the comparison of
//! balances that checks them there and, at the end, in the scratch cluster.

use std::future::Future;
use std::time::Duration;

use tigerbeetle_unofficial as tb;

use crate::local_files;
use tb_proto::clock::now_unix_ms;
use tb_proto::inventory::Inventory;

use super::{Balances, DrillArgs, DrillRecord, Scratch};

/// Transfers between the two drill accounts.
const TRANSFER_COUNT: usize = 10;
/// Transfer amounts are drawn from 1 to this.
const TRANSFER_AMOUNT_MAX: u128 = 1_000_000;
/// A ready cluster answers in milliseconds; the client itself retries forever, so every
/// request is bounded here.
const LIVE_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Marks the drill's accounts (`user_data_128`), so they can be told from real ones: ASCII
/// "tbctl-drill".
const DRILL_ACCOUNT_MARK: u128 = 0x74_6263_746c_2d64_7269_6c6c;
const DRILL_RECORD_FORMAT_VERSION: u32 = 1;

/// Step 1: the drill records, written to the live cluster and to drill.json.
pub(super) async fn record_drill(
    inventory: &Inventory,
    args: &DrillArgs,
    scratch: &Scratch,
) -> anyhow::Result<DrillRecord> {
    let record = write_drill_records(inventory, args.ledger, args.code).await?;
    let json = serde_json::to_string_pretty(&record)?;
    local_files::write_atomic(&scratch.record(), json.as_bytes(), 0o600)?;
    crate::say!(
        "accounts {} and {} after {TRANSFER_COUNT} transfers; recorded in {}",
        record.accounts[0].id,
        record.accounts[1].id,
        scratch.record().display()
    );
    Ok(record)
}

/// Bounds one request of the TigerBeetle client, which would otherwise retry forever.
async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    timeout_ms: u64,
    request: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => anyhow::bail!("{what}: {error}"),
        Err(_) => anyhow::bail!("{what}: no answer within {timeout_ms} ms"),
    }
}

/// A fresh id: random, never 0 or u128::MAX (TigerBeetle refuses both) nor the probe's.
fn fresh_id() -> u128 {
    loop {
        let id: u128 = rand::random();
        if id != 0 && id != u128::MAX && id != tb_proto::tigerbeetle::PROBE_ACCOUNT_ID {
            return id;
        }
    }
}

/// Step 1: two new accounts, transfers both ways between them, and their balances as the live
/// cluster reports them (checked against what was sent).
async fn write_drill_records(
    inventory: &Inventory,
    ledger: u32,
    code: u16,
) -> anyhow::Result<DrillRecord> {
    let addresses = inventory.addresses();
    let client = tb::Client::new(inventory.cluster_id, &addresses)
        .map_err(|error| anyhow::anyhow!("client of the live cluster {addresses}: {error}"))?;
    let ids = [fresh_id(), fresh_id()];
    let accounts: Vec<tb::Account> = ids
        .iter()
        .map(|id| tb::Account::new(*id, ledger, code).with_user_data_128(DRILL_ACCOUNT_MARK))
        .collect();
    bounded(
        "creating the drill accounts in the live cluster",
        LIVE_REQUEST_TIMEOUT_MS,
        client.create_accounts(accounts),
    )
    .await?;
    let mut expected = [(0u128, 0u128); 2];
    let transfers: Vec<tb::Transfer> = (0..TRANSFER_COUNT)
        .map(|n| {
            // Alternate directions, so that both accounts have debits and credits to compare.
            let (debit, credit) = if n % 2 == 0 { (0, 1) } else { (1, 0) };
            let amount = rand::random_range(1..=TRANSFER_AMOUNT_MAX);
            expected[debit].0 += amount;
            expected[credit].1 += amount;
            tb::Transfer::new(fresh_id())
                .with_debit_account_id(ids[debit])
                .with_credit_account_id(ids[credit])
                .with_amount(amount)
                .with_ledger(ledger)
                .with_code(code)
        })
        .collect();
    bounded(
        "creating the drill transfers in the live cluster",
        LIVE_REQUEST_TIMEOUT_MS,
        client.create_transfers(transfers),
    )
    .await?;
    let found = bounded(
        "looking up the drill accounts in the live cluster",
        LIVE_REQUEST_TIMEOUT_MS,
        client.lookup_accounts(ids.to_vec()),
    )
    .await?;
    let accounts: Vec<Balances> = ids
        .iter()
        .zip(expected)
        .map(|(id, (debits_posted, credits_posted))| Balances {
            id: *id,
            debits_posted,
            credits_posted,
        })
        .collect();
    let differences = compare(&accounts, &found);
    anyhow::ensure!(
        differences.is_empty(),
        "the live cluster does not report what the drill just wrote: {}",
        differences.join("; ")
    );
    Ok(DrillRecord {
        format_version: DRILL_RECORD_FORMAT_VERSION,
        cluster_id: inventory.cluster_id.to_string(),
        // Taken after the lookup: everything recorded was committed by then.
        recorded_unix_ms: now_unix_ms(),
        ledger,
        code,
        transfer_count: TRANSFER_COUNT,
        accounts,
    })
}

/// Every difference between the expected balances and the accounts found, one line each.
pub(super) fn compare(expected: &[Balances], found: &[tb::Account]) -> Vec<String> {
    let found: Vec<Balances> = found.iter().map(Balances::of).collect();
    compare_balances(expected, &found)
}

fn compare_balances(expected: &[Balances], found: &[Balances]) -> Vec<String> {
    let mut differences = Vec::new();
    for want in expected {
        let Some(have) = found.iter().find(|have| have.id == want.id) else {
            differences.push(format!("account {}: missing", want.id));
            continue;
        };
        for (field, want_value, have_value) in [
            ("debits_posted", want.debits_posted, have.debits_posted),
            ("credits_posted", want.credits_posted, have.credits_posted),
        ] {
            if want_value != have_value {
                differences.push(format!(
                    "account {}: {field} is {have_value}, expected {want_value}",
                    want.id
                ));
            }
        }
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::tests::balances;

    #[test]
    fn compare_names_every_difference() {
        let expected = [balances(1, 10, 20), balances(2, 20, 10)];
        assert!(
            compare_balances(&expected, &[balances(2, 20, 10), balances(1, 10, 20)]).is_empty()
        );
        assert_eq!(
            compare_balances(&expected, &[balances(1, 10, 21)]),
            vec![
                "account 1: credits_posted is 21, expected 20",
                "account 2: missing"
            ]
        );
    }

    #[test]
    fn fresh_ids_are_valid() {
        for _ in 0..100 {
            let id = fresh_id();
            assert!(id != 0 && id != u128::MAX);
        }
    }
}
