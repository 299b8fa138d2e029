//! The restore drill's scratch cluster: `tigerbeetle start` on restored data files, on
//! 127.0.0.1 ports of its own. Whatever happens, its processes end with tbctl: `Drop` stops
//! them (SIGTERM, then SIGKILL), and the kernel kills them if tbctl itself is killed.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::process;
use tb_proto::tigerbeetle;

/// How long replicas get to exit after SIGTERM before SIGKILL.
const TERM_GRACE_MS: u64 = 10_000;
/// After SIGKILL the kernel needs only moments.
const KILL_WAIT_MS: u64 = 5_000;
const EXIT_POLL_INTERVAL_MS: u64 = 100;
/// Log lines shown when a scratch replica exits early.
const LOG_TAIL_LINES: usize = 20;

/// The scratch ports, `base` to `base + count - 1`.
pub fn ports(base: u16, count: usize) -> anyhow::Result<Vec<u16>> {
    (0..count)
        .map(|offset| {
            u16::try_from(offset)
                .ok()
                .and_then(|offset| base.checked_add(offset))
                .filter(|port| *port != 0 && base != 0)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--replica-port-base {base}: the ports {base} to {base}+{} must be \
                         between 1 and 65535",
                        count - 1
                    )
                })
        })
        .collect()
}

/// The live addresses (as the inventory resolved them: address and port) that use one of
/// `ports`. Any host counts: a port shared with a live replica on another host is harmless,
/// but refusing it costs nothing and rules out the case where that host is this one.
pub fn clashes<'a>(ports: &[u16], live: &[(&'a str, u16)]) -> Vec<&'a str> {
    live.iter()
        .filter(|(_, port)| ports.contains(port))
        .map(|(address, _)| *address)
        .collect()
}

/// Fails unless every port is free on 127.0.0.1 now. A client of the scratch cluster that
/// reached some other listener could talk to the live cluster, whose id it shares.
pub fn check_free(ports: &[u16]) -> anyhow::Result<()> {
    for port in ports {
        TcpListener::bind(("127.0.0.1", *port)).map_err(|error| {
            anyhow::anyhow!(
                "127.0.0.1:{port} is not free ({error}): pick another --replica-port-base"
            )
        })?;
    }
    Ok(())
}

struct ScratchReplica {
    index: u8,
    child: Child,
    log: PathBuf,
    exited: bool,
}

pub struct ScratchCluster {
    tigerbeetle: PathBuf,
    addresses: String,
    cache_grid: String,
    replicas: Vec<ScratchReplica>,
}

impl ScratchCluster {
    /// A cluster with no replica running yet; `start_replica` starts them, in any order.
    pub fn new(tigerbeetle: &Path, addresses: &str, cache_grid: &str) -> ScratchCluster {
        ScratchCluster {
            tigerbeetle: tigerbeetle.to_path_buf(),
            addresses: addresses.to_string(),
            cache_grid: cache_grid.to_string(),
            replicas: Vec::new(),
        }
    }

    /// Starts replica `index` on `data_file`, in its own process group, output to `log`.
    pub fn start_replica(&mut self, index: u8, data_file: &Path, log: &Path) -> anyhow::Result<()> {
        let child = spawn(
            &self.tigerbeetle,
            &self.addresses,
            &self.cache_grid,
            data_file,
            log,
        )
        .with_context(|| format!("starting scratch replica {index}"))?;
        crate::say!("scratch replica {index}: started (pid {})", child.id());
        self.replicas.push(ScratchReplica {
            index,
            child,
            log: log.to_path_buf(),
            exited: false,
        });
        Ok(())
    }

