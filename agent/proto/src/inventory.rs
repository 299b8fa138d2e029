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
//! file mirrors the Nix code rule by rule, including the order in which keys and hosts are
//! visited (sorted, byte by byte, as Nix sorts attribute names) and the byte-length semantics of
//! Nix's `stringLength`. Change one reader only together with the other and the document.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Scope;
pub use crate::inventory_error::{InventoryError, Reason};
use crate::tigerbeetle::REPLICA_COUNT_MAX;

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

// ---------------------------------------------------------------------------------------------
// The keys.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Vars,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    U128,
    Count,
    Index,
    Name,
    Size,
    Socket,
    SocketOrNull,
    Networks,
    Port,
    Path,
    PathOrNull,
    SecretPath,
    SecretPathOrNull,
    Url,
    Tokens,
    Deploy,
    FlakeOrNull,
    BoolOrNull,
    LedgerOrNull,
    IdPrefixOrNull,
}

struct KeySpec {
    key: &'static str,
    level: Level,
    required: bool,
    rule: Rule,
}

const fn spec(key: &'static str, level: Level, required: bool, rule: Rule) -> KeySpec {
    KeySpec {
        key,
        level,
        required,
        rule,
    }
}

/// Every key of docs/inventory.md. Within a level they are checked in sorted order of key.
const KEYS: [KeySpec; 23] = [
    spec("tigerbeetle_cluster_id", Level::Vars, true, Rule::U128),
    spec("tigerbeetle_replica_count", Level::Vars, true, Rule::Count),
    spec("tigerbeetle_cache_grid", Level::Vars, false, Rule::Size),
    spec("tigerbeetle_data_dir", Level::Vars, false, Rule::Path),
    spec(
        "tigerbeetle_client_networks",
        Level::Vars,
        false,
        Rule::Networks,
    ),
    spec(
        "tb_agent_orchestrator_networks",
        Level::Vars,
        false,
        Rule::Networks,
    ),
    spec("tb_agent_statsd_port", Level::Vars, false, Rule::Port),
    spec("tb_agent_tokens", Level::Vars, false, Rule::Tokens),
    spec(
        "tb_agent_peer_token_file",
        Level::Vars,
        false,
        Rule::SecretPath,
    ),
    spec(
        "tb_agent_peer_ca_file",
        Level::Vars,
        false,
        Rule::PathOrNull,
    ),
    spec(
        "tb_agent_tls_cert_file",
        Level::Vars,
        false,
        Rule::PathOrNull,
    ),
    spec(
        "tb_agent_tls_key_file",
        Level::Vars,
        false,
        Rule::SecretPathOrNull,
    ),
    spec(
        "tb_agent_tls_client_ca_file",
        Level::Vars,
        false,
        Rule::PathOrNull,
    ),
    spec("ansible_host", Level::Host, true, Rule::Name),
    spec("tigerbeetle_replica", Level::Host, true, Rule::Index),
    spec("tigerbeetle_address", Level::Host, true, Rule::Socket),
    spec("tb_agent_url", Level::Host, true, Rule::Url),
    spec("tb_agent_listen", Level::Host, false, Rule::SocketOrNull),
    spec(
        "tigerbeetle_nixos_flake",
        Level::Vars,
        false,
        Rule::FlakeOrNull,
    ),
    // The maintenance lease's reserved ledger and ids (docs/safety.md); null: the agent's
    // default, the one place it is written (`tb_proto::config::defaults`).
    spec(
        "tb_agent_lease_enabled",
        Level::Vars,
        false,
        Rule::BoolOrNull,
    ),
    spec(
        "tb_agent_lease_ledger",
        Level::Vars,
        false,
        Rule::LedgerOrNull,
    ),
    spec(
        "tb_agent_lease_id_prefix",
        Level::Vars,
        false,
        Rule::IdPrefixOrNull,
    ),
    spec("tigerbeetle_deploy", Level::Host, false, Rule::Deploy),
];

fn key_spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|spec| spec.key == key)
}

/// Keys that name a secret (the same test as `nix/inventory.nix`'s `looksSecret`).
fn looks_secret(key: &str) -> bool {
    ["password", "passphrase", "secret"]
        .iter()
        .any(|word| key.contains(word))
        || key.ends_with("_pass")
}

fn is_reserved(key: &str) -> bool {
    RESERVED_PREFIXES
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// Keys in the order Nix's `attrNames` gives them: sorted byte by byte.
fn sorted_keys(map: &Map<String, Value>) -> Vec<&str> {
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// A failed value rule: the element of the value it names (empty for the value itself, else
/// e.g. `[2]` or `[0].name`) and why.
struct Failure {
    element: String,
    reason: Reason,
}

impl Failure {
    fn value(reason: &'static str) -> Failure {
        Failure {
            element: String::new(),
            reason: Reason::Value(reason),
        }
    }
}

fn level_error(at: &str, values: &Map<String, Value>, level: Level) -> Option<InventoryError> {
    for key in sorted_keys(values) {
        if !is_reserved(key) {
            if looks_secret(key) {
                return Some(InventoryError::key(
                    format!("{at}.{key}"),
                    Reason::LooksSecret,
                ));
            }
            continue; // ansible_user and friends: Ansible's business.
        }
        match key_spec(key) {
            Some(spec) if spec.level == level => {}
            Some(_) => {
                let belongs_in = match level {
                    Level::Vars => "all.hosts.<name>",
                    Level::Host => "all.vars",
                };
                let reason = Reason::Misplaced { belongs_in };
                return Some(InventoryError::key(format!("{at}.{key}"), reason));
            }
            None => {
                return Some(InventoryError::key(
                    format!("{at}.{key}"),
                    Reason::UnknownKey,
                ));
            }
        }
    }
    let mut specs: Vec<&KeySpec> = KEYS.iter().filter(|spec| spec.level == level).collect();
    specs.sort_unstable_by_key(|spec| spec.key);
    for spec in specs {
        let Some(value) = values.get(spec.key) else {
            if spec.required {
                return Some(InventoryError::key(
                    format!("{at}.{}", spec.key),
                    Reason::Required,
                ));
            }
            continue;
        };
        if let Err(Failure { element, reason }) = check_value(spec.rule, value) {
            return Some(InventoryError::key(
                format!("{at}.{}{element}", spec.key),
                reason,
            ));
        }
    }
    None
}

fn check_value(rule: Rule, value: &Value) -> Result<(), Failure> {
    let ok = |valid: bool, reason: &'static str| {
        if valid {
            Ok(())
        } else {
            Err(Failure::value(reason))
        }
    };
    let int = value.as_i64();
    let text = value.as_str();
    match rule {
        Rule::U128 => ok(text.is_some_and(is_u128), REASON_U128),
        Rule::Count => ok(
            int.is_some_and(|n| (1..=i64::from(REPLICA_COUNT_MAX)).contains(&n)),
            REASON_COUNT,
        ),
        Rule::Index => ok(
            int.is_some_and(|n| (0..i64::from(REPLICA_COUNT_MAX)).contains(&n)),
            REASON_INDEX,
        ),
        Rule::Name => ok(
            text.is_some_and(|s| !s.is_empty() && s.len() <= NAME_LENGTH_MAX_BYTES),
            REASON_NAME,
        ),
        Rule::Size => ok(value.is_null() || text.is_some_and(is_size), REASON_SIZE),
        Rule::Socket => ok(text.and_then(parse_socket).is_some(), REASON_SOCKET),
        Rule::SocketOrNull => ok(
            value.is_null() || text.and_then(parse_socket).is_some(),
            REASON_SOCKET,
        ),
        Rule::Networks => check_networks(value),
        Rule::Port => ok(int.is_some_and(|n| (1..=65535).contains(&n)), REASON_PORT),
        Rule::Path => path_check(value),
        Rule::PathOrNull if value.is_null() => Ok(()),
        Rule::PathOrNull => path_check(value),
        Rule::SecretPath => secret_path_check(value),
        Rule::SecretPathOrNull if value.is_null() => Ok(()),
        Rule::SecretPathOrNull => secret_path_check(value),
        Rule::Url => ok(text.and_then(parse_url).is_some(), REASON_URL),
        Rule::Tokens => check_tokens(value),
        Rule::Deploy => ok(
            text.is_some_and(|s| s == "systemd" || s == "nixos"),
            REASON_DEPLOY,
        ),
        Rule::FlakeOrNull => ok(value.is_null() || text.is_some_and(is_flake), REASON_FLAKE),
        Rule::BoolOrNull => ok(value.is_null() || value.is_boolean(), REASON_BOOL_OR_NULL),
        Rule::LedgerOrNull => ok(
            value.is_null() || int.is_some_and(|n| (1..=i64::from(u32::MAX)).contains(&n)),
            REASON_LEDGER_OR_NULL,
        ),
        Rule::IdPrefixOrNull => ok(
            value.is_null() || text.is_some_and(is_id_prefix),
            REASON_ID_PREFIX_OR_NULL,
        ),
    }
}

/// `[!-"$-~]+`, 1 to 4096 bytes: printable ASCII without space or `#` (rollout.yml appends
/// `#<host name>`, and the reference is one argv element).
fn is_flake(text: &str) -> bool {
    (1..=PATH_LENGTH_MAX_BYTES).contains(&text.len())
        && text
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'#')
}

