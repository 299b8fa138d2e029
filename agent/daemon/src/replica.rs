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
/// systemd mode: whether the replica's journal entries feed readiness. Off until the follower is
/// sound: in the lab it read no entry at all, and a follower that restarts replays the stored
/// entries stamped with the time they are read, which could outvote a fresh StatsD gauge (a
/// replayed "normal" after a dropped view-change line). Readiness in systemd mode comes from
/// StatsD alone, as before.
const JOURNAL_EVIDENCE: bool = false;
/// Longest line of the replica's own output (process mode) read at once.
const OUTPUT_LINE_BYTES_MAX: u64 = 16 * 1024;
/// Longest journal entry (JSON) read from `journalctl --output=json`.
const JOURNAL_ENTRY_BYTES_MAX: u64 = 64 * 1024;
/// Bound on systemctl and journalctl calls.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// What /proc says about the replica process.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub resident_bytes: u64,
    pub locked_bytes: u64,
    pub memlock_limit_bytes: Option<u64>,
    pub start_time_unix_seconds: Option<f64>,
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
        })
    }

    pub fn mode_name(&self) -> &'static str {
        match self.config.replica.run {
            Run::Process { .. } => "process",
            Run::Systemd { .. } => "systemd",
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
        self.with_log(pid, |tracker| tracker.observe(line, Instant::now()));
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
        // was caught up if its own log said so, while the log could still stand alone.
        let now = Instant::now();
        let stale = Duration::from_millis(self.config.health.statsd_stale_ms);
        if let Some(tracker) = self.log.lock().expect("not poisoned").as_ref()
            && Some(tracker.pid()) == current_pid
            && tracker.started().elapsed() <= stale
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
    /// failed state is reset, which polkit lets the agent do for this unit only. The agent's
    /// own starts (after a backup) do not reset it: systemd's limit stands until someone decides.
    pub async fn start_by_operator(self: &Arc<Self>) -> anyhow::Result<()> {
        if let Run::Systemd { unit, .. } = &self.config.replica.run
            // A missing data file is refused below; its unit's failed state stays for status.
            && self.data_file_missing().is_none()
        {
            let state = systemctl(&["show", "--property=ActiveState", "--value", unit]).await?;
            if state.trim() == "failed" {
                tracing::warn!(
                    "{unit} is failed: resetting its failed state for the operator's start"
                );
                systemctl(&["reset-failed", unit]).await?;
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
                }
            }
            Err(error) => self.set_error(Some(error.to_string())),
        }
    }

    /// systemd mode: follows the journal entries of the unit's current invocation, so that the
    /// replica's state lines reach crate::replica_log as in process mode. `_SYSTEMD_INVOCATION_ID`
    /// and `_PID` are fields journald sets itself: no other local process can write an entry
    /// that matches them. A follower that ended (journalctl failed) is started again on the next
    /// poll; one of an older invocation is stopped (kill_on_drop).
    async fn follow_journal(self: &Arc<Self>, unit: &str, pid: u32) {
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
        let unit_name = if unit.contains('.') {
            unit.to_string()
        } else {
            format!("{unit}.service")
        };
        let task = tokio::spawn(Arc::clone(self).read_journal(unit_name, invocation.clone(), pid));
        *journal = Some((pid, invocation, task.abort_handle()));
    }

    async fn read_journal(self: Arc<Self>, unit: String, invocation: String, pid: u32) {
        // Matched on the unit and the main pid, not on the invocation id: journald cannot always
        // attach _SYSTEMD_INVOCATION_ID to a service's stream (it reads it from a cgroup xattr,
        // which containers may hide: seen in the lab's systemd-nspawn hosts). An entry that has
        // one must name the current invocation (journal_message).
        let child = spawn_journalctl(&unit, pid);
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
                Some(message) => self.observe_log_line(pid, &message),
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

    async fn check_journal_for_memlock_warning(&self, unit: &str, pid: u32) {
        let pid_match = format!("_PID={pid}");
        let output = tokio::time::timeout(
            SYSTEMCTL_TIMEOUT,
            Command::new("journalctl")
                .args(["--quiet", "--no-pager", "-u", unit, &pid_match])
                .args(["--grep", MEMLOCK_WARNING, "--lines=1"])
                .kill_on_drop(true)
                .output(),
        )
        .await;
        if let Ok(Ok(output)) = output
            && !output.stdout.is_empty()
        {
            self.set_memlock_warning(true);
        }
    }

    async fn supervise(
        self: Arc<Self>,
        binary: PathBuf,
        extra_args: Vec<String>,
        log_file: Option<PathBuf>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut desired = self.desired_running.subscribe();
        let mut backoff = RESTART_BACKOFF_MIN;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if !*desired.borrow_and_update() {
                tokio::select! {
                    _ = desired.changed() => continue,
                    _ = shutdown.changed() => continue,
                }
            }
            if let Some(error) = self.data_file_missing() {
                self.set_error(Some(error));
                self.desired_running.send_replace(false);
                continue;
            }
            let mut child = match self.spawn(&binary, &extra_args, log_file.as_deref()).await {
                Ok(child) => child,
                Err(error) => {
                    tracing::error!(%error, "cannot start the replica");
                    self.set_error(Some(format!("cannot start the replica: {error}")));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                    continue;
                }
            };
            let started = Instant::now();
            self.set_pid(child.id());
            self.set_error(None);
            tracing::info!(pid = child.id(), "replica started");
            let stop_requested = tokio::select! {
                status = child.wait() => {
                    let status = status.map_or_else(|error| error.to_string(), |s| s.to_string());
                    tracing::warn!(%status, "replica exited");
                    self.set_error(Some(format!("the replica exited: {status}")));
                    false
                }
                _ = wait_for(&mut desired, false) => true,
                _ = shutdown.changed() => true,
            };
            if stop_requested {
                self.terminate(&mut child).await;
                backoff = RESTART_BACKOFF_MIN;
            } else {
                self.set_pid(None);
                if started.elapsed() > RESTART_BACKOFF_RESET_AFTER {
                    backoff = RESTART_BACKOFF_MIN;
                }
                // Restart after a crash, like systemd's Restart=on-failure, but not in a tight loop.
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            }
        }
    }

    async fn terminate(&self, child: &mut tokio::process::Child) {
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let grace = Duration::from_millis(self.config.control.stop_timeout_ms);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            tracing::warn!("replica ignored SIGTERM; sending SIGKILL");
            let _ = child.kill().await;
        }
        self.set_pid(None);
        tracing::info!("replica stopped");
    }

    async fn spawn(
        self: &Arc<Self>,
        binary: &Path,
        extra_args: &[String],
        log_file: Option<&Path>,
    ) -> anyhow::Result<tokio::process::Child> {
        let replica = &self.config.replica;
        let mut command = Command::new(binary);
        command
            .arg("start")
            .arg(format!("--addresses={}", replica.addresses.join(",")))
            .arg("--experimental")
            .arg(format!("--statsd=127.0.0.1:{}", replica.statsd_port))
            .args(extra_args)
            .arg(&replica.data_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // If the agent dies, its replica dies with it: a restarted agent then starts a fresh
        // replica instead of finding an orphan that holds the data file's lock. TigerBeetle is
        // crash-safe, so SIGKILL loses nothing. (The parent is a runtime worker thread, which
        // lives as long as the agent.)
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or(0);
        self.set_memlock_warning(false);
        let log = match log_file {
            Some(path) => Some(Arc::new(tokio::sync::Mutex::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?,
            ))),
            None => None,
        };
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(Arc::clone(self).follow_output(pid, BufReader::new(stdout), log.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(Arc::clone(self).follow_output(pid, BufReader::new(stderr), log));
        }
        Ok(child)
    }

    async fn follow_output<R: tokio::io::AsyncRead + Unpin>(
        self: Arc<Self>,
        pid: u32,
        mut reader: BufReader<R>,
        log: Option<Arc<tokio::sync::Mutex<tokio::fs::File>>>,
    ) {
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            // Bounded, and lossy: invalid UTF-8 (untrusted output) must not end the reading, and
            // a line without end must not grow without bound. The rest of a longer line comes
            // as the next "line", which no parser takes for a state line.
            match (&mut reader)
                .take(OUTPUT_LINE_BYTES_MAX)
                .read_until(b'\n', &mut bytes)
                .await
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&bytes);
            if line.contains(MEMLOCK_WARNING) {
                self.set_memlock_warning(true);
            }
            self.observe_log_line(pid, &line);
            if let Some(log) = &log {
                let _ = log.lock().await.write_all(line.as_bytes()).await;
            }
            let mut tail = self.log_tail.lock().expect("not poisoned");
            if tail.len() >= LOG_TAIL_LINES_MAX {
                tail.pop_front();
            }
            tail.push_back(line.trim_end().to_string());
        }
    }
}

