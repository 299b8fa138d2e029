//! TigerBeetle's state lines (0.16.78 formats, src/vsr/replica.zig) parsed strictly into
//! events; any other line is None. Every line is untrusted input.

/// Releases whose log formats were checked against replica.zig and captured from a live replica.
pub const VERIFIED_RELEASES: [&str; 1] = ["0.16.78"];
/// Longer lines are not TigerBeetle's state lines: ignored unread.
pub const LINE_BYTES_MAX: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Backup,
}

/// The status a replica left for normal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Recovering,
    RecoveringHead,
    ViewChange,
}

impl From {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            From::Recovering => "transition_to_normal_from_recovering_status",
            From::RecoveringHead => "transition_to_normal_from_recovering_head_status",
            From::ViewChange => "transition_to_normal_from_view_change_status",
        }
    }
}

/// One state line of the replica's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `init: ... release=X`: the process's first line; `verified` if its formats were checked.
    Init {
        release: String,
        verified: bool,
    },
    Normal {
        view: u32,
        from: From,
        role: Role,
    },
    ViewChange {
        view: u32,
    },
    /// `sync: ops=A..B/C..D` (superblock synced, tables follow) or `sync: ops=A..B` (a process
    /// that restarted with tables still to sync).
    SyncTables {
        op_max: u64,
        /// The checkpoint the superblock synced to: the superblock range's end is its trigger
        /// (`sync_op_max = trigger_for_checkpoint(checkpoint)`, replica.zig), so the replica's
        /// checkpoint is at least that end less `COMPACTION_OPS`, without a checkpoint line of
        /// its own. None when the end is no checkpoint's trigger.
        synced_checkpoint: Option<u64>,
        /// `sync: ops=A..B`, logged while the process opens: the superblock's sync range, which
        /// a checkpoint taken while tables were still syncing keeps as it was (replica.zig,
        /// `commit_checkpoint_superblock`). The checkpoint the process opens at may then be
        /// newer than `synced_checkpoint`: a lower bound only. The other form is logged when a
        /// sync has just written its superblock, at exactly the synced checkpoint.
        at_open: bool,
    },
    TablesSynced,
    SyncDone,
    /// `state_machine_open_callback: sync_ops=A..B`: the forest is open; only from here on can
    /// the replica commit (replay its WAL from the checkpoint, then follow the primary).
    StateMachineOpened,
    /// A warning that the replica is too far behind to repair from the WAL: state sync may follow.
    FarBehind {
        /// `request sync; lagging behind cluster`: repair is stuck, a state sync follows.
        /// Otherwise prepares arrived beyond its WAL (`too far ahead`): it may still repair.
        sync_requested: bool,
    },
    /// `commit_checkpoint_data: checkpoint_data start (checkpoint=A..B commit_min=C ...)`: the
    /// replica committed up to the trigger of checkpoint B (commit_min = B + 32) and begins
    /// writing it. Logged by every replica at every checkpoint, the primary included.
    CheckpointStart {
        checkpoint: u64,
        commit_min: u64,
    },
    /// `commit_checkpoint_superblock_callback: checkpoint_superblock done (op=X
    /// new_checkpoint=Y)`: checkpoint Y is durable; a later process of this data file opens at
    /// Y or beyond.
    CheckpointDurable {
        checkpoint: u64,
    },
}

/// `2026-12-06 02:43:09.930Z info(replica): 0n: MESSAGE` → (level, MESSAGE), or None.
fn split_line(line: &str) -> Option<(&str, &str)> {
    if line.len() > LINE_BYTES_MAX {
        return None;
    }
    let line = line.trim_end_matches(['\n', '\r']);
    let mut parts = line.splitn(4, ' ');
    let (date, time, scope, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let date_ok = date.len() == 10 && date.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    let time_ok = time.ends_with('Z') && time.len() >= 9;
    let level = scope.strip_suffix("(replica):")?;
    let (prefix, message) = rest.split_once(": ")?;
    // Replica index and status letter (uppercase on the primary), e.g. `0n`, `1N`, `2r`.
    // Bytes, not a str slice: a multi-byte character at the end would panic a str slice.
    let prefix = prefix.as_bytes();
    let prefix_ok = prefix.len() >= 2
        && prefix[..prefix.len() - 1].iter().all(u8::is_ascii_digit)
        && prefix.last().is_some_and(u8::is_ascii_alphabetic);
    (date_ok && time_ok && prefix_ok).then_some((level, message))
}

fn number<T: std::str::FromStr>(text: &str) -> Option<T> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// `A..B` → (A, B).
fn range<T: std::str::FromStr>(text: &str) -> Option<(T, T)> {
    let (a, b) = text.split_once("..")?;
    Some((number(a)?, number(b)?))
}

fn role(text: &str) -> Option<Role> {
    match text {
        "primary" => Some(Role::Primary),
        "backup" => Some(Role::Backup),
        _ => None,
    }
}

/// Parses one line; None for every line that is not exactly one of the state lines.
pub fn parse(line: &str) -> Option<Event> {
    let (level, message) = split_line(line)?;
    match level {
        "info" => parse_info(message),
        "warning" => parse_warning(message),
        _ => None,
    }
}

fn parse_info(message: &str) -> Option<Event> {
    let (name, rest) = message.split_once(": ").unwrap_or((message, ""));
    match name {
        "init" => {
            let release = rest.split(' ').find_map(|f| f.strip_prefix("release="))?;
            let verified = VERIFIED_RELEASES.contains(&release);
            Some(Event::Init {
                release: release.chars().take(32).collect(),
                verified,
            })
        }
        "transition_to_normal_from_recovering_status" => {
            let (view, role_text) = rest.strip_prefix("view=")?.split_once(' ')?;
            Some(Event::Normal {
                view: number(view)?,
                from: From::Recovering,
                role: role(role_text)?,
            })
        }
        "transition_to_normal_from_recovering_head_status"
        | "transition_to_normal_from_view_change_status" => {
            let (views, role_text) = rest.strip_prefix("view=")?.split_once(' ')?;
            let (_, view) = range::<u32>(views)?;
            let from = if name.contains("recovering_head") {
                From::RecoveringHead
            } else {
                From::ViewChange
            };
            Some(Event::Normal {
                view,
                from,
                role: role(role_text)?,
            })
        }
        "transition_to_view_change_status" => {
            let (views, status) = rest.strip_prefix("view=")?.split_once(' ')?;
            status.strip_prefix("status=")?;
            Some(Event::ViewChange {
                view: range::<u32>(views)?.1,
            })
        }
        "sync" => parse_sync(rest),
        "state_machine_open_callback" => {
            range::<u64>(rest.strip_prefix("sync_ops=")?)?;
            Some(Event::StateMachineOpened)
        }
        "sync_enqueue_tables" => rest
            .starts_with("all tables synced (commit=")
            .then_some(Event::TablesSynced),
        "commit_checkpoint_data" => parse_checkpoint_start(rest),
        "commit_checkpoint_superblock_callback" => parse_checkpoint_durable(rest),
        _ => None,
    }
}

/// `key=value` fields between `prefix` and a closing parenthesis, in this order, each checked.
fn fields<'a>(rest: &'a str, prefix: &str, keys: &[&str]) -> Option<Vec<&'a str>> {
    let inner = rest.strip_prefix(prefix)?.strip_suffix(')')?;
    let mut values = Vec::with_capacity(keys.len());
    let mut parts = inner.split(' ');
    for key in keys {
        let (name, value) = parts.next()?.split_once('=')?;
        (name == *key).then_some(())?;
        values.push(value);
    }
    parts.next().is_none().then_some(values)
}