// ---------------------------------------------------------------------------------------------
// Value rules. Each mirrors a regular expression of nix/inventory.nix (a full match, byte by
// byte); the expression is quoted above each.

/// `0|[1-9][0-9]*`
fn is_decimal(text: &str) -> bool {
    match text.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// `[0-9a-f]{16}`, not all 0 and not all f: the high 64 bits of the lease's reserved ids.
fn is_id_prefix(text: &str) -> bool {
    text.len() == 16
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && text != "0000000000000000"
        && text != "ffffffffffffffff"
}

/// Decimal, at most u128::MAX.
fn is_u128(text: &str) -> bool {
    // `u128::from_str` alone would also take "+1" and "007".
    is_decimal(text) && text.parse::<u128>().is_ok()
}

/// `[1-9][0-9]{0,5}(KiB|MiB|GiB|TiB)`
fn is_size(text: &str) -> bool {
    let Some(digits) = ["KiB", "MiB", "GiB", "TiB"]
        .iter()
        .find_map(|unit| text.strip_suffix(unit))
    else {
        return false;
    };
    (1..=6).contains(&digits.len()) && digits != "0" && is_decimal(digits)
}

/// `(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}`, each octet at most 255.
fn ipv4_octets(text: &str) -> Option<[u8; 4]> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.len() > 3 || !is_decimal(part) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(octets)
}

/// A port: decimal, at most 5 digits, 1 to 65535.
fn port_of(text: &str) -> Option<u16> {
    if text.len() > 5 || !is_decimal(text) {
        return None;
    }
    text.parse::<u16>().ok().filter(|port| *port >= 1)
}

struct Socket<'a> {
    ip: &'a str,
    octets: [u8; 4],
    port: u16,
}

/// `([0-9.]+):([0-9]+)`, then the IP and the port as above.
fn parse_socket(text: &str) -> Option<Socket<'_>> {
    let (ip, port) = text.split_once(':')?;
    if ip.is_empty() || !ip.bytes().all(|b| b == b'.' || b.is_ascii_digit()) {
        return None;
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Socket {
        ip,
        octets: ipv4_octets(ip)?,
        port: port_of(port)?,
    })
}

/// `([0-9.]+)/(0|[1-9][0-9]?)`, the prefix at most 32, no address bit set after it.
fn is_network(text: &str) -> bool {
    let Some((ip, prefix)) = text.split_once('/') else {
        return false;
    };
    if ip.is_empty() || !ip.bytes().all(|b| b == b'.' || b.is_ascii_digit()) {
        return false;
    }
    if prefix.len() > 2 || !is_decimal(prefix) {
        return false;
    }
    let Some(octets) = ipv4_octets(ip) else {
        return false;
    };
    let prefix: u32 = prefix.parse().expect("one or two digits");
    if prefix > 32 {
        return false;
    }
    let host_bits: u64 = (1u64 << (32 - prefix)) - 1;
    u64::from(u32::from_be_bytes(octets)) & host_bits == 0
}

fn check_networks(value: &Value) -> Result<(), Failure> {
    let Some(networks) = value.as_array().filter(|list| list.len() <= NETWORKS_MAX) else {
        return Err(Failure::value(REASON_NETWORKS));
    };
    for (index, network) in networks.iter().enumerate() {
        if !network.as_str().is_some_and(is_network) {
            return Err(Failure {
                element: format!("[{index}]"),
                reason: Reason::Value(REASON_NETWORK),
            });
        }
    }
    Ok(())
}

/// `(/[A-Za-z0-9._+-]+)+`, at most 4096 bytes, no component `.` or `..`.
fn is_path(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('/') else {
        return false;
    };
    text.len() <= PATH_LENGTH_MAX_BYTES
        && rest.split('/').all(|component| {
            !component.is_empty()
                && component != "."
                && component != ".."
                && component
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
        })
}

fn path_check(value: &Value) -> Result<(), Failure> {
    if value.as_str().is_some_and(is_path) {
        Ok(())
    } else {
        Err(Failure::value(REASON_PATH))
    }
}

/// Secrets are world-readable in the Nix store: only paths outside it may name them.
fn secret_path_check(value: &Value) -> Result<(), Failure> {
    path_check(value)?;
    let path = value.as_str().expect("a path is a string");
    if path.starts_with("/nix/store/") {
        return Err(Failure::value(REASON_SECRET_IN_STORE));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlScheme {
    Http,
    Https,
}

impl UrlScheme {
    fn as_str(self) -> &'static str {
        match self {
            UrlScheme::Http => "http",
            UrlScheme::Https => "https",
        }
    }
}

struct Url<'a> {
    scheme: UrlScheme,
    host: &'a str,
    port: u16,
}

/// `(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+]):([0-9]+)/?`, the port as for a socket.
fn parse_url(text: &str) -> Option<Url<'_>> {
    let (scheme, rest) = if let Some(rest) = text.strip_prefix("http://") {
        (UrlScheme::Http, rest)
    } else {
        (UrlScheme::Https, text.strip_prefix("https://")?)
    };
    let host_length = if rest.starts_with('[') {
        // The bracketed set has no `]`, so the first `]` closes the host.
        let close = rest.find(']')?;
        let inside = &rest[1..close];
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        close + 1
    } else {
        // The host's set has no `:`, so the first `:` ends the host.
        let colon = rest.find(':')?;
        let host = &rest[..colon];
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return None;
        }
        colon
    };
    let (host, after) = rest.split_at(host_length);
    let port = after.strip_prefix(':')?;
    let port = port.strip_suffix('/').unwrap_or(port);
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Url {
        scheme,
        host,
        port: port_of(port)?,
    })
}

fn scope_of(value: &Value) -> Option<Scope> {
    match value.as_str()? {
        "read" => Some(Scope::Read),
        "control" => Some(Scope::Control),
        "backup" => Some(Scope::Backup),
        _ => None,
    }
}

