//! Operation errors and answers as HTTP: each error's status and code, the JSON error body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::ErrorBody;
use crate::ops::{Answer, AppError};

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: code.to_string(),
        message: message.into(),
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The status and the machine-readable code of each error; the message is `AppError::detail`.
fn status_and_code(app_error: &AppError) -> (StatusCode, &'static str) {
    match app_error {
        AppError::NotConfigured => (StatusCode::CONFLICT, "not_configured"),
        AppError::Busy(_) => (StatusCode::CONFLICT, "busy"),
        AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        AppError::Refused(_) => (StatusCode::CONFLICT, "refused"),
        AppError::Corrupt(_) => (StatusCode::CONFLICT, "corrupt"),
        AppError::Failed(_) | AppError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "failed"),
        AppError::LeaseHeld(_) => (StatusCode::CONFLICT, "lease_held"),
        AppError::LeaseUnavailable(_) => (StatusCode::CONFLICT, "lease_unavailable"),
        AppError::LeaseLost(_) => (StatusCode::CONFLICT, "lease_lost"),
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = status_and_code(&self);
        error(status, code, self.detail())
    }
}

/// A request body refused before any handler ran (size, media type, JSON): its own status and
/// code, never audited (no operation began).
#[derive(Debug)]
pub struct BodyError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        match self {
            Answer::Done(value) => axum::Json(value).into_response(),
            Answer::Accepted(accepted) => {
                (StatusCode::ACCEPTED, axum::Json(accepted)).into_response()
            }
        }
    }
}
