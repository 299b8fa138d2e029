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
use crate::tigerbeetle::REPLICA_COUNT_MAX;

/// Inventories are small; anything larger is not an inventory.
const INVENTORY_SIZE_MAX_BYTES: u64 = 1024 * 1024;
/// Objects and lists nested deeper than this are refused (an inventory needs 6 levels). The limit
/// keeps both readers' verdicts equal below serde_json's own recursion limit (128 levels, which
/// Nix does not have; past it the two differ only for a deep value that a later duplicate key
/// replaces, since both readers keep the last duplicate).
const NESTING_DEPTH_MAX: usize = 32;
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
    pub orchestrator_networks: Vec<String>,
    pub replica_count: u8,
    /// Host names, in replica order.
    pub replica_hosts: Vec<String>,
    pub statsd_port: u16,
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
        let metadata = std::fs::metadata(path)
            .map_err(|error| anyhow::anyhow!("inventory {}: {error}", path.display()))?;
        if metadata.len() > INVENTORY_SIZE_MAX_BYTES {
            anyhow::bail!(
                "inventory {}: larger than {INVENTORY_SIZE_MAX_BYTES} bytes",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
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
        let document: Value = serde_json::from_str(&negative_zero_as_zero(text))?;
        Inventory::from_value(&document)
    }

    pub fn from_file(file: &InventoryFile) -> anyhow::Result<Inventory> {
        Inventory::from_value(&serde_json::to_value(file)?)
    }

    pub fn from_value(document: &Value) -> anyhow::Result<Inventory> {
        let cluster = resolve(document).map_err(|error| anyhow::anyhow!("{error}"))?;
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

/// Reads `-0` as the integer `0`, as Nix does: serde_json reads a float, so a
/// `"tigerbeetle_replica": -0` would get two verdicts. One pass over the text, outside strings;
/// only `-0` not followed by `.`, `e`, `E` or a digit changes (to ` 0`). What is not JSON is left
/// for serde_json to reject.
fn negative_zero_as_zero(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut negative_zeros = Vec::new();
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
        } else if byte == b'"' {
            in_string = true;
        } else if byte == b'-'
            && bytes.get(at + 1) == Some(&b'0')
            && !matches!(bytes.get(at + 2), Some(b'.' | b'e' | b'E' | b'0'..=b'9'))
        {
            negative_zeros.push(at);
        }
    }
    if negative_zeros.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut changed = bytes.to_vec();
    for at in negative_zeros {
        changed[at] = b' ';
    }
    Cow::Owned(String::from_utf8(changed).expect("an ASCII byte replaced by an ASCII byte"))
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
const KEYS: [KeySpec; 18] = [
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
];

fn key_spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|spec| spec.key == key)
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

