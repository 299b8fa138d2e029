//! Whether the host's firewall table for the replica and agent ports is loaded.
//!
//! The replica port has no authentication: without the table `inet tigerbeetle` every network
//! reaches it. Something other than our own unit can remove the table at any time (Debian's
//! `/etc/nftables.conf` starts with `flush ruleset`, and so does many an operator's script), and
//! nothing would say so. Reading nftables needs CAP_NET_ADMIN and netlink, which the agent must
//! not have, so the reading is split in two:
//!
//! - `tb-agent firewall-record`, run as root by a timer (the Ansible role's
//!   `tb-agent-firewall-record.timer`), lists the table with `nft --json` and writes a small JSON
//!   record (0644, atomically by rename) to `health.firewall_record`;
//! - the agent reads that record (an untrusted input: bounded, parsed strictly) and turns it into
//!   the readiness check `firewall` and the metrics `tb_agent_firewall_rules_loaded` and
//!   `tb_agent_firewall_record_age_seconds`. A record that is too old fails the check too: a
//!   recorder that stopped running must not leave a "loaded" verdict standing forever.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The nftables table the Ansible role `tigerbeetle_host` loads (tigerbeetle.nft.j2).
pub const TABLE_FAMILY: &str = "inet";
pub const TABLE_NAME: &str = "tigerbeetle";
/// A record is a few hundred bytes; anything larger is not one of ours.
pub const RECORD_SIZE_MAX_BYTES: u64 = 16 * 1024;
/// How long the agent serves a record it read before reading the file again: readiness and
/// /metrics may be asked many times a second, the file changes every 30 s.
const READ_INTERVAL: Duration = Duration::from_secs(1);
/// A record dated further in the future than this is not trusted (a clock stepped back, or a
/// forged file): it could otherwise never turn stale.
const FUTURE_SLACK_MS: u64 = 60_000;
/// nft's own error messages are short; a longer one is cut to this in the record.
const ERROR_LENGTH_MAX: usize = 512;

/// What the recorder saw, as written to `health.firewall_record`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When nftables was read, Unix milliseconds.
    pub checked_unix_ms: u64,
    /// "inet tigerbeetle".
    pub table: String,
    pub table_present: bool,
    /// The replica port and the agent port, from the agent's config.
    pub ports_expected: Vec<u16>,
    /// TCP ports the table drops from unlisted sources: a rule in a chain on the input hook
    /// matching `tcp dport N` with the verdict drop.
    pub ports_found: Vec<u16>,
    /// Why nftables could not be read (the table and ports are then unknown, not absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the firewall check fails. Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The record could not be read, or is not a record.
    Unreadable(String),
    /// The recorder could not read nftables.
    RecorderFailed(String),
    /// The record is older than the configured bound.
    Stale {
        age_ms: u64,
        limit_ms: u64,
    },
    /// The record is dated in the future beyond the slack.
    FromTheFuture {
        ahead_ms: u64,
    },
    TableMissing,
    PortsMissing(Vec<u16>),
}

/// Why the agent could not use the record file; each reads as the check's detail says it.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("larger than {RECORD_SIZE_MAX_BYTES} bytes: not a firewall record")]
    TooLarge,
    #[error("not a firewall record: {0}")]
    NotARecord(serde_json::Error),
}

/// Why the recorder could not read nftables (written into the record's `error`).
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft: {0}")]
    CannotRun(std::io::Error),
    #[error("nft {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("nft {args} printed no JSON: {source}")]
    NoJson {
        args: String,
        source: serde_json::Error,
    },
    #[error("nft printed no \"nftables\" array")]
    NoNftablesArray,
    #[error("port {0} out of range")]
    PortOutOfRange(u64),
}

/// What the agent makes of the record: a problem, or the ports the table drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Age of the record at the verdict, when there is a record.
    pub age_ms: Option<u64>,
    /// Whether the record says the table and every expected port are there (whatever its age).
    pub rules_loaded: bool,
    pub problem: Option<Problem>,
}

/// The agent's ports the table must filter: the replica's own address and the agent's listen
/// port. The recorder writes them as expected; the agent checks them against what it found,
/// whatever the record claims was expected.
pub fn own_ports(config: &Config) -> BTreeSet<u16> {
    let replica = &config.replica;
    let address = &replica.addresses[usize::from(replica.index)];
    let replica_port = address
        .rsplit(':')
        .next()
        .and_then(|port| port.parse::<u16>().ok());
    replica_port
        .into_iter()
        .chain([config.server.listen.port()])
        .collect()
}

