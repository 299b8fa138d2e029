//! Readiness from the replica's own log: TigerBeetle logs, at its default level (info), every
//! transition to normal status with the view and the end of state sync's superblock phase
//! (src/vsr/replica.zig). StatsD reports the same state only every 10 s, so a restarted replica
//! would wait ~10 s for its first gauge; its log says it within a second.
//!
//! Log text is not a stable interface: every line is untrusted input, parsed strictly against the
//! formats of the releases checked below. A line that does not match is ignored, and a process
//! whose `init:` line names a release not checked here gives no evidence at all: readiness then
//! comes from StatsD alone, as before. The log only ever *adds* a faster verdict; missing lines
//! (journald rate limits, MaxLevelStore) leave the verdict to StatsD, never to "ready".
//!
//! Traps, from replica.zig (0.16.78):
//! - A restarted backup whose saved view is certain logs `transition_to_normal_from_recovering_status`
//!   in its *own saved view*, before it has heard from anyone. If the cluster moved on, the first
//!   heartbeat (the primary's commit message, every 500 ms; pings every 1 s) makes it jump to a
//!   view change. So: normal counts only in a view at least the cluster's view as known to the
//!   agent, and only after `SETTLE` (600 ms) without a later transition.
//! - State sync is decided when a start_view message is processed, and its superblock phase ends
//!   with `sync: ops=A..B/C..D`, logged *after* the transition to normal, once the superblock is
//!   written. `SETTLE_AFTER_START_VIEW` (200 ms) covers that line; tables are then synced in the background until
//!   `sync_enqueue_tables: all tables synced`. `sync: done` comes only at the next checkpoint
//!   (late on an idle cluster), so it is not waited for.
//! - A backup far behind in the same view asks for sync only after `repair_sync_timeout` (5 s);
//!   it warns first (`on_prepare: ignoring prepare.op=... (too far ahead` when prepares arrive
//!   beyond its WAL, `request sync; lagging behind cluster`): either warning voids the log's verdict.
//!   A restarted backup under load warns `too far ahead` while it catches up; once its commits
//!   reach a checkpoint's trigger after the warning (its `checkpoint_data start` line) the
//!   warning no longer voids the verdict. What still rules a sync out is the lag gate, which
//!   requires its checkpoint to be the cluster's newest (replica/gate.rs): a start_view decides a
//!   sync only while the cluster's commit shows the checkpoint after the replica's next one
//!   durable. A requested sync stands until the sync's own lines.

use std::time::{Duration, Instant};

pub mod parse;

pub use parse::{Event, From, LINE_BYTES_MAX, Role, VERIFIED_RELEASES, parse};

/// How long a transition to normal from recovering must stand before it counts: longer than the
/// primary's commit heartbeat (500 ms), which makes a backup in a stale view jump to a view
/// change. Such a transition comes before the replica has heard from anyone.
pub const SETTLE: Duration = Duration::from_millis(600);
/// How long a transition after a start_view message (from a view change or recovering_head)
/// must stand: it was made on the primary's word for the cluster's current view. When that
/// start_view also decided a state sync, the transition comes after the commit is cancelled and
/// `sync: ops=...` only after the superblock update (a write, ~10 ms in the captured logs), so
/// this covers that write on an unloaded disk only. A sync is decided when the cluster is two
/// checkpoints ahead (or repair is stuck, after seconds): the gate does not let the log pass a
/// replica behind the cluster's newest checkpoint (replica/gate.rs), and StatsD's sync stage
/// overrides within 10 s.
pub const SETTLE_AFTER_START_VIEW: Duration = Duration::from_millis(200);

impl From {
    /// How long a transition from this status must stand before it counts.
    pub fn settle(self) -> Duration {
        match self {
            From::Recovering => SETTLE,
            From::RecoveringHead | From::ViewChange => SETTLE_AFTER_START_VIEW,
        }
    }
}

/// What the log says about one check, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub detail: String,
    pub at: Instant,
}

#[derive(Debug, Clone)]
enum Status {
    Unknown,
    Normal {
        view: u32,
        from: From,
        role: Role,
        at: Instant,
    },
    ViewChange {
        view: u32,
        at: Instant,
    },
}

#[derive(Debug, Clone)]
enum Sync {
    /// No sync line since the process started.
    Idle,
    Tables {
        op_max: u64,
        at: Instant,
    },
    Synced {
        at: Instant,
    },
}

/// The replica's warnings that it is too far behind to repair from its WAL.
#[derive(Debug, Clone, Copy)]
enum FarBehind {
    NotWarned,
    Warned {
        at: Instant,
        sync_requested: bool,
    },
    /// After a `too far ahead` warning, its commits reached a checkpoint's trigger: it catches
    /// up. A sync may still be decided (at a start_view, while the cluster's commit shows the
    /// checkpoint after its next one durable), which the lag gate excludes: it requires the
    /// replica's checkpoint to be the cluster's newest (replica/gate.rs).
    Repaired {
        at: Instant,
    },
}

