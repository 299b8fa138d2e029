//! The cluster-wide maintenance lease, through this agent's client (`tb_proto::lease` has the
//! design). This module turns the ledger's answers into the API's views and errors, and keeps
//! the names of the holders this agent granted leases to (the cluster stores only a hash).

pub mod hold;
pub mod ledger;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tb_proto::lease::{self as contract, Ids, LeaseView, Operation};

use crate::cluster_client::ClusterClient;
use crate::cluster_client::Shared;
use crate::config::Config;
use crate::ops::AppError;
use crate::peers::Peers;
use ledger::{Current, LedgerError, Pending, unix_ms};

/// How many granted leases' holder names are remembered (the newest).
const GRANTED_NAMES_MAX: usize = 256;

pub struct LeaseService {
    pub enabled: bool,
    pub ids: Ids,
    pub request_timeout: Duration,
    pub margin: Duration,
    replica_index: u8,
    cluster_id: String,
    /// When this agent process began: a lease it granted for its own operation before then is
    /// an orphan of a previous process of this agent (killed mid-operation).
    started: SystemTime,
    /// Lease id → (holder, when granted), for the views of the leases this agent granted.
    granted: Mutex<HashMap<u128, (String, Instant)>>,
    /// The agent's TigerBeetle client, which reads and writes the lease's accounts.
    cluster_client: Arc<ClusterClient>,
    /// The other replicas' agents, asked for the name of a holder they granted.
    peers: Option<Arc<Peers>>,
}

/// A lease this agent took or renewed, with the holder's own deadline: the time the request
/// was sent plus its ttl, less the margin (the cluster expires by the primary's wall clock).
#[derive(Debug, Clone)]
pub struct Held {
    pub view: LeaseView,
    pub deadline: Instant,
}

impl LeaseService {
    pub fn new(
        config: &Config,
        cluster_client: Arc<ClusterClient>,
        peers: Option<Arc<Peers>>,
    ) -> LeaseService {
        let lease = &config.lease;
        LeaseService {
            enabled: lease.enabled,
            ids: lease.ids(),
            request_timeout: Duration::from_millis(lease.request_timeout_ms),
            margin: Duration::from_millis(lease.margin_ms),
            replica_index: config.replica.index,
            cluster_id: config.replica.cluster_id.to_string(),
            started: SystemTime::now(),
            granted: Mutex::new(HashMap::new()),
            cluster_client,
            peers,
        }
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    fn client(&self) -> Result<Arc<Shared>, AppError> {
        if !self.enabled {
            return Err(AppError::LeaseUnavailable(
                "the maintenance lease is disabled on this agent (lease.enabled = false)".into(),
            ));
        }
        self.cluster_client
            .get()
            .map_err(|error| AppError::LeaseUnavailable(error.to_string()))
    }

    /// The API's view of a lease: the holder's name when this agent granted it.
    pub fn view(&self, current: &Current) -> LeaseView {
        let granted_by_replica = contract::tag_replica(current.tag);
        let name = self
            .granted
            .lock()
            .expect("not poisoned")
            .get(&current.lease_id)
            .map(|(name, _)| name.clone());
        LeaseView {
            lease_id: contract::format_id(current.lease_id),
            transfer_id: contract::format_id(current.transfer_id),
            operation: Operation::from_code(current.operation_code),
            granted_by_replica,
            holder: name.unwrap_or_else(|| {
                format!(
                    "holder hash {:014x} (its name is in the audit log of replica \
                     {granted_by_replica}'s agent)",
                    current.tag & 0x00ff_ffff_ffff_ffff
                )
            }),
            since_unix_ms: unix_ms(current.since),
            ttl_s: current.ttl_s,
            expires_unix_ms: unix_ms(current.expires()),
        }
    }

    /// 409 `lease_held`, naming the holder: the agent that granted the lease knows the name,
    /// so a lease granted by another replica's agent is named by asking it (bounded by the
    /// peers' timeout; without an answer, the hash stands).
    pub async fn held_error(&self, current: &Current) -> AppError {
        let mut view = self.view(current);
        let granted_by = view.granted_by_replica;
        if granted_by != self.replica_index
            && let Some(peers) = &self.peers
            && let Ok(status) = peers.lease_view(granted_by).await
            && let Some(theirs) = status.lease
            && theirs.lease_id == view.lease_id
        {
            view.holder = theirs.holder;
        }
        AppError::LeaseHeld(describe(&view))
    }
}

/// A sentence naming the holder: who, which operation, since when, until when.
pub fn describe(view: &LeaseView) -> String {
    let now_ms = unix_ms(SystemTime::now());
    format!(
        "the cluster's maintenance lease is held: lease {} for {} by {}, since {} until {} \
         (unix ms; {} s from now)",
        view.lease_id,
        view.operation
            .map_or("an unknown operation", Operation::as_str),
        view.holder,
        view.since_unix_ms,
        view.expires_unix_ms,
        (view.expires_unix_ms as i64 - now_ms as i64) / 1000
    )
}

impl LeaseService {
    pub fn error(&self, error: LedgerError) -> AppError {
        match error {
            LedgerError::Unavailable(why) => AppError::LeaseUnavailable(why),
            LedgerError::Unsound(why) => AppError::Refused(why),
            LedgerError::NotInitialized => AppError::LeaseUnavailable(
                "the lease accounts do not exist yet (POST /v1/lease/init, tbctl lease init)"
                    .into(),
            ),
            LedgerError::Held(current) => AppError::LeaseHeld(describe(&self.view(&current))),
            LedgerError::Lost(why) => AppError::LeaseLost(why),
        }
    }

