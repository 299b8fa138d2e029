//! The replica's log from the journal (systemd mode): its entries, matched to the current unit
//! invocation and main pid, feed the log tracker and the memory-lock warning.

use super::*;

impl Replica {
    /// systemd mode: follows the journal entries of the unit's current invocation, so that the
    /// replica's state lines reach crate::replica_log as in process mode. `_SYSTEMD_INVOCATION_ID`
    /// and `_PID` are fields journald sets itself: no other local process can write an entry
    /// that matches them. A follower that ended (journalctl failed) is started again on the next
    /// poll; one of an older invocation is stopped (kill_on_drop).
    pub(super) async fn follow_journal(self: &Arc<Self>, unit: &str, pid: u32) {
        // A new invocation always has a new main pid: no systemctl call while the follower of
        // this pid runs.
        if let Some((current, _, task)) = self.journal.lock().expect("not poisoned").as_ref()
            && *current == pid
            && !task.is_finished()
        {
            return;
        }
        let invocation =
            match systemctl(&["show", "--property=InvocationID", "--value", unit]).await {
                Ok(output) => output.trim().to_string(),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the replica unit's invocation id");
                    return;
                }
            };
        if invocation.len() != 32 || !invocation.bytes().all(|b| b.is_ascii_hexdigit()) {
            return;
        }
        let mut journal = self.journal.lock().expect("not poisoned");
        if let Some((_, current, task)) = journal.as_ref()
            && *current == invocation
            && !task.is_finished()
        {
            return;
        }
        if let Some((_, _, task)) = journal.take() {
            task.abort();
        }
        let task =
            tokio::spawn(Arc::clone(self).read_journal(unit_name(unit), invocation.clone(), pid));
        *journal = Some((pid, invocation, task.abort_handle()));
    }

    async fn read_journal(self: Arc<Self>, unit: String, invocation: String, pid: u32) {
        // Matched on the unit and the main pid, not on the invocation id: journald cannot always
        // attach _SYSTEMD_INVOCATION_ID to a service's stream (it reads it from a cgroup xattr,
        // which containers may hide: seen in the lab's systemd-nspawn hosts). An entry that has
        // one must name the current invocation (journal_message).
        let Some(boot_id) = journal_boot_id().await else {
            tracing::warn!("cannot tell the journal's current boot (no entry of the agent's own)");
            return;
        };
        let child = spawn_journalctl(&unit, pid, &boot_id);
        let mut child = match child {
            Ok(child) => child,
            Err(error) => {
                tracing::warn!(%error, "cannot follow the replica's journal");
                return;
            }
        };
        let Some(stdout) = child.stdout.take() else {
            return;
        };
        tracing::info!(%invocation, pid, "following the replica's journal entries");
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_journalctl_stderr(stderr));
        }
        let mut reader = BufReader::new(stdout);
        let mut entry = Vec::new();
        let (mut entries, mut rejected) = (0u64, 0u32);
        loop {
            entry.clear();
            // journald bounds an entry's line (LineMax, 48 KiB by default); longer is not ours.
            match (&mut reader)
                .take(JOURNAL_ENTRY_BYTES_MAX)
                .read_until(b'\n', &mut entry)
                .await
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if entry.last() != Some(&b'\n') {
                // Over the bound: skip the rest of this entry.
                let mut rest = Vec::new();
                if reader.read_until(b'\n', &mut rest).await.is_err() {
                    return;
                }
                continue;
            }
            entries += 1;
            match journal_message(&entry, &unit, &invocation, pid) {
                Some(message) => {
                    if let Some(at) = when_written(&message, &boot_id) {
                        self.observe_log_line_at(pid, &message.text, at);
                    }
                }
                None if rejected < 3 => {
                    rejected += 1;
                    tracing::warn!(
                        entry = %String::from_utf8_lossy(&entry[..entry.len().min(400)]),
                        "a journal entry of the replica's unit not taken as its log line"
                    );
                }
                None => {}
            }
            if entries == 1 {
                tracing::info!(pid, "first journal entry of the replica read");
            }
        }
    }

    pub(super) async fn check_journal_for_memlock_warning(&self, unit: &str, pid: u32) {
        let pid_match = format!("_PID={pid}");
        let found = journalctl_once(&[
            "-u",
            unit,
            &pid_match,
            "--grep",
            MEMLOCK_WARNING,
            "--lines=1",
        ])
        .await;
        if found.is_some_and(|stdout| !stdout.is_empty()) {
            self.set_memlock_warning(true);
        }
    }
}