fn parse_checkpoint_start(rest: &str) -> Option<Event> {
    const KEYS: [&str; 7] = [
        "checkpoint",
        "commit_min",
        "op",
        "commit_max",
        "op_prepare_max",
        "free_set.acquired",
        "free_set.released",
    ];
    let values = fields(rest, "checkpoint_data start (", &KEYS)?;
    let (checkpoint_before, checkpoint) = range::<u64>(values[0])?;
    let commit_min = number::<u64>(values[1])?;
    for value in &values[2..] {
        number::<u64>(value)?;
    }
    // What replica.zig asserts before it logs: the checkpoint advances, both are checkpoints
    // (`vsr.Checkpoint.valid`), and the commit is exactly at the new one's trigger.
    let consistent = checkpoint > checkpoint_before
        && valid_checkpoint(checkpoint_before)
        && valid_checkpoint(checkpoint)
        && commit_min == checkpoint.checked_add(COMPACTION_OPS)?;
    consistent.then_some(Event::CheckpointStart {
        checkpoint,
        commit_min,
    })
}

/// `constants.lsm_compaction_ops`: checkpoints end a compaction bar, and the trigger is one bar
/// after the checkpoint.
const COMPACTION_OPS: u64 = 32;

/// `vsr.Checkpoint.valid`: 0, or the last op of a compaction bar.
fn valid_checkpoint(op: u64) -> bool {
    op == 0 || (op + 1) % COMPACTION_OPS == 0
}

fn parse_checkpoint_durable(rest: &str) -> Option<Event> {
    let values = fields(
        rest,
        "checkpoint_superblock done (",
        &["op", "new_checkpoint"],
    )?;
    let op = number::<u64>(values[0])?;
    let checkpoint = number::<u64>(values[1])?;
    // The op is past the trigger of the checkpoint it made durable.
    (valid_checkpoint(checkpoint) && op >= checkpoint.checked_add(COMPACTION_OPS)?)
        .then_some(Event::CheckpointDurable { checkpoint })
}

fn parse_sync(rest: &str) -> Option<Event> {
    if rest == "done" {
        return Some(Event::SyncDone);
    }
    let ops = rest.strip_prefix("ops=")?;
    // `ops=A..B/C..D`: the tables still to sync, then the superblock's range; `ops=A..B` (at
    // open): the superblock's range, which is also the tables'.
    let (op_max, superblock_op_max, at_open) = match ops.split_once('/') {
        Some((tables, superblock)) => (range::<u64>(tables)?.1, range::<u64>(superblock)?.1, false),
        None => {
            let op_max = range::<u64>(ops)?.1;
            (op_max, op_max, true)
        }
    };
    let synced_checkpoint = superblock_op_max
        .checked_sub(COMPACTION_OPS)
        .filter(|checkpoint| *checkpoint > 0 && valid_checkpoint(*checkpoint));
    Some(Event::SyncTables {
        op_max,
        synced_checkpoint,
        at_open,
    })
}

fn parse_warning(message: &str) -> Option<Event> {
    let too_far_ahead = message.starts_with("on_prepare: ignoring prepare.op=")
        && message.contains(" (too far ahead, ");
    let sync_requested =
        message.starts_with("on_repair_sync_timeout: request sync; lagging behind cluster");
    (too_far_ahead || sync_requested).then_some(Event::FarBehind { sync_requested })
}