    pub async fn status(&self) -> Result<contract::LeaseStatus, AppError> {
        let now_unix_ms = unix_ms(SystemTime::now());
        if !self.enabled {
            return Ok(contract::LeaseStatus {
                enabled: false,
                initialized: false,
                pool_balance: None,
                lease: None,
                now_unix_ms,
            });
        }
        let client = self.client()?;
        match ledger::read(&client, self.ids, self.request_timeout).await {
            Ok(read) => Ok(contract::LeaseStatus {
                enabled: true,
                initialized: true,
                pool_balance: Some(read.balance.to_string()),
                lease: read.current.as_ref().map(|current| self.view(current)),
                now_unix_ms,
            }),
            Err(LedgerError::NotInitialized) => Ok(contract::LeaseStatus {
                enabled: true,
                initialized: false,
                pool_balance: None,
                lease: None,
                now_unix_ms,
            }),
            Err(error) => Err(self.error(error)),
        }
    }

    pub async fn init(&self) -> Result<contract::Initialized, AppError> {
        let client = self.client()?;
        let balance = ledger::init(&client, self.ids, self.request_timeout)
            .await
            .map_err(|error| self.error(error))?;
        ledger::check_sound(&ledger::PoolRead {
            balance,
            current: None,
        })
        .map_err(|error| self.error(error))?;
        Ok(contract::Initialized {
            pool_balance: balance.to_string(),
            detail: format!(
                "the lease accounts exist and the pool holds exactly {balance} (ledger {}, ids \
                 {:016x}...)",
                self.ids.ledger, self.ids.prefix
            ),
        })
    }

