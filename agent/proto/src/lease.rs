//! The cluster-wide maintenance lease, kept in the cluster itself (docs/safety.md).
//!
//! Every operation that stops a replica holds it, so the quorum guard's "ask the peers, then
//! act" is one step across every agent: two stops at once cannot both pass. The lease lives in
//! TigerBeetle, the linearizable store the deployment already runs:
//!
//! - a reserved ledger with three reserved accounts: `source`, `pool` (with
//!   `debits_must_not_exceed_credits`) and `held`;
//! - the pool is funded with exactly 1 by a transfer with a fixed id, so a second init cannot make
//!   it 2 (`exists`);
//! - a lease is a *pending* transfer of 1 from `pool` to `held` with a timeout: the balance limit
//!   admits one at a time, and the cluster expires it by itself when its holder dies;
//! - renewal voids the pending transfer and creates the next one in one linked chain; release
//!   voids it. The lease's stable id is the transfers' `user_data_128`.
//!
//! This module is the contract: ids, encodings and API bodies. The agent holds the client.

use serde::{Deserialize, Serialize};

/// The lease pool's balance: exactly one lease can be pending at a time.
pub const POOL_BALANCE: u128 = 1;
/// Bounds of a lease's time to live. TigerBeetle's timeout 0 means "never expires", which a
/// lease must never be: a holder that dies would block maintenance forever.
pub const TTL_MIN_S: u32 = 1;
pub const TTL_MAX_S: u32 = 24 * 3600;
/// The transfer `code` of every lease transfer and account (ASCII "tl").
pub const CODE: u16 = 0x746c;

/// Why a lease is held: the transfer's `user_data_32`. Stable numbers: they are stored in the
/// cluster and read back by other agents and later releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Stop = 1,
    Restart = 2,
    Backup = 3,
    Recover = 4,
    Rollout = 5,
    Upgrade = 6,
    /// Taken by hand (`tbctl lease acquire`, `tbctl lease run`).
    Manual = 7,
}

impl Operation {
    pub const ALL: [Operation; 7] = [
        Operation::Stop,
        Operation::Restart,
        Operation::Backup,
        Operation::Recover,
        Operation::Rollout,
        Operation::Upgrade,
        Operation::Manual,
    ];

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.code() == code)
    }

    /// Taken by a caller through the API (rollout, upgrade, manual), not by an agent for one of
    /// its own operations.
    pub fn external(self) -> bool {
        matches!(
            self,
            Operation::Rollout | Operation::Upgrade | Operation::Manual
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Stop => "stop",
            Operation::Restart => "restart",
            Operation::Backup => "backup",
            Operation::Recover => "recover",
            Operation::Rollout => "rollout",
            Operation::Upgrade => "upgrade",
            Operation::Manual => "manual",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The reserved ids, derived from the ledger and a 64-bit prefix (the high half of every id).
/// Account and fixed transfer ids are the prefix with a small low half; lease transfers carry a
/// random low half with its top bit set, so they never meet the fixed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub ledger: u32,
    pub prefix: u64,
}

impl Ids {
    fn id(self, low: u64) -> u128 {
        ((self.prefix as u128) << 64) | low as u128
    }
    pub fn source_account(self) -> u128 {
        self.id(1)
    }
    pub fn pool_account(self) -> u128 {
        self.id(2)
    }
    pub fn held_account(self) -> u128 {
        self.id(3)
    }
    /// The one transfer that funds the pool.
    pub fn fund_transfer(self) -> u128 {
        self.id(1)
    }
    /// A new id for a lease transfer (acquire, renew, release): random, in the reserved range.
    pub fn fresh_transfer(self) -> u128 {
        self.id(rand::random::<u64>() | 1 << 63)
    }
    /// Whether `id` lies in the reserved range (for readers that must skip lease records).
    pub fn reserved(self, id: u128) -> bool {
        (id >> 64) as u64 == self.prefix
    }
}

/// Who holds a lease, as stored in the transfer's `user_data_64`: the replica whose agent
/// granted it (high byte) and a hash of the holder's name (the names are in that agent's audit
/// log and in its memory).
pub fn holder_tag(granted_by_replica: u8, holder: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(holder.as_bytes());
    let hash = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (granted_by_replica as u64) << 56 | (hash & 0x00ff_ffff_ffff_ffff)
}

pub fn tag_replica(tag: u64) -> u8 {
    (tag >> 56) as u8
}

/// Lease ids travel as 32 hex digits.
pub fn format_id(id: u128) -> String {
    format!("{id:032x}")
}

/// The rule of `crate::ids::LEASE_ID_PATTERN`: lowercase, as `format_id` writes them.
pub fn parse_id(text: &str) -> Result<u128, InvalidLeaseId> {
    let valid = text.len() == 32 && text.bytes().all(crate::ids::is_lower_hex);
    let id = valid
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
        .filter(|id| *id != 0 && *id != u128::MAX);
    id.ok_or_else(|| InvalidLeaseId {
        text: text.to_string(),
    })
}

/// Why a text is not a lease id (`crate::ids::LEASE_ID_PATTERN`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease id {text:?} is not 32 lowercase hex digits (nor 0 or all f)")]
pub struct InvalidLeaseId {
    pub text: String,
}

/// A new lease id: random, never 0 or all ones.
pub fn new_lease_id() -> u128 {
    loop {
        let id = rand::random::<u128>();
        if id != 0 && id != u128::MAX {
            return id;
        }
    }
}

/// One lease as the cluster holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseView {
    pub lease_id: String,
    /// The current pending transfer (it changes on renewal).
    pub transfer_id: String,
    pub operation: Option<Operation>,
    /// The replica whose agent granted it.
    pub granted_by_replica: u8,
    /// The holder's name, when the agent answering granted it; else its hash.
    pub holder: String,
    /// Cluster time of the current pending transfer (its last renewal).
    pub since_unix_ms: u64,
    pub ttl_s: u32,
    /// When the cluster expires it unless renewed: `since + ttl`.
    pub expires_unix_ms: u64,
}

