//! The readiness evidence the agent holds about the running replica process, handed from one run
//! of the agent to the next (systemd mode, where the replica outlives the agent).
//!
//! A restarted replica may pass readiness on its own log within a second, but only with evidence
//! about the process before it: the view it reached, that StatsD showed it caught up just before,
//! and its commit trend (the lag estimate of gate.rs). An agent learns these from StatsD reports,
//! every 10 s. A rollout restarts the agent (its binary or settings changed) right before the
//! replica, so the new agent had none and the replica's gate waited for its first StatsD report.
//!
//! At its stop the agent writes what it knows to its runtime directory (systemd's
//! `RuntimeDirectory=`, 0700, kept across restarts); the next run takes it once (the file is
//! removed when read) and only for the very process it describes (the same pid and start time,
//! so a reused pid does not match), only if written less than `HANDOVER_AGE_MAX` ago. The file is
//! untrusted input all the same: bounded, parsed strictly, owned by the agent's user, private.
//! Without it (a crash, a reboot, another process) the agent waits for StatsD, as it always did.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::gate::{Commits, Trend};
use super::proc::process_start_ticks;

const FILE_NAME: &str = "replica-evidence.json";
const FILE_BYTES_MAX: u64 = 4096;
/// Evidence older than this when the next run first sees the process is dropped: an agent
/// restart takes seconds, and the evidence's own parts age out sooner (caught up: the StatsD
/// staleness limit; the trend's estimate grows with the time since its report).
const HANDOVER_AGE_MAX: Duration = Duration::from_secs(60);
/// Far above any commit rate a cluster reaches (hundreds of ops a second in the lab's bench; an
/// op is a batch of up to 8190 events): a larger rate read back is not a rate.
const OPS_PER_SECOND_MAX: f64 = 1e6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Handover {
    pid: u32,
    /// /proc/PID/stat's starttime (clock ticks after boot).
    start_ticks: u64,
    /// CLOCK_MONOTONIC (the clock of `Instant`, one for every process of a boot), milliseconds.
    written_monotonic_ms: u64,
    view_floor: u64,
    caught_up_monotonic_ms: Option<u64>,
    trend: Option<TrendRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrendRecord {
    received_monotonic_ms: u64,
    commit_min: u64,
    commit_max: u64,
    op_checkpoint: u64,
    ops_per_second: f64,
}

fn monotonic_now_ms() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC exists on Linux");
    Duration::from(now).as_millis() as u64
}

fn to_monotonic_ms(at: Instant) -> u64 {
    monotonic_now_ms().saturating_sub(at.elapsed().as_millis() as u64)
}

/// None for a time ahead of now (not written by this boot's clock).
fn from_monotonic_ms(monotonic_ms: u64) -> Option<Instant> {
    let age_ms = monotonic_now_ms().checked_sub(monotonic_ms)?;
    Instant::now().checked_sub(Duration::from_millis(age_ms))
}

