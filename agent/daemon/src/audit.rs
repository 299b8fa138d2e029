//! One audit line per control (or backup) action: who, from where, what, and how it ended.
//! Lines are JSON, appended to the configured file (and always to the log, target `audit`).
//! Tokens are named, never shown.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub token: &'a str,
    pub remote: SocketAddr,
    pub action: &'a str,
    pub outcome: &'a str,
    pub forced: bool,
    pub detail: &'a str,
}

pub struct AuditLog {
    file: Option<Mutex<std::fs::File>>,
}

impl AuditLog {
    pub fn open(path: Option<&Path>) -> anyhow::Result<AuditLog> {
        let file = match path {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| anyhow::anyhow!("audit log {}: {error}", path.display()))?,
            )),
            None => None,
        };
        Ok(AuditLog { file })
    }

    pub fn record(&self, entry: &Entry<'_>) {
        tracing::info!(
            target: "audit",
            token = entry.token,
            remote = %entry.remote,
            action = entry.action,
            outcome = entry.outcome,
            forced = entry.forced,
            detail = entry.detail,
            "audit"
        );
        let Some(file) = &self.file else {
            return;
        };
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |duration| duration.as_millis());
        let mut line = serde_json::json!({ "time_unix_ms": unix_ms });
        if let (Some(object), Ok(serde_json::Value::Object(fields))) =
            (line.as_object_mut(), serde_json::to_value(entry))
        {
            object.extend(fields);
        }
        let mut file = file.lock().expect("not poisoned");
        // An audit line that cannot be written is logged; the action itself already happened.
        if let Err(error) = writeln!(file, "{line}").and_then(|()| file.sync_data()) {
            tracing::error!(%error, "cannot write the audit log");
        }
    }
}
