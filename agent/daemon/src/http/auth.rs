//! The scope check of every authenticated route: a bearer token that holds the endpoint's scopes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::endpoint::AppState;
use super::error::error;
use crate::auth::{Scope, Verdict};
use crate::state::AgentState;

/// The token's name when it holds every one of `scopes`, else the error response.
// Handlers return the error response as is; boxing it would only add noise at every call site.
#[allow(clippy::result_large_err)]
fn authorize(
    state: &AgentState,
    headers: &HeaderMap,
    remote: SocketAddr,
    scopes: &[Scope],
) -> Result<String, Response> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let refuse = |status, code, message: String| {
        state
            .counters
            .auth_failures_total
            .fetch_add(1, Ordering::Relaxed);
        Err(error(status, code, message))
    };
    let scope_names: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
    match state.auth.check(header, remote.ip(), scopes) {
        Verdict::Allowed(name) => Ok(name),
        Verdict::Unauthenticated => refuse(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "missing or unknown bearer token".into(),
        ),
        Verdict::Forbidden(name) => {
            tracing::warn!(token = %name, %remote, scopes = ?scope_names, "token lacks a scope");
            refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token {name:?} lacks a scope this needs: {}",
                    scope_names.join(" and ")
                ),
            )
        }
        Verdict::Throttled => refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            "too many failed authentications from this address; wait a minute".into(),
        ),
    }
}

/// The name of the token that authorised a request, for audit lines.
#[derive(Clone)]
pub struct TokenName(pub String);

/// Route layer: lets a request through only with a token that holds every one of `scopes`.
pub(super) async fn require_scope(
    State((state, scopes)): State<(AppState, &'static [Scope])>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authorize(&state, request.headers(), remote, scopes) {
        Ok(name) => {
            request.extensions_mut().insert(TokenName(name));
            next.run(request).await
        }
        Err(response) => response,
    }
}