impl super::Replica {
    /// At the agent's stop: writes the evidence about the running replica process for the next
    /// run. Nothing when no process runs, or when its data file is being replaced (the evidence
    /// would describe the old file).
    pub fn hand_over(&self, dir: &Path) -> std::io::Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        if self.data_replaced.load(Ordering::Relaxed) {
            return Ok(());
        }
        // The process as the agent first saw it (its gate), and still the same one now: a pid
        // reused since the last look at systemd is another process.
        let Some(start_ticks) = self
            .gate()
            .filter(|gate| gate.pid == pid)
            .and_then(|gate| gate.start_ticks)
            .filter(|start_ticks| process_start_ticks(pid) == Some(*start_ticks))
        else {
            return Ok(());
        };
        // What the next process's gate would take from this one if it were replaced now.
        self.remember_view(Some(pid));
        self.sample_commits();
        let caught_up = *self.caught_up_at.lock().expect("not poisoned");
        let trend = *self.trend.lock().expect("not poisoned");
        let handover = Handover {
            pid,
            start_ticks,
            written_monotonic_ms: monotonic_now_ms(),
            view_floor: self.view_floor.load(Ordering::Relaxed),
            caught_up_monotonic_ms: caught_up.map(to_monotonic_ms),
            trend: trend.last.map(|(received, commits)| TrendRecord {
                received_monotonic_ms: to_monotonic_ms(received),
                commit_min: commits.commit_min,
                commit_max: commits.commit_max,
                op_checkpoint: commits.op_checkpoint,
                ops_per_second: trend.ops_per_second,
            }),
        };
        crate::backup::store::write_json_atomically(&dir.join(FILE_NAME), &handover)
    }

    /// At the agent's start, before it serves: takes the previous run's evidence, if any
    /// (removed once read), and asks systemd for the replica's process, to which it applies if
    /// it is the one described. A request served before that first look could restart the
    /// replica, and the agent would then first see the next process.
    pub async fn take_over(self: &std::sync::Arc<Self>, dir: &Path) {
        remove_unfinished_writes(dir);
        let path = dir.join(FILE_NAME);
        let handover = match read(&path) {
            Ok(None) => None,
            read => {
                // Taken once, whatever it held: evidence that cannot be removed is not used, or
                // a later run could take it again.
                let removed = std::fs::remove_file(&path).map_err(|error| {
                    tracing::warn!(target: "readiness", "ignoring {}: cannot remove it: {error}",
                        path.display());
                });
                read.map_err(|why| {
                    tracing::warn!(target: "readiness", "ignoring {}: {why}", path.display());
                })
                .ok()
                .flatten()
                .filter(|_| removed.is_ok())
            }
        };
        // No evidence: nothing to bind to a process, and start-up need not wait for systemd.
        if handover.is_none() {
            return;
        }
        *self.handover.lock().expect("not poisoned") = handover;
        self.poll_systemd().await;
        // Not applied (no process yet): it never will be.
        self.handover.lock().expect("not poisoned").take();
    }

    /// The agent sees process `pid` for the first time: the previous run's evidence applies if
    /// it describes this very process and is recent.
    pub(super) fn apply_handover(&self, pid: u32) {
        let Some(handover) = self.handover.lock().expect("not poisoned").take() else {
            return;
        };
        // The process as its gate, made just before for this pid, recorded it.
        let start_ticks = self
            .gate()
            .filter(|gate| gate.pid == pid)
            .and_then(|gate| gate.start_ticks);
        if let Err(why) = applicable(&handover, pid, start_ticks) {
            tracing::info!(target: "readiness", "the previous run's evidence does not apply: {why}");
            return;
        }
        self.view_floor
            .fetch_max(handover.view_floor, Ordering::Relaxed);
        if let Some(at) = handover.caught_up_monotonic_ms.and_then(from_monotonic_ms) {
            *self.caught_up_at.lock().expect("not poisoned") = Some(at);
        }
        if let Some(record) = &handover.trend
            && let Some(received) = from_monotonic_ms(record.received_monotonic_ms)
        {
            *self.trend.lock().expect("not poisoned") = Trend {
                last: Some((received, record.commits())),
                ops_per_second: record.ops_per_second,
            };
        }
        tracing::info!(
            target: "readiness",
            "took over the previous run's evidence about replica pid {pid}: {handover:?}"
        );
    }
}

/// Temporary files of a write a kill interrupted (write_json_atomically names them
/// `.replica-evidence.json.PID-N-RANDOM.tmp`): the runtime directory outlives the agent, so
/// without this each such kill would leave one behind for good. At most a directory's worth read.
fn remove_unfinished_writes(dir: &Path) {
    const ENTRIES_MAX: usize = 1024;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{FILE_NAME}.");
    for entry in entries.flatten().take(ENTRIES_MAX) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl TrendRecord {
    fn commits(&self) -> Commits {
        Commits {
            commit_min: self.commit_min,
            commit_max: self.commit_max,
            op_checkpoint: self.op_checkpoint,
        }
    }
}

/// Ok(None) when there is no file. The checks are of the file opened (no symbolic link
/// followed), so the file read is the file checked.
fn read(path: &Path) -> Result<Option<Handover>, Unreadable> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Unreadable::Io(error)),
        Ok(file) => file,
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(Unreadable::NotRegular);
    }
    if metadata.uid() != nix::unistd::geteuid().as_raw() || metadata.mode() & 0o077 != 0 {
        return Err(Unreadable::NotPrivate {
            uid: metadata.uid(),
            mode: metadata.mode() & 0o777,
        });
    }
    let mut text = String::new();
    file.take(FILE_BYTES_MAX + 1).read_to_string(&mut text)?;
    if text.len() as u64 > FILE_BYTES_MAX {
        return Err(Unreadable::TooLarge);
    }
    Ok(Some(serde_json::from_str(&text)?))
}

/// Why a handover file was not read: said in the agent's log; readiness then waits for StatsD.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error(
        "owned by uid {uid} with mode {mode:o}: only a private file of the agent's user counts"
    )]
    NotPrivate { uid: u32, mode: u32 },
    #[error("larger than {FILE_BYTES_MAX} bytes")]
    TooLarge,
    #[error("{0}")]
    Malformed(#[from] serde_json::Error),
}

