//! The HTTP API, and the only module that knows HTTP: routes from the endpoint table (`routes`),
//! the scope check (`auth`), extractors (`extract`), the mapping of operation errors to answers
//! (`error`) and the listener. Handlers parse the request and call the operations layer
//! (`crate::ops`), which knows no HTTP type.

mod auth;
mod backup;
mod endpoint;
mod error;
mod extract;
mod lease;
mod listener;
mod routes;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::state::AgentState;

/// Serves the API until `shutdown` turns true, then lets in-flight requests finish (bounded).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AgentState>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = Arc::clone(&state.config);
    listener::serve(listener, routes::router(state), &config, shutdown).await
}
