//! The bank: accounts that may not go below zero (`debits_must_not_exceed_credits`), funded from
//! one source account, and writers that move money among them at random: single transfers,
//! linked chains (all or none), and pending transfers that are later posted, voided, or left to
//! expire. Every request is logged before it is sent and its answer after (events.rs).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tigerbeetle_unofficial::account::Flags as AccountFlags;
use tigerbeetle_unofficial::error::CreateTransfersError;
use tigerbeetle_unofficial::transfer::Flags as TransferFlags;
use tigerbeetle_unofficial::{Account, Client, Transfer};

use crate::events::{Event, Kind, REQUEST_TRANSFERS_MAX, Sent, Writer};

pub const LEDGER: u32 = 1;
pub const CODE: u16 = 1;
/// What each account is funded with before the writers start.
const FUNDING: u128 = 10_000;
/// Largest amount a writer moves at once: a tenth of the funding, so some transfers exceed
/// what an account holds and are refused (`exceeds_credits`), which the model must explain too.
const AMOUNT_MAX: u128 = 1_000;
/// Longest pending timeout: the checker waits this long after the last request.
pub const PENDING_TIMEOUT_S_MAX: u32 = 20;
const CHAIN_LENGTH_MAX: usize = 4;
/// Pending transfers a writer keeps open at once.
const OPEN_PENDING_MAX: usize = 64;

pub struct Settings {
    pub cluster_id: u128,
    pub addresses: String,
    pub accounts: usize,
    pub writers: usize,
    pub seconds: u64,
    pub seed: u64,
    pub request_timeout: Duration,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

/// Ids of this run: its start time in the high 64 bits, unique across runs; the writer's number
/// and a counter in the low ones. Never 0 or u128::MAX.
struct Ids {
    prefix: u128,
    next: u64,
}

impl Ids {
    fn new(run: u64, writer: u16) -> Ids {
        Ids {
            prefix: (u128::from(run) << 64) | (u128::from(writer) << 48),
            next: 0,
        }
    }

    fn next(&mut self) -> u128 {
        self.next += 1;
        assert!(self.next < 1 << 48, "a writer's ids fit in 48 bits");
        self.prefix | u128::from(self.next)
    }
}

struct Shared {
    client: Client,
    log: Mutex<Writer>,
    requests: std::sync::atomic::AtomicU64,
    request_timeout: Duration,
}

impl Shared {
    fn log(&self, event: &Event) -> anyhow::Result<()> {
        self.log.lock().expect("not poisoned").write(event)
    }
}

/// What a run did, as the client saw it.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub requests: u64,
    pub transfers_sent: u64,
    pub transfers_created: u64,
    pub transfers_refused: u64,
    pub transfers_indeterminate: u64,
}

pub async fn run(settings: Settings, log: Writer) -> anyhow::Result<Summary> {
    let client = Client::new(settings.cluster_id, settings.addresses.as_str())
        .map_err(|error| anyhow::anyhow!("creating the client: {error:?}"))?;
    let shared = Arc::new(Shared {
        client,
        log: Mutex::new(log),
        requests: 0.into(),
        request_timeout: settings.request_timeout,
    });
    let run_id = unix_ms();
    let accounts = setup(&shared, &settings, run_id).await?;
    let deadline = Instant::now() + Duration::from_secs(settings.seconds);
    let mut tasks = Vec::new();
    for writer in 0..settings.writers {
        let writer_id = u16::try_from(writer + 1).context("too many writers")?;
        let mut state = Teller {
            shared: shared.clone(),
            accounts: accounts.clone(),
            ids: Ids::new(run_id, writer_id),
            rng: StdRng::seed_from_u64(settings.seed ^ u64::from(writer_id)),
            open_pending: Vec::new(),
            summary: Summary::default(),
        };
        tasks.push(tokio::spawn(async move {
            state.run_until(deadline).await.map(|()| state.summary)
        }));
    }
    let mut total = Summary::default();
    for task in tasks {
        let summary = task.await.context("a writer panicked")??;
        total.requests += summary.requests;
        total.transfers_sent += summary.transfers_sent;
        total.transfers_created += summary.transfers_created;
        total.transfers_refused += summary.transfers_refused;
        total.transfers_indeterminate += summary.transfers_indeterminate;
    }
    Ok(total)
}

