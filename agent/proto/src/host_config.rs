//! The agent's configuration read from the inventory (issue 15, "the inventory is the
//! configuration"): `tb-agent serve --inventory FILE --host NAME --settings FILE`. Everything
//! cluster-wide comes from the inventory through `render::agent_config`, the one generator; the
//! settings file holds only what is this host's own (how the replica runs, the audit log, the
//! agent's log, thresholds, backups), so no deployment renders the inventory's rules again.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{self, Config, ConfigError, invalid, parse_toml};
use crate::inventory::{INVENTORY_SIZE_MAX_BYTES, Inventory};
use crate::render::{self, HostSettings};

/// A settings file is a few sections of TOML; anything larger is not one.
pub const SETTINGS_SIZE_MAX_BYTES: u64 = 64 * 1024;

/// The settings file: the sections of the agent's configuration file that the inventory does
/// not hold, with the same keys and defaults (examples/tb-agent.toml).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// As `[replica.run]` of the configuration file.
    pub run: config::Run,
    /// As `server.audit_log`; absent, the agent keeps no audit file (its log still has the
    /// audit lines).
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    #[serde(default)]
    pub log: config::Log,
    #[serde(default)]
    pub health: config::Health,
    #[serde(default)]
    pub control: config::Control,
    #[serde(default)]
    pub backup: Option<config::Backup>,
}

impl SettingsFile {
    pub fn parse(text: &str) -> Result<SettingsFile, ConfigError> {
        parse_toml(text, "settings")
    }

    pub fn into_host_settings(self) -> HostSettings {
        HostSettings {
            run: self.run,
            audit_log: self.audit_log,
            log: self.log,
            health: self.health,
            control: self.control,
            backup: self.backup,
        }
    }
}

/// The agent's configuration on host `host` of the inventory at `inventory`, with the host's
/// settings at `settings`, checked as a configuration file is (`Config::parse`).
pub fn load(inventory: &Path, host: &str, settings: &Path) -> Result<Config, ConfigError> {
    let cluster =
        Inventory::load(inventory).map_err(|error| invalid("inventory", format!("{error:#}")))?;
    let text = read_bounded(settings, SETTINGS_SIZE_MAX_BYTES, "not a settings file")?;
    let settings = SettingsFile::parse(&text)
        .map_err(|error| {
            invalid(
                format!("{}: {}", settings.display(), error.field),
                error.reason,
            )
        })?
        .into_host_settings();
    render::agent_config(&cluster, host, settings)
        .map_err(|unknown| invalid("host", unknown.to_string()))?
        .validated()
}

/// The maintenance lease settings of the agent that runs now, from what it was started with:
/// its configuration file (TOML, `--config`) or the inventory (JSON, `--inventory`; the lease is
/// cluster-wide, so no host is needed). `tb-agent check-config --same-lease-as` compares a new
/// configuration's pool with this one. Either form is recognised by its first character (a JSON
/// inventory is an object; a TOML file cannot start with `{`), so an inventory is never
/// mistaken for an unreadable configuration file.
pub fn running_lease(path: &Path) -> Result<config::Lease, ConfigError> {
    let text = read_bounded(
        path,
        INVENTORY_SIZE_MAX_BYTES,
        "neither a configuration file nor an inventory",
    )?;
    if text.trim_start().starts_with('{') {
        let inventory = Inventory::parse(&text).map_err(|error| {
            invalid(
                path.display().to_string(),
                format!("an inventory, but: {error:#}"),
            )
        })?;
        return Ok(render::lease(&inventory.cluster));
    }
    let running = Config::parse(&text)
        .map_err(|error| invalid(format!("{}: {}", path.display(), error.field), error.reason))?;
    Ok(running.lease)
}