/// The MESSAGE of one `journalctl --output=json` entry if journald's own fields (set from the
/// sender's credentials and cgroup: no other process can forge them) say it comes from process
/// `pid` of `unit`, and of invocation `invocation` if the entry names one; None for anything
/// else (a binary MESSAGE, a missing field, another process, unit or invocation).
fn journal_message(entry: &[u8], unit: &str, invocation: &str, pid: u32) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(entry).ok()?;
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    let invocation_ok = field("_SYSTEMD_INVOCATION_ID").is_none_or(|id| id == invocation);
    (invocation_ok && field("_SYSTEMD_UNIT")? == unit && field("_PID")?.parse::<u32>().ok()? == pid)
        .then(|| field("MESSAGE").map(str::to_string))
        .flatten()
}

async fn wait_for(receiver: &mut watch::Receiver<bool>, value: bool) {
    while *receiver.borrow_and_update() != value {
        if receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
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

/// The scheduling state of a process, from the third field of /proc/PID/stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// R, S, D, I...: it runs, or waits as a running program does.
    Running(char),
    /// T (SIGSTOP, SIGTSTP) or t (stopped by a debugger): it exists but executes nothing, so it
    /// answers neither clients nor peers until SIGCONT.
    Stopped(char),
    /// Z or X: it has exited and waits to be reaped.
    Exited(char),
}

impl ProcessState {
    pub fn is_running(self) -> bool {
        matches!(self, ProcessState::Running(_))
    }
}

/// The state of process `pid`, or None if it does not exist.
pub fn process_state(pid: u32) -> Option<ProcessState> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_state(&stat)
}