/// The log-derived state of the current replica process.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// The process whose lines these are, and when the agent first knew of it.
    pid: u32,
    started: Instant,
    /// The lowest view the cluster can be in, as the agent knows it (the highest view a previous
    /// process of this replica reported in normal status).
    view_floor: u32,
    /// Whether StatsD showed the previous process normal and not syncing shortly before this one
    /// started: only then can a transition from recovering (which has not heard from the primary
    /// yet, so has not decided whether to sync) count.
    previous_caught_up: bool,
    release: Option<(String, bool)>,
    status: Status,
    sync: Sync,
    far_behind: FarBehind,
    /// When the state machine opened (`state_machine_open_callback`): before it the replica
    /// cannot commit, so it cannot have caught up, nor serve as primary after a view change.
    opened: Option<Instant>,
    /// When the newest state line seen was written.
    newest: Option<Instant>,
    /// The newest checkpoint this process began (its commits reached its trigger) or state-synced
    /// to, and the newest it made durable (gate.rs: the replica's side of the lag gate, and what this agent
    /// tells a restarted peer about the cluster's checkpoint).
    checkpoint_reached: Option<u64>,
    checkpoint_durable: Option<u64>,
    /// A lower bound of the checkpoint the process opened at, from its own open-time sync line
    /// (`Event::SyncTables::at_open`): never an answer to a peer.
    opened_at_least: Option<u64>,
    /// State lines taken, for the agent's own account of why the log passed nothing.
    events: u32,
}

impl Tracker {
    pub fn new(pid: u32, view_floor: u32, previous_caught_up: bool, started: Instant) -> Tracker {
        Tracker {
            pid,
            started,
            view_floor,
            previous_caught_up,
            release: None,
            status: Status::Unknown,
            sync: Sync::Idle,
            far_behind: FarBehind::NotWarned,
            opened: None,
            newest: None,
            checkpoint_reached: None,
            checkpoint_durable: None,
            opened_at_least: None,
            events: 0,
        }
    }

    /// The newest checkpoint whose trigger this process's commits reached (its `checkpoint_data
    /// start` lines; a durable one was reached too). None before its first checkpoint.
    pub fn checkpoint_reached(&self) -> Option<u64> {
        self.checkpoint_reached.max(self.checkpoint_durable)
    }

    /// A lower bound of the checkpoint this process opened at, from its open-time sync line.
    pub fn checkpoint_opened_at_least(&self) -> Option<u64> {
        self.opened_at_least
    }

    /// The newest checkpoint this process made durable (or opened at, as far as its log says):
    /// the next process of the same data file opens at it or beyond. A lower bound.
    pub fn checkpoint_durable(&self) -> Option<u64> {
        self.checkpoint_durable.max(self.opened_at_least)
    }

    /// Whether the log showed the state machine open: every line the process logs while it
    /// opens (`sync: ops=A..B` for a superblock a state sync left with tables to sync) came
    /// before.
    pub fn state_machine_opened(&self) -> bool {
        self.opened.is_some()
    }

    /// Whether this process's lines are evidence at all (its release's formats were checked).
    pub fn usable(&self) -> bool {
        self.unusable().is_none()
    }

    /// When the process's rejoin settled, as far as the log tells (normal in a view at least the
    /// floor, state machine open, and the transition stood for its settle time, which a stale
    /// view does not survive: see `SETTLE`), with that view; None otherwise.
    pub fn rejoined(&self, now: Instant) -> Option<(u32, Instant)> {
        match self.status {
            Status::Normal { view, at, from, .. } if view >= self.view_floor && self.usable() => {
                let settled = at.max(self.opened?) + from.settle();
                (now >= settled).then_some((view, settled))
            }
            _ => None,
        }
    }

    /// The view of the log's last transition to normal, while that is the process's status as
    /// far as the log says (no view change since); None without a checked log.
    pub fn normal_view(&self) -> Option<u32> {
        match self.status {
            Status::Normal { view, .. } if self.usable() => Some(view),
            _ => None,
        }
    }

