//! The inventory: one JSON file per environment, the single source of a cluster's layout.
//!
//! It is shaped as an Ansible YAML inventory written in JSON (Ansible's `yaml` inventory plugin
//! reads `.json` files), so Ansible, Nix (`builtins.fromJSON`) and Rust all read the same file
//! with no conversion step.
//!
//! ```json
//! { "all": {
//!     "vars": { "tigerbeetle_cluster_id": "0", "tigerbeetle_replica_count": 3 },
//!     "hosts": {
//!       "tb-0": { "ansible_host": "10.0.0.10", "tigerbeetle_replica": 0,
//!                 "tigerbeetle_address": "10.0.0.10:3000",
//!                 "tb_agent_url": "http://10.0.0.10:7000" } } } }
//! ```
//!
//! `docs/inventory.md` is the contract, shared with the Nix reader (`nix/inventory.nix`): every
//! key with its level, type and default, every rule in the order it is checked with its exact
//! error text, and the JSON of the resolved cluster ([`Cluster`]). Both readers stop at the first
//! error, and `scripts/check-nix` proves that they agree on every shared test inventory. So this
//! module (its keys in `rules.rs`, value syntax in `syntax.rs`, the rules in order in
//! `resolve.rs`) mirrors the Nix code rule by rule, including the order in which keys and hosts
//! are visited (sorted, byte by byte, as Nix sorts attribute names) and the byte-length semantics
//! of Nix's `stringLength`. Change one reader only together with the other and the document.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Scope;
pub use crate::inventory_error::{InventoryError, Reason};
use crate::tigerbeetle::REPLICA_COUNT_MAX;

mod resolve;
mod rules;
mod syntax;

pub use resolve::resolve;
use rules::*;
use syntax::*;

/// Inventories are small; anything larger is not an inventory.
pub const INVENTORY_SIZE_MAX_BYTES: u64 = 1024 * 1024;
/// Objects and lists nested deeper than this are refused (an inventory needs 6 levels): serde_json
/// has a recursion limit (128 levels) that Nix does not have, and the readers must agree.
pub(crate) const NESTING_DEPTH_MAX: usize = 32;
const TOKENS_MAX: usize = 16;
const TOKEN_NAME_LENGTH_MAX_BYTES: usize = 64;
const NETWORKS_MAX: usize = 64;
const PATH_LENGTH_MAX_BYTES: usize = 4096;
const NAME_LENGTH_MAX_BYTES: usize = 253;
const HOST_NAME_LENGTH_MAX_BYTES: usize = 63;

const DATA_DIR_DEFAULT: &str = "/var/lib/tigerbeetle";
const PEER_TOKEN_FILE_DEFAULT: &str = "/etc/tb-agent/peer.token";
const STATSD_PORT_DEFAULT: u16 = 8125;

const RESERVED_PREFIXES: [&str; 2] = ["tigerbeetle_", "tb_agent_"];

// The reasons, worded exactly as in docs/inventory.md and nix/inventory.nix.
const REASON_U128: &str = "must be a decimal u128 string without leading zeros, e.g. \"0\"";
const REASON_COUNT: &str = "must be an integer between 1 and 6";
const REASON_INDEX: &str = "must be an integer between 0 and 5";
const REASON_NAME: &str = "must be a non-empty string of at most 253 characters";
const REASON_SIZE: &str =
    "must be null or a size such as \"4GiB\" (digits, then KiB, MiB, GiB or TiB)";
const REASON_SOCKET: &str =
    "must be IPv4:port, e.g. \"10.0.0.10:3000\" (no DNS names, no leading zeros, port 1 to 65535)";
const REASON_NETWORK: &str =
    "must be an IPv4 network \"a.b.c.d/n\" with n from 0 to 32 and no bits set after the prefix";
const REASON_NETWORKS: &str = "must be a list of at most 64 IPv4 networks";
const REASON_PORT: &str = "must be an integer between 1 and 65535";
const REASON_PATH: &str = "must be an absolute path without \".\" or \"..\" components, trailing \"/\" or characters outside A-Z a-z 0-9 . _ + -";
const REASON_SECRET_IN_STORE: &str = "must not be in /nix/store: the store is world-readable; give the path of a file that your secret manager (agenix, sops-nix, ...) writes at runtime";
const REASON_URL: &str =
    "must be http://HOST:PORT or https://HOST:PORT, with an explicit port and no path";
const REASON_TOKENS: &str = "must be a list of at most 16 tokens";
const REASON_DEPLOY: &str = "must be \"systemd\" or \"nixos\"";
const REASON_BOOL_OR_NULL: &str = "must be null, true or false";
const REASON_LEDGER_OR_NULL: &str =
    "must be null or an integer between 1 and 4294967295 (a ledger no application uses)";
const REASON_ID_PREFIX_OR_NULL: &str =
    "must be null or 16 lowercase hex digits, not all 0 and not all f";
const REASON_TOKEN_SHAPE: &str = "must be an object with name, scopes and sha256";
const REASON_TOKEN_NAME: &str = "must be a string of 1 to 64 characters";
const REASON_TOKEN_SCOPES: &str =
    "must be a non-empty list of distinct scopes among \"read\", \"control\", \"backup\"";
