//! Running the replica: either the agent supervises `tigerbeetle start` itself (`process` mode),
//! or systemd does and the agent asks systemctl (`systemd` mode).
//!
//! The agent never formats a data file. A missing data file means the replica must be rebuilt
//! with `tigerbeetle recover` (or the cluster is being bootstrapped by other tooling): formatting
//! it here could make the cluster lose acknowledged data.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

pub mod checkpoint;
pub mod gate;
mod handover;
mod journal;
mod proc;

mod supervise;
pub use proc::{
    ProcessInfo, ProcessState, boot_time_unix_seconds, process_state, read_process_info,
};

use crate::config::{Config, Run};
use crate::replica_log;
use crate::statsd;

/// Lines of replica output kept in memory for diagnostics.
const LOG_TAIL_LINES_MAX: usize = 200;
/// TigerBeetle's warning when mlockall fails (src/stdx/mlock.zig).
pub const MEMLOCK_WARNING: &str = "Unable to lock pages";
/// Restart back-off after a crash, doubling up to the maximum; reset after a long healthy run.
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
const RESTART_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// systemd mode: whether the replica's journal entries feed readiness. Sound as written: each
/// entry counts at the time journald received it (`__MONOTONIC_TIMESTAMP`), and an entry older
/// than the newest one seen changes nothing, so a follower that restarts and reads the stored
/// entries again cannot outvote a fresher StatsD gauge (replica/journal.rs,
/// replica_log::Tracker::observe). Off until 2026-12-06 because in the lab no entry came: in
/// the agent unit's namespace (ProtectKernelTunables=, ProtectControlGroups=) the boot id is
/// the machine's, not the one systemd-nspawn gives the container and journald writes, and
/// `journalctl --follow` follows the boot it reads there. The follower now names journald's own
/// boot id (journal::journal_boot_id), found by bisecting the unit's directives on a lab host.
const JOURNAL_EVIDENCE: bool = true;
/// Longest line of the replica's own output (process mode) read at once.
const OUTPUT_LINE_BYTES_MAX: u64 = 16 * 1024;
/// Longest journal entry (JSON) read from `journalctl --output=json`.
const JOURNAL_ENTRY_BYTES_MAX: u64 = 64 * 1024;
/// Bound on systemctl and journalctl calls.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// Who runs the replica process: the agent itself, or systemd (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Process,
    Systemd,
}

impl RunMode {
    /// The name in `run.mode` of the configuration and `run_mode` of the status report.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Process => "process",
            RunMode::Systemd => "systemd",
        }
    }
}

pub struct Replica {
    config: Arc<Config>,
    statsd: Arc<statsd::Store>,
    pid: Mutex<Option<u32>>,
    memlock_warning: AtomicBool,
    log_tail: Mutex<VecDeque<String>>,
    last_error: Mutex<Option<String>>,
    /// Process mode: whether the replica should run. The supervisor task follows it.
    desired_running: watch::Sender<bool>,
    generation: AtomicU64,
    /// What the current process's own log says (crate::replica_log); None before its first line
    /// or pid is known.
    log: Mutex<Option<replica_log::Tracker>>,
    /// The highest view a previous process of this replica reported in normal status: the
    /// cluster is in this view or a later one.
    view_floor: AtomicU64,
    /// The pid of the process before the current one (0: none): its readers may still drain
    /// lines after the next process started, and those must not replace the new tracker.
    retired_pid: AtomicU32,
    /// When StatsD last showed a previous process normal and not syncing (the gauges' arrival).
    caught_up_at: Mutex<Option<Instant>>,
    /// systemd mode: the invocation whose journal entries are followed, and the follower task.
    journal: Mutex<Option<(u32, String, tokio::task::AbortHandle)>>,
    /// The current process's readiness gate and its evidence (gate.rs).
    gate: Mutex<Option<gate::Gate>>,
    /// The commit gauges of the current process, and of the one before it (the lag estimate).
    trend: Mutex<gate::Trend>,
    previous_trend: Mutex<gate::Trend>,
    /// The data file was replaced: the next process starts with no previous trend.
    data_replaced: AtomicBool,
    /// The newest checkpoint a process of this data file made durable, as its log showed it.
    durable_checkpoint: Mutex<Option<u64>>,
    /// The cluster's checkpoint, as the other agents last told it (checkpoint.rs).
    cluster_answer: Mutex<checkpoint::ClusterAnswer>,
    /// systemd mode: the process whose unit's journal was searched, and the newest checkpoint
    /// line found there: at least the checkpoint that process opened at (checkpoint.rs).
    open_checkpoint_bound: Mutex<Option<checkpoint::OpenBound>>,
    /// The agent's previous run's evidence about the process it saw last, until the agent
    /// first sees a process (handover.rs).
    handover: Mutex<Option<handover::Handover>>,
}

