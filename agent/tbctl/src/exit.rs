//! tbctl's exit codes, for scripts and Ansible: 0 done; 1 failed (or a usage error: clap's 2);
//! 3 refused before anything changed (a quorum guard, the maintenance lease, a missing
//! confirmation); 4 no agent could be reached.

use std::process::ExitCode;

pub const REFUSED_CODE: u8 = 3;
pub const UNREACHABLE_CODE: u8 = 4;

pub fn refused() -> ExitCode {
    ExitCode::from(REFUSED_CODE)
}

/// An error that exits with [`REFUSED_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// An error that exits with [`UNREACHABLE_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// The exit code of a command that ended with `error`.
pub fn code_of(error: &anyhow::Error) -> ExitCode {
    if error.downcast_ref::<Refused>().is_some() {
        refused()
    } else if error.downcast_ref::<Unreachable>().is_some() {
        ExitCode::from(UNREACHABLE_CODE)
    } else {
        ExitCode::FAILURE
    }
}