const REASON_TOKEN_SHA256: &str = "must be 64 lowercase hex digits: the SHA-256 of the secret (tb-agent hash-token), never the secret itself";
const REASON_FLAKE: &str = "must be null or a flake reference of 1 to 4096 printable ASCII characters without spaces or \"#\" (rollout.yml adds #<host name>), e.g. \"/etc/nixos\"";
/// How `ansible/playbooks/rollout.yml` applies a change to a host, when the inventory does not say.
const DEPLOY_DEFAULT: &str = "systemd";

// ---------------------------------------------------------------------------------------------
// The file as written (by `tbctl local up`, for example). Reading never goes through these types:
// it validates the JSON value itself, so that unknown and misplaced keys are seen.

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InventoryFile {
    pub all: Group,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub vars: ClusterVars,
    pub hosts: BTreeMap<String, HostVars>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterVars {
    /// Decimal u128 as a string: JSON numbers and Nix integers cannot hold 128 bits.
    pub tigerbeetle_cluster_id: String,
    pub tigerbeetle_replica_count: u8,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostVars {
    pub ansible_host: String,
    pub tigerbeetle_replica: u8,
    pub tigerbeetle_address: String,
    pub tb_agent_url: String,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

// ---------------------------------------------------------------------------------------------
// The resolved cluster: exactly the JSON that `nix/inventory.nix` prints. Fields are declared in
// sorted order so that `serde_json` prints them in the order Nix does.

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// Every replica's address, in replica order (what `--addresses` takes).
    pub addresses: Vec<String>,
    pub agent_peer_ca_file: Option<String>,
    pub agent_peer_token_file: String,
    pub agent_tls: Option<AgentTls>,
    pub agent_tokens: Vec<AgentToken>,
    /// Every agent URL, in replica order, as `<scheme>://<host>:<port>`.
    pub agent_urls: Vec<String>,
    pub cache_grid: Option<String>,
    pub client_networks: Vec<String>,
    /// Decimal, as given.
    pub cluster_id: String,
    pub data_dir: String,
    pub hosts: BTreeMap<String, Host>,
    /// The maintenance lease's settings the inventory gives; the agent's defaults for the rest.
    pub lease: LeaseKeys,
    /// The flake `ansible/playbooks/rollout.yml` switches NixOS hosts to, as the host sees it.
    pub nixos_flake: Option<String>,
    pub orchestrator_networks: Vec<String>,
    pub replica_count: u8,
    /// Host names, in replica order.
    pub replica_hosts: Vec<String>,
    pub statsd_port: u16,
}

/// `tb_agent_lease_*`, each `None` where the inventory leaves it to the agent's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseKeys {
    pub enabled: Option<bool>,
    pub id_prefix: Option<String>,
    pub ledger: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentTls {
    pub cert_file: String,
    pub client_ca_file: Option<String>,
    pub key_file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentToken {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The SHA-256 of the secret, as 64 lowercase hex digits; never the secret.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub address: String,
    pub agent_ip: String,
    pub agent_listen: String,
    pub agent_port: u16,
    pub agent_url: String,
    pub ansible_host: String,
    pub data_file: String,
    /// How `ansible/playbooks/rollout.yml` applies a change: "systemd" (the roles) or "nixos".
    pub deploy: String,
    pub ip: String,
    /// The other replicas' IPs, in replica order, without this host's own IP, each once.
    pub peer_ips: Vec<String>,
    pub port: u16,
    pub replica: u8,
}

/// A validated inventory, with replicas in replica order.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub cluster_id: u128,
    pub replicas: Vec<ReplicaEntry>,
    /// Everything else the inventory says, resolved and defaulted.
    pub cluster: Cluster,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEntry {
    pub index: u8,
    pub host_name: String,
    /// `ansible_host`.
    pub host: String,
    pub address: String,
    /// Normalised: `<scheme>://<host>:<port>`.
    pub agent_url: String,
}

impl Inventory {
    pub fn load(path: &Path) -> anyhow::Result<Inventory> {
        let text = crate::bounded_file::read_to_string(path, INVENTORY_SIZE_MAX_BYTES)
            .map_err(|error| anyhow::anyhow!("inventory {}: {error}", path.display()))?;
        Inventory::parse(&text)
            .map_err(|error| anyhow::anyhow!("inventory {}: {error}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Inventory> {
        if text.len() as u64 > INVENTORY_SIZE_MAX_BYTES {
            anyhow::bail!("larger than {INVENTORY_SIZE_MAX_BYTES} bytes");
        }
        // Nix strings end at a NUL character, so Nix would read a shortened key or value where
        // serde_json reads the whole one. Both readers refuse the escape instead.
        if text.contains("\\u0000") {
            anyhow::bail!(
                "the inventory must not contain \\u0000: Nix strings cannot hold NUL characters"
            );
        }
        let scan = scan(text);
        let document: Value = match serde_json::from_str(&scan.text) {
            Ok(document) => document,
            Err(_) if scan.depth_max > NESTING_DEPTH_MAX => {
                return Err(InventoryError::TooDeep.into());
            }
            Err(error) => return Err(error.into()),
        };
        Inventory::from_value(&document)
    }

    pub fn from_file(file: &InventoryFile) -> anyhow::Result<Inventory> {
        Inventory::from_value(&serde_json::to_value(file)?)
    }

    pub fn from_value(document: &Value) -> anyhow::Result<Inventory> {
        let cluster = resolve(document)?;
        let cluster_id: u128 = cluster
            .cluster_id
            .parse()
            .expect("the cluster id was validated as a decimal u128");
        let replicas: Vec<ReplicaEntry> = cluster
            .replica_hosts
            .iter()
            .map(|name| {
                let host = &cluster.hosts[name];
                ReplicaEntry {
                    index: host.replica,
                    host_name: name.clone(),
                    host: host.ansible_host.clone(),
                    address: host.address.clone(),
                    agent_url: host.agent_url.clone(),
                }
            })
            .collect();
        assert_eq!(replicas.len(), usize::from(cluster.replica_count));
        assert!(
            replicas
                .iter()
                .enumerate()
                .all(|(index, replica)| usize::from(replica.index) == index)
        );
        Ok(Inventory {
            cluster_id,
            replicas,
            cluster,
        })
    }

    /// The comma-separated address list that `tigerbeetle start` and clients take.
    pub fn addresses(&self) -> String {
        self.cluster.addresses.join(",")
    }

    pub fn replica(&self, index: u8) -> anyhow::Result<&ReplicaEntry> {
        self.replicas.get(usize::from(index)).ok_or_else(|| {
            anyhow::anyhow!(
                "replica {index} is not in the inventory (replicas 0 to {})",
                self.replicas.len() - 1
            )
        })
    }
}

/// The name of replica `replica`'s data file in the data directory: `<cluster>_<replica>.tigerbeetle`
/// (the cluster id in decimal). The one place of this rule in Rust: the inventory's `data_file`,
/// `tbctl local` and the restore drill's scratch cluster all call it; `nix/inventory.nix`,
/// `nixos-modules/replica.nix` and Ansible's `tigerbeetle_data_file` hold the same rule.
pub fn data_file_name(cluster_id: u128, replica: u8) -> String {
    format!("{cluster_id}_{replica}.tigerbeetle")
}

/// Whether `text` is a size as `tigerbeetle_cache_grid` takes it (docs/inventory.md: 1 to 6
/// digits without a leading zero, then KiB, MiB, GiB or TiB): `tbctl local up --cache-grid` and
/// the restore drill's accept the same sizes.
pub fn is_cache_grid_size(text: &str) -> bool {
    is_size(text)
}

/// Whether `text` passes the inventory's path rule (docs/inventory.md: an absolute path of
/// components among A-Z a-z 0-9 . _ + -, neither `.` nor `..`, at most 4096 bytes), for paths
/// that a tool writes into an inventory (`tbctl local up`'s state directory).
pub fn is_inventory_path(text: &str) -> bool {
    is_path(text)
}

/// What one pass over the JSON text, outside strings, finds before serde_json reads it.
struct Scan<'a> {
    /// The text, with `-0` read as the integer `0`, as Nix does: serde_json reads a float, so a
    /// `"tigerbeetle_replica": -0` would get two verdicts. Only `-0` not followed by `.`, `e`,
    /// `E` or a digit changes (to ` 0`); what is not JSON is left for serde_json to reject.
    text: Cow<'a, str>,
    /// The deepest nesting of `[` and `{`, so that a document deeper than serde_json's recursion
    /// limit gets the same error as from the Nix reader.
    depth_max: usize,
}

fn scan(text: &str) -> Scan<'_> {
    let bytes = text.as_bytes();
    let mut negative_zeros = Vec::new();
    let mut depth: usize = 0;
    let mut depth_max: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    for (at, &byte) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                depth_max = depth_max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' if bytes.get(at + 1) == Some(&b'0')
                && !matches!(bytes.get(at + 2), Some(b'.' | b'e' | b'E' | b'0'..=b'9')) =>
            {
                negative_zeros.push(at);
            }
            _ => {}
        }
    }
    if negative_zeros.is_empty() {
        return Scan {
            text: Cow::Borrowed(text),
            depth_max,
        };
    }
    let mut changed = bytes.to_vec();
    for at in negative_zeros {
        changed[at] = b' ';
    }
    Scan {
        text: Cow::Owned(
            String::from_utf8(changed).expect("an ASCII byte replaced by an ASCII byte"),
        ),
        depth_max,
    }
}

/// Whether `value` holds an object or a list nested more than `levels` deep (`value` itself is
/// level 1). Looks no deeper than needed.
fn nests_deeper_than(value: &Value, levels: usize) -> bool {
    match value {
        Value::Array(items) => {
            levels == 0 || items.iter().any(|item| nests_deeper_than(item, levels - 1))
        }
        Value::Object(map) => {
            levels == 0 || map.values().any(|item| nests_deeper_than(item, levels - 1))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