/// One journal entry of the replica process: its text, and when journald received it.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    text: String,
    /// `__MONOTONIC_TIMESTAMP`: CLOCK_MONOTONIC in µs, of boot `boot_id`.
    monotonic_us: u64,
    boot_id: String,
}

/// The MESSAGE of one `journalctl --output=json` entry, with journald's own receipt time, if
/// journald's own fields (set from the sender's credentials and cgroup: no other process can
/// forge them) say it comes from process `pid` of `unit`, and of invocation `invocation` if the
/// entry names one; None for anything else (a binary MESSAGE, a missing field, another process,
/// unit or invocation).
fn journal_message(entry: &[u8], unit: &str, invocation: &str, pid: u32) -> Option<Message> {
    let value: serde_json::Value = serde_json::from_slice(entry).ok()?;
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    let invocation_ok = field("_SYSTEMD_INVOCATION_ID").is_none_or(|id| id == invocation);
    let ours = invocation_ok
        && field("_SYSTEMD_UNIT")? == unit
        && field("_PID")?.parse::<u32>().ok()? == pid;
    ours.then_some(())?;
    Some(Message {
        text: field("MESSAGE")?.to_string(),
        monotonic_us: field("__MONOTONIC_TIMESTAMP")?.parse().ok()?,
        boot_id: field("_BOOT_ID")?.to_string(),
    })
}

/// The agent's instant at which journald received `message`: its own monotonic timestamp, not
/// the time the follower reads it, so that entries a restarted follower reads again keep their
/// age and never outvote a fresher StatsD gauge. None for an entry of another boot or from the
/// future (its timestamp cannot be placed).
fn when_written(message: &Message, boot_id: &str) -> Option<Instant> {
    if message.boot_id != boot_id {
        return None;
    }
    let now_us = monotonic_now_us()?;
    let age_us = now_us.checked_sub(message.monotonic_us)?;
    Instant::now().checked_sub(Duration::from_micros(age_us))
}

/// CLOCK_MONOTONIC in µs: the clock of journald's `__MONOTONIC_TIMESTAMP` and of `Instant`.
fn monotonic_now_us() -> Option<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `now`.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (result == 0).then(|| now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000)
}

/// The checkpoint of the newest line that moves a data file's checkpoint forward
/// (`checkpoint_data start`, `checkpoint_superblock done`, or a sync's `sync: ops=A..B/C..D`;
/// not the open-time `sync: ops=A..B`, which may name an older one) that any process of
/// `unit_name` wrote, in any boot the journal holds; None when there is none or journalctl
/// cannot say.
pub(super) async fn newest_checkpoint_line(unit_name: &str) -> Option<u64> {
    let unit_match = format!("_SYSTEMD_UNIT={unit_name}");
    let stdout = journalctl_once(&[
        "--output=json",
        "--output-fields=MESSAGE",
        "--reverse",
        "--lines=1",
        "--grep=checkpoint_data start|checkpoint_superblock done|sync: ops=[0-9]+[.][.][0-9]+/",
        &unit_match,
    ])
    .await?;
    checkpoint_of_entry(&stdout)
}

/// The checkpoint a `journalctl --output=json` entry's MESSAGE names, if it is a checkpoint line.
fn checkpoint_of_entry(entry: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(entry.trim_ascii()).ok()?;
    match crate::replica_log::parse(value.get("MESSAGE")?.as_str()?)? {
        crate::replica_log::Event::CheckpointStart { checkpoint, .. }
        | crate::replica_log::Event::CheckpointDurable { checkpoint } => Some(checkpoint),
        crate::replica_log::Event::SyncTables {
            synced_checkpoint,
            at_open: false,
            ..
        } => synced_checkpoint,
        _ => None,
    }
}

