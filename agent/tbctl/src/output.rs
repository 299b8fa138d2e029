//! Where tbctl's output goes. Results go to stdout: text, or with `--json` one JSON document
//! and nothing else, so that `tbctl ... --json | jq` always parses. Progress, warnings and
//! errors go to stderr (progress.rs), whatever the mode.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Set once from `--json`, before the command runs; read wherever a result is printed.
static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A line of the human-readable result: stdout, or stderr under `--json` (where stdout holds
/// the JSON document alone).
pub fn say(line: impl std::fmt::Display) {
    if json() {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// The command's result as JSON on stdout, under `--json` only.
pub fn emit<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    if json() {
        println!("{}", serde_json::to_string_pretty(value)?);
    }
    Ok(())
}

/// With `--json`: one replica's finished job (recover, restore) as the result.
pub fn emit_job(
    entry: &tb_proto::inventory::ReplicaEntry,
    job: &tb_proto::api::Job,
) -> anyhow::Result<()> {
    emit(&serde_json::json!({
        "replica": entry.index,
        "host_name": entry.host_name,
        "job": job,
    }))
}

/// `println!` for the lines of a human-readable result: [`say`].
#[macro_export]
macro_rules! say {
    () => {
        $crate::output::say("")
    };
    ($($arg:tt)*) => {
        $crate::output::say(format_args!($($arg)*))
    };
}
