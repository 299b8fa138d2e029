//! Process mode: the agent supervises `tigerbeetle start` itself, restarting it after a crash
//! with a back-off, and reads its output (log tail, memory-lock warning, the log tracker).

use super::*;

impl Replica {
    pub(super) async fn supervise(
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
            // The cache grid, if any, is among the configured extra arguments.
            .args(tb_proto::tigerbeetle::start_flags(
                &replica.addresses,
                None,
                Some(replica.statsd_port),
            ))
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

async fn wait_for(receiver: &mut watch::Receiver<bool>, value: bool) {
    while *receiver.borrow_and_update() != value {
        if receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
