//! The lease's accounts and transfers in TigerBeetle: every request the lease makes, and how
//! the cluster's answers read. The encodings are `tb_proto::lease`'s.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tb_proto::lease::{CODE, Ids, POOL_BALANCE};
use tigerbeetle_unofficial::error::{
    CreateAccountErrorKind, CreateAccountsError, CreateTransferErrorKind, CreateTransfersError,
    SendErrorKind,
};
use tigerbeetle_unofficial::{Account, Client, Transfer, account, transfer};

/// How many of the pool's latest debits are read to find the current lease: the pending one is
/// at most the second latest (after it can only come its own void).
const POOL_TRANSFERS_READ_MAX: u32 = 4;
/// After an expiry the pool still shows the pending debit until the primary's next pulse: an
/// acquire retries this often, this many times, before it calls the lease held.
const EXPIRY_RETRY_INTERVAL: Duration = Duration::from_millis(250);
const EXPIRY_RETRIES_MAX: u32 = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerError {
    /// No answer in time, no quorum, or the client was evicted: the lease cannot be had now.
    Unavailable(String),
    /// The pool or its accounts are not as this design leaves them: refuse loudly.
    Unsound(String),
    /// The lease accounts do not exist yet.
    NotInitialized,
    /// Another lease is held.
    Held(Current),
    /// The lease named is not held any more (expired, released or broken).
    Lost(String),
}

/// The pending transfer that is the lease now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub transfer_id: u128,
    pub lease_id: u128,
    pub tag: u64,
    pub operation_code: u32,
    pub since: SystemTime,
    pub ttl_s: u32,
}

impl Current {
    fn of(transfer: &Transfer) -> Current {
        Current {
            transfer_id: transfer.id(),
            lease_id: transfer.user_data_128(),
            tag: transfer.user_data_64(),
            operation_code: transfer.user_data_32(),
            since: transfer.timestamp(),
            ttl_s: transfer.timeout(),
        }
    }

    pub fn expires(&self) -> SystemTime {
        self.since + Duration::from_secs(self.ttl_s.into())
    }
}

pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// What the pool says now.
#[derive(Debug, Clone)]
pub struct PoolRead {
    pub balance: u128,
    pub current: Option<Current>,
}

/// Bounds a request by `timeout` and names an eviction: both mean "unavailable".
async fn ask<T, E: std::fmt::Display>(
    timeout: Duration,
    what: &str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, LedgerError> {
    tokio::time::timeout(timeout, request).await.map_err(|_| {
        LedgerError::Unavailable(format!(
            "the cluster did not answer {what} within {} ms (no quorum, or unreachable)",
            timeout.as_millis()
        ))
    })
}

fn send_failed(what: &str, error: impl std::fmt::Display, evicted: bool) -> LedgerError {
    LedgerError::Unavailable(if evicted {
        format!(
            "{what}: the cluster evicted this agent's client as newer than its release (an \
             upgrade in progress): the lease cannot be had until every replica runs it"
        )
    } else {
        format!("{what}: {error}")
    })
}

/// Creates the three accounts and funds the pool with exactly 1, idempotently (fixed ids:
/// `exists` is success). Returns the pool's posted balance, which must then be exactly 1.
pub async fn init(client: &Client, ids: Ids, timeout: Duration) -> Result<u128, LedgerError> {
    let pool_flags = account::Flags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    let accounts = vec![
        Account::new(ids.source_account(), ids.ledger, CODE),
        Account::new(ids.pool_account(), ids.ledger, CODE).with_flags(pool_flags),
        Account::new(ids.held_account(), ids.ledger, CODE),
    ];
    match ask(
        timeout,
        "creating the lease accounts",
        client.create_accounts(accounts),
    )
    .await?
    {
        Ok(()) => {}
        Err(CreateAccountsError::Api(errors)) => {
            for error in errors.as_slice() {
                if !matches!(error.kind(), CreateAccountErrorKind::Exists) {
                    return Err(LedgerError::Unsound(format!(
                        "lease account {:#x} exists with other fields ({:?}): the reserved ids \
                         (lease.id_prefix) clash with accounts created by someone else",
                        ids.id_of_account_index(error.index()),
                        error.kind()
                    )));
                }
            }
        }
        Err(CreateAccountsError::Send(error)) => {
            let evicted = matches!(error.kind(), SendErrorKind::ClientReleaseTooHigh);
            return Err(send_failed("creating the lease accounts", error, evicted));
        }
        Err(other) => return Err(LedgerError::Unavailable(other.to_string())),
    }
    let fund = Transfer::new(ids.fund_transfer())
        .with_debit_account_id(ids.source_account())
        .with_credit_account_id(ids.pool_account())
        .with_amount(POOL_BALANCE)
        .with_ledger(ids.ledger)
        .with_code(CODE);
    match create(client, timeout, "funding the lease pool", vec![fund]).await? {
        Ok(()) => {}
        Err(kinds) if kinds == [Event::Exists] => {}
        Err(kinds) => {
            return Err(LedgerError::Unsound(format!(
                "funding the lease pool: {kinds:?}: transfer {:#x} exists with other fields",
                ids.fund_transfer()
            )));
        }
    }
    let read = read(client, ids, timeout).await?;
    Ok(read.balance)
}

trait AccountIndex {
    fn id_of_account_index(self, index: u32) -> u128;
}

impl AccountIndex for Ids {
    fn id_of_account_index(self, index: u32) -> u128 {
        match index {
            0 => self.source_account(),
            1 => self.pool_account(),
            _ => self.held_account(),
        }
    }
}

/// The results of a lease transfer that this module acts on; any other is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Ok,
    Exists,
    ExceedsCredits,
    Expired,
    AlreadyVoided,
    LinkedEventFailed,
    Other(u32),
}