/// A failed rule: either `: <reason>` after the key, or a suffix naming an element first
/// (`[2]: <reason>`, `[0].name: <reason>`).
enum Failure {
    Reason(&'static str),
    Element(String),
}

fn level_error(at: &str, values: &Map<String, Value>, level: Level) -> Option<String> {
    for key in sorted_keys(values) {
        if !is_reserved(key) {
            continue; // ansible_user and friends: Ansible's business.
        }
        match key_spec(key) {
            Some(spec) if spec.level == level => {}
            Some(_) => {
                let other = match level {
                    Level::Vars => "all.hosts.<name>",
                    Level::Host => "all.vars",
                };
                return Some(format!("{at}.{key}: belongs in {other}, not here"));
            }
            None => {
                return Some(format!(
                    "{at}.{key}: unknown key (keys starting with tigerbeetle_ or tb_agent_ are \
                     reserved for this project: check the spelling)"
                ));
            }
        }
    }
    let mut specs: Vec<&KeySpec> = KEYS.iter().filter(|spec| spec.level == level).collect();
    specs.sort_unstable_by_key(|spec| spec.key);
    for spec in specs {
        let Some(value) = values.get(spec.key) else {
            if spec.required {
                return Some(format!("{at}.{}: is required", spec.key));
            }
            continue;
        };
        match check_value(spec.rule, value) {
            Ok(()) => {}
            Err(Failure::Reason(reason)) => return Some(format!("{at}.{}: {reason}", spec.key)),
            Err(Failure::Element(suffix)) => return Some(format!("{at}.{}{suffix}", spec.key)),
        }
    }
    None
}

fn check_value(rule: Rule, value: &Value) -> Result<(), Failure> {
    let ok = |valid: bool, reason: &'static str| {
        if valid {
            Ok(())
        } else {
            Err(Failure::Reason(reason))
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
    }
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
        return Err(Failure::Reason(REASON_NETWORKS));
    };
    for (index, network) in networks.iter().enumerate() {
        if !network.as_str().is_some_and(is_network) {
            return Err(Failure::Element(format!("[{index}]: {REASON_NETWORK}")));
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
        Err(Failure::Reason(REASON_PATH))
    }
}

/// Secrets are world-readable in the Nix store: only paths outside it may name them.
fn secret_path_check(value: &Value) -> Result<(), Failure> {
    path_check(value)?;
    let path = value.as_str().expect("a path is a string");
    if path.starts_with("/nix/store/") {
        return Err(Failure::Reason(REASON_SECRET_IN_STORE));
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

fn token_failure(index: usize, token: &Value) -> Option<String> {
    let at = format!("[{index}]");
    let Some(token) = token.as_object() else {
        return Some(format!(
            "{at}: must be an object with name, scopes and sha256"
        ));
    };
    if let Some(key) = sorted_keys(token)
        .into_iter()
        .find(|key| !["name", "scopes", "sha256"].contains(key))
    {
        return Some(format!(
            "{at}.{key}: unknown key (a token has name, scopes and sha256)"
        ));
    }
    let name_valid = token
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|name| !name.is_empty() && name.len() <= TOKEN_NAME_LENGTH_MAX_BYTES);
    if !name_valid {
        return Some(format!("{at}.name: must be a string of 1 to 64 characters"));
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
        return Some(format!(
            "{at}.scopes: must be a non-empty list of distinct scopes among \"read\", \"control\", \"backup\""
        ));
    }
    let sha256_valid = token
        .get("sha256")
        .and_then(Value::as_str)
        .is_some_and(|hash| {
            hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
    if !sha256_valid {
        return Some(format!(
            "{at}.sha256: must be 64 lowercase hex digits: the SHA-256 of the secret (tb-agent hash-token), never the secret itself"
        ));
    }
    None
}

fn check_tokens(value: &Value) -> Result<(), Failure> {
    let Some(tokens) = value.as_array().filter(|list| list.len() <= TOKENS_MAX) else {
        return Err(Failure::Reason(REASON_TOKENS));
    };
    for (index, token) in tokens.iter().enumerate() {
        if let Some(suffix) = token_failure(index, token) {
            return Err(Failure::Element(suffix));
        }
    }
    let names: Vec<&str> = tokens
        .iter()
        .map(|token| token["name"].as_str().expect("validated"))
        .collect();
    for (index, name) in names.iter().enumerate() {
        if names[..index].contains(name) {
            return Err(Failure::Element(format!(
                "[{index}].name: \"{name}\" is used twice"
            )));
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
}

/// The resolved cluster, or the first error (without the `inventory <path>: ` prefix).
pub fn resolve(document: &Value) -> Result<Cluster, String> {
    if nests_deeper_than(document, NESTING_DEPTH_MAX) {
        return Err(format!(
            "the inventory must not nest objects and lists more than {NESTING_DEPTH_MAX} levels deep"
        ));
    }
    // 1. Structure.
    let Some(root) = document.as_object() else {
        return Err("the inventory must be a JSON object".to_string());
    };
    let Some(all) = root.get("all").and_then(Value::as_object) else {
        return Err("all: must be an object with vars and hosts".to_string());
    };
    let Some(vars) = all.get("vars").and_then(Value::as_object) else {
        return Err("all.vars: must be an object".to_string());
    };
    let Some(hosts) = all.get("hosts").and_then(Value::as_object) else {
        return Err("all.hosts: must be an object".to_string());
    };

    // 2. Cluster-wide keys.
    if let Some(error) = level_error("all.vars", vars, Level::Vars) {
        return Err(error);
    }
    // 3. Host names.
    let names = sorted_keys(hosts);
    if let Some(name) = names.iter().find(|name| !is_host_name(name)) {
        return Err(format!(
            "all.hosts.{name}: host names must be 1 to 63 characters among A-Z a-z 0-9 . _ - and start with a letter or digit"
        ));
    }
    // 4. Per-host keys.
    let mut host_values: Vec<(&str, &Map<String, Value>)> = Vec::with_capacity(names.len());
    for &name in &names {
        let Some(values) = hosts[name].as_object() else {
            return Err(format!("all.hosts.{name}: must be an object"));
        };
        if let Some(error) = level_error(&format!("all.hosts.{name}"), values, Level::Host) {
            return Err(error);
        }
        host_values.push((name, values));
    }

    // 5. TLS files, together.
    let tls_cert_file = optional_string(vars, "tb_agent_tls_cert_file");
    let tls_key_file = optional_string(vars, "tb_agent_tls_key_file");
    let tls_client_ca_file = optional_string(vars, "tb_agent_tls_client_ca_file");
    let tls = tls_cert_file.is_some();
    if tls_key_file.is_some() && !tls {
        return Err(
            "all.vars.tb_agent_tls_key_file: needs all.vars.tb_agent_tls_cert_file".to_string(),
        );
    }
    if tls && tls_key_file.is_none() {
        return Err(
            "all.vars.tb_agent_tls_cert_file: needs all.vars.tb_agent_tls_key_file".to_string(),
        );
    }
    if tls_client_ca_file.is_some() && !tls {
        return Err("all.vars.tb_agent_tls_client_ca_file: needs all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file".to_string());
    }

    let cluster_id = string_or(vars, "tigerbeetle_cluster_id", "");
    let replica_count = u8::try_from(vars["tigerbeetle_replica_count"].as_i64().expect("count"))
        .expect("validated count");
    let data_dir = string_or(vars, "tigerbeetle_data_dir", DATA_DIR_DEFAULT);

    let drafts: Vec<HostDraft> = host_values
        .iter()
        .map(|&(name, values)| {
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
            }
        })
        .collect();

    // 6. Replica slots. Hosts are in name order, so the first holder of an index is the
    // earliest name.
    for (position, host) in drafts.iter().enumerate() {
        if host.replica >= replica_count {
            return Err(format!(
                "all.hosts.{}.tigerbeetle_replica: {} is not below the replica count {replica_count}",
                host.name, host.replica
            ));
        }
        if let Some(earlier) = drafts[..position]
            .iter()
            .find(|other| other.replica == host.replica)
        {
            return Err(format!(
                "all.hosts.{}.tigerbeetle_replica: replica {} is already host {}",
                host.name, host.replica, earlier.name
            ));
        }
    }
    let mut ordered: Vec<&HostDraft> = Vec::with_capacity(usize::from(replica_count));
    for index in 0..replica_count {
        let Some(host) = drafts.iter().find(|host| host.replica == index) else {
            return Err(format!(
                "all.hosts: no host has tigerbeetle_replica {index}"
            ));
        };
        ordered.push(host);
    }
    assert_eq!(ordered.len(), drafts.len());

    // 7. Each host against the others and the TLS setting.
    let mut listen_sockets = Vec::with_capacity(drafts.len());
    for (position, host) in drafts.iter().enumerate() {
        let at = format!("all.hosts.{}", host.name);
        if let Some(earlier) = drafts[..position]
            .iter()
            .find(|other| other.address == host.address)
        {
            return Err(format!(
                "{at}.tigerbeetle_address: {} is also the address of host {}",
                host.address, earlier.name
            ));
        }
        if tls && host.url.scheme != UrlScheme::Https {
            return Err(format!(
                "{at}.tb_agent_url: must start with https:// because all.vars.tb_agent_tls_cert_file is set"
            ));
        }
        if !tls && host.url.scheme != UrlScheme::Http {
            return Err(format!(
                "{at}.tb_agent_url: must start with http:// because TLS is not configured (all.vars.tb_agent_tls_cert_file)"
            ));
        }
        // Given listen addresses passed their rule and defaults are built from valid parts:
        // this mirrors a check of the Nix reader that cannot fail.
        let Some(listen) = parse_socket(&host.agent_listen) else {
            return Err(format!("{at}.tb_agent_listen: {REASON_SOCKET}"));
        };
        if host.agent_listen == host.address {
            return Err(format!(
                "{at}.tb_agent_listen: {} is the replica's own address",
                host.agent_listen
            ));
        }
        if !tls && !is_private_ipv4(listen.octets) {
            return Err(format!(
                "{at}.tb_agent_listen: {} is a public address and bearer tokens would cross it in clear text: set all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file",
                listen.ip
            ));
        }
        listen_sockets.push((listen.ip.to_string(), listen.port));
    }

    // The resolved cluster.
    let agent_url = |url: &Url| format!("{}://{}:{}", url.scheme.as_str(), url.host, url.port);
    let hosts: BTreeMap<String, Host> = drafts
        .iter()
        .zip(listen_sockets)
        .map(|(host, (agent_ip, agent_port))| {
            let mut peer_ips: Vec<String> = Vec::with_capacity(ordered.len());
            for other in &ordered {
                let ip = other.socket.ip;
                if ip != host.socket.ip && !peer_ips.iter().any(|kept| kept == ip) {
                    peer_ips.push(ip.to_string());
                }
            }
            let resolved = Host {
                address: host.address.clone(),
                agent_ip,
                agent_listen: host.agent_listen.clone(),
                agent_port,
                agent_url: agent_url(&host.url),
                ansible_host: host.ansible_host.clone(),
                data_file: format!("{data_dir}/{cluster_id}_{}.tigerbeetle", host.replica),
                ip: host.socket.ip.to_string(),
                peer_ips,
                port: host.socket.port,
                replica: host.replica,
            };
            (host.name.to_string(), resolved)
        })
        .collect();
    let agent_tokens = present(vars, "tb_agent_tokens")
        .map(|tokens| {
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
        })
        .unwrap_or_default();
    let statsd_port = present(vars, "tb_agent_statsd_port")
        .map(|port| u16::try_from(port.as_i64().expect("validated")).expect("validated port"))
        .unwrap_or(STATSD_PORT_DEFAULT);
    Ok(Cluster {
        addresses: ordered.iter().map(|host| host.address.clone()).collect(),
        agent_peer_ca_file: optional_string(vars, "tb_agent_peer_ca_file"),
        agent_peer_token_file: string_or(vars, "tb_agent_peer_token_file", PEER_TOKEN_FILE_DEFAULT),
        agent_tls: tls_cert_file.map(|cert_file| AgentTls {
            cert_file,
            client_ca_file: tls_client_ca_file,
            key_file: tls_key_file.expect("checked in step 5"),
        }),
        agent_tokens,
        agent_urls: ordered.iter().map(|host| agent_url(&host.url)).collect(),
        cache_grid: optional_string(vars, "tigerbeetle_cache_grid"),
        client_networks: string_list(vars, "tigerbeetle_client_networks"),
        cluster_id,
        data_dir,
        hosts,
        orchestrator_networks: string_list(vars, "tb_agent_orchestrator_networks"),
        replica_count,
        replica_hosts: ordered.iter().map(|host| host.name.to_string()).collect(),
        statsd_port,
    })
}