    /// Fails when a replica has exited: it will not answer, and its log says why.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for replica in &mut self.replicas {
            if let Some(status) = replica.child.try_wait()? {
                replica.exited = true;
                anyhow::bail!(
                    "scratch replica {} exited ({status}); last lines of {}:\n{}",
                    replica.index,
                    replica.log.display(),
                    process::tail(&replica.log, LOG_TAIL_LINES)
                );
            }
        }
        Ok(())
    }

    /// SIGTERM to every replica's group, SIGKILL to those still there after the grace time.
    /// Blocking: it runs at the end of the drill (or in `Drop`), when nothing else is waiting.
    fn stop(&mut self) {
        if self.replicas.iter().all(|replica| replica.exited) {
            return;
        }
        self.signal(Signal::SIGTERM);
        if !self.wait_exited(TERM_GRACE_MS) {
            eprintln!(
                "scratch cluster: replicas still running {TERM_GRACE_MS} ms after SIGTERM; \
                 sending SIGKILL"
            );
            self.signal(Signal::SIGKILL);
            if !self.wait_exited(KILL_WAIT_MS) {
                for replica in self.replicas.iter().filter(|replica| !replica.exited) {
                    eprintln!(
                        "scratch replica {}: pid {} still exists after SIGKILL",
                        replica.index,
                        replica.child.id()
                    );
                }
                return;
            }
        }
        crate::say!("scratch cluster: stopped");
    }

    fn signal(&self, signal: Signal) {
        for replica in self.replicas.iter().filter(|replica| !replica.exited) {
            // Each replica leads its own group (process_group(0)), so its pid is the group id.
            let group = Pid::from_raw(replica.child.id() as i32);
            match killpg(group, signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(error) => eprintln!(
                    "scratch replica {}: {signal} to process group {group}: {error}",
                    replica.index
                ),
            }
        }
    }

    /// Reaps exited replicas until all are gone (true) or `timeout_ms` passes (false).
    fn wait_exited(&mut self, timeout_ms: u64) -> bool {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            for replica in self.replicas.iter_mut().filter(|replica| !replica.exited) {
                // An error means the child is already reaped: gone either way.
                replica.exited = !matches!(replica.child.try_wait(), Ok(None));
            }
            if self.replicas.iter().all(|replica| replica.exited) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(EXIT_POLL_INTERVAL_MS));
        }
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(
    tigerbeetle: &Path,
    addresses: &str,
    cache_grid: &str,
    data_file: &Path,
    log: &Path,
) -> anyhow::Result<Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let log_file_err = log_file.try_clone()?;
    let mut command = Command::new(tigerbeetle);
    command
        .arg("start")
        // No StatsD: nothing reads the scratch replicas' metrics.
        .args(tigerbeetle::start_flags(
            &addresses.split(',').map(str::to_string).collect::<Vec<_>>(),
            Some(cache_grid),
            None,
        ))
        .arg(data_file)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_file_err)
        // Its own group: a Ctrl-C meant for tbctl reaches tbctl, which stops the replicas in
        // order, rather than the replicas directly.
        .process_group(0);
    // If tbctl dies without running `Drop` (SIGKILL), the kernel kills the replicas: they hold
    // gigabytes of memory and must not outlive the drill. The parent is the thread that
    // spawns, which is the runtime's only thread and lives as long as tbctl.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("running {}", tigerbeetle.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_consecutive_and_bounded() {
        assert_eq!(ports(34000, 3).unwrap(), vec![34000, 34001, 34002]);
        assert!(ports(65534, 3).is_err());
        assert!(ports(0, 3).is_err());
        assert_eq!(ports(65535, 1).unwrap(), vec![65535]);
    }

    #[test]
    fn clashes_compare_ports_of_any_host() {
        let live = [
            ("10.0.0.1:3000", 3000),
            ("127.0.0.1:34001", 34001),
            ("10.0.0.2:34002", 34002),
        ];
        assert_eq!(
            clashes(&[34000, 34001, 34002], &live),
            vec!["127.0.0.1:34001", "10.0.0.2:34002"]
        );
        assert!(clashes(&[44000, 44001, 44002], &live).is_empty());
    }

    #[test]
    fn a_listening_port_is_not_free() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(check_free(&[port]).is_err());
        drop(listener);
    }
}