/// `PID (COMM) STATE ...`: the command name may hold spaces and parentheses, so the state is the
/// first field after the last `)`.
fn parse_process_state(stat: &str) -> Option<ProcessState> {
    let state = stat[stat.rfind(')')? + 1..].trim_start().chars().next()?;
    Some(match state {
        'T' | 't' => ProcessState::Stopped(state),
        'Z' | 'X' | 'x' => ProcessState::Exited(state),
        _ => ProcessState::Running(state),
    })
}

/// Reads VmRSS, VmLck, the memlock limit and the start time of a process from /proc.
pub fn read_process_info(pid: u32) -> Option<ProcessInfo> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    if status
        .lines()
        .any(|line| line.starts_with("State:") && line.contains("zombie"))
    {
        return None;
    }
    let field_kib = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    let memlock_limit_bytes = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|limits| {
            let line = limits
                .lines()
                .find(|line| line.starts_with("Max locked memory"))?;
            let soft = line.split_whitespace().nth(3)?;
            Some(soft.parse::<u64>().unwrap_or(u64::MAX)) // "unlimited"
        });
    Some(ProcessInfo {
        pid,
        resident_bytes: field_kib("VmRSS:").unwrap_or(0),
        locked_bytes: field_kib("VmLck:").unwrap_or(0),
        memlock_limit_bytes,
        start_time_unix_seconds: process_start_time(pid),
    })
}

fn process_start_time(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime), counted after the parenthesised command name, which may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let start_ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot_time = boot_time_unix_seconds()?;
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks_per_second > 0.0).then(|| boot_time + start_ticks / ticks_per_second)
}

/// Boot time, read once: it does not change while the agent runs, and scrapes ask for it often.
pub fn boot_time_unix_seconds() -> Option<f64> {
    static BOOT_TIME: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *BOOT_TIME.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|value| value.trim().parse().ok())
    })
}

/// `journalctl --follow` of the replica's unit and main pid, one JSON entry a line.
fn spawn_journalctl(unit: &str, pid: u32) -> std::io::Result<tokio::process::Child> {
    Command::new("journalctl")
        .args([
            "--follow",
            "--no-tail",
            "--quiet",
            "--no-pager",
            "--output=json",
        ])
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
    fn journal_entries_count_only_from_the_replica_process_of_the_invocation() {
        let unit = "tigerbeetle.service";
        let invocation = "0123456789abcdef0123456789abcdef";
        let line = "2026-12-06 02:43:09.930Z info(replica): 0n: x";
        let entry = |unit: &str, id: Option<&str>, pid: &str, message: serde_json::Value| {
            let mut value =
                serde_json::json!({"_SYSTEMD_UNIT": unit, "_PID": pid, "MESSAGE": message});
            if let Some(id) = id {
                value["_SYSTEMD_INVOCATION_ID"] = id.into();
            }
            value.to_string()
        };
        let read = |text: String| journal_message(text.as_bytes(), unit, invocation, 42);
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
    }

    #[test]
    fn process_states() {
        assert_eq!(
            parse_process_state("42 (tigerbeetle) S 1 42"),
            Some(ProcessState::Running('S'))
        );
        assert_eq!(
            parse_process_state("42 (a) b) T 1 42"),
            Some(ProcessState::Stopped('T'))
        );
        assert_eq!(
            parse_process_state("42 (x) t 1"),
            Some(ProcessState::Stopped('t'))
        );
        assert_eq!(
            parse_process_state("42 (x) Z 1"),
            Some(ProcessState::Exited('Z'))
        );
        assert_eq!(parse_process_state("garbage"), None);
    }

    #[test]
    fn a_stopped_process_is_not_running() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let wait_for = |wanted: fn(ProcessState) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let state = process_state(pid);
                if state.is_some_and(wanted) {
                    return;
                }
                assert!(Instant::now() < deadline, "state {state:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for(ProcessState::is_running);
        let target = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGSTOP).unwrap();
        wait_for(|state| matches!(state, ProcessState::Stopped(_)));
        nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGCONT).unwrap();
        wait_for(ProcessState::is_running);
        child.kill().unwrap();
        // Killed but not yet reaped: a zombie.
        wait_for(|state| matches!(state, ProcessState::Exited(_)));
        child.wait().unwrap();
        assert_eq!(process_state(pid), None);
    }

    #[test]
    fn reads_own_process_info() {
        let info = super::read_process_info(std::process::id()).unwrap();
        assert!(info.resident_bytes > 0);
        assert!(info.memlock_limit_bytes.is_some());
        let started = info.start_time_unix_seconds.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
    }
}
