//! `tb-agent replica-start`: the replica unit's main process, on Debian (the tigerbeetle role)
//! and NixOS (nixos-modules/replica.nix) alike:
//!
//!   tb-agent replica-start --inventory FILE --host NAME --binary PATH [-- EXTRA_ARGS...]
//!
//! It reads the inventory, finds the host, and refuses to start without the data file; it never
//! creates one: a re-formatted replica forgets what it acknowledged to the cluster and can lose
//! committed data. Then it becomes `PATH start FLAGS... EXTRA_ARGS... DATA_FILE` (execv), so
//! systemd watches the replica itself. The flags and the data file come from `tb_proto` (the
//! same rule as `tbctl inventory render` and the agent's process mode), never from the unit.
//!
//! Exit statuses (the units' SuccessExitStatus= and RestartPreventExitStatus= name them):
//!   78 (EX_CONFIG) no data file: "waiting for bootstrap or recover". A success status, so the
//!      unit ends inactive, not failed (`nixos-rebuild switch` succeeds on a first deploy), and
//!      it is never restarted: a missing file neither loops nor uses up the start limit.
//!   77 (EX_NOPERM) the data file belongs to another user (a renamed replica user), or cannot
//!      be examined (a directory the unit's user cannot search): a failure, not restarted.
//!   64 (EX_USAGE) the command line or the inventory is wrong (unreadable, invalid, no such
//!      host), or the binary cannot be executed: a failure, not restarted; nothing runs.
//! TigerBeetle's own exit statuses are 1 to 7 and its crashes are signals: 78, 77 and 64 come
//! only from here. Tested by agent/daemon/tests/replica_start.rs.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use tb_proto::inventory::Inventory;

/// No data file: waiting for bootstrap or recover.
pub const EXIT_NO_DATA_FILE: u8 = 78;
/// The data file is another user's, or cannot be examined.
pub const EXIT_FOREIGN_OWNER: u8 = 77;
/// Bad command line or inventory.
pub const EXIT_USAGE: u8 = 64;

#[derive(Args)]
pub struct ReplicaStart {
    /// The inventory (on hosts /etc/tigerbeetle/inventory.json).
    #[arg(long)]
    inventory: PathBuf,
    /// This host's name in the inventory.
    #[arg(long)]
    host: String,
    /// The tigerbeetle binary to exec.
    #[arg(long)]
    binary: PathBuf,
    /// Extra `tigerbeetle start` flags, placed before the data file.
    #[arg(last = true)]
    extra: Vec<OsString>,
}

/// Whether the process's arguments are a `replica-start` command line: its clap errors exit 64
/// (usage), as the units' RestartPreventExitStatus expects, not clap's 2.
pub fn is_invoked() -> bool {
    std::env::args_os().nth(1).as_deref() == Some("replica-start".as_ref())
}

pub fn usage_status() -> ExitCode {
    ExitCode::from(EXIT_USAGE)
}

/// Checks, then execs the replica; returns only when it refuses or the exec fails.
pub fn run(args: &ReplicaStart) -> ExitCode {
    let inventory = match Inventory::load(&args.inventory) {
        Ok(inventory) => inventory,
        Err(error) => return refuse(EXIT_USAGE, &format!("{error:#}")),
    };
    let host = match tb_proto::render::host(&inventory, &args.host) {
        Ok(host) => host,
        Err(error) => {
            let text = format!("inventory {}: {error}", args.inventory.display());
            return refuse(EXIT_USAGE, &text);
        }
    };
    let data_file = Path::new(&host.data_file);
    if let Err((status, text)) = guard(data_file, host.replica, &args.inventory) {
        return refuse(status, &text);
    }
    // The same arguments `tbctl inventory render` prints; extra flags go before the data file.
    let mut start_args = tb_proto::render::replica_start_args(&inventory, host);
    let data_file_arg = start_args
        .pop()
        .expect("the start arguments end with the data file");
    assert_eq!(Path::new(&data_file_arg), data_file);
    let mut argv: Vec<OsString> = vec![args.binary.clone().into()];
    argv.extend(start_args.into_iter().map(OsString::from));
    argv.extend(args.extra.iter().cloned());
    argv.push(data_file_arg.into());
    exec(&args.binary, &argv)
}

/// The start guard: the data file exists and belongs to the user this process runs as.
fn guard(data_file: &Path, replica: u8, inventory: &Path) -> Result<(), (u8, String)> {
    // Follows symlinks: a dangling link is no data file.
    let metadata = match std::fs::metadata(data_file) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                EXIT_NO_DATA_FILE,
                missing_text(data_file, replica, inventory),
            ));
        }
        Err(error) => {
            let text = format!(
                "cannot examine the data file {}: {error}; refusing to start.",
                data_file.display()
            );
            return Err((EXIT_FOREIGN_OWNER, text));
        }
    };
    let uid = nix::unistd::geteuid();
    if metadata.uid() != uid.as_raw() {
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {uid}"), |user| user.name);
        let text = format!(
            "data file {} does not belong to {user}, the user this unit runs as; refusing to \
             start.\nWas the replica's user renamed? See docs/nixos.md, \"The replica's user\" \
             (NixOS), or docs/ansible.md (the role's user migration).",
            data_file.display()
        );
        return Err((EXIT_FOREIGN_OWNER, text));
    }
    Ok(())
}

fn missing_text(data_file: &Path, replica: u8, inventory: &Path) -> String {
    format!(
        "data file {} does not exist; refusing to start.\nNothing formats it automatically: a \
         re-formatted replica forgets what it acknowledged to the cluster and can lose committed \
         data.\nIf this host's data file was lost, rebuild it from the other replicas with: \
         tbctl recover --inventory {} --replica {replica} (with Ansible: ansible-playbook \
         ansible/playbooks/recover.yml).\nNever format it: that is not a repair.",
        data_file.display(),
        inventory.display()
    )
}

fn refuse(status: u8, text: &str) -> ExitCode {
    eprintln!("tb-agent replica-start: {text}");
    ExitCode::from(status)
}

/// Becomes the replica (same pid, so systemd watches it); returns only on failure.
fn exec(binary: &Path, argv: &[OsString]) -> ExitCode {
    let to_c = |text: &std::ffi::OsStr| CString::new(text.as_bytes());
    let (Ok(path), Ok(argv)) = (
        to_c(binary.as_os_str()),
        argv.iter()
            .map(|arg| to_c(arg))
            .collect::<Result<Vec<_>, _>>(),
    ) else {
        return refuse(EXIT_USAGE, "an argument holds a NUL byte");
    };
    let error = match nix::unistd::execv(&path, &argv) {
        Ok(never) => match never {},
        Err(error) => error,
    };
    let text = format!("cannot execute {}: {error}", binary.display());
    refuse(EXIT_USAGE, &text)
}
