//! Local processes of `tbctl local`: starting detached agents, and finding and signalling them
//! again later through /proc. A recorded pid alone is never trusted: pids get reused, so a
//! process is ours only if its command line names our agent config.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// How much of a log's end `tail` reads: enough for the last few lines of any log.
const TAIL_SIZE_MAX_BYTES: u64 = 16 * 1024;

/// The fields of /proc/PID/stat that matter here.
struct Stat {
    state: char,
    process_group: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself hold spaces and parentheses;
    // everything after the last ')' is space-separated: state, ppid, pgrp, ...
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let process_group = fields.next()?.parse().ok()?;
    Some(Stat {
        state,
        process_group,
    })
}

/// Running, sleeping or stopped; a zombie has exited and only waits to be reaped.
pub fn is_alive(pid: i32) -> bool {
    stat(pid).is_some_and(|stat| !matches!(stat.state, 'Z' | 'X'))
}

/// True when `pid` is alive and runs `tb-agent ... --config CONFIG`.
pub fn is_agent(pid: i32, config: &Path) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let config = config.as_os_str().as_encoded_bytes();
    cmdline.split(|byte| *byte == 0).any(|arg| arg == config)
}

/// Live (non-zombie) processes of a process group. Scans /proc, which is bounded by the
/// number of processes on the machine.
pub fn group_members(process_group: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            stat(*pid).is_some_and(|stat| {
                stat.process_group == process_group && !matches!(stat.state, 'Z' | 'X')
            })
        })
        .collect()
}

/// Starts `binary args` in its own process group, so that a Ctrl-C in the terminal that ran
/// tbctl does not reach it, and so that `local down` can signal it and its replica together.
pub fn spawn_detached(
    binary: &Path,
    args: &[&std::ffi::OsStr],
    log: &Path,
) -> anyhow::Result<Child> {
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let log_file_err = log_file.try_clone()?;
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_file_err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// The last `lines_max` lines of a log file, for error messages.
pub fn tail(path: &Path, lines_max: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        file.seek(SeekFrom::Start(size.saturating_sub(TAIL_SIZE_MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.take(TAIL_SIZE_MAX_BYTES).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(lines_max);
            lines[start..]
                .iter()
                .map(|line| format!("  | {line}\n"))
                .collect()
        }
        Err(error) => format!("  (cannot read {}: {error})\n", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_in_its_group() {
        let pid = std::process::id() as i32;
        assert!(is_alive(pid));
        let group = nix::unistd::getpgrp().as_raw();
        assert!(group_members(group).contains(&pid));
        // Our own command line does not name an agent config.
        assert!(!is_agent(pid, Path::new("/nonexistent/agent-0.toml")));
    }
}