impl Event {
    fn of(kind: CreateTransferErrorKind, code: u32) -> Event {
        match kind {
            CreateTransferErrorKind::Exists => Event::Exists,
            CreateTransferErrorKind::ExceedsCredits => Event::ExceedsCredits,
            CreateTransferErrorKind::PendingTransferExpired => Event::Expired,
            CreateTransferErrorKind::PendingTransferAlreadyVoided => Event::AlreadyVoided,
            CreateTransferErrorKind::LinkedEventFailed => Event::LinkedEventFailed,
            _ => Event::Other(code),
        }
    }
}

/// Submits transfers; the per-event results (in event order) when any failed.
async fn create(
    client: &Client,
    timeout: Duration,
    what: &str,
    transfers: Vec<Transfer>,
) -> Result<Result<(), Vec<Event>>, LedgerError> {
    let count = transfers.len();
    match ask(timeout, what, client.create_transfers(transfers)).await? {
        Ok(()) => Ok(Ok(())),
        Err(CreateTransfersError::Api(errors)) => {
            // Events without an error in a failed batch succeeded: only a chain fails whole.
            let mut events = vec![Event::Ok; count];
            for error in errors.as_slice() {
                events[error.index() as usize] =
                    Event::of(error.kind(), error.inner().code().get());
            }
            Ok(Err(events))
        }
        Err(CreateTransfersError::Send(error)) => {
            let evicted = matches!(error.kind(), SendErrorKind::ClientReleaseTooHigh);
            Err(send_failed(what, error, evicted))
        }
        Err(other) => Err(LedgerError::Unavailable(format!("{what}: {other}"))),
    }
}

/// The pool's balance and the lease pending now, if any.
pub async fn read(client: &Client, ids: Ids, timeout: Duration) -> Result<PoolRead, LedgerError> {
    let accounts = match ask(
        timeout,
        "reading the lease pool",
        client.lookup_accounts(vec![ids.pool_account()]),
    )
    .await?
    {
        Ok(accounts) => accounts,
        Err(error) => {
            let evicted = matches!(error.kind(), SendErrorKind::ClientReleaseTooHigh);
            return Err(send_failed("reading the lease pool", error, evicted));
        }
    };
    let Some(pool) = accounts.first() else {
        return Err(LedgerError::NotInitialized);
    };
    let balance = pool.credits_posted().saturating_sub(pool.debits_posted());
    if pool.debits_pending() == 0 {
        return Ok(PoolRead {
            balance,
            current: None,
        });
    }
    let filter = account::Filter::new(ids.pool_account(), POOL_TRANSFERS_READ_MAX)
        .with_flags(account::FilterFlags::DEBITS | account::FilterFlags::REVERSED);
    let transfers = match ask(
        timeout,
        "reading the lease transfers",
        client.get_account_transfers(Box::new(filter)),
    )
    .await?
    {
        Ok(transfers) => transfers,
        Err(error) => return Err(send_failed("reading the lease transfers", error, false)),
    };
    Ok(PoolRead {
        balance,
        current: current_of(&transfers),
    })
}

/// The lease among the pool's latest debits (newest first): the newest pending transfer, unless
/// a void of it came after.
pub fn current_of(newest_first: &[Transfer]) -> Option<Current> {
    let newest = newest_first.first()?;
    newest
        .flags()
        .contains(transfer::Flags::PENDING)
        .then(|| Current::of(newest))
}

