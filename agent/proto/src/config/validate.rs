//! Validation of a parsed configuration: every error names the field and the reason.

use super::*;

/// A configuration error: the field it concerns and why it is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = crate::bounded_file::read_to_string(path, CONFIG_SIZE_MAX_BYTES)
            .map_err(|error| invalid(path.display().to_string(), error.to_string()))?;
        Config::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = parse_toml(text, "config")?;
        config.validate()?;
        Ok(config)
    }

    /// A configuration built in code (`render::agent_config`), checked as a parsed file is.
    pub fn validated(self) -> Result<Config, ConfigError> {
        self.validate()?;
        Ok(self)
    }

    pub fn cluster_id(&self) -> u128 {
        self.replica.cluster_id.get()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.replica.validate()?;
        validate_tokens(&self.tokens)?;
        if let Some(peers) = &self.peers {
            peers.validate(self.replica.count)?;
        }
        self.server.validate()?;
        self.health.validate()?;
        validate_durations(&self.health, &self.control)?;
        if let Some(backup) = &self.backup {
            backup.validate(&self.replica.data_file)?;
        }
        self.lease.validate()
    }
}

impl Replica {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let replica = self;
        if replica.count == 0 || replica.count > REPLICA_COUNT_MAX {
            return Err(invalid(
                "replica.count",
                format!("must be between 1 and {REPLICA_COUNT_MAX}"),
            ));
        }
        if replica.index >= replica.count {
            return Err(invalid(
                "replica.index",
                format!("must be below replica.count ({})", replica.count),
            ));
        }
        if replica.addresses.len() != usize::from(replica.count) {
            return Err(invalid(
                "replica.addresses",
                format!(
                    "has {} entries but replica.count is {}",
                    replica.addresses.len(),
                    replica.count
                ),
            ));
        }
        for (i, address) in replica.addresses.iter().enumerate() {
            if address.is_empty() || address.contains(',') || address.contains(char::is_whitespace)
            {
                return Err(invalid(
                    format!("replica.addresses[{i}]"),
                    "must be one host:port (or port) without commas or spaces",
                ));
            }
        }
        if !replica.data_file.is_absolute() {
            return Err(invalid("replica.data_file", "must be an absolute path"));
        }
        if replica.statsd_port == 0 {
            return Err(invalid("replica.statsd_port", "must not be 0"));
        }
        match &replica.run {
            Run::Process { binary, .. } | Run::Systemd { binary, .. } if !binary.is_absolute() => {
                return Err(invalid("replica.run.binary", "must be an absolute path"));
            }
            Run::Systemd { unit, .. } if unit.is_empty() || unit.contains('/') => {
                return Err(invalid("replica.run.unit", "must be a systemd unit name"));
            }
            _ => {}
        }
        Ok(())
    }
}

pub(super) fn validate_tokens(tokens: &[Token]) -> Result<(), ConfigError> {
    if tokens.is_empty() {
        return Err(invalid("tokens", "at least one token is required"));
    }
    if tokens.len() > TOKENS_MAX {
        return Err(invalid("tokens", format!("at most {TOKENS_MAX} tokens")));
    }
    for (i, token) in tokens.iter().enumerate() {
        if token.name.is_empty() || token.name.len() > 64 {
            return Err(invalid(
                format!("tokens[{i}].name"),
                "must be 1 to 64 characters",
            ));
        }
        if tokens[..i].iter().any(|other| other.name == token.name) {
            return Err(invalid(format!("tokens[{i}].name"), "is used twice"));
        }
        if token.scopes.is_empty() {
            return Err(invalid(format!("tokens[{i}].scopes"), "must not be empty"));
        }
        let hash_ok = token.sha256.len() == 64
            && token
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hash_ok {
            return Err(invalid(
                format!("tokens[{i}].sha256"),
                "must be 64 lowercase hex digits: the SHA-256 of the secret \
                     (tb-agent hash-token), never the secret itself",
            ));
        }
    }
    Ok(())
}