/// Creates the source and the bank's accounts and funds each one, retrying until acknowledged:
/// the writers need them to exist. Their creation is not part of the model's uncertainty.
async fn setup(
    shared: &Arc<Shared>,
    settings: &Settings,
    run_id: u64,
) -> anyhow::Result<Vec<u128>> {
    let mut ids = Ids::new(run_id, 0);
    let source = ids.next();
    let accounts: Vec<u128> = (0..settings.accounts).map(|_| ids.next()).collect();
    let mut new_accounts = vec![Account::new(source, LEDGER, CODE)];
    new_accounts.extend(accounts.iter().map(|&id| {
        Account::new(id, LEDGER, CODE).with_flags(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
    }));
    for chunk in new_accounts.chunks(1000) {
        tokio::time::timeout(
            Duration::from_secs(60),
            shared.client.create_accounts(chunk.to_vec()),
        )
        .await
        .context("create_accounts got no answer within 60 s")?
        .map_err(|error| anyhow::anyhow!("create_accounts: {error:?}"))?;
    }
    shared.log(&Event::Setup {
        ledger: LEDGER,
        code: CODE,
        source,
        accounts: accounts.clone(),
    })?;
    // Funding goes through the log like any transfer: the model counts it.
    let mut funder = Teller {
        shared: shared.clone(),
        accounts: accounts.clone(),
        ids,
        rng: StdRng::seed_from_u64(settings.seed),
        open_pending: Vec::new(),
        summary: Summary::default(),
    };
    for chunk in accounts.chunks(REQUEST_TRANSFERS_MAX) {
        let transfers = chunk
            .iter()
            .map(|&account| funder.plain(source, account, FUNDING, false))
            .collect();
        funder.send(transfers).await?;
    }
    Ok(accounts)
}

/// One writer (a teller): its own ids, random stream and open pending transfers.
struct Teller {
    shared: Arc<Shared>,
    accounts: Vec<u128>,
    ids: Ids,
    rng: StdRng,
    /// Pending transfers acknowledged as created, not yet posted or voided by this writer.
    open_pending: Vec<Sent>,
    summary: Summary,
}

impl Teller {
    async fn run_until(&mut self, deadline: Instant) -> anyhow::Result<()> {
        while Instant::now() < deadline {
            let mut transfers = Vec::new();
            while transfers.len() < REQUEST_TRANSFERS_MAX - CHAIN_LENGTH_MAX {
                transfers.extend(self.next_operation());
                // A pending transfer left to expire adds nothing: a request is never empty.
                if !transfers.is_empty() && self.rng.random_bool(0.3) {
                    break;
                }
            }
            self.send(transfers).await?;
        }
        Ok(())
    }

    /// The next transfer or linked chain, at random.
    fn next_operation(&mut self) -> Vec<Sent> {
        let choice = self.rng.random_range(0..100);
        if choice < 15 && !self.open_pending.is_empty() {
            let index = self.rng.random_range(0..self.open_pending.len());
            let pending = self.open_pending.swap_remove(index);
            // About a fifth of the pending transfers are left to expire.
            return match self.rng.random_range(0..5) {
                0 => vec![],
                1 => vec![self.resolve(&pending, Kind::Void)],
                _ => vec![self.resolve(&pending, Kind::Post)],
            };
        }
        let (debit, credit) = self.two_accounts();
        let amount = self.rng.random_range(1..=AMOUNT_MAX);
        if choice < 30 && self.open_pending.len() < OPEN_PENDING_MAX {
            let timeout_s = self.rng.random_range(1..=PENDING_TIMEOUT_S_MAX);
            return vec![self.pending(debit, credit, amount, timeout_s)];
        }
        if choice < 45 {
            let length = self.rng.random_range(2..=CHAIN_LENGTH_MAX);
            return (0..length)
                .map(|link| {
                    let (debit, credit) = self.two_accounts();
                    let amount = self.rng.random_range(1..=AMOUNT_MAX);
                    self.plain(debit, credit, amount, link + 1 < length)
                })
                .collect();
        }
        vec![self.plain(debit, credit, amount, false)]
    }

    fn two_accounts(&mut self) -> (u128, u128) {
        assert!(self.accounts.len() >= 2, "a bank has two accounts or more");
        let debit = self.rng.random_range(0..self.accounts.len());
        let mut credit = self.rng.random_range(0..self.accounts.len() - 1);
        if credit >= debit {
            credit += 1;
        }
        (self.accounts[debit], self.accounts[credit])
    }

    fn plain(&mut self, debit: u128, credit: u128, amount: u128, linked: bool) -> Sent {
        Sent {
            id: self.ids.next(),
            debit,
            credit,
            amount,
            kind: Kind::Plain,
            linked,
            pending_id: 0,
            timeout_s: 0,
        }
    }

    fn pending(&mut self, debit: u128, credit: u128, amount: u128, timeout_s: u32) -> Sent {
        Sent {
            timeout_s,
            kind: Kind::Pending,
            ..self.plain(debit, credit, amount, false)
        }
    }

    fn resolve(&mut self, pending: &Sent, kind: Kind) -> Sent {
        assert!(matches!(kind, Kind::Post | Kind::Void));
        Sent {
            kind,
            pending_id: pending.id,
            ..self.plain(pending.debit, pending.credit, pending.amount, false)
        }
    }

    /// Logs the request, sends it, logs the answer.
    async fn send(&mut self, transfers: Vec<Sent>) -> anyhow::Result<()> {
        assert!(!transfers.is_empty() && transfers.len() <= REQUEST_TRANSFERS_MAX);
        assert!(!transfers.last().expect("not empty").linked, "a chain ends");
        let request = self
            .shared
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.shared.log(&Event::Request {
            request,
            unix_ms: unix_ms(),
            transfers: transfers.clone(),
        })?;
        let wire: Vec<Transfer> = transfers.iter().map(to_wire).collect();
        let answer = tokio::time::timeout(
            self.shared.request_timeout,
            self.shared.client.create_transfers(wire),
        )
        .await;
        self.summary.requests += 1;
        self.summary.transfers_sent += transfers.len() as u64;
        let errors = match answer {
            Ok(Ok(())) => Vec::new(),
            Ok(Err(CreateTransfersError::Api(errors))) => errors
                .as_slice()
                .iter()
                .map(|error| (error.index(), format!("{:?}", error.kind())))
                .collect(),
            Ok(Err(error)) => return self.indeterminate(request, &transfers, format!("{error}")),
            Err(_) => {
                let why = format!("no answer within {:?}", self.shared.request_timeout);
                return self.indeterminate(request, &transfers, why);
            }
        };
        self.record_reply(request, &transfers, errors)
    }

    fn record_reply(
        &mut self,
        request: u64,
        transfers: &[Sent],
        errors: Vec<(u32, String)>,
    ) -> anyhow::Result<()> {
        for (index, transfer) in transfers.iter().enumerate() {
            let refused = errors.iter().any(|(at, _)| *at as usize == index);
            if refused {
                self.summary.transfers_refused += 1;
            } else {
                self.summary.transfers_created += 1;
                if transfer.kind == Kind::Pending {
                    self.open_pending.push(transfer.clone());
                }
            }
        }
        self.shared.log(&Event::Reply {
            request,
            unix_ms: unix_ms(),
            errors,
        })
    }

    fn indeterminate(
        &mut self,
        request: u64,
        transfers: &[Sent],
        why: String,
    ) -> anyhow::Result<()> {
        self.summary.transfers_indeterminate += transfers.len() as u64;
        self.shared.log(&Event::Indeterminate {
            request,
            unix_ms: unix_ms(),
            why,
        })
    }
}

pub fn to_wire(sent: &Sent) -> Transfer {
    let mut flags = match sent.kind {
        Kind::Plain => TransferFlags::empty(),
        Kind::Pending => TransferFlags::PENDING,
        Kind::Post => TransferFlags::POST_PENDING_TRANSFER,
        Kind::Void => TransferFlags::VOID_PENDING_TRANSFER,
    };
    if sent.linked {
        flags |= TransferFlags::LINKED;
    }
    Transfer::new(sent.id)
        .with_debit_account_id(sent.debit)
        .with_credit_account_id(sent.credit)
        .with_amount(sent.amount)
        .with_ledger(LEDGER)
        .with_code(CODE)
        .with_pending_id(sent.pending_id)
        .with_flags(flags)
        .with_timeout(sent.timeout_s)
}
