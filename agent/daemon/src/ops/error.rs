//! The one error type of every operation and handler, and its HTTP answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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
    /// The request body was refused (size, media type, JSON): its own status and code.
    Body {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
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
            | AppError::LeaseLost(_)
            | AppError::Body { .. } => Outcome::Refused,
        }
    }

    fn status_code_message(&self) -> (StatusCode, &'static str, String) {
        match self {
            AppError::NotConfigured => (
                StatusCode::CONFLICT,
                "not_configured",
                "backups are not configured on this agent: add a [backup] section".into(),
            ),
            AppError::Busy(why) => (StatusCode::CONFLICT, "busy", why.clone()),
            AppError::NotFound(why) => (StatusCode::NOT_FOUND, "not_found", why.clone()),
            AppError::BadRequest(why) => (StatusCode::BAD_REQUEST, "bad_request", why.clone()),
            AppError::Refused(why) => (StatusCode::CONFLICT, "refused", why.clone()),
            AppError::Corrupt(why) => (StatusCode::CONFLICT, "corrupt", why.clone()),
            AppError::Failed(why) => (StatusCode::INTERNAL_SERVER_ERROR, "failed", why.clone()),
            AppError::LeaseHeld(why) => (StatusCode::CONFLICT, "lease_held", why.clone()),
            AppError::LeaseUnavailable(why) => {
                (StatusCode::CONFLICT, "lease_unavailable", why.clone())
            }
            AppError::LeaseLost(why) => (StatusCode::CONFLICT, "lease_lost", why.clone()),
            AppError::Body {
                status,
                code,
                message,
            } => (*status, code, message.clone()),
        }
    }

    /// The sentence for people (audit lines, job errors, logs).
    pub fn detail(&self) -> String {
        self.status_code_message().2
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.detail())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.status_code_message();
        crate::server::error(status, code, message)
    }
}

/// `io_failure("what")` turns an I/O error into `Failed("what: error")`.
pub fn io_failure(what: &str) -> impl Fn(std::io::Error) -> AppError + '_ {
    move |error| AppError::Failed(format!("{what}: {error}"))
}