/// Checks the pool before a lease is taken: it exists and holds exactly 1.
pub fn check_sound(read: &PoolRead) -> Result<(), LedgerError> {
    if read.balance != POOL_BALANCE {
        return Err(LedgerError::Unsound(format!(
            "the lease pool's posted balance is {}, not exactly {POOL_BALANCE}: a lease \
             transfer was posted or the pool funded by hand. Until it is repaired no lease can \
             be trusted (docs/safety.md, \"Repairing the lease pool\")",
            read.balance
        )));
    }
    Ok(())
}

/// The pending transfer of a lease.
pub struct Pending {
    pub transfer_id: u128,
    pub lease_id: u128,
    pub tag: u64,
    pub operation_code: u32,
    pub ttl_s: u32,
}

fn pending_transfer(ids: Ids, pending: &Pending) -> Transfer {
    assert!(pending.ttl_s > 0, "a lease always expires");
    Transfer::new(pending.transfer_id)
        .with_debit_account_id(ids.pool_account())
        .with_credit_account_id(ids.held_account())
        .with_amount(1)
        .with_ledger(ids.ledger)
        .with_code(CODE)
        .with_flags(transfer::Flags::PENDING)
        .with_timeout(pending.ttl_s)
        .with_user_data_128(pending.lease_id)
        .with_user_data_64(pending.tag)
        .with_user_data_32(pending.operation_code)
}

fn void_transfer(ids: Ids, id: u128, pending_id: u128) -> Transfer {
    Transfer::new(id)
        .with_pending_id(pending_id)
        .with_debit_account_id(ids.pool_account())
        .with_credit_account_id(ids.held_account())
        .with_ledger(ids.ledger)
        .with_code(CODE)
        .with_flags(transfer::Flags::VOID_PENDING_TRANSFER)
}

/// Takes the lease: a pending transfer out of the pool. `exists` (a retry of the same request)
/// is success; a held pool is `Held`, after brief retries in case it just expired.
pub async fn acquire(
    client: &Client,
    ids: Ids,
    timeout: Duration,
    pending: &Pending,
) -> Result<Current, LedgerError> {
    for attempt in 0..=EXPIRY_RETRIES_MAX {
        let read = read(client, ids, timeout).await?;
        check_sound(&read)?;
        if let Some(current) = &read.current {
            if current.lease_id == pending.lease_id {
                return Ok(current.clone());
            }
            let expired = current.expires() <= SystemTime::now();
            if !expired || attempt == EXPIRY_RETRIES_MAX {
                return Err(LedgerError::Held(current.clone()));
            }
            tokio::time::sleep(EXPIRY_RETRY_INTERVAL).await;
            continue;
        }
        let transfer = pending_transfer(ids, pending);
        match create(client, timeout, "taking the lease", vec![transfer]).await? {
            Ok(()) => return found(client, timeout, pending.transfer_id).await,
            // A retry of an acquire that was granted: it holds the pool now, or it was granted
            // and has ended since (released or expired), which this caller must not take for a
            // lease it holds.
            Err(kinds) if kinds == [Event::Exists] => {
                let now = self::read(client, ids, timeout).await?;
                return match now.current {
                    Some(current) if current.lease_id == pending.lease_id => Ok(current),
                    _ => Err(LedgerError::Lost(format!(
                        "lease {:032x} was granted to an earlier attempt and has ended since",
                        pending.lease_id
                    ))),
                };
            }
            // Taken by someone else between the read and the request: read it again.
            Err(kinds) if kinds == [Event::ExceedsCredits] => {
                tokio::time::sleep(EXPIRY_RETRY_INTERVAL / 5).await;
            }
            Err(kinds) => {
                return Err(LedgerError::Unsound(format!(
                    "taking the lease: the cluster refused the transfer: {kinds:?}"
                )));
            }
        }
    }
    let read = read(client, ids, timeout).await?;
    match read.current {
        Some(current) => Err(LedgerError::Held(current)),
        None => Err(LedgerError::Unavailable(
            "the lease changed hands too often to be taken; try again".into(),
        )),
    }
}

/// The lease as the cluster recorded it, with its timestamp.
async fn found(
    client: &Client,
    timeout: Duration,
    transfer_id: u128,
) -> Result<Current, LedgerError> {
    match ask(
        timeout,
        "reading the lease",
        client.lookup_transfers(vec![transfer_id]),
    )
    .await?
    {
        Ok(transfers) => transfers.first().map(Current::of).ok_or_else(|| {
            LedgerError::Unsound(format!("lease transfer {transfer_id:#x} was not found"))
        }),
        Err(error) => Err(send_failed("reading the lease", error, false)),
    }
}

