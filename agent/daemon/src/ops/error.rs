//! The one error type of every operation and handler. It knows no HTTP: `crate::http` maps each
//! variant to its status and code.

use crate::api::Outcome;

/// Each variant's text is the sentence for people (audit lines, job errors, logs, the answer's
/// message); `crate::http::error` gives each its status and code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Backups are not configured on this agent.
    #[error("backups are not configured on this agent: add a [backup] section")]
    NotConfigured,
    /// Another operation holds the lock this one needs; nothing was done.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// Refused before anything was changed (quorum guard, state of the replica, free space).
    #[error("{0}")]
    Refused(String),
    /// A verification found the stored file corrupt.
    #[error("{0}")]
    Corrupt(String),
    /// The operation ran and failed.
    #[error("{0}")]
    Failed(String),
    /// The operation ran and an I/O step failed: `what` says which.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// Another holder has the cluster-wide maintenance lease; nothing was done.
    #[error("{0}")]
    LeaseHeld(String),
    /// The maintenance lease cannot be had (no quorum, an older cluster, disabled pool).
    #[error("{0}")]
    LeaseUnavailable(String),
    /// The lease named is not held any more.
    #[error("{0}")]
    LeaseLost(String),
}

impl AppError {
    /// A refused input, from its typed reason (an invalid id, ...).
    pub fn bad_request(reason: impl std::fmt::Display) -> AppError {
        AppError::BadRequest(reason.to_string())
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            AppError::Busy(_) | AppError::LeaseHeld(_) => Outcome::Busy,
            AppError::Corrupt(_) => Outcome::Corrupt,
            AppError::Failed(_) | AppError::Io { .. } => Outcome::Failed,
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
        self.to_string()
    }
}

/// `io_failure("what")` turns an I/O error into `Io { what, source }` ("what: error").
pub fn io_failure(what: &str) -> impl Fn(std::io::Error) -> AppError + '_ {
    move |source| AppError::Io {
        what: what.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_reads_as_before() {
        let error = io_failure("reading the manifest")(std::io::Error::other("disk gone"));
        assert_eq!(error.detail(), "reading the manifest: disk gone");
        assert_eq!(error.outcome(), Outcome::Failed);
        assert_eq!(
            AppError::NotConfigured.detail(),
            "backups are not configured on this agent: add a [backup] section"
        );
    }
}
