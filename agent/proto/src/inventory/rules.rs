//! The keys.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Level {
    Vars,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
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

pub(super) struct KeySpec {
    pub(super) key: &'static str,
    pub(super) level: Level,
    pub(super) required: bool,
    pub(super) rule: Rule,
}

pub(super) const fn spec(key: &'static str, level: Level, required: bool, rule: Rule) -> KeySpec {
    KeySpec {
        key,
        level,
        required,
        rule,
    }
}

/// Every key of docs/inventory.md. Within a level they are checked in sorted order of key.
pub(super) const KEYS: [KeySpec; 23] = [
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

pub(super) fn key_spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|spec| spec.key == key)
}

/// Keys that name a secret (the same test as `nix/inventory.nix`'s `looksSecret`).
pub(super) fn looks_secret(key: &str) -> bool {
    ["password", "passphrase", "secret"]
        .iter()
        .any(|word| key.contains(word))
        || key.ends_with("_pass")
}

pub(super) fn is_reserved(key: &str) -> bool {
    RESERVED_PREFIXES
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// Keys in the order Nix's `attrNames` gives them: sorted byte by byte.
pub(super) fn sorted_keys(map: &Map<String, Value>) -> Vec<&str> {
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// A failed value rule: the element of the value it names (empty for the value itself, else
/// e.g. `[2]` or `[0].name`) and why.
pub(super) struct Failure {
    pub(super) element: String,
    pub(super) reason: Reason,
}

impl Failure {
    pub(super) fn value(reason: &'static str) -> Failure {
        Failure {
            element: String::new(),
            reason: Reason::Value(reason),
        }
    }
}

pub(super) fn level_error(
    at: &str,
    values: &Map<String, Value>,
    level: Level,
) -> Option<InventoryError> {
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

pub(super) fn check_value(rule: Rule, value: &Value) -> Result<(), Failure> {
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
pub(super) fn is_flake(text: &str) -> bool {
    (1..=PATH_LENGTH_MAX_BYTES).contains(&text.len())
        && text
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'#')
}