impl Peers {
    pub(super) fn validate(&self, count: u8) -> Result<(), ConfigError> {
        let peers = self;
        if peers.agent_urls.len() != usize::from(count) {
            return Err(invalid(
                "peers.agent_urls",
                format!(
                    "has {} entries but replica.count is {}",
                    peers.agent_urls.len(),
                    count
                ),
            ));
        }
        for (i, url) in peers.agent_urls.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    format!("peers.agent_urls[{i}]"),
                    "must start with http:// or https://",
                ));
            }
        }
        if peers.timeout_ms == 0 || peers.timeout_ms > 60_000 {
            return Err(invalid("peers.timeout_ms", "must be between 1 and 60000"));
        }
        if peers.client_cert_file.is_some() != peers.client_key_file.is_some() {
            return Err(invalid(
                "peers.client_cert_file",
                "set both client_cert_file and client_key_file, or neither",
            ));
        }
        Ok(())
    }
}

impl Server {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let server = self;
        if server.connections_max == 0 || server.connections_max > 65_536 {
            return Err(invalid(
                "server.connections_max",
                "must be between 1 and 65536",
            ));
        }
        let per_address = server.connections_per_address_max;
        if per_address.is_some_and(|max| max == 0 || max >= server.connections_max) {
            return Err(invalid(
                "server.connections_per_address_max",
                format!(
                    "must be at least 1 and below server.connections_max ({}), so that one \
                     client address cannot take every connection",
                    server.connections_max
                ),
            ));
        }
        if !(100..=60_000).contains(&server.header_read_timeout_ms) {
            return Err(invalid(
                "server.header_read_timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if server.request_timeout_ms == 0 || server.request_timeout_ms > 600_000 {
            return Err(invalid(
                "server.request_timeout_ms",
                "must be between 1 and 600000",
            ));
        }
        if server.body_size_max_bytes == 0 || server.body_size_max_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "server.body_size_max_bytes",
                "must be between 1 and 16777216",
            ));
        }
        Ok(())
    }
}

impl Health {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let health = self;
        if !(0.0..100.0).contains(&health.free_percent_min) {
            return Err(invalid(
                "health.free_percent_min",
                "must be at least 0 and below 100",
            ));
        }
        if !(0.0..=1.0).contains(&health.memlock_ratio_min) {
            return Err(invalid(
                "health.memlock_ratio_min",
                "must be between 0 and 1",
            ));
        }
        if health
            .firewall_record
            .as_ref()
            .is_some_and(|path| !path.is_absolute())
        {
            return Err(invalid(
                "health.firewall_record",
                "must be an absolute path",
            ));
        }
        if health.statsd_stale_ms <= STATSD_EMIT_PERIOD_MS {
            return Err(invalid(
                "health.statsd_stale_ms",
                format!(
                    "must be above {STATSD_EMIT_PERIOD_MS}: TigerBeetle emits StatsD every 10 s, \
                     so a shorter limit fails readiness between two emits of a healthy replica"
                ),
            ));
        }
        Ok(())
    }
}

/// Every duration of `health` and `control`: at least 1 ms and at most an hour.
pub(super) fn validate_durations(health: &Health, control: &Control) -> Result<(), ConfigError> {
    for (field, value) in [
        ("health.probe_interval_ms", health.probe_interval_ms),
        ("health.probe_timeout_ms", health.probe_timeout_ms),
        ("health.statsd_stale_ms", health.statsd_stale_ms),
        (
            "health.host_refresh_interval_ms",
            health.host_refresh_interval_ms,
        ),
        (
            "health.firewall_record_stale_ms",
            health.firewall_record_stale_ms,
        ),
        ("control.stop_timeout_ms", control.stop_timeout_ms),
        ("control.ready_timeout_ms", control.ready_timeout_ms),
        ("control.recover_timeout_ms", control.recover_timeout_ms),
    ]
    .into_iter()
    // Checked only when set; unset means the default, derived from the two above.
    .chain(
        control
            .answer_wait_ms
            .map(|value| ("control.answer_wait_ms", value)),
    ) {
        if value == 0 || value > 3_600_000 {
            return Err(invalid(field, "must be between 1 and 3600000"));
        }
    }
    Ok(())
}

impl Server {
    /// The per-address connection cap in force: the configured one, else a quarter of the
    /// global cap (at least 1).
    pub fn connections_per_address_max(&self) -> u32 {
        self.connections_per_address_max
            .unwrap_or((self.connections_max / 4).max(1))
    }
}

