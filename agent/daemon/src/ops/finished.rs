//! What an operation's result says for its audit line and its job.

use serde::Serialize;

use crate::api::{ControlResponse, Outcome, RestoreResponse, Verification};

/// What a result says for the operation's audit line and its job.
pub trait Finished {
    fn outcome(&self) -> Outcome;
    fn detail(&self) -> String;
}

impl Finished for ControlResponse {
    fn outcome(&self) -> Outcome {
        self.outcome
    }
    fn detail(&self) -> String {
        self.detail.clone()
    }
}

impl Finished for Verification {
    fn outcome(&self) -> Outcome {
        assert!(self.ok, "a failed verification is AppError::Corrupt");
        Outcome::Succeeded
    }
    fn detail(&self) -> String {
        self.detail.clone()
    }
}

impl Finished for RestoreResponse {
    fn outcome(&self) -> Outcome {
        Outcome::Succeeded
    }
    fn detail(&self) -> String {
        match &self.previous_moved_to {
            Some(aside) => format!("restored; the previous data file is at {aside}"),
            None => "restored".into(),
        }
    }
}

/// `DELETE /v1/backups/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    pub deleted: String,
}

impl Finished for Deleted {
    fn outcome(&self) -> Outcome {
        Outcome::Succeeded
    }
    fn detail(&self) -> String {
        format!("deleted backup {}", self.deleted)
    }
}

/// The result of a job whose answer was 202 (backup, recover): the job carries the details.
#[derive(Debug, Clone, Serialize)]
pub struct JobDone {
    pub detail: String,
}

impl Finished for JobDone {
    fn outcome(&self) -> Outcome {
        Outcome::Succeeded
    }
    fn detail(&self) -> String {
        self.detail.clone()
    }
}