impl Replica {
    pub fn new(config: Arc<Config>, statsd: Arc<statsd::Store>) -> Arc<Replica> {
        let (desired_running, _) = watch::channel(false);
        Arc::new(Replica {
            config,
            statsd,
            pid: Mutex::new(None),
            memlock_warning: AtomicBool::new(false),
            log_tail: Mutex::new(VecDeque::new()),
            last_error: Mutex::new(None),
            desired_running,
            generation: AtomicU64::new(0),
            log: Mutex::new(None),
            view_floor: AtomicU64::new(0),
            retired_pid: AtomicU32::new(0),
            caught_up_at: Mutex::new(None),
            journal: Mutex::new(None),
            gate: Mutex::new(None),
            trend: Mutex::new(gate::Trend::default()),
            previous_trend: Mutex::new(gate::Trend::default()),
            data_replaced: AtomicBool::new(false),
            durable_checkpoint: Mutex::new(None),
            cluster_answer: Mutex::new(checkpoint::ClusterAnswer::default()),
            open_checkpoint_bound: Mutex::new(None),
            handover: Mutex::new(None),
        })
    }

    pub fn mode(&self) -> RunMode {
        match self.config.replica.run {
            Run::Process { .. } => RunMode::Process,
            Run::Systemd { .. } => RunMode::Systemd,
        }
    }

    pub fn binary(&self) -> &Path {
        match &self.config.replica.run {
            Run::Process { binary, .. } | Run::Systemd { binary, .. } => binary,
        }
    }