/// Reads a record: at most RECORD_SIZE_MAX_BYTES, parsed strictly.
pub fn read_record(path: &Path) -> Result<Record, RecordError> {
    let file = std::fs::File::open(path).map_err(RecordError::Open)?;
    let mut text = Vec::new();
    file.take(RECORD_SIZE_MAX_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(RecordError::Read)?;
    if text.len() as u64 > RECORD_SIZE_MAX_BYTES {
        return Err(RecordError::TooLarge);
    }
    serde_json::from_slice(&text).map_err(RecordError::NotARecord)
}

/// The verdict on a record read at `now_ms` (Unix ms), for an agent whose ports are `own`.
pub fn verdict(
    record: &Result<Record, RecordError>,
    now_ms: u64,
    limit_ms: u64,
    own: &BTreeSet<u16>,
) -> Verdict {
    let record = match record {
        Ok(record) => record,
        Err(error) => {
            return Verdict {
                age_ms: None,
                rules_loaded: false,
                problem: Some(Problem::Unreadable(error.to_string())),
            };
        }
    };
    let age_ms = now_ms.saturating_sub(record.checked_unix_ms);
    let found: BTreeSet<u16> = record.ports_found.iter().copied().collect();
    let missing: Vec<u16> = own
        .iter()
        .chain(&record.ports_expected)
        .copied()
        .collect::<BTreeSet<u16>>()
        .difference(&found)
        .copied()
        .collect();
    let rules_loaded = record.error.is_none() && record.table_present && missing.is_empty();
    let problem = if record.checked_unix_ms > now_ms + FUTURE_SLACK_MS {
        Some(Problem::FromTheFuture {
            ahead_ms: record.checked_unix_ms - now_ms,
        })
    } else if let Some(error) = &record.error {
        Some(Problem::RecorderFailed(error.clone()))
    } else if !record.table_present {
        Some(Problem::TableMissing)
    } else if !missing.is_empty() {
        Some(Problem::PortsMissing(missing))
    } else if age_ms > limit_ms {
        Some(Problem::Stale { age_ms, limit_ms })
    } else {
        None
    };
    Verdict {
        age_ms: Some(age_ms),
        rules_loaded,
        problem,
    }
}

fn ports_text(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The readiness detail for a verdict.
pub fn detail(verdict: &Verdict, path: &Path, own: &BTreeSet<u16>) -> String {
    let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
    let age = verdict.age_ms.map_or(String::new(), |age| {
        format!(" (recorded {} s ago)", age / 1000)
    });
    let reapply = "nothing filters who reaches them; something replaced the ruleset (`nft -f \
                   /etc/nftables.conf` by hand, a flush): run `systemctl restart \
                   tigerbeetle-firewall.service`";
    match &verdict.problem {
        None => format!(
            "table {table} drops ports {} from unlisted sources{age}",
            ports_text(&own.iter().copied().collect::<Vec<_>>())
        ),
        Some(Problem::Unreadable(error)) => format!(
            "the firewall record {} is unusable: {error}; it is written every 30 s by \
             tb-agent-firewall-record.service (root): check its timer and journal",
            path.display()
        ),
        Some(Problem::RecorderFailed(error)) => {
            format!("the firewall recorder could not read nftables{age}: {error}")
        }
        Some(Problem::Stale { age_ms, limit_ms }) => format!(
            "the firewall record {} is {} s old (limit {} s): is \
             tb-agent-firewall-record.timer running?",
            path.display(),
            age_ms / 1000,
            limit_ms / 1000
        ),
        Some(Problem::FromTheFuture { ahead_ms }) => format!(
            "the firewall record {} is dated {} s in the future: not trusted (was the clock \
             stepped back?)",
            path.display(),
            ahead_ms / 1000
        ),
        Some(Problem::TableMissing) => format!(
            "table {table} is not loaded{age}: the replica and agent ports are open to every \
             network, {reapply}"
        ),
        Some(Problem::PortsMissing(ports)) => format!(
            "table {table} has no drop rule for port(s) {}{age}: {reapply}",
            ports_text(ports)
        ),
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_millis() as u64)
}

/// The agent's side: the last record read, re-read at most every READ_INTERVAL.
#[derive(Default)]
pub struct Monitor {
    last: Mutex<Option<(Instant, Result<Record, RecordError>)>>,
}

impl Monitor {
    /// The verdict now, or None when `health.firewall_record` is not set.
    pub fn verdict(&self, config: &Config) -> Option<Verdict> {
        let path = config.health.firewall_record.as_deref()?;
        let mut last = self.last.lock().expect("not poisoned");
        if last
            .as_ref()
            .is_none_or(|(read, _)| read.elapsed() >= READ_INTERVAL)
        {
            *last = Some((Instant::now(), read_record(path)));
        }
        let (_, record) = last.as_ref().expect("just read");
        Some(verdict(
            record,
            now_unix_ms(),
            config.health.firewall_record_stale_ms,
            &own_ports(config),
        ))
    }
}

// The recorder's side (`tb-agent firewall-record`, as root).

/// Ports that a rule of an input-hook chain of the table drops: `tcp dport N ... drop`. Reads
/// the output of `nft --json list table inet tigerbeetle`.
pub fn dropped_ports(listing: &serde_json::Value) -> Result<Vec<u16>, NftError> {
    let items = listing["nftables"]
        .as_array()
        .ok_or(NftError::NoNftablesArray)?;
    let input_chains: BTreeSet<&str> = items
        .iter()
        .filter_map(|item| item.get("chain"))
        .filter(|chain| chain["hook"] == "input")
        .filter_map(|chain| chain["name"].as_str())
        .collect();
    let mut ports = BTreeSet::new();
    for rule in items.iter().filter_map(|item| item.get("rule")) {
        let in_input = rule["chain"]
            .as_str()
            .is_some_and(|chain| input_chains.contains(chain));
        let Some(expressions) = rule["expr"].as_array() else {
            continue;
        };
        let drops = expressions.iter().any(|expr| expr.get("drop").is_some());
        let port = expressions.iter().find_map(|expr| {
            let matched = expr.get("match")?;
            let left = &matched["left"]["payload"];
            let is_dport = matched["op"] == "==" && left["protocol"] == "tcp";
            (is_dport && left["field"] == "dport")
                .then(|| matched["right"].as_u64())
                .flatten()
        });
        if let (true, true, Some(port)) = (in_input, drops, port) {
            ports.insert(u16::try_from(port).map_err(|_| NftError::PortOutOfRange(port))?);
        }
    }
    Ok(ports.into_iter().collect())
}

/// Whether `nft --json list tables` lists the table.
pub fn table_listed(tables: &serde_json::Value) -> Result<bool, NftError> {
    let items = tables["nftables"]
        .as_array()
        .ok_or(NftError::NoNftablesArray)?;
    Ok(items
        .iter()
        .filter_map(|item| item.get("table"))
        .any(|table| table["family"] == TABLE_FAMILY && table["name"] == TABLE_NAME))
}

fn nft_json(args: &[&str]) -> Result<serde_json::Value, NftError> {
    let output = std::process::Command::new("nft")
        .arg("--json")
        .args(args)
        .output()
        .map_err(NftError::CannotRun)?;
    if !output.status.success() {
        return Err(NftError::Failed {
            args: args.join(" "),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(|source| NftError::NoJson {
        args: args.join(" "),
        source,
    })
}

/// Reads nftables now (needs CAP_NET_ADMIN): the record for an agent with `config`.
pub fn record_now(config: &Config) -> Record {
    let looked = nft_json(&["list", "tables"])
        .and_then(|tables| table_listed(&tables))
        .and_then(|present| match present {
            false => Ok((false, Vec::new())),
            true => nft_json(&["list", "table", TABLE_FAMILY, TABLE_NAME])
                .and_then(|listing| dropped_ports(&listing))
                .map(|ports| (true, ports)),
        });
    let (table_present, ports_found, error) = match looked {
        Ok((present, ports)) => (present, ports, None),
        Err(error) => {
            let cut: String = error.to_string().chars().take(ERROR_LENGTH_MAX).collect();
            (false, Vec::new(), Some(cut))
        }
    };
    Record {
        checked_unix_ms: now_unix_ms(),
        table: format!("{TABLE_FAMILY} {TABLE_NAME}"),
        table_present,
        ports_expected: own_ports(config).into_iter().collect(),
        ports_found,
        error,
    }
}

/// Writes the record readable by everyone (it holds no secret), replacing the old one
/// atomically: the agent never reads half a record.
pub fn write_record(path: &Path, record: &Record) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut temporary = PathBuf::from(path);
    temporary.set_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temporary)?;
    let mut text = serde_json::to_vec(record).expect("a record serializes");
    text.push(b'\n');
    file.write_all(&text)?;
    // Whatever the umask: the agent reads it as another user.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::AgentState;

    /// `nft --json list table inet tigerbeetle` (nftables 1.0.6) for tigerbeetle.nft.j2.
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "tigerbeetle", "handle": 2}}, {"set": {"family": "inet", "name": "replica_sources", "table": "tigerbeetle", "type": "ipv4_addr", "handle": 2, "flags": ["interval"], "elem": ["10.213.0.1"]}}, {"chain": {"family": "inet", "table": "tigerbeetle", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": -1, "policy": "accept"}}, {"chain": {"family": "inet", "table": "tigerbeetle", "name": "other", "handle": 9}}, {"rule": {"family": "inet", "table": "tigerbeetle", "chain": "input", "handle": 4, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "tigerbeetle", "chain": "input", "handle": 5, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 3000}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@replica_sources"}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "tigerbeetle", "chain": "input", "handle": 6, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 3000}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "tigerbeetle", "chain": "input", "handle": 8, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 7443}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "tigerbeetle", "chain": "other", "handle": 10, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 9999}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "tigerbeetle", "chain": "input", "handle": 11, "expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8888}}, {"drop": null}]}}]}"#;

    #[test]
    fn the_recorder_finds_the_dropped_ports_of_input_chains_only() {
        let listing: serde_json::Value = serde_json::from_str(LISTING).unwrap();
        // 9999 is dropped in a chain on no hook, 8888 by a != match: neither protects a port.
        assert_eq!(dropped_ports(&listing).unwrap(), vec![3000, 7443]);
        let tables: serde_json::Value = serde_json::from_str(
            r#"{"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "tigerbeetle"}},
                {"table": {"family": "inet", "name": "filter"}}]}"#,
        )
        .unwrap();
        assert!(!table_listed(&tables).unwrap());
        assert!(table_listed(&listing).unwrap());
        assert!(dropped_ports(&serde_json::json!({"other": 1})).is_err());
    }

    fn record(checked_unix_ms: u64, present: bool, found: &[u16]) -> Result<Record, RecordError> {
        Ok(Record {
            checked_unix_ms,
            table: "inet tigerbeetle".into(),
            table_present: present,
            ports_expected: vec![3000, 7443],
            ports_found: found.to_vec(),
            error: None,
        })
    }

    const NOW_MS: u64 = 1_800_000_000_000;
    const LIMIT_MS: u64 = 90_000;

    fn problem_of(record: Result<Record, RecordError>, own: &[u16]) -> Option<Problem> {
        let own = own.iter().copied().collect();
        verdict(&record, NOW_MS, LIMIT_MS, &own).problem
    }

    #[test]
    fn the_verdict_fails_on_a_missing_table_missing_ports_and_age() {
        let own = [3000, 7443];
        assert_eq!(
            problem_of(record(NOW_MS - 5_000, true, &[3000, 7443]), &own),
            None
        );
        assert_eq!(
            problem_of(record(NOW_MS - 5_000, false, &[]), &own),
            Some(Problem::TableMissing)
        );
        assert_eq!(
            problem_of(record(NOW_MS - 5_000, true, &[7443]), &own),
            Some(Problem::PortsMissing(vec![3000]))
        );
        // The agent's own ports count even when the record did not expect them.
        assert_eq!(
            problem_of(record(NOW_MS, true, &[3000, 7443]), &[3000, 7443, 3001]),
            Some(Problem::PortsMissing(vec![3001]))
        );
        assert_eq!(
            problem_of(record(NOW_MS - 91_000, true, &[3000, 7443]), &own),
            Some(Problem::Stale {
                age_ms: 91_000,
                limit_ms: LIMIT_MS
            })
        );
        assert!(matches!(
            problem_of(record(NOW_MS + 61_000, true, &[3000, 7443]), &own),
            Some(Problem::FromTheFuture { ahead_ms: 61_000 })
        ));
        let mut failed = record(NOW_MS, false, &[]).unwrap();
        failed.error = Some("cannot run nft".into());
        assert_eq!(
            problem_of(Ok(failed), &own),
            Some(Problem::RecorderFailed("cannot run nft".into()))
        );
        // A stale record still says what it saw: the metric keeps the rules' state.
        let stale = verdict(
            &record(NOW_MS - 200_000, true, &[3000, 7443]),
            NOW_MS,
            LIMIT_MS,
            &own.into_iter().collect(),
        );
        assert!(stale.rules_loaded && stale.problem.is_some());
        assert_eq!(stale.age_ms, Some(200_000));
    }

    #[test]
    fn a_malformed_oversized_or_missing_record_is_not_trusted() {
        let dir = std::env::temp_dir().join(format!("tb-firewall-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("record.json");
        let own: BTreeSet<u16> = [3000].into_iter().collect();
        let unreadable = |path: &Path| match verdict(&read_record(path), NOW_MS, LIMIT_MS, &own) {
            Verdict {
                rules_loaded: false,
                age_ms: None,
                problem: Some(Problem::Unreadable(error)),
            } => error,
            other => panic!("{other:?}"),
        };
        assert!(unreadable(&path).contains("cannot open"));
        for text in [
            "not json".to_string(),
            r#"{"checked_unix_ms": 1, "table_present": true}"#.to_string(),
            r#"{"checked_unix_ms": -1, "table": "inet tigerbeetle", "table_present": true,
                "ports_expected": [3000], "ports_found": [3000]}"#
                .to_string(),
            r#"{"checked_unix_ms": 1, "table": "inet tigerbeetle", "table_present": true,
                "ports_expected": [3000], "ports_found": [70000]}"#
                .to_string(),
        ] {
            std::fs::write(&path, &text).unwrap();
            assert!(
                unreadable(&path).contains("not a firewall record"),
                "{text}"
            );
        }
        let padded = format!(
            "{{\"checked_unix_ms\": {NOW_MS}, \"table\": \"inet tigerbeetle\", \"table_present\": \
             true, \"ports_expected\": [3000], \"ports_found\": [3000]}}{}",
            " ".repeat(RECORD_SIZE_MAX_BYTES as usize)
        );
        std::fs::write(&path, padded).unwrap();
        assert!(unreadable(&path).contains("larger than"));

        // What the recorder writes, the agent reads back: mode 0644, atomically replaced.
        let written = record(NOW_MS, true, &[3000]).unwrap();
        write_record(&path, &written).unwrap();
        assert_eq!(read_record(&path).unwrap(), written);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn readiness_and_metrics_report_the_record() {
        let dir = std::env::temp_dir().join(format!("tb-firewall-agent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("record.json");
        let config = Config::parse(&format!(
            "[server]\nlisten = \"127.0.0.1:7443\"\n\
             [replica]\ncluster_id = \"0\"\nindex = 0\ncount = 1\naddresses = [\"3000\"]\n\
             data_file = \"/nonexistent/0_0.tigerbeetle\"\nstatsd_port = 2\n\
             [replica.run]\nmode = \"process\"\nbinary = \"/nonexistent/tigerbeetle\"\n\
             [health]\nfirewall_record = \"{}\"\n\
             [[tokens]]\nname = \"reader\"\nscopes = [\"read\"]\n\
             sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
            path.display()
        ))
        .unwrap();
        let state = AgentState::new(config).unwrap();
        write_record(&path, &record(now_unix_ms(), true, &[3000, 7443]).unwrap()).unwrap();
        let check = crate::health::firewall(&state).unwrap();
        assert!(check.ok, "{check:?}");
        let metrics = crate::metrics::render(&state);
        assert!(
            metrics.contains("\ntb_agent_firewall_rules_loaded{} 1.0\n"),
            "{metrics}"
        );
        assert!(metrics.contains("\ntb_agent_firewall_record_age_seconds{} "));
        // The table gone: the check fails and says what to do; the metric drops to 0 once the
        // agent reads the record again (at most READ_INTERVAL later).
        write_record(&path, &record(now_unix_ms(), false, &[]).unwrap()).unwrap();
        *state.firewall.last.lock().unwrap() = None;
        let check = crate::health::firewall(&state).unwrap();
        assert!(
            !check.ok && check.detail.contains("is not loaded"),
            "{check:?}"
        );
        let metrics = crate::metrics::render(&state);
        assert!(metrics.contains("\ntb_agent_firewall_rules_loaded{} 0.0\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
