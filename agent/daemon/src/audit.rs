//! Two audit lines per operation (control, backup, restore, recover): one when it begins and one
//! when it ends, with who, from where, what, and how it ended. A refusal before anything begins
//! (busy, a bad id) is one line. Lines are JSON, appended to the configured file (and always to
//! the log, target `audit`). Tokens are named, never shown.
//!
//! The file is written and fsynced by a writer thread, never on the async runtime: an operation
//! hands its line over and waits (bounded) until it is on disk.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::api::{JobKind, Outcome};

/// Lines waiting for the writer. A full queue means the disk is far behind: lines beyond it are
/// logged (target `audit`) and counted as lost rather than blocking the agent.
const QUEUE_LINES_MAX: usize = 1024;
/// How long an operation waits for its line to be on disk before going on without it.
const WRITE_WAIT: Duration = Duration::from_secs(5);

/// Whether a line opens an operation or closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Begin,
    End,
}

#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub token: &'a str,
    pub remote: SocketAddr,
    pub action: JobKind,
    pub phase: Phase,
    pub outcome: Outcome,
    pub forced: bool,
    /// The job that carries the operation; None for a refusal before it began.
    pub job_id: Option<&'a str>,
    pub detail: &'a str,
    /// On the closing line of an operation that stopped its replica under the maintenance
    /// lease: what it knew of the lease when it went on to stop.
    #[serde(flatten)]
    pub lease: Option<LeaseAct>,
}

/// What an operation knew of its maintenance lease at the moment it decided to stop the replica
/// (unix ms by this agent's clock). A fault campaign checks from these that no agent acted on a
/// lease past its own deadline (tests/chaos/invariants.py).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseAct {
    pub lease_id: String,
    /// When this operation took the lease (or borrowed its caller's).
    pub lease_taken_unix_ms: u64,
    /// When it checked the lease's time left and went on to stop the replica.
    pub lease_acted_unix_ms: u64,
    /// The holder's own deadline then: the last acquire or renewal's send time plus the ttl,
    /// less the margin.
    pub lease_deadline_unix_ms: u64,
}

/// Now, in unix ms.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_millis() as u64)
}

struct Line {
    text: String,
    written: oneshot::Sender<()>,
}

pub struct AuditLog {
    queue: Option<mpsc::SyncSender<Line>>,
    /// Shared with the writer thread, which counts the lines the file refused.
    lost_lines: Arc<AtomicU64>,
}

impl AuditLog {
    /// Opens the file (if any) and starts its writer thread.
    pub fn open(path: Option<&Path>) -> anyhow::Result<AuditLog> {
        let lost_lines = Arc::new(AtomicU64::new(0));
        let queue = match path {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| anyhow::anyhow!("audit log {}: {error}", path.display()))?;
                let (sender, receiver) = mpsc::sync_channel(QUEUE_LINES_MAX);
                let writer_lost_lines = Arc::clone(&lost_lines);
                std::thread::Builder::new()
                    .name("audit-writer".into())
                    .spawn(move || write_lines(file, receiver, &writer_lost_lines))?;
                Some(sender)
            }
            None => None,
        };
        Ok(AuditLog { queue, lost_lines })
    }

    /// Lines that could not be written to the file (they are in the log); exported as
    /// `tb_agent_audit_lines_lost_total`.
    pub fn lost_lines(&self) -> u64 {
        self.lost_lines.load(Ordering::Relaxed)
    }

    /// Logs the line and appends it to the file; returns once it is on disk (or after a bound).
    pub async fn record(&self, entry: &Entry<'_>) {
        tracing::info!(
            target: "audit",
            token = entry.token,
            remote = %entry.remote,
            action = entry.action.as_str(),
            phase = ?entry.phase,
            outcome = entry.outcome.as_str(),
            forced = entry.forced,
            job = entry.job_id,
            detail = entry.detail,
            "audit"
        );
        let Some(queue) = &self.queue else {
            return;
        };
        let mut line = serde_json::json!({ "time_unix_ms": unix_ms_now() });
        if let (Some(object), Ok(serde_json::Value::Object(fields))) =
            (line.as_object_mut(), serde_json::to_value(entry))
        {
            object.extend(fields);
        }
        let (written, done) = oneshot::channel();
        let lost = |why: &str| {
            self.lost_lines.fetch_add(1, Ordering::Relaxed);
            tracing::error!(target: "audit", %line, "audit line not written to the file: {why}");
        };
        match queue.try_send(Line {
            text: line.to_string(),
            written,
        }) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => return lost("the writer is behind"),
            Err(mpsc::TrySendError::Disconnected(_)) => return lost("the writer stopped"),
        }
        match tokio::time::timeout(WRITE_WAIT, done).await {
            Ok(Ok(())) => {}
            // The writer logged why; the line may still reach the disk later.
            Ok(Err(_)) | Err(_) => tracing::warn!(
                target: "audit",
                "audit line not confirmed on disk within {} ms",
                WRITE_WAIT.as_millis()
            ),
        }
    }
}

/// The writer thread: appends and fsyncs each line, then confirms it.
fn write_lines(mut file: std::fs::File, receiver: mpsc::Receiver<Line>, lost_lines: &AtomicU64) {
    while let Ok(line) = receiver.recv() {
        // An audit line that cannot be written is logged and counted; the action itself already
        // happened.
        match writeln!(file, "{}", line.text).and_then(|()| file.sync_data()) {
            Ok(()) => {
                let _ = line.written.send(());
            }
            Err(error) => {
                lost_lines.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target: "audit", %error, line = %line.text, "cannot write the audit log");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_reach_the_file_before_record_returns() {
        let dir = std::env::temp_dir().join(format!("tb-audit-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let _ = std::fs::remove_file(&path);
        let audit = AuditLog::open(Some(&path)).unwrap();
        for phase in [Phase::Begin, Phase::End] {
            audit
                .record(&Entry {
                    token: "admin",
                    remote: "127.0.0.1:1".parse().unwrap(),
                    action: JobKind::Restart,
                    phase,
                    outcome: if phase == Phase::Begin {
                        Outcome::Running
                    } else {
                        Outcome::Restarted
                    },
                    forced: false,
                    job_id: Some("restart-1"),
                    detail: "",
                    lease: (phase == Phase::End).then(|| LeaseAct {
                        lease_id: "00ff".into(),
                        lease_taken_unix_ms: 1,
                        lease_acted_unix_ms: 2,
                        lease_deadline_unix_ms: 3,
                    }),
                })
                .await;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["phase"], "begin");
        assert_eq!(lines[1]["outcome"], "restarted");
        assert_eq!(lines[1]["job_id"], "restart-1");
        // The lease fields on the closing line only, flat beside the others.
        assert!(lines[0].get("lease_id").is_none(), "{text}");
        assert_eq!(lines[1]["lease_id"], "00ff");
        assert_eq!(lines[1]["lease_deadline_unix_ms"], 3);
        assert_eq!(audit.lost_lines(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn lines_the_file_refuses_are_counted_as_lost() {
        // /dev/full answers every write with ENOSPC, as a full disk would.
        let audit = AuditLog::open(Some(Path::new("/dev/full"))).unwrap();
        audit
            .record(&Entry {
                token: "admin",
                remote: "127.0.0.1:1".parse().unwrap(),
                action: JobKind::Restart,
                phase: Phase::Begin,
                outcome: Outcome::Running,
                forced: false,
                job_id: Some("restart-1"),
                detail: "",
                lease: None,
            })
            .await;
        assert_eq!(audit.lost_lines(), 1);
    }
}