    /// The replica's pid while its process exists.
    pub fn pid(&self) -> Option<u32> {
        let pid = (*self.pid.lock().expect("not poisoned"))?;
        // A pid we recorded may have exited since (systemd mode is polled, not notified).
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// The replica's pid and scheduling state while its process exists. A process that exists
    /// but is stopped (SIGSTOP) or a zombie is not running: it serves nothing.
    pub fn process_state(&self) -> Option<(u32, ProcessState)> {
        let pid = self.pid()?;
        Some((pid, process_state(pid)?))
    }

    pub fn memlock_warning_seen(&self) -> bool {
        self.memlock_warning.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("not poisoned").clone()
    }

    pub fn log_tail(&self) -> Vec<String> {
        self.log_tail
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect()
    }

    pub fn process_info(&self) -> Option<ProcessInfo> {
        let pid = self.pid()?;
        read_process_info(pid)
    }

    /// The log tracker of process `pid`, created (with the view floor known now) if the
    /// current one is another process's.
    fn with_log<T>(&self, pid: u32, f: impl FnOnce(&mut replica_log::Tracker) -> T) -> T {
        let mut log = self.log.lock().expect("not poisoned");
        if log.as_ref().is_none_or(|tracker| tracker.pid() != pid) {
            let floor = self.view_floor.load(Ordering::Relaxed) as u32;
            // Caught up "just before": its gauges would still count as fresh now.
            let recent = Duration::from_millis(self.config.health.statsd_stale_ms);
            let previous_caught_up = self
                .caught_up_at
                .lock()
                .expect("not poisoned")
                .is_some_and(|at| at.elapsed() <= recent);
            *log = Some(replica_log::Tracker::new(
                pid,
                floor,
                previous_caught_up,
                Instant::now(),
            ));
        }
        f(log.as_mut().expect("just set"))
    }

    /// Feeds one line the replica process `pid` wrote (its stderr, or its journal entries).
    pub fn observe_log_line(&self, pid: u32, line: &str) {
        if self.retired_pid.load(Ordering::Relaxed) == pid {
            return;
        }
        self.observe_log_line_at(pid, line, Instant::now());
    }

    /// Feeds one line the replica process `pid` wrote at `at` (the journal's own timestamp).
    pub fn observe_log_line_at(&self, pid: u32, line: &str, at: Instant) {
        if self.retired_pid.load(Ordering::Relaxed) == pid {
            return;
        }
        self.with_log(pid, |tracker| tracker.observe(line, at));
    }

    /// The current process's log tracker, if its pid is the running one.
    pub fn log_tracker(&self) -> Option<replica_log::Tracker> {
        let pid = self.pid()?;
        Some(self.with_log(pid, |tracker| tracker.clone()))
    }

    /// Before the StatsD values of a process are forgotten: a view it reported while normal is a
    /// view the cluster reached, so the next process is not rejoined in an older one.
    fn remember_view(&self, current_pid: Option<u32>) {
        let status = self.statsd.gauge("tb_replica_status");
        if let (Some((0, _)), Some((view, _))) = (status, self.statsd.gauge("tb_replica_view"))
            && let Ok(view) = u32::try_from(view)
        {
            self.view_floor
                .fetch_max(u64::from(view), Ordering::Relaxed);
        }
        // Both gauges of the same report: the older arrival is when both held.
        let mut caught_up_at = None;
        if let (Some((0, status_age)), Some((0, sync_age))) =
            (status, self.statsd.gauge("tb_replica_sync_stage"))
        {
            caught_up_at = Instant::now().checked_sub(status_age.max(sync_age));
        }
        // A process that stops before its first StatsD report (restarted again within ~10 s)
        // was caught up if its own log said so, while the log could still stand alone (the
        // same window as health's: from when the process could first report).
        let now = Instant::now();
        let stale = Duration::from_millis(self.config.health.statsd_stale_ms);
        if let Some(tracker) = self.log.lock().expect("not poisoned").as_ref()
            && Some(tracker.pid()) == current_pid
            && tracker.reporting_since().elapsed() <= stale
            && tracker
                .status_verdict(now)
                .is_some_and(|verdict| verdict.ok)
            && tracker.sync_verdict(now).is_some_and(|verdict| verdict.ok)
        {
            caught_up_at = Some(now);
        }
        if caught_up_at.is_some() {
            *self.caught_up_at.lock().expect("not poisoned") = caught_up_at;
        }
    }

    /// The data file is being replaced (recover; restore, which may bring an older view): what
    /// a previous process showed (caught up; with `view_too`, its view) no longer vouches for
    /// the next one, whose log then stands alone only on its own evidence.
    pub fn data_file_replaced(&self, view_too: bool) {
        *self.caught_up_at.lock().expect("not poisoned") = None;
        // The next process's lag estimate and start bound may not come from the old file's
        // reports, even if the replica still runs now and reports again before it stops.
        self.data_replaced.store(true, Ordering::Relaxed);
        if view_too {
            self.view_floor.store(0, Ordering::Relaxed);
        }
    }

    fn set_pid(&self, pid: Option<u32>) {
        let mut current = self.pid.lock().expect("not poisoned");
        if *current != pid {
            if let Some(previous) = *current {
                self.retired_pid.store(previous, Ordering::Relaxed);
            }
            self.remember_view(*current);
            self.new_gate(pid);
            if let Some(pid) = pid {
                self.apply_handover(pid);
            }
            // A new process: nothing the previous one reported may count for readiness, and
            // only its own sockets may feed StatsD from now on.
            self.statsd.set_replica_process(pid);
            if pid.is_some() {
                self.set_memlock_warning(false);
            }
            self.changed();
        }
        *current = pid;
    }

    fn set_error(&self, error: Option<String>) {
        let mut last_error = self.last_error.lock().expect("not poisoned");
        if *last_error != error {
            *last_error = error;
            self.changed();
        }
    }

    /// Bumped when the process, its error or its memory-lock warning changes (the /metrics
    /// cache key).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn set_memlock_warning(&self, seen: bool) {
        if self.memlock_warning.swap(seen, Ordering::Relaxed) != seen {
            self.changed();
        }
    }

    fn data_file_missing(&self) -> Option<String> {
        let path = &self.config.replica.data_file;
        (!path.exists()).then(|| {
            format!(
                "data file {} does not exist; refusing to start. Never format a replacement: \
                 a re-formatted replica forgets what it acknowledged. Rebuild it with \
                 `tigerbeetle recover` while the rest of the cluster is healthy.",
                path.display()
            )
        })
    }