/// The boot id journald writes on this boot's entries: the `_BOOT_ID` of the agent's own newest
/// entry (this process logs before it follows the replica's journal, and runs in this boot).
/// Not /proc/sys/kernel/random/boot_id: in a container, systemd-nspawn gives the container a boot
/// id of its own by a bind mount there, which the agent unit's ProtectKernelTunables= and
/// ProtectControlGroups= namespaces do not carry. The agent would read the machine's id, and
/// `journalctl --follow`, which follows the boot it reads there unless told one, printed
/// nothing (seen in the lab, 2026-12-06).
async fn journal_boot_id() -> Option<String> {
    let own_pid = format!("_PID={}", std::process::id());
    let stdout = journalctl_once(&[
        "--output=json",
        "--lines=1",
        "--output-fields=_BOOT_ID",
        &own_pid,
    ])
    .await?;
    boot_id_of(&stdout)
}

/// One bounded `journalctl --quiet --no-pager ARGS` (no follow): its stdout, or None when it
/// could not run or ran past SYSTEMCTL_TIMEOUT (killed).
async fn journalctl_once(args: &[&str]) -> Option<Vec<u8>> {
    let output = tokio::time::timeout(
        SYSTEMCTL_TIMEOUT,
        Command::new("journalctl")
            .args(["--quiet", "--no-pager"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    Some(output.stdout)
}

/// The `_BOOT_ID` of a `journalctl --output=json` entry: 32 hex digits, or None.
fn boot_id_of(entry: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(entry.trim_ascii()).ok()?;
    let id = value.get("_BOOT_ID")?.as_str()?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

/// `journalctl --follow` of the replica's unit and main pid, one JSON entry a line.
fn spawn_journalctl(unit: &str, pid: u32, boot_id: &str) -> std::io::Result<tokio::process::Child> {
    Command::new("journalctl")
        .args([
            "--follow",
            "--no-tail",
            "--quiet",
            "--no-pager",
            "--output=json",
        ])
        .arg(format!("--boot={boot_id}"))
        .arg("--output-fields=MESSAGE,_PID,_SYSTEMD_UNIT,_SYSTEMD_INVOCATION_ID")
        .arg(format!("_SYSTEMD_UNIT={unit}"))
        .arg(format!("_PID={pid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// What journalctl says when it cannot read (permissions, a bad match), bounded.
async fn log_journalctl_stderr(stderr: tokio::process::ChildStderr) {
    let mut text = String::new();
    let _ = BufReader::new(stderr)
        .take(4096)
        .read_to_string(&mut text)
        .await;
    if !text.trim().is_empty() {
        tracing::warn!(stderr = %text.trim(), "journalctl (replica's journal)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_id_is_the_entrys_own() {
        let entry = br#"{"__CURSOR":"s=1","_BOOT_ID":"0123456789abcdef0123456789abcdef"}
"#;
        assert_eq!(
            boot_id_of(entry).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(boot_id_of(b""), None);
        assert_eq!(boot_id_of(br#"{"_BOOT_ID":"not-hex"}"#), None);
        assert_eq!(boot_id_of(br#"{"_BOOT_ID":"0123"}"#), None);
    }

    const BOOT: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_checkpoint_line_of_the_journal_names_its_checkpoint() {
        let entry = |message: &str| serde_json::json!({ "MESSAGE": message }).to_string();
        let of = |message: &str| checkpoint_of_entry(entry(message).as_bytes());
        // 0.16.78's formats (replica_log's tests hold the captured lines).
        assert_eq!(
            of(
                "2026-12-07 13:02:11.120Z info(replica): 1n: commit_checkpoint_data: \
                checkpoint_data start (checkpoint=959..1919 commit_min=1951 op=1960 \
                commit_max=1955 op_prepare_max=1967 free_set.acquired=1200 \
                free_set.released=4)"
            ),
            Some(1919)
        );
        assert_eq!(
            of("2026-12-07 13:02:11.480Z info(replica): 1n: \
                commit_checkpoint_superblock_callback: checkpoint_superblock done (op=1963 \
                new_checkpoint=1919)"),
            Some(1919)
        );
        assert_eq!(
            of("2026-12-06 02:46:19.448Z info(replica): 1n: sync: ops=992..1023/992..2015"),
            Some(1983)
        );
        // The open-time sync line (it may name an older checkpoint), another line, garbage, no
        // entry at all.
        assert_eq!(
            of("2026-12-06 02:46:19.448Z info(replica): 1n: sync: ops=992..2015"),
            None
        );
        assert_eq!(
            of("2026-12-06 02:43:09.930Z info(replica): 0n: \
                transition_to_normal_from_recovering_status: view=1 backup"),
            None
        );
        assert_eq!(checkpoint_of_entry(b"{not json"), None);
        assert_eq!(checkpoint_of_entry(b""), None);
        assert_eq!(checkpoint_of_entry(br#"{"MESSAGE":[104,105]}"#), None);
    }

    #[test]
    fn journal_entries_count_only_from_the_replica_process_of_the_invocation() {
        let unit = "tigerbeetle.service";
        let invocation = "0123456789abcdef0123456789abcdef";
        let line = "2026-12-06 02:43:09.930Z info(replica): 0n: x";
        let entry = |unit: &str, id: Option<&str>, pid: &str, message: serde_json::Value| {
            let mut value = serde_json::json!({
                "_SYSTEMD_UNIT": unit, "_PID": pid, "MESSAGE": message,
                "__MONOTONIC_TIMESTAMP": "5000000", "_BOOT_ID": BOOT,
            });
            if let Some(id) = id {
                value["_SYSTEMD_INVOCATION_ID"] = id.into();
            }
            value.to_string()
        };
        let read = |text: String| {
            journal_message(text.as_bytes(), unit, invocation, 42).map(|message| message.text)
        };
        assert_eq!(
            read(entry(unit, Some(invocation), "42", line.into())),
            Some(line.into())
        );
        // journald could not attach the invocation (lab containers): unit and pid decide.
        assert_eq!(
            read(entry(unit, None, "42", line.into())),
            Some(line.into())
        );
        // Another invocation, process or unit, a binary message, garbage.
        let other = "fedcba9876543210fedcba9876543210";
        assert_eq!(read(entry(unit, Some(other), "42", line.into())), None);
        assert_eq!(read(entry(unit, Some(invocation), "43", line.into())), None);
        assert_eq!(read(entry("logger.service", None, "42", line.into())), None);
        assert_eq!(
            read(entry(unit, None, "42", serde_json::json!([104, 105]))),
            None
        );
        assert_eq!(read("{not json".into()), None);
        // No receipt time: not placed.
        let untimed = serde_json::json!({"_SYSTEMD_UNIT": unit, "_PID": "42", "MESSAGE": line});
        assert_eq!(read(untimed.to_string()), None);
    }

    /// An entry keeps the age journald gave it: read again later, it is as old as it was.
    #[test]
    fn an_entry_is_placed_at_its_own_receipt_time() {
        let now_us = monotonic_now_us().unwrap();
        let message = |monotonic_us: u64, boot_id: &str| Message {
            text: String::new(),
            monotonic_us,
            boot_id: boot_id.into(),
        };
        let written = when_written(&message(now_us - 3_000_000, BOOT), BOOT).unwrap();
        let age = written.elapsed();
        assert!(
            age >= Duration::from_millis(2_900) && age < Duration::from_secs(10),
            "{age:?}"
        );
        assert_eq!(when_written(&message(now_us - 1_000, "other"), BOOT), None);
        assert_eq!(
            when_written(&message(now_us + 60_000_000, BOOT), BOOT),
            None
        );
    }
}
