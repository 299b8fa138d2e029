//! Extractors of the operations' requests: the authenticated caller, an optional JSON body and a
//! backup id from the path.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::auth::TokenName;
use super::error::BodyError;
use crate::ops::{AppError, Caller};
use tb_proto::backup_id::BackupId;

/// A backup id from the path, parsed by axum into a `BackupId`. A text that is no backup id is
/// the operation's `bad_request` with the rule's sentence (the answer of the hand-parsed ids
/// before), returned to the handler so that it can audit the refusal.
pub fn backup_id(path: Result<Path<BackupId>, PathRejection>) -> Result<BackupId, AppError> {
    match path {
        Ok(Path(id)) => Ok(id),
        Err(PathRejection::FailedToDeserializePathParams(failed)) => {
            Err(AppError::BadRequest(match failed.into_kind() {
                ErrorKind::Message(why) | ErrorKind::DeserializeError { message: why, .. } => why,
                other => other.to_string(),
            }))
        }
        Err(other) => Err(AppError::BadRequest(other.body_text())),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, AppError> {
        let token = parts
            .extensions
            .get::<TokenName>()
            .map(|name| name.0.clone());
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        match (token, remote) {
            (Some(token), Some(remote)) => Ok(Caller { token, remote }),
            // A route that changes state without authentication is a bug in the router.
            _ => Err(AppError::Failed(
                "internal: the request carries no authenticated caller".into(),
            )),
        }
    }
}

/// An optional JSON body: empty means `T::default()`; otherwise JSON of the exact shape.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Default,
{
    type Rejection = BodyError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody<T>, BodyError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let status = rejection.status();
                BodyError {
                    status,
                    code: if status == StatusCode::PAYLOAD_TOO_LARGE {
                        "body_too_large"
                    } else {
                        "bad_body"
                    },
                    message: rejection.body_text(),
                }
            })?;
        parse_json(&content_type, &body).map(JsonBody)
    }
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(
    content_type: &str,
    body: &[u8],
) -> Result<T, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if !content_type.starts_with("application/json") {
        return Err(BodyError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: "send the body as application/json".into(),
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|parse_error| BodyError {
            status: StatusCode::BAD_REQUEST,
            code: "malformed_json",
            message: format!("request body: {parse_error}"),
        })?;
    // Every body is an object. serde would also read a struct from an array (`[]` as all
    // defaults), which would let a malformed request act, e.g. stop a replica.
    if !value.is_object() {
        return Err(BodyError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_body",
            message: "request body: expected a JSON object".into(),
        });
    }
    // The JSON is well-formed: what remains is its shape (unknown fields, types, values).
    serde_json::from_value(value).map_err(|shape_error| BodyError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_body",
        message: format!("request body: {shape_error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_empty_json_and_refusals() {
        let empty: crate::api::ControlRequest = parse_json("", b"  \n").unwrap();
        assert!(!empty.force);
        let forced: crate::api::ControlRequest =
            parse_json("application/json", br#"{"force": true}"#).unwrap();
        assert!(forced.force);
        let codes = [
            (
                "text/plain",
                &br#"{"force": true}"#[..],
                "unsupported_media_type",
            ),
            ("application/json", &b"{"[..], "malformed_json"),
            (
                "application/json",
                &br#"{"forse": true}"#[..],
                "invalid_body",
            ),
            // Arrays, which serde would read as a struct of defaults, and other non-objects.
            ("application/json", &b"[]"[..], "invalid_body"),
            ("application/json", &b"[true]"[..], "invalid_body"),
            ("application/json", &b"null"[..], "invalid_body"),
            ("application/json", &b"0"[..], "invalid_body"),
            // A lease id that is not one.
            (
                "application/json",
                &br#"{"lease_id": ""}"#[..],
                "invalid_body",
            ),
            (
                "application/json",
                &br#"{"lease_id": "0000000000000000000000000000000A"}"#[..],
                "invalid_body",
            ),
        ];
        for (content_type, body, expected) in codes {
            match parse_json::<crate::api::ControlRequest>(content_type, body) {
                Err(BodyError { code, .. }) => assert_eq!(code, expected),
                Ok(parsed) => panic!("{content_type} {body:?}: {:?}", parsed.force),
            }
        }
    }
}
