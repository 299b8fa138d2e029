//! `tb-agent replica-start`, the replica unit's start guard, run as the unit runs it against a
//! stand-in tigerbeetle that records whether, and how, it ran:
//! - no data file (or a dangling symlink): exit 78, the stand-in never runs, nothing is created;
//! - the data file belongs to another user: exit 77 (as root only: it gives a file away);
//! - a bad command line, an unreadable or invalid inventory, an unknown host: exit 64;
//! - the data file present and ours: the stand-in becomes the process (same pid) with
//!   `start`, the inventory's flags, the extra arguments and the data file last.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const AGENT: &str = env!("CARGO_BIN_EXE_tb-agent");
const EXAMPLE: &str = include_str!("../../../inventories/example.json");
/// tb-1's data file in the example inventory's cluster.
const DATA_FILE_NAME: &str = "155384968277351797236104484427093106345_1.tigerbeetle";

/// A scratch directory with the example inventory (its data directory moved here) and the
/// stand-in binary, which writes its pid and arguments to `ran`, one per line.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tb-replica-start-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut inventory: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        inventory["all"]["vars"]["tigerbeetle_data_dir"] =
            serde_json::Value::from(dir.join("data").to_str().unwrap());
        std::fs::write(dir.join("inventory.json"), inventory.to_string()).unwrap();
        let stand_in = "#!/bin/sh\n{ echo \"pid $$\"; for arg in \"$@\"; do echo \"arg $arg\"; done; } >\"${0%/*}/ran\"\n";
        std::fs::write(dir.join("tigerbeetle"), stand_in).unwrap();
        std::fs::set_permissions(
            dir.join("tigerbeetle"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        Scratch { dir }
    }

    fn data_file(&self) -> PathBuf {
        self.dir.join("data").join(DATA_FILE_NAME)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    /// The unit's command line for `host`, with `extra` after `--`.
    fn args(&self, host: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "replica-start".to_string(),
            "--inventory".to_string(),
            self.path("inventory.json"),
            "--host".to_string(),
            host.to_string(),
            "--binary".to_string(),
            self.path("tigerbeetle"),
        ];
        if !extra.is_empty() {
            args.push("--".to_string());
            args.extend(extra.iter().map(|arg| arg.to_string()));
        }
        args
    }

    /// Runs `args`; asserts it exits `status`, says `text`, and ran and created nothing.
    fn expect_refusal(&self, args: &[String], status: i32, text: &str) {
        let output = run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(status), "{args:?}: {stderr}");
        assert!(
            stderr.contains(text),
            "{args:?} said {stderr:?}, not {text:?}"
        );
        assert!(!self.dir.join("ran").exists(), "{args:?} ran the binary");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(args: &[String]) -> Output {
    Command::new(AGENT).args(args).output().unwrap()
}

#[test]
fn no_data_file_exits_78_and_creates_nothing() {
    let scratch = Scratch::new();
    let data_file = scratch.data_file();
    let args = scratch.args("tb-1", &[]);
    let missing = format!(
        "data file {} does not exist; refusing to start.",
        data_file.display()
    );
    scratch.expect_refusal(&args, 78, &missing);
    scratch.expect_refusal(&args, 78, "tbctl recover --inventory");
    assert!(!data_file.exists(), "the guard created the data file");
    // A dangling symlink is no data file either.
    std::os::unix::fs::symlink(scratch.dir.join("gone"), &data_file).unwrap();
    scratch.expect_refusal(&args, 78, "does not exist; refusing to start");
    assert!(
        !scratch.dir.join("gone").exists(),
        "the guard created the link's target"
    );
}

#[test]
fn another_users_data_file_exits_77() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: giving a file to another user needs root");
        return;
    }
    let scratch = Scratch::new();
    std::fs::write(scratch.data_file(), b"").unwrap();
    std::os::unix::fs::chown(scratch.data_file(), Some(65534), None).unwrap();
    scratch.expect_refusal(
        &scratch.args("tb-1", &[]),
        77,
        "does not belong to root, the user this unit runs as",
    );
}

#[test]
fn bad_command_line_or_inventory_exits_64() {
    let scratch = Scratch::new();
    std::fs::write(scratch.data_file(), b"").unwrap();
    scratch.expect_refusal(
        &scratch.args("tb-9", &[]),
        64,
        "host tb-9 is not in the inventory",
    );
    // No --host: clap's usage error, with 64 rather than clap's 2.
    let mut no_host = scratch.args("tb-1", &[]);
    no_host.drain(3..5);
    scratch.expect_refusal(&no_host, 64, "--host");
    let mut absent = scratch.args("tb-1", &[]);
    absent[2] = scratch.path("absent.json");
    scratch.expect_refusal(&absent, 64, "absent.json");
    std::fs::write(scratch.dir.join("bad.json"), "{\"all\": {}}").unwrap();
    let mut invalid = scratch.args("tb-1", &[]);
    invalid[2] = scratch.path("bad.json");
    scratch.expect_refusal(&invalid, 64, "bad.json");
}

#[test]
fn present_data_file_execs_the_binary_with_the_inventorys_flags() {
    let scratch = Scratch::new();
    std::fs::write(scratch.data_file(), b"").unwrap();
    let args = scratch.args("tb-1", &["--log-debug", "--development"]);
    let child = Command::new(AGENT).args(&args).spawn().unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let ran = std::fs::read_to_string(scratch.dir.join("ran")).unwrap();
    let expected = [
        format!("pid {pid}"),
        "arg start".to_string(),
        "arg --addresses=10.0.0.10:3000,10.0.0.11:3000,10.0.0.12:3000".to_string(),
        "arg --cache-grid=4GiB".to_string(),
        "arg --experimental".to_string(),
        "arg --statsd=127.0.0.1:8125".to_string(),
        "arg --log-debug".to_string(),
        "arg --development".to_string(),
        format!("arg {}", scratch.data_file().display()),
    ];
    assert_eq!(ran.lines().collect::<Vec<_>>(), expected);
    assert_eq!(Path::new(&scratch.data_file()).metadata().unwrap().len(), 0);
}