/// Renews `lease_id` for `ttl_s` from now: voids its pending transfer and creates the next in
/// one linked chain. A lease that expired meanwhile is `Lost`: the holder must stop.
pub async fn renew(
    client: &Client,
    ids: Ids,
    timeout: Duration,
    lease_id: u128,
    ttl_s: u32,
) -> Result<Current, LedgerError> {
    // A renewal by another holder of the same lease (tbctl and an agent acting on its lease
    // id) voids the transfer this one read: read again, a few times.
    for _ in 0..3 {
        let read = read(client, ids, timeout).await?;
        check_sound(&read)?;
        let current = match read.current {
            Some(current) if current.lease_id == lease_id => current,
            Some(other) => return Err(LedgerError::Lost(held_by_other(&other))),
            None => return Err(LedgerError::Lost(NOT_HELD.into())),
        };
        // A renewal never shortens the lease: another holder of it may count on what is left.
        let left_s = current
            .expires()
            .duration_since(SystemTime::now())
            .map_or(0, |left| {
                left.as_secs().min(u64::from(tb_proto::lease::TTL_MAX_S)) as u32
            });
        let next = Pending {
            transfer_id: ids.fresh_transfer(),
            lease_id,
            tag: current.tag,
            operation_code: current.operation_code,
            ttl_s: ttl_s.max(left_s),
        };
        let void = void_transfer(ids, ids.fresh_transfer(), current.transfer_id)
            .with_flags(transfer::Flags::VOID_PENDING_TRANSFER | transfer::Flags::LINKED);
        let chain = vec![void, pending_transfer(ids, &next)];
        match create(client, timeout, "renewing the lease", chain).await? {
            Ok(()) => return found(client, timeout, next.transfer_id).await,
            Err(kinds) if kinds[0] == Event::Expired => {
                return Err(LedgerError::Lost(format!(
                    "lease {lease_id:032x} expired before it was renewed"
                )));
            }
            Err(kinds) if kinds[0] == Event::AlreadyVoided => {}
            Err(kinds) => {
                return Err(LedgerError::Unsound(format!(
                    "renewing the lease: the cluster refused the chain: {kinds:?}"
                )));
            }
        }
    }
    Err(LedgerError::Unavailable(
        "the lease was renewed by another holder of it three times while this renewal ran".into(),
    ))
}

const NOT_HELD: &str = "the lease is not held any more (it expired, or was released or broken)";

fn held_by_other(other: &Current) -> String {
    format!(
        "{NOT_HELD}; lease {:032x} holds the pool now",
        other.lease_id
    )
}

/// Voids the lease's pending transfer. Ok(false) when it was not held any more. A void that
/// meets a renewal by another holder of the same lease (`already_voided`) reads again: the
/// renewed transfer is voided too, or the lease would stay held until its ttl.
pub async fn release(
    client: &Client,
    ids: Ids,
    timeout: Duration,
    lease_id: u128,
) -> Result<bool, LedgerError> {
    for _ in 0..3 {
        let read = read(client, ids, timeout).await?;
        let current = match read.current {
            Some(current) if current.lease_id == lease_id => current,
            _ => return Ok(false),
        };
        let void = void_transfer(ids, ids.fresh_transfer(), current.transfer_id);
        match create(client, timeout, "releasing the lease", vec![void]).await? {
            Ok(()) => return Ok(true),
            Err(kinds) if kinds == [Event::Expired] => return Ok(false),
            Err(kinds) if kinds == [Event::AlreadyVoided] => {}
            Err(kinds) => {
                return Err(LedgerError::Unsound(format!(
                    "releasing the lease: the cluster refused the void: {kinds:?}"
                )));
            }
        }
    }
    Err(LedgerError::Unavailable(
        "the lease was renewed by another holder of it three times while this release ran".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(id: u128, flags: transfer::Flags) -> Transfer {
        Transfer::new(id)
            .with_flags(flags)
            .with_user_data_128(7)
            .with_timeout(30)
    }

    #[test]
    fn the_current_lease_is_the_newest_debit_when_it_is_pending() {
        assert_eq!(current_of(&[]), None);
        let pending = transfer(2, transfer::Flags::PENDING);
        let void = transfer(3, transfer::Flags::VOID_PENDING_TRANSFER);
        let current = current_of(&[pending, void]).expect("the newest is pending");
        assert_eq!(
            (current.transfer_id, current.lease_id, current.ttl_s),
            (2, 7, 30)
        );
        assert_eq!(current_of(&[void, pending]), None, "voided after");
    }

    #[test]
    fn only_a_pool_holding_exactly_one_is_sound() {
        for (balance, sound) in [(0, false), (1, true), (2, false)] {
            let read = PoolRead {
                balance,
                current: None,
            };
            assert_eq!(check_sound(&read).is_ok(), sound, "{balance}");
        }
    }
}