/// Whether `handover` describes the process `pid` (started at `start_ticks`) and is recent.
fn applicable(handover: &Handover, pid: u32, start_ticks: Option<u64>) -> Result<(), Inapplicable> {
    if handover.pid != pid || Some(handover.start_ticks) != start_ticks {
        return Err(Inapplicable::OtherProcess {
            described: (handover.pid, handover.start_ticks),
            replica: (pid, start_ticks),
        });
    }
    let age_ms = monotonic_now_ms().checked_sub(handover.written_monotonic_ms);
    if age_ms.is_none_or(|age_ms| age_ms > HANDOVER_AGE_MAX.as_millis() as u64) {
        return Err(Inapplicable::Old { age_ms });
    }
    if let Some(record) = &handover.trend
        && !(record.ops_per_second.is_finite()
            && (0.0..=OPS_PER_SECOND_MAX).contains(&record.ops_per_second))
    {
        return Err(Inapplicable::Rate(record.ops_per_second));
    }
    if handover.view_floor > u64::from(u32::MAX) {
        return Err(Inapplicable::View(handover.view_floor));
    }
    Ok(())
}

/// Why readable evidence does not apply to the replica's process.
#[derive(Debug, PartialEq, thiserror::Error)]
enum Inapplicable {
    #[error(
        "it describes pid {} (start {}), the replica is pid {} (start {:?})",
        described.0, described.1, replica.0, replica.1
    )]
    OtherProcess {
        described: (u32, u64),
        replica: (u32, Option<u64>),
    },
    #[error("written {age_ms:?} ms ago, more than {} ms", HANDOVER_AGE_MAX.as_millis())]
    Old { age_ms: Option<u64> },
    #[error("a commit rate of {0} ops/s")]
    Rate(f64),
    #[error("view {0} is not a view")]
    View(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handover(pid: u32, start_ticks: u64, written_monotonic_ms: u64) -> Handover {
        Handover {
            pid,
            start_ticks,
            written_monotonic_ms,
            view_floor: 3,
            caught_up_monotonic_ms: Some(written_monotonic_ms),
            trend: Some(TrendRecord {
                received_monotonic_ms: written_monotonic_ms,
                commit_min: 1000,
                commit_max: 1000,
                op_checkpoint: 960,
                ops_per_second: 3.0,
            }),
        }
    }

    #[test]
    fn only_the_same_recent_process_matches() {
        let now = monotonic_now_ms();
        assert_eq!(applicable(&handover(7, 100, now), 7, Some(100)), Ok(()));
        // A reused pid: another start time.
        assert!(applicable(&handover(7, 100, now), 7, Some(101)).is_err());
        assert!(applicable(&handover(7, 100, now), 8, Some(100)).is_err());
        assert!(applicable(&handover(7, 100, now), 7, None).is_err());
        // A machine up for less than the limit has no time that old.
        if let Some(old) = now.checked_sub(HANDOVER_AGE_MAX.as_millis() as u64 + 1) {
            assert!(applicable(&handover(7, 100, old), 7, Some(100)).is_err());
        }
        // Written by a clock ahead of this boot's.
        assert!(applicable(&handover(7, 100, now + 60_000), 7, Some(100)).is_err());
        let mut bad_rate = handover(7, 100, now);
        bad_rate.trend.as_mut().unwrap().ops_per_second = f64::NAN;
        assert!(applicable(&bad_rate, 7, Some(100)).is_err());
    }

    #[test]
    fn times_survive_the_round_trip_through_the_monotonic_clock() {
        let at = Instant::now() - Duration::from_secs(5);
        let back = from_monotonic_ms(to_monotonic_ms(at)).unwrap();
        let error = if back > at { back - at } else { at - back };
        // Four clock reads apart, on a loaded machine.
        assert!(error < Duration::from_millis(100), "{error:?}");
        assert_eq!(from_monotonic_ms(monotonic_now_ms() + 10_000), None);
    }

    #[test]
    fn the_file_must_be_private_and_small() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tb-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(FILE_NAME);
        assert_eq!(read(&path).unwrap(), None);
        let written = handover(7, 100, monotonic_now_ms());
        crate::backup::store::write_json_atomically(&path, &written).unwrap();
        assert_eq!(read(&path).unwrap(), Some(written));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read(&path),
            Err(Unreadable::NotPrivate { mode: 0o644, .. })
        ));
        std::fs::write(&path, "x".repeat(FILE_BYTES_MAX as usize + 1)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read(&path), Err(Unreadable::TooLarge)));
        std::fs::write(&path, r#"{"pid": 7}"#).unwrap();
        assert!(matches!(read(&path), Err(Unreadable::Malformed(_))));
        // A symbolic link, even to a good file, is not followed.
        let target = dir.join("target.json");
        crate::backup::store::write_json_atomically(&target, &handover(7, 100, 0)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(read(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_interrupted_write_leaves_nothing_for_good() {
        let dir = std::env::temp_dir().join(format!("tb-handover-tmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let unfinished = dir.join(format!(".{FILE_NAME}.123-0-0badcafe.tmp"));
        let other = dir.join(".another-file.123-0-0badcafe.tmp");
        for path in [&unfinished, &other] {
            std::fs::write(path, "{").unwrap();
        }
        remove_unfinished_writes(&dir);
        assert!(!unfinished.exists());
        assert!(other.exists(), "only the evidence's own temporary files");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
