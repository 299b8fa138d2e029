//! Host figures (CPU, memory, disk, clock, io_uring), refreshed on a timer, never per request:
//! a scrape storm must not turn into a storm of /proc reads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sysinfo::{CpuRefreshKind, Disks, MemoryRefreshKind, RefreshKind, System};

use crate::api::{ClockStatus, FilesystemStatus, HostStatus};

#[derive(Default)]
pub struct HostMonitor {
    latest: RwLock<Arc<HostStatus>>,
    /// Bumped at every refresh (the /metrics cache key).
    generation: AtomicU64,
}

impl HostMonitor {
    pub fn latest(&self) -> Arc<HostStatus> {
        Arc::clone(&self.latest.read().expect("not poisoned"))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Refreshes every `interval` until the task is dropped. The first refresh happens at once.
    pub async fn run(self: Arc<Self>, data_file: PathBuf, interval: Duration) {
        let mut system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::everything()),
        );
        let mut disks = Disks::new();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            system.refresh_cpu_usage();
            system.refresh_memory();
            disks.refresh(true);
            let status = HostStatus {
                hostname: System::host_name().unwrap_or_default(),
                uptime_seconds: System::uptime(),
                load_average: {
                    let load = System::load_average();
                    [load.one, load.five, load.fifteen]
                },
                cpu_usage_percent: system.cpus().iter().map(|cpu| cpu.cpu_usage()).collect(),
                memory_total_bytes: system.total_memory(),
                memory_available_bytes: system.available_memory(),
                swap_total_bytes: system.total_swap(),
                swap_free_bytes: system.free_swap(),
                filesystem: filesystem_of(&disks, &data_file),
                clock: clock_status(),
                io_uring_disabled: io_uring_disabled(),
                refreshed_at_unix_seconds: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |duration| duration.as_secs()),
            };
            *self.latest.write().expect("not poisoned") = Arc::new(status);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The filesystem holding `path` (or, before the file exists, its nearest existing parent): the
/// mount with the longest mount point that is a prefix of the canonical path.
fn filesystem_of(disks: &Disks, path: &Path) -> Option<FilesystemStatus> {
    let mut existing = path;
    while !existing.exists() {
        existing = existing.parent()?;
    }
    let canonical = existing.canonicalize().ok()?;
    let disk = disks
        .list()
        .iter()
        .filter(|disk| canonical.starts_with(disk.mount_point()))
        .max_by_key(|disk| disk.mount_point().as_os_str().len())?;
    Some(FilesystemStatus {
        mount_point: disk.mount_point().display().to_string(),
        device: disk.name().to_string_lossy().into_owned(),
        fs_type: disk.file_system().to_string_lossy().into_owned(),
        size_bytes: disk.total_space(),
        available_bytes: disk.available_space(),
    })
}

/// Clock synchronisation as the kernel sees it (adjtimex in read-only mode, like node_exporter's
/// timex collector). Unsynchronised clocks make TigerBeetle's cluster clock fall back.
pub fn clock_status() -> Option<ClockStatus> {
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    // modes = 0: read only.
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state < 0 {
        return None;
    }
    // STA_NANO means the offset is in nanoseconds, else microseconds.
    let offset_divisor = if timex.status & libc::STA_NANO != 0 {
        1e9
    } else {
        1e6
    };
    Some(ClockStatus {
        synchronised: state != libc::TIME_ERROR,
        offset_seconds: timex.offset as f64 / offset_divisor,
        max_error_seconds: timex.maxerror as f64 / 1e6,
        estimated_error_seconds: timex.esterror as f64 / 1e6,
    })
}

/// `kernel.io_uring_disabled` (Linux 6.6+): 0 allows io_uring, which TigerBeetle requires.
pub fn io_uring_disabled() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_filesystem_of_a_missing_file() {
        let disks = Disks::new_with_refreshed_list();
        let status = filesystem_of(&disks, Path::new("/tmp/does/not/exist/yet")).unwrap();
        assert!(status.size_bytes > 0);
        assert!(Path::new("/tmp").starts_with(&status.mount_point));
    }

    #[test]
    fn reads_the_clock_in_seconds() {
        let clock = clock_status().unwrap();
        // The kernel caps maxerror at NTP_PHASE_LIMIT, 16 s (16,000,000 us): a value beyond it
        // means a wrong unit.
        assert!(
            (0.0..=16.0).contains(&clock.max_error_seconds),
            "{}",
            clock.max_error_seconds
        );
        // An unsynchronised clock has reached the cap or was never disciplined; a synchronised
        // one is below it.
        if clock.synchronised {
            assert!(clock.max_error_seconds < 16.0, "{clock:?}");
        }
    }
}