impl Config {
    /// Secret files the agent reads: each must exist and be open to its owner only, as ssh
    /// demands of private keys. A token or key that every local user can read is a leaked one,
    /// so the agent refuses to start (and `check-config` says so) rather than use it.
    pub fn check_secret_files(&self) -> Result<(), ConfigError> {
        let mut secrets: Vec<(&str, &Path)> = Vec::new();
        if let Some(tls) = &self.server.tls {
            secrets.push(("server.tls.key_file", &tls.key_file));
        }
        if let Some(peers) = &self.peers {
            secrets.push(("peers.token_file", &peers.token_file));
            if let Some(key_file) = &peers.client_key_file {
                secrets.push(("peers.client_key_file", key_file));
            }
        }
        for (field, path) in secrets {
            check_secret_file(path).map_err(|reason| invalid(field, reason.to_string()))?;
        }
        Ok(())
    }
}

/// Why a file is not fit to hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// `mode`: the permission bits (`& 0o7777`).
    #[error(
        "{path} is open to group or others (mode {mode:04o}): a secret must be readable by \
         its owner only; run `chmod 600 {path}` (and rotate the secret if others may have \
         read it)",
        path = path.display()
    )]
    OpenToOthers { path: PathBuf, mode: u32 },
}

/// Ok when `path` is a regular file that neither group nor others can access.
pub fn check_secret_file(path: &Path) -> Result<(), SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let path_buf = || path.to_path_buf();
    let metadata = std::fs::metadata(path).map_err(|source| SecretFileError::Unreadable {
        path: path_buf(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(SecretFileError::NotAFile { path: path_buf() });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::OpenToOthers {
            path: path_buf(),
            mode,
        });
    }
    Ok(())
}

impl Backup {
    pub(super) fn validate(&self, data_file: &Path) -> Result<(), ConfigError> {
        if !self.dir.is_absolute() {
            return Err(invalid("backup.dir", "must be an absolute path"));
        }
        if data_file
            .parent()
            .is_some_and(|data_dir| self.dir.starts_with(data_dir))
        {
            return Err(invalid(
                "backup.dir",
                "must not be inside the data file's directory: keep backups apart from the \
                 replica's files (the same filesystem is fine, and lets backups use reflink)",
            ));
        }
        if !(1..=19).contains(&self.zstd_level) {
            return Err(invalid("backup.zstd_level", "must be between 1 and 19"));
        }
        if self.keep_last == 0 || self.keep_last > 1000 {
            return Err(invalid("backup.keep_last", "must be between 1 and 1000"));
        }
        if self.copy_timeout_ms == 0 || self.copy_timeout_ms > 24 * 3_600_000 {
            return Err(invalid(
                "backup.copy_timeout_ms",
                "must be between 1 and 86400000",
            ));
        }
        if self.schedule_randomized_delay_s > crate::backup_schedule::RANDOMIZED_DELAY_MAX_S {
            return Err(invalid(
                "backup.schedule_randomized_delay_s",
                "must be between 0 and 86400",
            ));
        }
        if self.hooks.len() > 8 {
            return Err(invalid("backup.hooks", "at most 8 hooks"));
        }
        for (i, hook) in self.hooks.iter().enumerate() {
            if hook.name.is_empty() || hook.command.is_empty() || hook.command[0].is_empty() {
                return Err(invalid(
                    format!("backup.hooks[{i}]"),
                    "needs a name and a command (program first)",
                ));
            }
            if hook.timeout_ms == 0 || hook.timeout_ms > 24 * 3_600_000 {
                return Err(invalid(
                    format!("backup.hooks[{i}].timeout_ms"),
                    "must be between 1 and 86400000",
                ));
            }
        }
        Ok(())
    }
}

/// Names the dotted key path around a byte offset of a TOML document, for error messages.
/// `text` as TOML of type `T`; an error names the key it is about (`whole` when none).
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    whole: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|error| {
        let field = error
            .span()
            .map(|span| locate_key(text, span.start))
            .unwrap_or_else(|| whole.to_string());
        invalid(field, error.message().to_string())
    })
}

pub(super) fn locate_key(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let mut table = String::new();
    let mut key = String::new();
    for line in before.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            table = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            key.clear();
        } else if let Some((name, _)) = line.split_once('=') {
            key = name.trim().to_string();
        }
    }
    // The offending key is usually on the line where the error starts.
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    if let Some((name, _)) = line.split_once('=') {
        key = name.trim().to_string();
    } else if line.trim_start().starts_with('[') {
        return line
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
    }
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "config".to_string(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}
