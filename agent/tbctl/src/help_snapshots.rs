//! The help of `tbctl` and of every subcommand, compared with the snapshots committed under
//! agent/tbctl/tests/help/, so that every help change is seen in review. After a deliberate
//! change: `TBCTL_BLESS_HELP=1 cargo test -p tbctl help_` rewrites them (and removes the
//! snapshots of commands that are gone).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Command, CommandFactory};

use super::Cli;

/// Fixed so that the snapshots do not depend on the terminal that runs the test.
const HELP_WIDTH: usize = 100;

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/help")
}

/// Env values (TBCTL_INVENTORY=... set where the test runs) left out of the text, the width fixed.
fn for_snapshot(command: Command) -> Command {
    let command = command
        .term_width(HELP_WIDTH)
        .mut_args(|arg| arg.hide_env_values(true));
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    names.iter().fold(command, |command, name| {
        command.mut_subcommand(name, for_snapshot)
    })
}

/// Every visible command's long help (what `--help` prints), by snapshot file name.
fn all_help() -> BTreeMap<String, String> {
    let mut command = for_snapshot(Cli::command());
    command.build();
    let mut texts = BTreeMap::new();
    collect(&mut command, "tbctl", &mut texts);
    texts
}

fn collect(command: &mut Command, name: &str, texts: &mut BTreeMap<String, String>) {
    texts.insert(
        format!("{name}.txt"),
        command.render_long_help().to_string(),
    );
    for sub in command.get_subcommands_mut() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_name = format!("{name}-{}", sub.get_name());
        collect(sub, &sub_name, texts);
    }
}

#[test]
fn help_matches_the_committed_snapshots() {
    let dir = snapshot_dir();
    let texts = all_help();
    if std::env::var_os("TBCTL_BLESS_HELP").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for (file, text) in &texts {
            std::fs::write(dir.join(file), text).unwrap();
        }
        return;
    }
    let mut committed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    let expected: Vec<String> = texts.keys().cloned().collect();
    assert_eq!(
        committed, expected,
        "help snapshots vs commands: rerun with TBCTL_BLESS_HELP=1 after a deliberate change"
    );
    for (file, text) in &texts {
        let snapshot = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            &snapshot == text,
            "{file}: the help changed; rerun with TBCTL_BLESS_HELP=1 after a deliberate \
             change.\n--- committed\n{snapshot}\n--- now\n{text}"
        );
    }
}

#[test]
fn help_has_no_empty_entries() {
    let mut command = Cli::command();
    command.build();
    let mut missing = Vec::new();
    check_documented(&command, "tbctl", &mut missing);
    assert!(missing.is_empty(), "without a help text: {missing:?}");
}

fn check_documented(command: &Command, name: &str, missing: &mut Vec<String>) {
    if command
        .get_about()
        .is_none_or(|about| about.to_string().trim().is_empty())
    {
        missing.push(name.to_string());
    }
    for arg in command.get_arguments() {
        let help = arg.get_long_help().or(arg.get_help());
        if help.is_none_or(|help| help.to_string().trim().is_empty()) {
            missing.push(format!("{name} {}", arg.get_id()));
        }
    }
    for sub in command.get_subcommands() {
        if sub.get_name() != "help" {
            check_documented(sub, &format!("{name} {}", sub.get_name()), missing);
        }
    }
}