fn read_bounded(path: &Path, size_max_bytes: u64, what: &str) -> Result<String, ConfigError> {
    use crate::bounded_file::{BoundedReadError, read_to_string};
    read_to_string(path, size_max_bytes).map_err(|error| {
        let reason = match error {
            BoundedReadError::TooLarge { .. } => format!("{error}: {what}"),
            BoundedReadError::Io(_) => error.to_string(),
        };
        invalid(path.display().to_string(), reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(relative: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(relative)
    }

    fn settings(text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tb-host-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:x}.toml", text.len() * 31 + text.lines().count()));
        std::fs::write(&path, text).unwrap();
        path
    }

    const SYSTEMD: &str = "[run]\nmode = \"systemd\"\nunit = \"tigerbeetle.service\"\n\
                           binary = \"/usr/local/bin/tigerbeetle\"\n";

    /// Every host of the example inventory gets the configuration `render::agent_config`
    /// makes, checked, with the settings file's sections in place.
    #[test]
    fn every_example_host_loads() {
        let inventory_path = repo_file("inventories/example.json");
        let inventory = Inventory::load(&inventory_path).unwrap();
        let text = format!("audit_log = \"/var/log/tb-agent/audit.jsonl\"\n{SYSTEMD}");
        let path = settings(&text);
        for host in &inventory.cluster.replica_hosts {
            let config = load(&inventory_path, host, &path).unwrap();
            let expected = render::agent_config(&inventory, host, HostSettings::default()).unwrap();
            assert_eq!(
                serde_json::to_value(&config).unwrap(),
                serde_json::to_value(&expected).unwrap(),
                "{host}"
            );
        }
    }

    /// The commented example an operator starts from loads for every example host.
    #[test]
    fn the_example_settings_file_loads() {
        let inventory_path = repo_file("inventories/example.json");
        let example = repo_file("examples/tb-agent-settings.toml");
        for host in ["tb-0", "tb-1", "tb-2"] {
            let config = load(&inventory_path, host, &example).unwrap();
            assert!(config.backup.is_some() && config.server.audit_log.is_some());
        }
    }

    #[test]
    fn refuses_unknown_hosts_keys_and_bad_values() {
        let inventory = repo_file("inventories/example.json");
        let good = settings(SYSTEMD);
        let unknown = load(&inventory, "nope", &good).unwrap_err().to_string();
        assert!(
            unknown.starts_with("host: host nope is not in the inventory"),
            "{unknown}"
        );
        let extra = settings(&format!("{SYSTEMD}replica_count = 5\n"));
        let refused = load(&inventory, "tb-0", &extra).unwrap_err().to_string();
        assert!(refused.contains("replica_count"), "{refused}");
        // Checked as a configuration file is: a threshold out of range is refused.
        let bad = settings(&format!("{SYSTEMD}[health]\nmemlock_ratio_min = 7.0\n"));
        let refused = load(&inventory, "tb-0", &bad).unwrap_err().to_string();
        assert!(refused.contains("memlock_ratio_min"), "{refused}");
        let missing = load(&inventory, "tb-0", Path::new("/nonexistent.toml")).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
        let large = settings(&format!(
            "{SYSTEMD}#{}\n",
            "x".repeat(SETTINGS_SIZE_MAX_BYTES as usize)
        ));
        let refused = load(&inventory, "tb-0", &large).unwrap_err().to_string();
        assert!(refused.contains("not a settings file"), "{refused}");
    }

    /// `[backup] schedule` is parsed when the settings are read: a bad expression or delay is
    /// refused at its key with the reason, a good one is typed, "" is no schedule.
    #[test]
    fn the_backup_schedule_is_parsed_and_checked() {
        let inventory = repo_file("inventories/example.json");
        let backup = |extra: &str| {
            settings(&format!(
                "{SYSTEMD}[backup]\ndir = \"/var/lib/tb-backups\"\n{extra}"
            ))
        };
        let good = backup("schedule = \"30 2 * * *\"\nschedule_randomized_delay_s = 600\n");
        let config = load(&inventory, "tb-0", &good).unwrap();
        let configured = config.backup.unwrap();
        assert_eq!(configured.schedule.unwrap().expression(), "30 2 * * *");
        assert_eq!(configured.schedule_randomized_delay_s, 600);
        let none = load(&inventory, "tb-0", &backup("schedule = \"\"\n")).unwrap();
        assert!(none.backup.unwrap().schedule.is_none());
        for (extra, field, reason) in [
            (
                "schedule = \"61 * * * *\"\n",
                "backup.schedule",
                "not a valid cron",
            ),
            ("schedule = \"@daily\"\n", "backup.schedule", "5-field"),
            (
                "schedule = \"0 3 * * *\"\nschedule_randomized_delay_s = 86401\n",
                "backup.schedule_randomized_delay_s",
                "between 0 and 86400",
            ),
        ] {
            let refused = load(&inventory, "tb-0", &backup(extra)).unwrap_err();
            assert!(
                refused.field.ends_with(field) && refused.reason.contains(reason),
                "{extra}: {refused}"
            );
        }
    }

    /// `--same-lease-as` takes the running agent's configuration file or the inventory it runs
    /// from: both give the pool; anything else is an error, not a silent "cannot compare".
    #[test]
    fn the_running_lease_comes_from_a_config_file_or_an_inventory() {
        let inventory_path = repo_file("inventories/example.json");
        let inventory = Inventory::load(&inventory_path).unwrap();
        let from_inventory = running_lease(&inventory_path).unwrap();
        let expected = render::lease(&inventory.cluster);
        assert_eq!(
            serde_json::to_value(&from_inventory).unwrap(),
            serde_json::to_value(&expected).unwrap()
        );
        let mut text: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&inventory_path).unwrap()).unwrap();
        text["all"]["vars"]["tb_agent_lease_id_prefix"] = "00000000000000ab".into();
        let other = settings(&text.to_string());
        let other_lease = running_lease(&other).unwrap();
        assert_eq!(other_lease.id_prefix, "00000000000000ab");
        assert!(other_lease.same_pool_as(&from_inventory).is_err());
        let config = repo_file("examples/tb-agent.toml");
        running_lease(&config).unwrap();
        let neither = running_lease(&settings("{ not json"))
            .unwrap_err()
            .to_string();
        assert!(neither.contains("an inventory, but"), "{neither}");
        let broken = running_lease(&settings("[replica]\n"))
            .unwrap_err()
            .to_string();
        assert!(broken.contains("replica"), "{broken}");
    }
}