    /// Starts the replica (returns once the process exists).
    pub async fn start(self: &Arc<Self>) -> anyhow::Result<()> {
        if let Some(error) = self.data_file_missing() {
            anyhow::bail!(error);
        }
        match &self.config.replica.run {
            Run::Process { .. } => {
                self.desired_running.send_replace(true);
                let deadline = Instant::now() + Duration::from_secs(10);
                while self.pid().is_none() {
                    if Instant::now() > deadline {
                        anyhow::bail!(
                            "the replica did not start: {}",
                            self.last_error()
                                .unwrap_or_else(|| "no error recorded".into())
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(())
            }
            Run::Systemd { unit, .. } => {
                systemctl(&["start", unit]).await?;
                self.poll_systemd().await;
                Ok(())
            }
        }
    }

    /// An operator's start (tbctl start or restart, a rollout's restart): the decision to try
    /// again. In systemd mode a unit that failed, in particular one that systemd gave up on
    /// (StartLimitBurst starts within StartLimitIntervalSec), refuses a plain start until its
    /// failed state is reset, which polkit lets the agent do for this unit only. systemd counts
    /// every start against that limit, the operator's too: without the reset, a restart past the
    /// limit (the role's default: 5 starts in 600 s; a few rollouts in a row) failed after its
    /// stop and left the replica down (seen in the lab, 2026-12-08). So each operator's start
    /// resets the count (`reset-failed` resets it whatever the unit's state): the limit bounds a
    /// crash loop since the operator last decided. The agent's own starts (after a backup) do
    /// not reset it: systemd's limit stands until someone decides.
    pub async fn start_by_operator(self: &Arc<Self>) -> anyhow::Result<()> {
        if let Run::Systemd { unit, .. } = &self.config.replica.run
            // A missing data file is refused below; its unit's failed state stays for status.
            && self.data_file_missing().is_none()
        {
            let state = systemctl(&["show", "--property=ActiveState", "--value", unit]).await?;
            let failed = state.trim() == "failed";
            if failed {
                tracing::warn!(
                    "{unit} is failed: resetting its failed state for the operator's start"
                );
            }
            match systemctl(&["reset-failed", unit]).await {
                Ok(_) => {}
                // A failed unit refuses the start without it.
                Err(error) if failed => return Err(error),
                // Only the count of starts was to reset: the start may still succeed, and a
                // restart must not end after its stop because of a hiccup here.
                Err(error) => tracing::warn!(%error, "cannot reset {unit}'s count of starts"),
            }
        }
        self.start().await
    }

    /// Stops the replica and waits until its process is gone.
    pub async fn stop(self: &Arc<Self>) -> anyhow::Result<()> {
        match &self.config.replica.run {
            Run::Process { .. } => {
                self.desired_running.send_replace(false);
                let deadline = Instant::now()
                    + Duration::from_millis(self.config.control.stop_timeout_ms)
                    + Duration::from_secs(5);
                while self.pid().is_some() {
                    if Instant::now() > deadline {
                        anyhow::bail!("the replica process did not exit");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(())
            }
            Run::Systemd { unit, .. } => {
                systemctl(&["stop", unit]).await?;
                self.poll_systemd().await;
                Ok(())
            }
        }
    }

    /// Runs the background work of the mode: supervision (process) or polling (systemd).
    /// In process mode the replica is started at once, as a supervisor would.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        match self.config.replica.run.clone() {
            Run::Process {
                binary,
                extra_args,
                log_file,
            } => {
                if let Some(error) = self.data_file_missing() {
                    tracing::error!("{error}");
                    self.set_error(Some(error));
                } else {
                    self.desired_running.send_replace(true);
                }
                self.supervise(binary, extra_args, log_file, shutdown).await;
            }
            Run::Systemd { .. } => loop {
                self.poll_systemd().await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            },
        }
    }

    async fn poll_systemd(self: &Arc<Self>) {
        let Run::Systemd { unit, .. } = &self.config.replica.run else {
            return;
        };
        match systemctl(&["show", "--property=MainPID", "--value", unit]).await {
            Ok(output) => {
                let pid = output.trim().parse::<u32>().ok().filter(|pid| *pid != 0);
                let changed = *self.pid.lock().expect("not poisoned") != pid;
                self.set_pid(pid);
                // A unit waiting for its data file (bootstrap or recover) is inactive, not
                // failed: readiness says why it does not run.
                self.set_error(pid.is_none().then(|| self.data_file_missing()).flatten());
                if let (true, Some(pid)) = (changed, pid) {
                    self.check_journal_for_memlock_warning(unit, pid).await;
                }
                if let (true, Some(pid)) = (JOURNAL_EVIDENCE, pid) {
                    self.follow_journal(unit, pid).await;
                    // In a task of its own: a long search of a large journal must not hold up
                    // the next look at systemd.
                    if self.open_checkpoint_search_due(pid) {
                        tokio::spawn(
                            Arc::clone(self).learn_open_checkpoint_bound(unit_name(unit), pid),
                        );
                    }
                }
            }
            Err(error) => self.set_error(Some(error.to_string())),
        }
    }
}

/// systemd's full name of `unit` (`tigerbeetle` → `tigerbeetle.service`), as journald's
/// `_SYSTEMD_UNIT` field names it.
fn unit_name(unit: &str) -> String {
    if unit.contains('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

async fn systemctl(args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::time::timeout(
        SYSTEMCTL_TIMEOUT,
        Command::new("systemctl")
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("systemctl {} timed out", args.join(" ")))??;
    if !output.status.success() {
        anyhow::bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