/// `GET /v1/lease`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub enabled: bool,
    /// False until `POST /v1/lease/init` (or the first acquire) created the accounts.
    pub initialized: bool,
    /// The pool's posted balance: exactly 1 when sound.
    pub pool_balance: Option<String>,
    pub lease: Option<LeaseView>,
    /// The cluster's time of this answer is not known; this is the agent's wall clock.
    pub now_unix_ms: u64,
}

/// `POST /v1/lease/acquire`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    #[serde(deserialize_with = "crate::api::whole_number")]
    pub ttl_s: u32,
    #[serde(default)]
    pub operation: Option<Operation>,
    /// Who holds it, for the 409s of others and the audit log; defaults to the token's name.
    #[serde(default)]
    pub holder: Option<String>,
    /// A retry of an acquire that got no answer reuses its lease id (then `exists` is success).
    #[serde(default)]
    pub lease_id: Option<String>,
    /// With `lease_id`: the pending transfer id the first attempt used.
    #[serde(default)]
    pub transfer_id: Option<String>,
}

/// `POST /v1/lease/renew`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub lease_id: String,
    #[serde(deserialize_with = "crate::api::whole_number")]
    pub ttl_s: u32,
}

/// `POST /v1/lease/release` and `POST /v1/lease/break`: the lease id, typed out for a break.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseIdRequest {
    pub lease_id: String,
}

/// The answer of release and break.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Released {
    pub lease_id: String,
    /// False when it was not held any more (released before, expired, or never granted).
    pub released: bool,
    pub detail: String,
}

/// `POST /v1/lease/init`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Initialized {
    pub pool_balance: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_in_the_reserved_range_and_apart() {
        let ids = Ids {
            ledger: 7,
            prefix: 0x7462_2d6c_6561_7365,
        };
        let fixed = [ids.source_account(), ids.pool_account(), ids.held_account()];
        assert_eq!(fixed.len(), 3);
        assert!(fixed[0] != fixed[1] && fixed[1] != fixed[2]);
        for _ in 0..1000 {
            let fresh = ids.fresh_transfer();
            assert!(ids.reserved(fresh));
            assert!(fresh != ids.fund_transfer());
            assert!(fresh as u64 >= 1 << 63, "the low half's top bit is set");
        }
        assert!(!ids.reserved(crate::tigerbeetle::PROBE_ACCOUNT_ID));
    }

    #[test]
    fn lease_ids_round_trip_and_bad_ones_are_refused() {
        let id = new_lease_id();
        assert_eq!(parse_id(&format_id(id)), Ok(id));
        for bad in ["", "xyz", &"0".repeat(32), &"f".repeat(32), &"1".repeat(33)] {
            assert!(parse_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn operations_and_tags_decode() {
        for op in Operation::ALL {
            assert_eq!(Operation::from_code(op.code()), Some(op));
        }
        assert_eq!(Operation::from_code(0), None);
        let tag = holder_tag(5, "admin");
        assert_eq!(tag_replica(tag), 5);
        assert_eq!(tag, holder_tag(5, "admin"));
        assert_ne!(tag, holder_tag(5, "ansible"));
    }
}