    pub fn view_floor(&self) -> u32 {
        self.view_floor
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Since when the process could have sent StatsD: TigerBeetle's reports start with its tick
    /// loop, after the state machine opened (the log says when), so a slow open (a loaded host,
    /// a large grid cache to allocate) delays the first report past the process start. Before
    /// the open is seen, the start.
    pub fn reporting_since(&self) -> Instant {
        self.opened
            .map_or(self.started, |opened| opened.max(self.started))
    }

    /// Feeds one line written at `now`. A line older than the newest one seen is a line read
    /// again (a journal follower that restarted replays the entries): it changes nothing, or a
    /// replayed "normal" would stand, for a moment, over the view change that followed it.
    pub fn observe(&mut self, line: &str, now: Instant) {
        let Some(event) = parse(line) else { return };
        if self.newest.is_some_and(|newest| now < newest) {
            return;
        }
        self.newest = Some(now);
        self.events = self.events.saturating_add(1);
        match event {
            Event::Init { release, verified } => self.release = Some((release, verified)),
            Event::Normal { view, from, role } => {
                self.status = Status::Normal {
                    view,
                    from,
                    role,
                    at: now,
                };
            }
            Event::ViewChange { view } => self.status = Status::ViewChange { view, at: now },
            Event::SyncTables {
                op_max,
                synced_checkpoint,
                at_open,
            } => {
                self.sync = Sync::Tables { op_max, at: now };
                // The sync's own lines decide from here, whatever warning came before it.
                self.far_behind = FarBehind::NotWarned;
                if at_open {
                    // The superblock's sync range may be older than its checkpoint.
                    self.opened_at_least = self.opened_at_least.max(synced_checkpoint);
                } else {
                    // The checkpoint moved without a checkpoint line: what the agent tells a
                    // restarted peer about the cluster's checkpoint must not stay behind it.
                    // Durable too: replica.zig logs the line once the synced superblock is
                    // written.
                    self.checkpoint_reached = self.checkpoint_reached.max(synced_checkpoint);
                    self.checkpoint_durable = self.checkpoint_durable.max(synced_checkpoint);
                }
            }
            Event::TablesSynced | Event::SyncDone => {
                if matches!(self.sync, Sync::Tables { .. }) {
                    self.sync = Sync::Synced { at: now };
                }
            }
            Event::FarBehind { sync_requested } => {
                self.far_behind = FarBehind::Warned {
                    at: now,
                    sync_requested,
                };
            }
            Event::StateMachineOpened => self.opened = Some(now),
            Event::CheckpointStart { checkpoint, .. } => {
                self.checkpoint_reached = self.checkpoint_reached.max(Some(checkpoint));
                if let FarBehind::Warned {
                    sync_requested: false,
                    ..
                } = self.far_behind
                {
                    self.far_behind = FarBehind::Repaired { at: now };
                }
            }
            Event::CheckpointDurable { checkpoint } => {
                self.checkpoint_durable = self.checkpoint_durable.max(Some(checkpoint));
            }
        }
    }

    /// Why the log gives no evidence, if it gives none (StatsD decides then).
    fn unusable(&self) -> Option<String> {
        match &self.release {
            None => Some("no `init:` line from this process in its log yet".into()),
            Some((release, false)) => Some(format!(
                "the replica runs release {release}, whose log format the agent has not been \
                 checked against (checked: {})",
                VERIFIED_RELEASES.join(", ")
            )),
            Some((_, true)) => None,
        }
    }

    /// The log's verdict on `replica_status`: None when it has none (yet).
    pub fn status_verdict(&self, now: Instant) -> Option<Verdict> {
        self.unusable().is_none().then_some(())?;
        match self.status {
            Status::Unknown => None,
            Status::ViewChange { view, at } => Some(Verdict {
                ok: false,
                detail: format!("log: transition_to_view_change_status view={view}"),
                at,
            }),
            Status::Normal {
                view,
                from,
                role,
                at,
            } => {
                let line = format!(
                    "log: {} view={view} {}",
                    from.as_str(),
                    if role == Role::Primary {
                        "primary"
                    } else {
                        "backup"
                    }
                );
                if view < self.view_floor {
                    return Some(Verdict {
                        ok: false,
                        detail: format!(
                            "{line}, but the cluster is at least in view {}: not rejoined yet",
                            self.view_floor
                        ),
                        at,
                    });
                }
                if from == From::Recovering && !self.previous_caught_up {
                    return None;
                }
                // Not before the state machine is open: until then the replica commits nothing.
                let opened = self.opened?;
                // Settling: no verdict yet (StatsD may still have one).
                (now.saturating_duration_since(at) >= from.settle()).then(|| Verdict {
                    ok: true,
                    detail: format!(
                        "normal ({line}, {} ms ago; state machine open)",
                        now.duration_since(at).as_millis()
                    ),
                    at: at.max(opened),
                })
            }
        }
    }

    /// The log's verdict on `replica_sync`: only once the status verdict is a settled normal, so
    /// that the sync line the transition's callback logs after it has had time to arrive.
    pub fn sync_verdict(&self, now: Instant) -> Option<Verdict> {
        let status = self.status_verdict(now)?;
        let repaired_at = match self.far_behind {
            FarBehind::NotWarned => None,
            FarBehind::Warned { at, .. } => {
                return Some(Verdict {
                    ok: false,
                    detail: "the replica warned it is too far behind to repair from its WAL: \
                             state sync may follow (log)"
                        .into(),
                    at,
                });
            }
            FarBehind::Repaired { at } => Some(at),
        };
        Some(match self.sync {
            Sync::Idle if !status.ok => return None,
            Sync::Idle => Verdict {
                ok: true,
                detail: if repaired_at.is_some() {
                    "not syncing (log: no sync line since the process started; a checkpoint \
                     reached after its warning of being too far behind)"
                        .into()
                } else {
                    "not syncing (log: no sync line since the process started)".into()
                },
                at: status.at.max(repaired_at.unwrap_or(status.at)),
            },
            Sync::Tables { op_max, at } => Verdict {
                ok: false,
                detail: format!(
                    "state sync in progress (log: sync: ops=..{op_max}, tables syncing)"
                ),
                at,
            },
            Sync::Synced { at } => Verdict {
                ok: true,
                detail: "not syncing (log: all tables synced)".into(),
                at,
            },
        })
    }

    /// Why `rejoined` is None, for the agent's log: what the tracker saw of this process.
    pub fn why_not_rejoined(&self, now: Instant) -> String {
        let why = match self.status {
            Status::Normal { view, .. } if view < self.view_floor && self.usable() => format!(
                "normal in view {view}, below the cluster's view as known ({})",
                self.view_floor
            ),
            Status::ViewChange { view, .. } if self.usable() => {
                format!("in a view change to view {view}")
            }
            _ => self.why_no_verdict(now),
        };
        format!(
            "{why}; {} state lines seen from pid {}",
            self.events, self.pid
        )
    }

    /// Why the log gives no verdict on `replica_status`, for the check's detail.
    pub fn why_no_verdict(&self, now: Instant) -> String {
        if let Some(why) = self.unusable() {
            return why;
        }
        match self.status {
            Status::Normal {
                from: From::Recovering,
                ..
            } if !self.previous_caught_up => {
                "the log shows a transition to normal from recovering, \
                 which comes before the replica hears from the primary and decides whether to \
                 state-sync; the agent did not see the previous process caught up just before \
                 (StatsD) to rule a sync out"
                    .into()
            }
            Status::Normal { .. } if self.opened.is_none() => {
                "the replica's state machine is not open yet (no `state_machine_open_callback` \
                 line): it cannot commit until then"
                    .into()
            }
            Status::Normal { at, from, .. } => format!(
                "the log's transition to normal is {} ms old, not yet {} ms",
                now.saturating_duration_since(at).as_millis(),
                from.settle().as_millis()
            ),
            _ => "no transition to normal in this process's log yet".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines captured from live 0.16.78 replicas (`tbctl local up`, restarts through the agent,
    // a backup restarted after 40 s of writes without it).
    const INIT: &str = "2026-12-06 02:43:09.675Z info(replica): 0r: init: replica_count=3 \
                        quorum_view_change=2 quorum_replication=2 release=0.16.78";
    const NORMAL_RECOVERING_V0: &str = "2026-12-06 02:40:21.680Z info(replica): 1n: \
                                        transition_to_normal_from_recovering_status: view=0 backup";
    const VIEW_CHANGE_0_1: &str = "2026-12-06 02:40:23.545Z info(replica): 1n: \
        transition_to_view_change_status: view=0..1 \
        status=vsr.replica.Status.normal..vsr.replica.Status.view_change";
    const NORMAL_VIEW_CHANGE_1_PRIMARY: &str = "2026-12-06 02:40:23.545Z info(replica): 1N: \
        transition_to_normal_from_view_change_status: view=1..1 primary";
    const NORMAL_RECOVERING_V1: &str = "2026-12-06 02:43:09.930Z info(replica): 0n: \
                                        transition_to_normal_from_recovering_status: view=1 backup";
    const NORMAL_VIEW_CHANGE_2: &str = "2026-12-06 02:46:19.438Z info(replica): 1n: \
        transition_to_normal_from_view_change_status: view=2..2 backup";
    const SYNC_OPS: &str =
        "2026-12-06 02:46:19.448Z info(replica): 1n: sync: ops=0..39391/0..39391";
    const TABLES_SYNCED: &str = "2026-12-06 02:46:20.478Z info(replica): 1n: sync_enqueue_tables: \
                                 all tables synced (commit=0..39391/39391)";
    const STATE_MACHINE_OPEN: &str = "2026-12-06 02:46:19.650Z info(replica): 1n: \
                                      state_machine_open_callback: sync_ops=0..39391";
    // From replica.zig's format strings (warnings of a backup far behind in the same view).
    const TOO_FAR_AHEAD: &str = "2026-12-06 02:46:19.448Z warning(replica): 1n: on_prepare: \
        ignoring prepare.op=41000 (too far ahead, commit_min=100 op=120 commit_max=40990 \
        prepare_max=1100)";

    const REQUEST_SYNC: &str = "2026-12-06 02:46:24.448Z warning(replica): 1n: \
        on_repair_sync_timeout: request sync; lagging behind cluster (op_head=120 commit_min=100 \
        commit_max=40990 commit_stage=idle)";

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn tracker(floor: u32, lines: &[(&str, u64)]) -> (Tracker, Instant) {
        let base = Instant::now();
        let mut tracker = Tracker::new(42, floor, true, base);
        for (line, ms) in lines {
            tracker.observe(line, at(base, *ms));
        }
        (tracker, base)
    }

    #[test]
    fn parses_the_captured_lines() {
        assert_eq!(
            parse(INIT),
            Some(Event::Init {
                release: "0.16.78".into(),
                verified: true
            })
        );
        assert_eq!(
            parse(NORMAL_RECOVERING_V0),
            Some(Event::Normal {
                view: 0,
                from: From::Recovering,
                role: Role::Backup
            })
        );
        assert_eq!(parse(VIEW_CHANGE_0_1), Some(Event::ViewChange { view: 1 }));
        assert_eq!(
            parse(NORMAL_VIEW_CHANGE_1_PRIMARY),
            Some(Event::Normal {
                view: 1,
                from: From::ViewChange,
                role: Role::Primary
            })
        );
        assert_eq!(
            parse(SYNC_OPS),
            Some(Event::SyncTables {
                op_max: 39391,
                synced_checkpoint: Some(39359),
                at_open: false
            })
        );
        assert_eq!(
            parse("2026-12-06 02:46:19.448Z info(replica): 1n: sync: ops=5..9"),
            Some(Event::SyncTables {
                op_max: 9,
                synced_checkpoint: None,
                at_open: true
            })
        );
        // Tables still syncing an older range; the superblock synced to checkpoint 1983.
        assert_eq!(
            parse("2026-12-06 02:46:19.448Z info(replica): 1n: sync: ops=992..1023/992..2015"),
            Some(Event::SyncTables {
                op_max: 1023,
                synced_checkpoint: Some(1983),
                at_open: false
            })
        );
        assert_eq!(parse(TABLES_SYNCED), Some(Event::TablesSynced));
        assert_eq!(
            parse("2026-12-06 02:46:19.448Z info(replica): 1n: sync: done"),
            Some(Event::SyncDone)
        );
        assert_eq!(
            parse(TOO_FAR_AHEAD),
            Some(Event::FarBehind {
                sync_requested: false
            })
        );
        assert_eq!(
            parse(REQUEST_SYNC),
            Some(Event::FarBehind {
                sync_requested: true
            })
        );
        assert_eq!(parse(STATE_MACHINE_OPEN), Some(Event::StateMachineOpened));
    }

    #[test]
    fn rejects_anything_not_exactly_a_state_line() {
        let forged = [
            // Another scope, level, or a message mentioning the words.
            "2026-12-06 02:43:09.930Z info(client): 0n: transition_to_normal_from_recovering_status: view=1 backup",
            "2026-12-06 02:43:09.930Z debug(replica): 0n: transition_to_normal_from_recovering_status: view=1 backup",
            "hello transition_to_normal_from_recovering_status: view=1 backup",
            // Malformed numbers, roles, prefixes, timestamps.
            "2026-12-06 02:43:09.930Z info(replica): 0n: transition_to_normal_from_recovering_status: view=-1 backup",
            "2026-12-06 02:43:09.930Z info(replica): 0n: transition_to_normal_from_recovering_status: view=99999999999 backup",
            "2026-12-06 02:43:09.930Z info(replica): 0n: transition_to_normal_from_recovering_status: view=1 leader",
            "2026-12-06 02:43:09.930Z info(replica): xn: transition_to_normal_from_recovering_status: view=1 backup",
            "yesterday 02:43:09.930Z info(replica): 0n: transition_to_normal_from_recovering_status: view=1 backup",
            "2026-12-06 02:46:19.438Z info(replica): 1n: transition_to_normal_from_view_change_status: view=2 backup",
            "2026-12-06 02:46:19.448Z info(replica): 1n: sync: ops=0..x/0..1",
            "2026-12-06 02:46:19.448Z info(replica): 1n: sync: done later",
            // A multi-byte character where the status letter goes (a str slice there panicked,
            // poisoning the tracker's lock).
            "2026-12-06 02:43:09.930Z info(replica): 0\u{e9}: transition_to_normal_from_recovering_status: view=1 backup",
            "2026-12-06 02:43:09.930Z info(replica): \u{e9}\u{e9}: sync: done",
        ];
        for line in forged {
            assert_eq!(parse(line), None, "{line}");
        }
        let long = format!("{NORMAL_RECOVERING_V1}{}", " ".repeat(LINE_BYTES_MAX));
        assert_eq!(parse(&long), None);
    }

    #[test]
    fn a_restarted_backup_is_ready_once_its_transition_settles() {
        let (closed, base) = tracker(1, &[(INIT, 0), (NORMAL_RECOVERING_V1, 255)]);
        assert_eq!(
            closed.status_verdict(at(base, 5000)),
            None,
            "state machine not open"
        );
        assert!(
            closed
                .why_no_verdict(at(base, 5000))
                .contains("state machine")
        );
        let (tracker, base) = tracker(
            1,
            &[
                (INIT, 0),
                (NORMAL_RECOVERING_V1, 255),
                (STATE_MACHINE_OPEN, 260),
            ],
        );
        assert_eq!(tracker.status_verdict(at(base, 300)), None, "settling");
        let verdict = tracker.status_verdict(at(base, 255 + 600)).unwrap();
        assert!(verdict.ok, "{verdict:?}");
        assert!(verdict.detail.contains("view=1"), "{}", verdict.detail);
        assert!(tracker.sync_verdict(at(base, 900)).unwrap().ok);
    }

    /// Trap (a): normal in the backup's own saved view, then a view change.
    #[test]
    fn normal_in_a_stale_view_is_not_rejoined() {
        let (stale, base) = tracker(1, &[(INIT, 0), (NORMAL_RECOVERING_V0, 10)]);
        let verdict = stale.status_verdict(at(base, 5000)).unwrap();
        assert!(!verdict.ok);
        assert!(
            verdict.detail.contains("at least in view 1"),
            "{}",
            verdict.detail
        );
        assert_eq!(stale.sync_verdict(at(base, 5000)), None);
        assert_eq!(stale.rejoined(at(base, 5000)), None);
        assert_eq!(
            stale.why_not_rejoined(at(base, 5000)),
            "normal in view 0, below the cluster's view as known (1); 2 state lines seen from \
             pid 42"
        );
        // Without the floor, the first heartbeat makes it jump within the settle time.
        let (jumped, base) = tracker(
            0,
            &[
                (INIT, 0),
                (NORMAL_RECOVERING_V0, 10),
                (VIEW_CHANGE_0_1, 400),
            ],
        );
        assert!(!jumped.status_verdict(at(base, 700)).unwrap().ok);
        assert!(
            jumped
                .why_not_rejoined(at(base, 700))
                .starts_with("in a view change to view 1; 3 state lines")
        );
        let (rejoined, base) = tracker(
            0,
            &[
                (INIT, 0),
                (NORMAL_RECOVERING_V0, 10),
                (STATE_MACHINE_OPEN, 20),
                (VIEW_CHANGE_0_1, 400),
                (NORMAL_VIEW_CHANGE_1_PRIMARY, 410),
            ],
        );
        // After a start_view: only the sync line's time to arrive.
        assert_eq!(rejoined.status_verdict(at(base, 550)), None, "settling");
        assert!(rejoined.status_verdict(at(base, 610)).unwrap().ok);
    }

    /// Trap (b): the sync line follows the transition; a warning of being far behind voids it.
    #[test]
    fn sync_after_the_transition_holds_readiness() {
        let (syncing, base) = tracker(
            1,
            &[
                (INIT, 0),
                (NORMAL_VIEW_CHANGE_2, 100),
                (SYNC_OPS, 110),
                (STATE_MACHINE_OPEN, 300),
            ],
        );
        let verdict = syncing.sync_verdict(at(base, 1000)).unwrap();
        assert!(!verdict.ok);
        assert!(verdict.detail.contains("39391"), "{}", verdict.detail);
        let (behind, base) = tracker(
            1,
            &[
                (INIT, 0),
                (NORMAL_RECOVERING_V1, 100),
                (STATE_MACHINE_OPEN, 110),
                (TOO_FAR_AHEAD, 300),
            ],
        );
        assert!(!behind.sync_verdict(at(base, 1000)).unwrap().ok);
        // Its commits then reached a checkpoint's trigger: it repairs from its WAL.
        let mut repaired = behind.clone();
        repaired.observe(CHECKPOINT_START, at(base, 900));
        let verdict = repaired.sync_verdict(at(base, 1000)).unwrap();
        assert!(verdict.ok, "{verdict:?}");
        assert_eq!(
            verdict.at,
            at(base, 900),
            "the evidence is the checkpoint line's"
        );
        // Warned again: not ready again.
        repaired.observe(TOO_FAR_AHEAD, at(base, 950));
        assert!(!repaired.sync_verdict(at(base, 1000)).unwrap().ok);
        // A requested sync follows whatever it commits meanwhile.
        let mut stuck = behind.clone();
        stuck.observe(REQUEST_SYNC, at(base, 400));
        stuck.observe(CHECKPOINT_START, at(base, 900));
        assert!(!stuck.sync_verdict(at(base, 1000)).unwrap().ok);
        // A sync that started while warned holds readiness until its tables are synced.
        let mut syncing = behind;
        syncing.observe(SYNC_OPS, at(base, 400));
        syncing.observe(CHECKPOINT_START, at(base, 900));
        assert!(!syncing.sync_verdict(at(base, 1000)).unwrap().ok);
    }

    /// Trap (b), same view: without evidence that the previous process was caught up just before,
    /// a transition from recovering leaves the verdict to StatsD (it may still decide to sync).
    #[test]
    fn a_transition_from_recovering_needs_the_previous_process_caught_up() {
        let base = Instant::now();
        let mut tracker = Tracker::new(42, 1, false, base);
        tracker.observe(INIT, base);
        tracker.observe(NORMAL_RECOVERING_V1, at(base, 100));
        tracker.observe(STATE_MACHINE_OPEN, at(base, 110));
        assert_eq!(tracker.status_verdict(at(base, 5000)), None);
        assert!(tracker.why_no_verdict(at(base, 5000)).contains("caught up"));
        // A transition after a start_view message (the sync decision made) counts.
        tracker.observe(NORMAL_VIEW_CHANGE_2, at(base, 200));
        assert!(tracker.status_verdict(at(base, 900)).unwrap().ok);
    }

    /// Trap (c): `sync: done` waits for the next checkpoint; the tables' end is enough.
    #[test]
    fn synced_tables_end_the_sync_without_sync_done() {
        let (synced, base) = tracker(
            1,
            &[
                (INIT, 0),
                (NORMAL_VIEW_CHANGE_2, 100),
                (SYNC_OPS, 110),
                (STATE_MACHINE_OPEN, 300),
                (TABLES_SYNCED, 1140),
            ],
        );
        let verdict = synced.sync_verdict(at(base, 1200)).unwrap();
        assert!(verdict.ok, "{verdict:?}");
    }

    /// A journal follower that restarted reads the process's entries again, with their own
    /// (older) times: they change nothing, not even for a moment.
    #[test]
    fn a_line_read_again_changes_nothing() {
        let (mut replayed, base) = tracker(
            0,
            &[
                (INIT, 0),
                (NORMAL_RECOVERING_V0, 10),
                (STATE_MACHINE_OPEN, 20),
                (VIEW_CHANGE_0_1, 400),
            ],
        );
        replayed.observe(NORMAL_RECOVERING_V0, at(base, 10));
        let verdict = replayed.status_verdict(at(base, 5000)).unwrap();
        assert!(!verdict.ok, "{verdict:?}");
        assert!(verdict.detail.contains("view_change"), "{}", verdict.detail);
    }

    /// Traps (d) and (e): missing lines or an unknown release give no verdict, never "ready".
    #[test]
    fn missing_or_unknown_lines_give_no_verdict() {
        let (no_init, base) = tracker(0, &[(NORMAL_RECOVERING_V1, 100)]);
        assert_eq!(no_init.status_verdict(at(base, 5000)), None);
        assert!(no_init.why_no_verdict(at(base, 5000)).contains("init"));
        let newer = INIT.replace("0.16.78", "0.17.0");
        let (unknown, base) = tracker(0, &[(&newer, 0), (NORMAL_RECOVERING_V1, 100)]);
        assert_eq!(unknown.status_verdict(at(base, 5000)), None);
        assert!(unknown.why_no_verdict(at(base, 5000)).contains("0.17.0"));
        let (nothing, base) = tracker(0, &[(INIT, 0)]);
        assert_eq!(nothing.status_verdict(at(base, 5000)), None);
        assert_eq!(nothing.sync_verdict(at(base, 5000)), None);
    }

    // From replica.zig's format strings (0.16.78, `commit_checkpoint_data` and
    // `commit_checkpoint_superblock_callback`).
    const CHECKPOINT_START: &str = "2026-12-07 13:02:11.120Z info(replica): 1n: \
        commit_checkpoint_data: checkpoint_data start (checkpoint=959..1919 commit_min=1951 \
        op=1960 commit_max=1955 op_prepare_max=1967 free_set.acquired=1200 free_set.released=4)";
    const CHECKPOINT_DONE: &str = "2026-12-07 13:02:11.480Z info(replica): 1n: \
        commit_checkpoint_superblock_callback: checkpoint_superblock done (op=1963 \
        new_checkpoint=1919)";

    #[test]
    fn checkpoint_lines_say_what_the_replica_reached_and_made_durable() {
        assert_eq!(
            parse(CHECKPOINT_START),
            Some(Event::CheckpointStart {
                checkpoint: 1919,
                commit_min: 1951
            })
        );
        assert_eq!(
            parse(CHECKPOINT_DONE),
            Some(Event::CheckpointDurable { checkpoint: 1919 })
        );
        let (reached, _) = tracker(0, &[(INIT, 0), (CHECKPOINT_START, 10)]);
        assert_eq!(reached.checkpoint_reached(), Some(1919));
        assert_eq!(reached.checkpoint_durable(), None, "begun, not durable yet");
        let (durable, _) = tracker(
            0,
            &[(INIT, 0), (CHECKPOINT_START, 10), (CHECKPOINT_DONE, 20)],
        );
        assert_eq!(durable.checkpoint_durable(), Some(1919));
        // Checkpoints only advance: an older line (a replay) does not move them back.
        let older = CHECKPOINT_DONE.replace("new_checkpoint=1919", "new_checkpoint=959");
        let (kept, _) = tracker(0, &[(CHECKPOINT_DONE, 20), (&older, 30)]);
        assert_eq!(kept.checkpoint_durable(), Some(1919));
    }

    /// A state sync moves the checkpoint without a checkpoint line: the sync line's superblock
    /// range says where to, so a peer asked for the cluster's checkpoint does not answer the one
    /// from before the sync.
    #[test]
    fn a_state_sync_moves_the_checkpoint_reached() {
        let (synced, _) = tracker(0, &[(INIT, 0), (CHECKPOINT_START, 10), (SYNC_OPS, 20)]);
        assert_eq!(synced.checkpoint_reached(), Some(39359));
        assert_eq!(synced.checkpoint_durable(), Some(39359));
        // At open: the superblock's sync range, which a checkpoint during the table sync kept.
        // A lower bound of where the process opened, never what it reached.
        let at_open = "2026-12-06 02:46:19.448Z info(replica): 1n: sync: ops=0..39391";
        let (opened, _) = tracker(0, &[(INIT, 0), (at_open, 10)]);
        assert_eq!(opened.checkpoint_reached(), None);
        assert_eq!(opened.checkpoint_durable(), Some(39359));
    }

    /// A requested sync holds readiness until the sync's own lines say its tables are synced.
    #[test]
    fn a_requested_sync_ends_with_its_tables_synced() {
        let (mut synced, base) = tracker(
            1,
            &[
                (INIT, 0),
                (NORMAL_RECOVERING_V1, 100),
                (STATE_MACHINE_OPEN, 110),
                (REQUEST_SYNC, 300),
            ],
        );
        assert!(!synced.sync_verdict(at(base, 1000)).unwrap().ok);
        synced.observe(NORMAL_VIEW_CHANGE_2, at(base, 1100));
        synced.observe(SYNC_OPS, at(base, 1110));
        assert!(!synced.sync_verdict(at(base, 2000)).unwrap().ok);
        synced.observe(TABLES_SYNCED, at(base, 2100));
        assert!(synced.sync_verdict(at(base, 3000)).unwrap().ok);
    }

    #[test]
    fn checkpoint_lines_are_parsed_strictly() {
        let forged = [
            // A field missing, renamed, added, or out of order.
            CHECKPOINT_START.replace(" op=1960", ""),
            CHECKPOINT_START.replace("commit_min=", "commit_mim="),
            CHECKPOINT_START.replace(")", " extra=1)"),
            CHECKPOINT_START.replace("commit_min=1951 op=1960", "op=1960 commit_min=1951"),
            // What replica.zig asserts before it logs: the checkpoint advances, both are
            // checkpoints (the last op of a 32-op bar), the commit is at the trigger exactly.
            CHECKPOINT_START.replace("959..1919", "1919..1919"),
            CHECKPOINT_START.replace("959..1919", "959..1920"),
            CHECKPOINT_START.replace("959..1919", "960..1919"),
            CHECKPOINT_START.replace("commit_min=1951", "commit_min=1900"),
            CHECKPOINT_START.replace("commit_min=1951", "commit_min=1952"),
            CHECKPOINT_DONE.replace("new_checkpoint=1919", "new_checkpoint=1920"),
            CHECKPOINT_DONE.replace("op=1963", "op=1950"),
            CHECKPOINT_START.replace("free_set.released=4)", "free_set.released=4"),
            CHECKPOINT_DONE.replace("new_checkpoint=1919", "new_checkpoint=-1"),
            CHECKPOINT_DONE.replace("(op=1963 ", "("),
            CHECKPOINT_DONE.replace("info(replica)", "info(client)"),
        ];
        for line in forged {
            assert_eq!(parse(&line), None, "{line}");
        }
    }

    #[test]
    fn a_process_rejoined_once_normal_in_the_clusters_view_with_its_state_machine_open() {
        let (early, _) = tracker(1, &[(INIT, 0), (NORMAL_RECOVERING_V0, 100)]);
        assert_eq!(
            early.rejoined(Instant::now() + SETTLE),
            None,
            "normal in a view older than the floor"
        );
        let (closed, _) = tracker(1, &[(INIT, 0), (NORMAL_RECOVERING_V1, 100)]);
        assert_eq!(
            closed.rejoined(Instant::now() + SETTLE),
            None,
            "state machine not open"
        );
        let (open, base) = tracker(
            1,
            &[
                (INIT, 0),
                (STATE_MACHINE_OPEN, 50),
                (NORMAL_RECOVERING_V1, 100),
            ],
        );
        assert_eq!(open.rejoined(at(base, 699)), None, "settling");
        assert_eq!(open.rejoined(at(base, 700)), Some((1, at(base, 700))));
        let (unchecked, _) = tracker(
            1,
            &[
                (&INIT.replace("0.16.78", "0.16.99"), 0),
                (STATE_MACHINE_OPEN, 50),
                (NORMAL_RECOVERING_V1, 100),
            ],
        );
        assert_eq!(
            unchecked.rejoined(Instant::now() + SETTLE),
            None,
            "a release whose log is not checked"
        );
    }
}
