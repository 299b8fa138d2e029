//! tbctl's exit codes, for scripts and Ansible: one enum, printed in `tbctl --help` and in
//! docs/ansible.md ("tbctl's exit codes"), so the three cannot drift apart unnoticed (the help
//! snapshot test holds the help text).

use std::process::ExitCode;

/// How a tbctl command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for is done.
    Done = 0,
    /// It was tried and did not work, or a wait ran out (the operation may still finish).
    Failed = 1,
    /// Bad usage: an unknown flag, a missing argument (clap's own code).
    Usage = 2,
    /// Refused before anything changed: a quorum guard, the maintenance lease (409), a missing
    /// confirmation, a check that found it unsafe.
    Refused = 3,
    /// An agent (or a replica address that had to be observed) could not be reached, so
    /// nothing could be proven or done there.
    Unreachable = 4,
    /// Refused before anything changed because the agent is busy with another operation on its
    /// replica (a backup copying, another start, stop or restart: the agent's error `busy`).
    /// It ends on its own: a caller may try again later.
    Busy = 5,
    /// Refused before anything changed because another holder has the cluster's maintenance
    /// lease (the agent's error `lease_held`; `tbctl lease show` names it and until when). It
    /// ends when that holder releases it or it expires: a caller may try again later.
    LeaseHeld = 6,
}

impl Exit {
    pub const ALL: [Exit; 7] = [
        Exit::Done,
        Exit::Failed,
        Exit::Usage,
        Exit::Refused,
        Exit::Unreachable,
        Exit::Busy,
        Exit::LeaseHeld,
    ];

    /// How an agent's refusal (409) with error code `code` exits: the two refusals that end on
    /// their own get their own codes, so scripts can wait on them without reading the text.
    pub fn of_refusal(code: &str) -> Exit {
        match code {
            "busy" => Exit::Busy,
            "lease_held" => Exit::LeaseHeld,
            _ => Exit::Refused,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    /// One line for the help's table.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Done => "done",
            Exit::Failed => {
                "failed, a wait ran out (it may still finish), or `status` found a replica not ready"
            }
            Exit::Usage => "bad usage (unknown flag, missing argument)",
            Exit::Refused => {
                "refused before anything changed (quorum guard, lease unavailable, missing \
                 confirmation)"
            }
            Exit::Unreachable => "an agent could not be reached",
            // One line each in the help's table (100 columns).
            Exit::Busy => {
                "refused: the agent is busy (a backup copying); nothing changed, retry later"
            }
            Exit::LeaseHeld => {
                "refused: another holder has the maintenance lease; nothing changed, retry later"
            }
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// The exit code table of `tbctl --help`.
pub fn help_table() -> String {
    let mut text = String::from("Exit codes:\n");
    for exit in Exit::ALL {
        text.push_str(&format!("  {}  {}\n", exit.code(), exit.meaning()));
    }
    text.trim_end().to_string()
}

pub const REFUSED_CODE: u8 = Exit::Refused as u8;
pub const UNREACHABLE_CODE: u8 = Exit::Unreachable as u8;

pub fn refused() -> ExitCode {
    Exit::Refused.into()
}

/// An error that exits with [`Exit::Refused`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// An agent's refusal (409, error code `code`, described by `text`) as the error of the exit
/// [`Exit::of_refusal`] gives it.
pub fn refusal(code: &str, text: String) -> anyhow::Error {
    match Exit::of_refusal(code) {
        Exit::Busy => Busy(text).into(),
        Exit::LeaseHeld => LeaseHeld(text).into(),
        _ => Refused(text).into(),
    }
}

/// An error that exits with [`Exit::Busy`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Busy(pub String);

/// An error that exits with [`Exit::LeaseHeld`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LeaseHeld(pub String);

/// An error that exits with [`Exit::Usage`]: an argument that names nothing (an unknown host).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// An error that exits with [`Exit::Unreachable`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// How a command that ended with `error` exits.
pub fn exit_of(error: &anyhow::Error) -> Exit {
    if error.downcast_ref::<Refused>().is_some() {
        Exit::Refused
    } else if error.downcast_ref::<Busy>().is_some() {
        Exit::Busy
    } else if error.downcast_ref::<LeaseHeld>().is_some() {
        Exit::LeaseHeld
    } else if error.downcast_ref::<Unreachable>().is_some() {
        Exit::Unreachable
    } else if error.downcast_ref::<Usage>().is_some() {
        Exit::Usage
    } else {
        Exit::Failed
    }
}

/// The exit code of a command that ended with `error`.
pub fn code_of(error: &anyhow::Error) -> ExitCode {
    exit_of(error).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_errors_map_to_them() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|exit| exit.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(exit_of(&refusal("busy", "x".into())), Exit::Busy);
        assert_eq!(exit_of(&refusal("lease_held", "x".into())), Exit::LeaseHeld);
        for code in [
            "refused",
            "lease_unavailable",
            "lease_lost",
            "corrupt",
            "not_configured",
        ] {
            assert_eq!(exit_of(&refusal(code, "x".into())), Exit::Refused, "{code}");
        }
        assert_eq!(exit_of(&Refused("x".into()).into()), Exit::Refused);
        assert_eq!(exit_of(&Unreachable("x".into()).into()), Exit::Unreachable);
        assert_eq!(exit_of(&Usage("x".into()).into()), Exit::Usage);
        assert_eq!(exit_of(&anyhow::anyhow!("x")), Exit::Failed);
        assert!(help_table().contains("  3  refused before anything changed"));
    }

    #[test]
    fn docs_table_lists_every_code() {
        let docs = include_str!("../../../docs/ansible.md");
        let section = docs
            .split("Exit codes (also at the end of `tbctl --help`):")
            .nth(1)
            .expect("docs/ansible.md has the exit code table");
        let rows: Vec<u8> = section
            .lines()
            .skip_while(|line| !line.starts_with("| code"))
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| line.split('|').nth(1).unwrap().trim().parse().unwrap())
            .collect();
        let codes: Vec<u8> = Exit::ALL.iter().map(|exit| exit.code()).collect();
        assert_eq!(rows, codes);
    }
}
