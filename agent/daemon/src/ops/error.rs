//! The one error type of every operation and handler. It knows no HTTP: `crate::http` maps each
//! variant to its status and code.

use crate::api::Outcome;

#[derive(Debug)]
pub enum AppError {
    /// Backups are not configured on this agent.
    NotConfigured,
    /// Another operation holds the lock this one needs; nothing was done.
    Busy(String),
    NotFound(String),
    BadRequest(String),
    /// Refused before anything was changed (quorum guard, state of the replica, free space).
    Refused(String),
    /// A verification found the stored file corrupt.
    Corrupt(String),
    /// The operation ran and failed.
    Failed(String),
    /// Another holder has the cluster-wide maintenance lease; nothing was done.
    LeaseHeld(String),
    /// The maintenance lease cannot be had (no quorum, an older cluster, disabled pool).
    LeaseUnavailable(String),
    /// The lease named is not held any more.
    LeaseLost(String),
}

impl AppError {
    pub fn outcome(&self) -> Outcome {
        match self {
            AppError::Busy(_) | AppError::LeaseHeld(_) => Outcome::Busy,
            AppError::Corrupt(_) => Outcome::Corrupt,
            AppError::Failed(_) => Outcome::Failed,
            AppError::NotConfigured
            | AppError::NotFound(_)
            | AppError::BadRequest(_)
            | AppError::Refused(_)
            | AppError::LeaseUnavailable(_)
            | AppError::LeaseLost(_) => Outcome::Refused,
        }
    }

    /// The sentence for people (audit lines, job errors, logs, the answer's message).
    pub fn detail(&self) -> String {
        match self {
            AppError::NotConfigured => {
                "backups are not configured on this agent: add a [backup] section".into()
            }
            AppError::Busy(why)
            | AppError::NotFound(why)
            | AppError::BadRequest(why)
            | AppError::Refused(why)
            | AppError::Corrupt(why)
            | AppError::Failed(why)
            | AppError::LeaseHeld(why)
            | AppError::LeaseUnavailable(why)
            | AppError::LeaseLost(why) => why.clone(),
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.detail())
    }
}

/// `io_failure("what")` turns an I/O error into `Failed("what: error")`.
pub fn io_failure(what: &str) -> impl Fn(std::io::Error) -> AppError + '_ {
    move |error| AppError::Failed(format!("{what}: {error}"))
}