fn token_failure(index: usize, token: &Value) -> Option<Failure> {
    let failure = |element: &str, reason: Reason| {
        Some(Failure {
            element: format!("[{index}]{element}"),
            reason,
        })
    };
    let Some(token) = token.as_object() else {
        return failure("", Reason::Value(REASON_TOKEN_SHAPE));
    };
    if let Some(key) = sorted_keys(token)
        .into_iter()
        .find(|key| !["name", "scopes", "sha256"].contains(key))
    {
        return failure(&format!(".{key}"), Reason::UnknownTokenKey);
    }
    let name_valid = token
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|name| !name.is_empty() && name.len() <= TOKEN_NAME_LENGTH_MAX_BYTES);
    if !name_valid {
        return failure(".name", Reason::Value(REASON_TOKEN_NAME));
    }
    let scopes: Option<Vec<Scope>> = token
        .get("scopes")
        .and_then(Value::as_array)
        .filter(|scopes| !scopes.is_empty())
        .and_then(|scopes| scopes.iter().map(scope_of).collect());
    let scopes_valid = scopes.is_some_and(|scopes| {
        scopes
            .iter()
            .enumerate()
            .all(|(index, scope)| !scopes[..index].contains(scope))
    });
    if !scopes_valid {
        return failure(".scopes", Reason::Value(REASON_TOKEN_SCOPES));
    }
    let sha256_valid = token
        .get("sha256")
        .and_then(Value::as_str)
        .is_some_and(|hash| {
            hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
    if !sha256_valid {
        return failure(".sha256", Reason::Value(REASON_TOKEN_SHA256));
    }
    None
}

fn check_tokens(value: &Value) -> Result<(), Failure> {
    let Some(tokens) = value.as_array().filter(|list| list.len() <= TOKENS_MAX) else {
        return Err(Failure::value(REASON_TOKENS));
    };
    for (index, token) in tokens.iter().enumerate() {
        if let Some(failure) = token_failure(index, token) {
            return Err(failure);
        }
    }
    let names: Vec<&str> = tokens
        .iter()
        .map(|token| token["name"].as_str().expect("validated"))
        .collect();
    for (index, name) in names.iter().enumerate() {
        if names[..index].contains(name) {
            return Err(Failure {
                element: format!("[{index}].name"),
                reason: Reason::TokenNameTwice {
                    name: name.to_string(),
                },
            });
        }
    }
    Ok(())
}

/// `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`
fn is_host_name(name: &str) -> bool {
    match name.as_bytes() {
        [first, rest @ ..] => {
            first.is_ascii_alphanumeric()
                && name.len() <= HOST_NAME_LENGTH_MAX_BYTES
                && !name.bytes().all(|b| b.is_ascii_digit())
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        [] => false,
    }
}

/// Loopback, RFC 1918, shared address space (100.64.0.0/10) and link-local; all else is public.
fn is_private_ipv4(octets: [u8; 4]) -> bool {
    let [a, second, _, _] = octets;
    a == 127
        || a == 10
        || (a == 172 && (16..=31).contains(&second))
        || (a == 192 && second == 168)
        || (a == 100 && (64..=127).contains(&second))
        || (a == 169 && second == 254)
}

// ---------------------------------------------------------------------------------------------
// The rules in order (docs/inventory.md, "Rules, in the order they are checked").

/// A value that passed its rule, or the key's default when absent or `null`.
fn present<'a>(values: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    values.get(key).filter(|value| !value.is_null())
}

fn string_or(values: &Map<String, Value>, key: &str, default: &str) -> String {
    present(values, key)
        .map(|value| value.as_str().expect("validated string").to_string())
        .unwrap_or_else(|| default.to_string())
}

fn optional_string(values: &Map<String, Value>, key: &str) -> Option<String> {
    present(values, key).map(|value| value.as_str().expect("validated string").to_string())
}

fn string_list(values: &Map<String, Value>, key: &str) -> Vec<String> {
    present(values, key)
        .map(|value| {
            value
                .as_array()
                .expect("validated list")
                .iter()
                .map(|item| item.as_str().expect("validated string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A host after steps 1 to 4, before the cross-host rules.
struct HostDraft<'a> {
    name: &'a str,
    replica: u8,
    ansible_host: String,
    address: String,
    socket: Socket<'a>,
    url: Url<'a>,
    agent_listen: String,
    deploy: String,
}

/// The resolved cluster, or the first error (without the `inventory <path>: ` prefix).
pub fn resolve(document: &Value) -> Result<Cluster, InventoryError> {
    if nests_deeper_than(document, NESTING_DEPTH_MAX) {
        return Err(InventoryError::TooDeep);
    }
    // 1. Structure.
    let (vars, hosts) = structure(document)?;
    // 2. Cluster-wide keys.
    if let Some(error) = level_error("all.vars", vars, Level::Vars) {
        return Err(error);
    }
    // 3. Host names, 4. per-host keys.
    let host_values = host_keys(hosts)?;
    // 5. TLS files, together.
    let agent_tls = tls_files(vars)?;
    let tls = agent_tls.is_some();

    let nixos_flake = optional_string(vars, "tigerbeetle_nixos_flake");
    let cluster_id = string_or(vars, "tigerbeetle_cluster_id", "");
    let replica_count = u8::try_from(vars["tigerbeetle_replica_count"].as_i64().expect("count"))
        .expect("validated count");
    let data_dir = string_or(vars, "tigerbeetle_data_dir", DATA_DIR_DEFAULT);
    let cluster_id_number: u128 = cluster_id.parse().expect("validated as a decimal u128");
    let drafts: Vec<HostDraft> = host_values
        .iter()
        .map(|&(name, values)| draft(name, values))
        .collect();

    // 6. Replica slots.
    let ordered = replica_slots(&drafts, replica_count)?;
    // 7. Each host against the others and the TLS setting.
    let mut listen_sockets = Vec::with_capacity(drafts.len());
    for position in 0..drafts.len() {
        listen_sockets.push(check_host(&drafts, position, tls, nixos_flake.is_some())?);
    }

    // The resolved cluster.
    let hosts: BTreeMap<String, Host> = drafts
        .iter()
        .zip(listen_sockets)
        .map(|(host, listen)| {
            let data_file = format!(
                "{data_dir}/{}",
                data_file_name(cluster_id_number, host.replica)
            );
            let resolved = resolved_host(host, listen, &ordered, data_file);
            (host.name.to_string(), resolved)
        })
        .collect();
    let statsd_port = present(vars, "tb_agent_statsd_port")
        .map(|port| u16::try_from(port.as_i64().expect("validated")).expect("validated port"))
        .unwrap_or(STATSD_PORT_DEFAULT);
    Ok(Cluster {
        addresses: ordered.iter().map(|host| host.address.clone()).collect(),
        agent_peer_ca_file: optional_string(vars, "tb_agent_peer_ca_file"),
        agent_peer_token_file: string_or(vars, "tb_agent_peer_token_file", PEER_TOKEN_FILE_DEFAULT),
        agent_tls,
        agent_tokens: agent_tokens(vars),
        agent_urls: ordered
            .iter()
            .map(|host| normalised_url(&host.url))
            .collect(),
        cache_grid: optional_string(vars, "tigerbeetle_cache_grid"),
        client_networks: string_list(vars, "tigerbeetle_client_networks"),
        cluster_id,
        data_dir,
        hosts,
        lease: lease_keys(vars),
        nixos_flake,
        orchestrator_networks: string_list(vars, "tb_agent_orchestrator_networks"),
        replica_count,
        replica_hosts: ordered.iter().map(|host| host.name.to_string()).collect(),
        statsd_port,
    })
}

/// Step 1: `all.vars` and `all.hosts`, both objects.
/// A JSON object: `all.vars`, or one host's keys.
type Object = Map<String, Value>;

fn structure(document: &Value) -> Result<(&Object, &Object), InventoryError> {
    let Some(root) = document.as_object() else {
        return Err(InventoryError::NotAnObject);
    };
    let Some(all) = root.get("all").and_then(Value::as_object) else {
        return Err(InventoryError::key("all", Reason::NotVarsAndHosts));
    };
    let Some(vars) = all.get("vars").and_then(Value::as_object) else {
        return Err(InventoryError::key("all.vars", Reason::NotAnObject));
    };
    let Some(hosts) = all.get("hosts").and_then(Value::as_object) else {
        return Err(InventoryError::key("all.hosts", Reason::NotAnObject));
    };
    Ok((vars, hosts))
}

/// Steps 3 and 4: every host name, then every host's keys, hosts in name order.
fn host_keys(hosts: &Object) -> Result<Vec<(&str, &Object)>, InventoryError> {
    let names = sorted_keys(hosts);
    if let Some(name) = names.iter().find(|name| !is_host_name(name)) {
        return Err(InventoryError::key(
            format!("all.hosts.{name}"),
            Reason::HostName,
        ));
    }
    let mut host_values = Vec::with_capacity(names.len());
    for name in names {
        let Some(values) = hosts[name].as_object() else {
            return Err(InventoryError::key(
                format!("all.hosts.{name}"),
                Reason::NotAnObject,
            ));
        };
        if let Some(error) = level_error(&format!("all.hosts.{name}"), values, Level::Host) {
            return Err(error);
        }
        host_values.push((name, values));
    }
    Ok(host_values)
}

/// Step 5: the TLS files, all or none of certificate and key; the client CA only with them.
fn tls_files(vars: &Map<String, Value>) -> Result<Option<AgentTls>, InventoryError> {
    let cert_file = optional_string(vars, "tb_agent_tls_cert_file");
    let key_file = optional_string(vars, "tb_agent_tls_key_file");
    let client_ca_file = optional_string(vars, "tb_agent_tls_client_ca_file");
    let tls = cert_file.is_some();
    let needs =
        |path: &str, needs: &'static str| Err(InventoryError::key(path, Reason::Needs { needs }));
    if key_file.is_some() && !tls {
        return needs(
            "all.vars.tb_agent_tls_key_file",
            "all.vars.tb_agent_tls_cert_file",
        );
    }
    if tls && key_file.is_none() {
        return needs(
            "all.vars.tb_agent_tls_cert_file",
            "all.vars.tb_agent_tls_key_file",
        );
    }
    if client_ca_file.is_some() && !tls {
        return needs(
            "all.vars.tb_agent_tls_client_ca_file",
            "all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file",
        );
    }
    Ok(cert_file.map(|cert_file| AgentTls {
        cert_file,
        client_ca_file,
        key_file: key_file.expect("checked above"),
    }))
}

/// A host whose keys passed their rules (step 4), with its defaults.
fn draft<'a>(name: &'a str, values: &'a Map<String, Value>) -> HostDraft<'a> {
    let text = |key: &str| values[key].as_str().expect("validated string");
    let socket = parse_socket(text("tigerbeetle_address")).expect("validated socket");
    let url = parse_url(text("tb_agent_url")).expect("validated url");
    let agent_listen = optional_string(values, "tb_agent_listen")
        .unwrap_or_else(|| format!("{}:{}", socket.ip, url.port));
    HostDraft {
        name,
        replica: u8::try_from(values["tigerbeetle_replica"].as_i64().expect("index"))
            .expect("validated index"),
        ansible_host: text("ansible_host").to_string(),
        address: text("tigerbeetle_address").to_string(),
        socket,
        url,
        agent_listen,
        deploy: string_or(values, "tigerbeetle_deploy", DEPLOY_DEFAULT),
    }
}

/// Step 6: every index below the count, held once, none missing. Hosts are in name order, so
/// the first holder of an index is the earliest name. Returns the hosts in replica order.
fn replica_slots<'d, 'a>(
    drafts: &'d [HostDraft<'a>],
    replica_count: u8,
) -> Result<Vec<&'d HostDraft<'a>>, InventoryError> {
    for (position, host) in drafts.iter().enumerate() {
        let path = format!("all.hosts.{}.tigerbeetle_replica", host.name);
        let replica = host.replica;
        if replica >= replica_count {
            let reason = Reason::ReplicaBeyondCount {
                replica,
                replica_count,
            };
            return Err(InventoryError::key(path, reason));
        }
        if let Some(earlier) = drafts[..position]
            .iter()
            .find(|other| other.replica == replica)
        {
            let reason = Reason::ReplicaTaken {
                replica,
                host: earlier.name.to_string(),
            };
            return Err(InventoryError::key(path, reason));
        }
    }
    let mut ordered = Vec::with_capacity(usize::from(replica_count));
    for replica in 0..replica_count {
        let Some(host) = drafts.iter().find(|host| host.replica == replica) else {
            return Err(InventoryError::key(
                "all.hosts",
                Reason::ReplicaMissing { replica },
            ));
        };
        ordered.push(host);
    }
    assert_eq!(ordered.len(), drafts.len());
    Ok(ordered)
}

/// Step 7 for `drafts[position]`: its address against the earlier hosts', its URL's scheme
/// against the TLS setting, its listen address, its deploy method. Returns the listen IP and
/// port.
fn check_host(
    drafts: &[HostDraft],
    position: usize,
    tls: bool,
    has_nixos_flake: bool,
) -> Result<(String, u16), InventoryError> {
    let host = &drafts[position];
    let refuse = |key: &str, reason: Reason| {
        Err(InventoryError::key(
            format!("all.hosts.{}.{key}", host.name),
            reason,
        ))
    };
    if let Some(earlier) = drafts[..position]
        .iter()
        .find(|other| other.address == host.address)
    {
        let reason = Reason::AddressTaken {
            address: host.address.clone(),
            host: earlier.name.to_string(),
        };
        return refuse("tigerbeetle_address", reason);
    }
    if tls && host.url.scheme != UrlScheme::Https {
        return refuse("tb_agent_url", Reason::UrlNeedsHttps);
    }
    if !tls && host.url.scheme != UrlScheme::Http {
        return refuse("tb_agent_url", Reason::UrlNeedsHttp);
    }
    // Given listen addresses passed their rule and defaults are built from valid parts:
    // this mirrors a check of the Nix reader that cannot fail.
    let Some(listen) = parse_socket(&host.agent_listen) else {
        return refuse("tb_agent_listen", Reason::Value(REASON_SOCKET));
    };
    if host.agent_listen == host.address {
        let listen = host.agent_listen.clone();
        return refuse("tb_agent_listen", Reason::ListenIsReplicaAddress { listen });
    }
    if !tls && !is_private_ipv4(listen.octets) {
        let ip = listen.ip.to_string();
        return refuse("tb_agent_listen", Reason::ListenPublicWithoutTls { ip });
    }
    if host.deploy == "nixos" && !has_nixos_flake {
        return refuse("tigerbeetle_deploy", Reason::NixosWithoutFlake);
    }
    Ok((listen.ip.to_string(), listen.port))
}

/// `<scheme>://<host>:<port>`.
fn normalised_url(url: &Url) -> String {
    format!("{}://{}:{}", url.scheme.as_str(), url.host, url.port)
}

/// One host of the resolved cluster; `ordered` is every host in replica order.
fn resolved_host(
    host: &HostDraft,
    (agent_ip, agent_port): (String, u16),
    ordered: &[&HostDraft],
    data_file: String,
) -> Host {
    let mut peer_ips: Vec<String> = Vec::with_capacity(ordered.len());
    for other in ordered {
        let ip = other.socket.ip;
        if ip != host.socket.ip && !peer_ips.iter().any(|kept| kept == ip) {
            peer_ips.push(ip.to_string());
        }
    }
    Host {
        address: host.address.clone(),
        agent_ip,
        agent_listen: host.agent_listen.clone(),
        agent_port,
        agent_url: normalised_url(&host.url),
        ansible_host: host.ansible_host.clone(),
        data_file,
        deploy: host.deploy.clone(),
        ip: host.socket.ip.to_string(),
        peer_ips,
        port: host.socket.port,
        replica: host.replica,
    }
}

fn agent_tokens(vars: &Map<String, Value>) -> Vec<AgentToken> {
    let Some(tokens) = present(vars, "tb_agent_tokens") else {
        return Vec::new();
    };
    tokens
        .as_array()
        .expect("validated tokens")
        .iter()
        .map(|token| AgentToken {
            name: token["name"].as_str().expect("validated").to_string(),
            scopes: token["scopes"]
                .as_array()
                .expect("validated")
                .iter()
                .map(|scope| scope_of(scope).expect("validated"))
                .collect(),
            sha256: token["sha256"].as_str().expect("validated").to_string(),
        })
        .collect()
}

fn lease_keys(vars: &Map<String, Value>) -> LeaseKeys {
    LeaseKeys {
        enabled: present(vars, "tb_agent_lease_enabled")
            .map(|value| value.as_bool().expect("validated bool")),
        id_prefix: optional_string(vars, "tb_agent_lease_id_prefix"),
        ledger: present(vars, "tb_agent_lease_ledger").map(|value| {
            u32::try_from(value.as_i64().expect("validated")).expect("validated ledger")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A valid plaintext inventory on private addresses, defaults everywhere they exist.
    fn base() -> Value {
        json!({"all": {
            "vars": {"tigerbeetle_cluster_id": "42", "tigerbeetle_replica_count": 3,
                     "ansible_user": "root"},
            "hosts": {
                "tb-2": {"ansible_host": "h2", "tigerbeetle_replica": 2,
                         "tigerbeetle_address": "10.0.0.12:3000",
                         "tb_agent_url": "http://10.0.0.12:7000/"},
                "tb-0": {"ansible_host": "h0", "tigerbeetle_replica": 0,
                         "tigerbeetle_address": "10.0.0.10:3000",
                         "tb_agent_url": "http://10.0.0.10:7000"},
                "tb-1": {"ansible_host": "h1", "tigerbeetle_replica": 1,
                         "tigerbeetle_address": "10.0.0.11:3000",
                         "tb_agent_url": "http://10.0.0.11:7000"}}}})
    }

    fn with(change: impl FnOnce(&mut Value)) -> Value {
        let mut document = base();
        change(&mut document);
        document
    }

    fn vars(document: &mut Value) -> &mut Map<String, Value> {
        document["all"]["vars"].as_object_mut().unwrap()
    }

    fn host<'a>(document: &'a mut Value, name: &str) -> &'a mut Map<String, Value> {
        document["all"]["hosts"][name].as_object_mut().unwrap()
    }

    fn tls(document: &mut Value) {
        vars(document).insert("tb_agent_tls_cert_file".into(), json!("/etc/tb/agent.pem"));
        vars(document).insert("tb_agent_tls_key_file".into(), json!("/run/secrets/key"));
        for name in ["tb-0", "tb-1", "tb-2"] {
            let url = host(document, name)["tb_agent_url"]
                .as_str()
                .unwrap()
                .to_string();
            host(document, name)
                .insert("tb_agent_url".into(), json!(url.replace("http:", "https:")));
        }
    }

    #[track_caller]
    fn error(document: Value) -> String {
        match resolve(&document) {
            Ok(cluster) => panic!("accepted: {cluster:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[track_caller]
    fn error_text(text: &str) -> String {
        Inventory::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn deploy_method_and_nixos_flake() {
        let example: Value =
            serde_json::from_str(include_str!("../../../inventories/example.json")).unwrap();
        let mut document = example.clone();
        host(&mut document, "tb-1").insert("tigerbeetle_deploy".into(), json!("nixos"));
        assert_eq!(
            error(document.clone()),
            "all.hosts.tb-1.tigerbeetle_deploy: \"nixos\" needs all.vars.tigerbeetle_nixos_flake (the flake whose nixosConfigurations.<host> rollout.yml builds and activates on this host)"
        );
        vars(&mut document).insert("tigerbeetle_nixos_flake".into(), json!("/etc/nixos"));
        let cluster = resolve(&document).unwrap();
        assert_eq!(cluster.hosts["tb-1"].deploy, "nixos");
        assert_eq!(cluster.hosts["tb-0"].deploy, "systemd");
        assert_eq!(cluster.nixos_flake.as_deref(), Some("/etc/nixos"));
        for flake in ["", "/etc/nixos#tb-1", "path with space"] {
            let mut broken = document.clone();
            vars(&mut broken).insert("tigerbeetle_nixos_flake".into(), json!(flake));
            assert_eq!(
                error(broken),
                format!("all.vars.tigerbeetle_nixos_flake: {REASON_FLAKE}")
            );
        }
        let mut broken = example;
        host(&mut broken, "tb-0").insert("tigerbeetle_deploy".into(), json!("docker"));
        assert_eq!(
            error(broken),
            format!("all.hosts.tb-0.tigerbeetle_deploy: {REASON_DEPLOY}")
        );
    }

    #[test]
    fn the_example_inventory_resolves_as_docs_inventory_md_shows() {
        let inventory =
            Inventory::parse(include_str!("../../../inventories/example.json")).unwrap();
        assert_eq!(inventory.replicas.len(), 3);
        assert_eq!(
            inventory.addresses(),
            "10.0.0.10:3000,10.0.0.11:3000,10.0.0.12:3000"
        );
        let cluster = serde_json::to_value(&inventory.cluster).unwrap();
        assert_eq!(
            cluster["hosts"]["tb-0"],
            json!({
                "address": "10.0.0.10:3000",
                "agent_ip": "10.0.0.10",
                "agent_listen": "10.0.0.10:7443",
                "agent_port": 7443,
                "agent_url": "https://10.0.0.10:7443",
                "ansible_host": "10.0.0.10",
                "data_file": "/var/lib/tigerbeetle/155384968277351797236104484427093106345_0.tigerbeetle",
                "deploy": "systemd",
                "ip": "10.0.0.10",
                "peer_ips": ["10.0.0.11", "10.0.0.12"],
                "port": 3000,
                "replica": 0
            })
        );
        assert_eq!(
            cluster["agent_tls"],
            json!({"cert_file": "/etc/tb-agent/tls/agent.crt", "client_ca_file": null,
                   "key_file": "/run/secrets/tb-agent-tls-key"})
        );
        assert_eq!(
            cluster["agent_tokens"][0]["scopes"],
            json!(["read", "control", "backup"])
        );
        // Keys in sorted order, as Nix prints them.
        let keys: Vec<&String> = cluster.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn resolves_defaults_and_orders_by_replica() {
        let inventory = Inventory::from_value(&base()).unwrap();
        assert_eq!(inventory.cluster_id, 42);
        let names: Vec<&str> = inventory
            .replicas
            .iter()
            .map(|r| r.host_name.as_str())
            .collect();
        assert_eq!(names, ["tb-0", "tb-1", "tb-2"]);
        assert_eq!(inventory.replicas[2].agent_url, "http://10.0.0.12:7000");
        assert_eq!(inventory.replicas[2].host, "h2");
        let cluster = &inventory.cluster;
        assert_eq!(cluster.replica_hosts, ["tb-0", "tb-1", "tb-2"]);
        assert_eq!(cluster.cache_grid, None);
        assert_eq!(cluster.data_dir, "/var/lib/tigerbeetle");
        assert_eq!(cluster.statsd_port, 8125);
        assert_eq!(cluster.agent_peer_token_file, "/etc/tb-agent/peer.token");
        assert_eq!(cluster.agent_peer_ca_file, None);
        assert_eq!(cluster.agent_tls, None);
        assert!(cluster.agent_tokens.is_empty());
        assert!(cluster.client_networks.is_empty());
        let host = &cluster.hosts["tb-1"];
        assert_eq!(host.agent_listen, "10.0.0.11:7000");
        assert_eq!(host.data_file, "/var/lib/tigerbeetle/42_1.tigerbeetle");
        assert_eq!(host.peer_ips, ["10.0.0.10", "10.0.0.12"]);
    }

    #[test]
    fn peer_ips_skip_the_own_ip_and_repeat_none() {
        let document = with(|d| {
            host(d, "tb-1").insert("tigerbeetle_address".into(), json!("10.0.0.10:3001"));
            host(d, "tb-2").insert("tigerbeetle_address".into(), json!("10.0.0.10:3002"));
            host(d, "tb-2").insert("tb_agent_listen".into(), json!("10.0.0.10:7002"));
        });
        let cluster = resolve(&document).unwrap();
        assert!(cluster.hosts["tb-0"].peer_ips.is_empty());
        assert_eq!(cluster.hosts["tb-2"].agent_listen, "10.0.0.10:7002");
        assert_eq!(cluster.hosts["tb-2"].agent_port, 7002);
    }

    #[test]
    fn structure() {
        assert_eq!(error(json!([])), "the inventory must be a JSON object");
        assert_eq!(
            error(json!({"all": []})),
            "all: must be an object with vars and hosts"
        );
        assert_eq!(
            error(json!({"all": {"hosts": {}}})),
            "all.vars: must be an object"
        );
        assert_eq!(
            error(json!({"all": {"vars": {}, "hosts": []}})),
            "all.hosts: must be an object"
        );
    }

    #[test]
    fn keys_at_their_level() {
        let unknown = "unknown key (keys starting with tigerbeetle_ or tb_agent_ are reserved for this project: check the spelling)";
        assert_eq!(
            error(with(|d| drop(
                vars(d).insert("tigerbeetle_replicas".into(), json!(3))
            ))),
            format!("all.vars.tigerbeetle_replicas: {unknown}")
        );
        assert_eq!(
            error(with(|d| drop(
                host(d, "tb-1").insert("tb_agent_token".into(), json!(1))
            ))),
            format!("all.hosts.tb-1.tb_agent_token: {unknown}")
        );
        assert_eq!(
            error(with(|d| drop(
                vars(d).insert("tb_agent_listen".into(), json!(null))
            ))),
            "all.vars.tb_agent_listen: belongs in all.hosts.<name>, not here"
        );
        assert_eq!(
            error(with(|d| drop(
                host(d, "tb-0").insert("tigerbeetle_data_dir".into(), json!("/x"))
            ))),
            "all.hosts.tb-0.tigerbeetle_data_dir: belongs in all.vars, not here"
        );
        // Not reserved: Ansible's, at any level.
        resolve(&with(|d| {
            vars(d).insert("ansible_host".into(), json!(1));
            host(d, "tb-0").insert("Tigerbeetle_x".into(), json!(1));
        }))
        .unwrap();
        assert_eq!(
            error(with(|d| drop(vars(d).remove("tigerbeetle_replica_count")))),
            "all.vars.tigerbeetle_replica_count: is required"
        );
        assert_eq!(
            error(with(|d| drop(host(d, "tb-2").remove("tb_agent_url")))),
            "all.hosts.tb-2.tb_agent_url: is required"
        );
        // Misplaced and unknown keys come before missing and invalid ones; keys in sorted order.
        assert_eq!(
            error(with(|d| {
                vars(d).insert("tigerbeetle_replica_count".into(), json!(9));
                vars(d).insert("tigerbeetle_zzz".into(), json!(1));
                vars(d).insert("tigerbeetle_cluster_id".into(), json!(1));
            })),
            format!("all.vars.tigerbeetle_zzz: {unknown}")
        );
        assert_eq!(
            error(with(|d| {
                vars(d).insert("tigerbeetle_replica_count".into(), json!(9));
                vars(d).insert("tigerbeetle_cluster_id".into(), json!(1));
            })),
            format!("all.vars.tigerbeetle_cluster_id: {REASON_U128}")
        );
    }

    /// The base inventory with `all.vars.<key>` set to `value`, resolved.
    fn var(key: &str, value: Value) -> Result<(), String> {
        resolve(&with(|d| drop(vars(d).insert(key.into(), value))))
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    /// The error for `all.vars.<key>`.
    fn reason(key: &str, reason: &str) -> Result<(), String> {
        Err(format!("all.vars.{key}: {reason}"))
    }

    #[test]
    fn value_rules_numbers_and_sizes() {
        let id = "tigerbeetle_cluster_id";
        for bad in [
            json!("007"),
            json!("+1"),
            json!(""),
            json!(42),
            json!("0x1"),
            json!("340282366920938463463374607431768211456"),
        ] {
            assert_eq!(var(id, bad), reason(id, REASON_U128));
        }
        assert_eq!(
            var(id, json!("340282366920938463463374607431768211455")),
            Ok(())
        );
        assert_eq!(var(id, json!("0")), Ok(()));
        let count = "tigerbeetle_replica_count";
        for bad in [json!(0), json!(7), json!(3.0), json!("3"), json!(null)] {
            assert_eq!(var(count, bad), reason(count, REASON_COUNT));
        }
        let grid = "tigerbeetle_cache_grid";
        for bad in [
            json!("0GiB"),
            json!("04GiB"),
            json!("1234567GiB"),
            json!("4GB"),
            json!(4),
        ] {
            assert_eq!(var(grid, bad), reason(grid, REASON_SIZE));
        }
        assert_eq!(var(grid, json!("999999TiB")), Ok(()));
        assert_eq!(var(grid, json!(null)), Ok(()));
    }

    #[test]
    fn value_rules_paths() {
        let dir = "tigerbeetle_data_dir";
        for bad in [
            json!("/a/./b"),
            json!("/a/../b"),
            json!("/a/"),
            json!("a"),
            json!("/"),
            json!("/a b"),
            json!(null),
            json!(format!("/{}", "a".repeat(4096))),
        ] {
            assert_eq!(var(dir, bad), reason(dir, REASON_PATH));
        }
        assert_eq!(var(dir, json!(format!("/{}", "a".repeat(4095)))), Ok(()));
        assert_eq!(var(dir, json!("/srv/.tb/a..b")), Ok(()));
        let secret = "tb_agent_peer_token_file";
        assert_eq!(
            var(secret, json!("/nix/store/x-token")),
            reason(secret, REASON_SECRET_IN_STORE)
        );
        assert_eq!(
            var(secret, json!("/nix/store/../x")),
            reason(secret, REASON_PATH)
        );
        assert_eq!(var(secret, json!(null)), reason(secret, REASON_PATH));
    }

    #[test]
    fn value_rules_ports_and_networks() {
        let port = "tb_agent_statsd_port";
        for bad in [json!(0), json!(65536), json!("8125"), json!(8125.5)] {
            assert_eq!(var(port, bad), reason(port, REASON_PORT));
        }
        let networks = "tigerbeetle_client_networks";
        assert_eq!(
            var(networks, json!(["0.0.0.0/0", "10.0.0.0/8", "1.2.3.4/32"])),
            Ok(())
        );
        assert_eq!(
            var(networks, json!("10.0.0.0/8")),
            reason(networks, REASON_NETWORKS)
        );
        assert_eq!(
            var(networks, json!(vec!["10.0.0.0/8"; 65])),
            reason(networks, REASON_NETWORKS)
        );
        for (bad, index) in [
            ("10.0.0.1/8", 1),
            ("1.2.3.4/33", 1),
            ("1.2.3.0/024", 1),
            ("::/0", 1),
            ("10.0.0.0", 1),
        ] {
            assert_eq!(
                var(networks, json!(["10.0.0.0/8", bad])),
                Err(format!("all.vars.{networks}[{index}]: {REASON_NETWORK}"))
            );
        }
    }

    #[test]
    fn sockets_and_urls() {
        let set = |key: &'static str, value: &str| {
            resolve(&with(|d| {
                drop(host(d, "tb-1").insert(key.into(), json!(value)))
            }))
            .map(|_| ())
            .map_err(|error| error.to_string())
        };
        let address = "tigerbeetle_address";
        for bad in [
            "h1:3000",
            "10.0.0.11",
            "10.0.0.011:3000",
            "10.0.0.11:03000",
            "10.0.0.256:1",
            "10.0.0.11:0",
            "10.0.0.11:65536",
            "10.0.0.11:3000,10.0.0.12:3000",
            "[::1]:3000",
            "10.0.0.11:3000:1",
        ] {
            assert_eq!(
                set(address, bad),
                Err(format!("all.hosts.tb-1.{address}: {REASON_SOCKET}")),
                "{bad}"
            );
        }
        let url = "tb_agent_url";
        for bad in [
            "10.0.0.11:7000",
            "http://10.0.0.11",
            "http://10.0.0.11:7000/v1",
            "http://10.0.0.11:7000//",
            "ftp://h:1",
            "http://a_b:1",
            "http://h:01",
            "https://[]:1",
            "http://:1",
        ] {
            assert_eq!(
                set(url, bad),
                Err(format!("all.hosts.tb-1.{url}: {REASON_URL}")),
                "{bad}"
            );
        }
        assert_eq!(set(url, "http://tb-1.example.net:7000/"), Ok(()));
        assert_eq!(set(url, "http://[fd00::1]:7000"), Ok(()));
        assert_eq!(
            set("ansible_host", ""),
            Err(format!("all.hosts.tb-1.ansible_host: {REASON_NAME}"))
        );
        assert_eq!(
            set("tb_agent_listen", "localhost:7000"),
            Err(format!("all.hosts.tb-1.tb_agent_listen: {REASON_SOCKET}"))
        );
    }

    fn token() -> Value {
        json!({"name": "ops", "scopes": ["read", "control"], "sha256": "a".repeat(64)})
    }

    /// The base inventory with `tb_agent_tokens` set to `value`, resolved.
    fn tokens(value: Value) -> Result<(), String> {
        resolve(&with(|d| {
            drop(vars(d).insert("tb_agent_tokens".into(), value))
        }))
        .map(|_| ())
        .map_err(|error| error.to_string())
    }

    #[test]
    fn tokens_one_by_one() {
        let at = "all.vars.tb_agent_tokens";
        assert_eq!(tokens(json!([token()])), Ok(()));
        assert_eq!(tokens(json!({})), Err(format!("{at}: {REASON_TOKENS}")));
        let seventeen: Vec<Value> = (0..17)
            .map(|i| {
                let mut t = token();
                t["name"] = json!(format!("t{i}"));
                t
            })
            .collect();
        assert_eq!(
            tokens(json!(seventeen)),
            Err(format!("{at}: {REASON_TOKENS}"))
        );
        assert_eq!(
            tokens(json!([token(), "secret"])),
            Err(format!(
                "{at}[1]: must be an object with name, scopes and sha256"
            ))
        );
        let mut extra = token();
        extra["secret"] = json!("x");
        extra["zz"] = json!("x");
        assert_eq!(
            tokens(json!([extra])),
            Err(format!(
                "{at}[0].secret: unknown key (a token has name, scopes and sha256)"
            ))
        );
        let scopes = format!(
            "{at}[0].scopes: must be a non-empty list of distinct scopes among \"read\", \"control\", \"backup\""
        );
        for bad in [
            json!([]),
            json!(["read", "read"]),
            json!(["admin"]),
            json!("read"),
        ] {
            let mut t = token();
            t["scopes"] = bad;
            assert_eq!(tokens(json!([t])), Err(scopes.clone()));
        }
        let mut long = token();
        long["name"] = json!("n".repeat(65));
        assert_eq!(
            tokens(json!([long])),
            Err(format!(
                "{at}[0].name: must be a string of 1 to 64 characters"
            ))
        );
        let mut upper = token();
        upper["sha256"] = json!("A".repeat(64));
        assert!(
            tokens(json!([upper]))
                .unwrap_err()
                .starts_with(&format!("{at}[0].sha256: must be 64 lowercase hex digits"))
        );
    }

    #[test]
    fn tokens_checked_whole_before_names_are_compared() {
        let at = "all.vars.tb_agent_tokens";
        let mut broken = token();
        broken["sha256"] = json!("x");
        assert!(
            tokens(json!([token(), token(), broken]))
                .unwrap_err()
                .starts_with(&format!("{at}[2].sha256"))
        );
        assert_eq!(
            tokens(json!([token(), token()])),
            Err(format!("{at}[1].name: \"ops\" is used twice"))
        );
    }

    #[test]
    fn host_names() {
        let rename = |name: &str| {
            let name = name.to_string();
            resolve(&with(move |d| {
                let hosts = d["all"]["hosts"].as_object_mut().unwrap();
                let moved = hosts.remove("tb-2").unwrap();
                hosts.insert(name, moved);
            }))
            .map(|_| ())
            .map_err(|error| error.to_string())
        };
        for good in ["a", "0a", "A.b_c-d", &"a".repeat(63)] {
            assert_eq!(rename(good), Ok(()), "{good}");
        }
        for bad in ["", "-a", ".a", "_a", "a b", "é", "0", "12", &"a".repeat(64)] {
            assert_eq!(
                rename(bad),
                Err(format!(
                    "all.hosts.{bad}: host names must be 1 to 63 characters among A-Z a-z 0-9 . _ - , start with a letter or digit and not be all digits (tbctl --replica reads digits as a replica index)"
                ))
            );
        }
        assert_eq!(
            error(with(|d| d["all"]["hosts"]["tb-1"] = json!([]))),
            "all.hosts.tb-1: must be an object"
        );
    }

    #[test]
    fn tls_files_together() {
        assert_eq!(
            error(with(|d| drop(
                vars(d).insert("tb_agent_tls_key_file".into(), json!("/k"))
            ))),
            "all.vars.tb_agent_tls_key_file: needs all.vars.tb_agent_tls_cert_file"
        );
        assert_eq!(
            error(with(|d| drop(
                vars(d).insert("tb_agent_tls_cert_file".into(), json!("/c"))
            ))),
            "all.vars.tb_agent_tls_cert_file: needs all.vars.tb_agent_tls_key_file"
        );
        assert_eq!(
            error(with(|d| drop(
                vars(d).insert("tb_agent_tls_client_ca_file".into(), json!("/ca"))
            ))),
            "all.vars.tb_agent_tls_client_ca_file: needs all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file"
        );
        let cluster = resolve(&with(|d| {
            tls(d);
            vars(d).insert("tb_agent_tls_client_ca_file".into(), json!("/ca"));
        }))
        .unwrap();
        assert_eq!(
            cluster.agent_tls,
            Some(AgentTls {
                cert_file: "/etc/tb/agent.pem".into(),
                client_ca_file: Some("/ca".into()),
                key_file: "/run/secrets/key".into(),
            })
        );
        assert_eq!(cluster.agent_urls[2], "https://10.0.0.12:7000");
    }

    #[test]
    fn replica_slots() {
        assert_eq!(
            error(with(|d| drop(
                host(d, "tb-1").insert("tigerbeetle_replica".into(), json!(3))
            ))),
            "all.hosts.tb-1.tigerbeetle_replica: 3 is not below the replica count 3"
        );
        assert_eq!(
            error(with(|d| drop(
                host(d, "tb-0").insert("tigerbeetle_replica".into(), json!(2))
            ))),
            "all.hosts.tb-2.tigerbeetle_replica: replica 2 is already host tb-0"
        );
        assert_eq!(
            error(with(|d| drop(
                vars(d).insert("tigerbeetle_replica_count".into(), json!(5))
            ))),
            "all.hosts: no host has tigerbeetle_replica 3"
        );
        assert_eq!(
            error(with(|d| drop(
                host(d, "tb-1").insert("tigerbeetle_replica".into(), json!(-1))
            ))),
            format!("all.hosts.tb-1.tigerbeetle_replica: {REASON_INDEX}")
        );
    }

    #[test]
    fn each_host_against_the_others() {
        assert_eq!(
            error(with(|d| drop(host(d, "tb-2").insert(
                "tigerbeetle_address".into(),
                json!("10.0.0.10:3000")
            )))),
            "all.hosts.tb-2.tigerbeetle_address: 10.0.0.10:3000 is also the address of host tb-0"
        );
        assert_eq!(
            error(with(|d| drop(host(d, "tb-1").insert(
                "tb_agent_url".into(),
                json!("https://10.0.0.11:7000")
            )))),
            "all.hosts.tb-1.tb_agent_url: must start with http:// because TLS is not configured (all.vars.tb_agent_tls_cert_file)"
        );
        assert_eq!(
            error(with(|d| {
                tls(d);
                host(d, "tb-1").insert("tb_agent_url".into(), json!("http://10.0.0.11:7000"));
            })),
            "all.hosts.tb-1.tb_agent_url: must start with https:// because all.vars.tb_agent_tls_cert_file is set"
        );
        assert_eq!(
            error(with(|d| drop(host(d, "tb-1").insert(
                "tb_agent_url".into(),
                json!("http://10.0.0.11:3000")
            )))),
            "all.hosts.tb-1.tb_agent_listen: 10.0.0.11:3000 is the replica's own address"
        );
    }

    #[test]
    fn a_public_listen_address_needs_tls() {
        let public = |listen: &str| {
            let listen = listen.to_string();
            resolve(&with(move |d| {
                drop(host(d, "tb-1").insert("tb_agent_listen".into(), json!(listen)))
            }))
            .map(|_| ())
        };
        for private in [
            "127.0.0.1:1",
            "10.1.2.3:1",
            "172.16.0.1:1",
            "172.31.255.255:1",
            "192.168.0.1:1",
            "100.64.0.1:1",
            "100.127.255.255:1",
            "169.254.0.1:1",
        ] {
            assert_eq!(public(private), Ok(()), "{private}");
        }
        for ip in [
            "0.0.0.0",
            "8.8.8.8",
            "172.15.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "100.63.0.1",
            "100.128.0.1",
            "169.253.0.1",
            "11.0.0.1",
        ] {
            let ip = ip.to_string();
            let reason = Reason::ListenPublicWithoutTls { ip: ip.clone() };
            let refused = InventoryError::key("all.hosts.tb-1.tb_agent_listen", reason);
            assert_eq!(public(&format!("{ip}:7000")), Err(refused));
        }
        assert_eq!(
            public("8.8.8.8:7000").unwrap_err().to_string(),
            "all.hosts.tb-1.tb_agent_listen: 8.8.8.8 is a public address and bearer tokens would cross it in clear text: set all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file"
        );
        // With TLS, a public listen address is fine.
        resolve(&with(|d| {
            tls(d);
            host(d, "tb-1").insert("tb_agent_listen".into(), json!("0.0.0.0:7000"));
        }))
        .unwrap();
    }

    #[test]
    fn the_first_error_in_check_order_wins() {
        // A bad value in all.vars (step 2) before a bad host name (step 3), before a bad host
        // (step 4), before TLS (5), slots (6) and addresses (7).
        let everything = with(|d| {
            vars(d).insert("tigerbeetle_cache_grid".into(), json!("4GB"));
            vars(d).insert("tb_agent_tls_key_file".into(), json!("/k"));
            host(d, "tb-1").insert("tigerbeetle_address".into(), json!("h:1"));
            let hosts = d["all"]["hosts"].as_object_mut().unwrap();
            let moved = hosts.remove("tb-2").unwrap();
            hosts.insert("bad name".into(), moved);
        });
        assert!(error(everything.clone()).starts_with("all.vars.tigerbeetle_cache_grid:"));
        let mut next = everything;
        vars(&mut next).remove("tigerbeetle_cache_grid");
        assert!(error(next.clone()).starts_with("all.hosts.bad name: host names"));
        let hosts = next["all"]["hosts"].as_object_mut().unwrap();
        let moved = hosts.remove("bad name").unwrap();
        hosts.insert("tb-2".into(), moved);
        assert!(error(next.clone()).starts_with("all.hosts.tb-1.tigerbeetle_address: must be"));
        host(&mut next, "tb-1").insert("tigerbeetle_address".into(), json!("10.0.0.10:3000"));
        assert!(error(next.clone()).starts_with("all.vars.tb_agent_tls_key_file: needs"));
        vars(&mut next).remove("tb_agent_tls_key_file");
        assert!(
            error(next).starts_with("all.hosts.tb-1.tigerbeetle_address: 10.0.0.10:3000 is also")
        );
    }

    #[test]
    fn json_as_nix_reads_it() {
        let text = serde_json::to_string_pretty(&base()).unwrap();
        // `-0` is the integer 0 for Nix; `-0.0` and `0.0` are floats.
        let negative_zero = text.replacen(
            "\"tigerbeetle_replica\": 0",
            "\"tigerbeetle_replica\": -0",
            1,
        );
        assert_ne!(negative_zero, text);
        assert_eq!(
            Inventory::parse(&negative_zero).unwrap().replicas[0].host_name,
            "tb-0"
        );
        let float = text.replacen(
            "\"tigerbeetle_replica\": 0",
            "\"tigerbeetle_replica\": -0.0",
            1,
        );
        assert_eq!(
            error_text(&float),
            format!("all.hosts.tb-0.tigerbeetle_replica: {REASON_INDEX}")
        );
        // `-0` inside a string is text.
        let in_string = text.replacen("\"h0\"", "\"-0\"", 1);
        assert_eq!(Inventory::parse(&in_string).unwrap().replicas[0].host, "-0");
        // Duplicate keys: the last one counts, in both readers.
        let duplicate = text.replacen(
            "\"tigerbeetle_replica_count\": 3",
            "\"tigerbeetle_replica_count\": 7, \"tigerbeetle_replica_count\": 3",
            1,
        );
        assert_ne!(duplicate, text);
        Inventory::parse(&duplicate).unwrap();
        // NUL, which Nix strings cannot hold.
        let nul = text.replacen("\"h0\"", "\"h0\\u0000x\"", 1);
        assert!(error_text(&nul).contains("must not contain \\u0000"));
        // Nesting: 32 levels are fine, 33 are not, and far deeper (past serde_json's own limit)
        // gives the same error.
        let nest = |levels: usize| {
            text.replacen(
                "\"ansible_user\": \"root\"",
                &format!(
                    "\"ansible_user\": {}{}",
                    "[".repeat(levels),
                    "]".repeat(levels)
                ),
                1,
            )
        };
        Inventory::parse(&nest(29)).unwrap();
        let deep = "the inventory must not nest objects and lists more than 32 levels deep";
        assert_eq!(error_text(&nest(30)), deep);
        assert_eq!(error_text(&nest(100_000)), deep);
        // Size.
        let large = format!("{text}{}", " ".repeat(1024 * 1024));
        assert!(error_text(&large).contains("larger than 1048576 bytes"));
        assert!(Inventory::parse("{").is_err());
    }

    #[test]
    fn the_written_form_round_trips() {
        let file = InventoryFile {
            all: Group {
                vars: ClusterVars {
                    tigerbeetle_cluster_id: "7".into(),
                    tigerbeetle_replica_count: 1,
                    other: BTreeMap::new(),
                },
                hosts: BTreeMap::from([(
                    "solo".to_string(),
                    HostVars {
                        ansible_host: "127.0.0.1".into(),
                        tigerbeetle_replica: 0,
                        tigerbeetle_address: "127.0.0.1:3000".into(),
                        tb_agent_url: "http://127.0.0.1:7000".into(),
                        other: BTreeMap::new(),
                    },
                )]),
            },
        };
        let inventory = Inventory::from_file(&file).unwrap();
        assert_eq!(inventory.cluster_id, 7);
        assert_eq!(
            inventory.cluster.hosts["solo"].agent_listen,
            "127.0.0.1:7000"
        );
    }

    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tb-inventory-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A file over the bound is refused by `load` with the file's name.
    #[test]
    fn load_refuses_an_oversized_file() {
        let path = scratch_dir("oversized").join("inventory.json");
        let padding = " ".repeat(INVENTORY_SIZE_MAX_BYTES as usize);
        std::fs::write(&path, format!("{}{padding}", base())).unwrap();
        let refused = Inventory::load(&path).unwrap_err().to_string();
        assert!(refused.contains("larger than"), "{refused}");
        assert!(refused.contains("inventory.json"), "{refused}");
        std::fs::write(&path, base().to_string()).unwrap();
        Inventory::load(&path).unwrap();
    }

    /// A source whose size metadata does not bound it (a FIFO here, a file that grows after a
    /// size check in general) is read no further than one byte past the bound: the writer
    /// finds the pipe closed long before it wrote everything it offered.
    #[test]
    fn load_reads_no_further_than_the_bound() {
        use std::io::Write;
        let path = scratch_dir("fifo").join("inventory.json");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let offered_bytes = 16 * INVENTORY_SIZE_MAX_BYTES as usize;
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            let mut fifo = std::fs::OpenOptions::new()
                .write(true)
                .open(writer_path)
                .unwrap();
            let chunk = vec![b' '; 64 * 1024];
            let mut written_bytes = 0;
            while written_bytes < offered_bytes {
                match fifo.write(&chunk) {
                    Ok(count) => written_bytes += count,
                    Err(_) => break, // the reader closed the pipe: EPIPE
                }
            }
            written_bytes
        });
        let refused = Inventory::load(&path).unwrap_err().to_string();
        let written_bytes = writer.join().unwrap();
        assert!(refused.contains("larger than"), "{refused}");
        assert!(
            written_bytes < 2 * INVENTORY_SIZE_MAX_BYTES as usize,
            "the reader took {written_bytes} bytes"
        );
    }
}
