//! What /proc says about the replica process: its state, memory, limits and start time.

/// What /proc says about the replica process.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub resident_bytes: u64,
    pub locked_bytes: u64,
    pub memlock_limit_bytes: Option<u64>,
    pub start_time_unix_seconds: Option<f64>,
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

/// Field 22 of /proc/PID/stat (starttime, clock ticks after boot): with the pid, it names one
/// process of a boot.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Counted after the parenthesised command name, which may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

fn process_start_time(pid: u32) -> Option<f64> {
    let start_ticks = process_start_ticks(pid)? as f64;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

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