    /// Takes the lease for `holder`; the pool is created first when it does not exist.
    pub async fn acquire(
        &self,
        holder: &str,
        operation: Operation,
        ttl_s: u32,
        retry_of: Option<(u128, u128)>,
    ) -> Result<Held, AppError> {
        check_ttl(ttl_s)?;
        let client = self.client()?;
        let (lease_id, transfer_id) =
            retry_of.unwrap_or_else(|| (contract::new_lease_id(), self.ids.fresh_transfer()));
        let pending = Pending {
            transfer_id,
            lease_id,
            tag: contract::holder_tag(self.replica_index, holder),
            operation_code: operation.code(),
            ttl_s,
        };
        self.remember(lease_id, holder);
        let sent = Instant::now();
        let mut result = ledger::acquire(&client, self.ids, self.request_timeout, &pending).await;
        if result == Err(LedgerError::NotInitialized) {
            tracing::info!("the lease accounts do not exist yet: creating them");
            ledger::init(&client, self.ids, self.request_timeout)
                .await
                .map_err(|error| self.error(error))?;
            result = ledger::acquire(&client, self.ids, self.request_timeout, &pending).await;
        }
        if let Err(LedgerError::Held(orphan)) = &result
            && self.orphan_of_this_agent(orphan)
        {
            tracing::warn!(lease = %contract::format_id(orphan.lease_id),
                "releasing a lease a previous process of this agent took for its own operation");
            ledger::release(&client, self.ids, self.request_timeout, orphan.lease_id)
                .await
                .map_err(|error| self.error(error))?;
            result = ledger::acquire(&client, self.ids, self.request_timeout, &pending).await;
        }
        match result {
            Ok(current) => Ok(self.held(&current, sent)),
            Err(LedgerError::Held(current)) => Err(self.held_error(&current).await),
            Err(error) => Err(self.error(error)),
        }
    }

    /// Whether `current` was taken by a previous process of this agent for one of its own
    /// operations (which died with that process): it may be released at once instead of
    /// blocking maintenance until its ttl.
    pub fn orphan_of_this_agent(&self, current: &Current) -> bool {
        let own_operation = matches!(
            Operation::from_code(current.operation_code),
            Some(Operation::Stop | Operation::Restart | Operation::Backup | Operation::Recover)
        );
        let granted_here = self
            .granted
            .lock()
            .expect("not poisoned")
            .contains_key(&current.lease_id);
        // Not granted by this process, and older than it: the cluster's clock (since) and this
        // host's (started) are compared, so a lease this process took is excluded by name first.
        contract::tag_replica(current.tag) == self.replica_index
            && own_operation
            && !granted_here
            && current.since < self.started
    }

    fn held(&self, current: &Current, sent: Instant) -> Held {
        let ttl = Duration::from_secs(current.ttl_s.into());
        Held {
            view: self.view(current),
            deadline: sent + ttl.saturating_sub(self.margin),
        }
    }

    fn remember(&self, lease_id: u128, holder: &str) {
        let mut granted = self.granted.lock().expect("not poisoned");
        if granted.len() >= GRANTED_NAMES_MAX && !granted.contains_key(&lease_id) {
            let oldest = granted
                .iter()
                .min_by_key(|(_, (_, when))| *when)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                granted.remove(&oldest);
            }
        }
        granted.insert(lease_id, (holder.to_string(), Instant::now()));
    }

    pub async fn renew(&self, lease_id: u128, ttl_s: u32) -> Result<Held, AppError> {
        check_ttl(ttl_s)?;
        let client = self.client()?;
        let sent = Instant::now();
        let current = ledger::renew(&client, self.ids, self.request_timeout, lease_id, ttl_s)
            .await
            .map_err(|error| self.error(error))?;
        Ok(self.held(&current, sent))
    }

    /// The lease now, if `lease_id` holds it.
    pub async fn current_of(&self, lease_id: u128) -> Result<Option<Current>, AppError> {
        let client = self.client()?;
        let read = ledger::read(&client, self.ids, self.request_timeout)
            .await
            .map_err(|error| self.error(error))?;
        Ok(read.current.filter(|current| current.lease_id == lease_id))
    }

    pub async fn release(&self, lease_id: u128) -> Result<bool, AppError> {
        let client = self.client()?;
        ledger::release(&client, self.ids, self.request_timeout, lease_id)
            .await
            .map_err(|error| self.error(error))
    }
}

fn check_ttl(ttl_s: u32) -> Result<(), AppError> {
    if !(contract::TTL_MIN_S..=contract::TTL_MAX_S).contains(&ttl_s) {
        return Err(AppError::BadRequest(format!(
            "ttl_s must be between {} and {} (a lease always expires)",
            contract::TTL_MIN_S,
            contract::TTL_MAX_S
        )));
    }
    Ok(())
}
