//! The workload's event log: one JSON object a line, appended as things happen, read back by the
//! checker. The log is the client's whole memory of what it sent and what it was told, so a
//! request is written *before* it is sent: a crash between the two leaves a request the checker
//! treats as indeterminate, never a transfer the cluster holds that the log does not know.
//!
//! u128 values are decimal strings: JSON numbers lose precision past 2^53.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Longest line the checker reads: a request of `REQUEST_TRANSFERS_MAX` transfers fits easily.
pub const LINE_BYTES_MAX: usize = 64 * 1024;
/// Transfers in one request, at most.
pub const REQUEST_TRANSFERS_MAX: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A transfer between two accounts, posted at once.
    Plain,
    /// Reserves the amount until posted, voided, or its timeout passes.
    Pending,
    Post,
    Void,
}

/// A transfer as sent. `linked` marks all but the last of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    #[serde(with = "decimal")]
    pub id: u128,
    #[serde(with = "decimal")]
    pub debit: u128,
    #[serde(with = "decimal")]
    pub credit: u128,
    #[serde(with = "decimal")]
    pub amount: u128,
    pub kind: Kind,
    pub linked: bool,
    #[serde(with = "decimal")]
    pub pending_id: u128,
    pub timeout_s: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The accounts exist (acknowledged) before any transfer is sent.
    Setup {
        ledger: u32,
        code: u16,
        #[serde(with = "decimal")]
        source: u128,
        #[serde(with = "decimal_vec")]
        accounts: Vec<u128>,
    },
    Request {
        request: u64,
        unix_ms: u64,
        transfers: Vec<Sent>,
    },
    /// The cluster answered: every index not listed was created.
    Reply {
        request: u64,
        unix_ms: u64,
        /// (index in the request, the error's name).
        errors: Vec<(u32, String)>,
    },
    /// No answer (timeout, client error): each transfer may or may not exist.
    Indeterminate {
        request: u64,
        unix_ms: u64,
        why: String,
    },
}

/// Appends events and flushes each line: what is on disk is what the client knew.
pub struct Writer {
    file: std::fs::File,
}

impl Writer {
    pub fn create(path: &Path) -> anyhow::Result<Writer> {
        // The client's record of a ledger's transfers: for its owner alone, like the data.
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating the event log {}", path.display()))?;
        Ok(Writer { file })
    }

    pub fn write(&mut self, event: &Event) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(event)?;
        assert!(line.len() < LINE_BYTES_MAX, "an event line is bounded");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .context("writing the event log")?;
        self.file.flush().context("flushing the event log")
    }
}

/// Every event of a log. A torn last line (the writer killed mid-write) is dropped: its request
/// was never sent, since a request is sent only after its line is complete.
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening the event log {}", path.display()))?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .context("reading the event log")?;
    let mut events = Vec::with_capacity(lines.len());
    for (number, line) in lines.iter().enumerate() {
        if line.len() > LINE_BYTES_MAX {
            bail!("line {} of the event log is too long", number + 1);
        }
        match serde_json::from_str(line) {
            Ok(event) => events.push(event),
            Err(_) if number + 1 == lines.len() => break,
            Err(error) => bail!("line {} of the event log: {error}", number + 1),
        }
    }
    Ok(events)
}

mod decimal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'d, D: Deserializer<'d>>(deserializer: D) -> Result<u128, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(D::Error::custom)
    }
}

mod decimal_vec {
    use serde::{Deserialize, Deserializer, Serializer, de::Error, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(values: &[u128], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(values.len()))?;
        for value in values {
            seq.serialize_element(&value.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'d, D: Deserializer<'d>>(deserializer: D) -> Result<Vec<u128>, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts
            .iter()
            .map(|text| text.parse().map_err(D::Error::custom))
            .collect()
    }
}
