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

use crate::state::AgentState;

pub use listener::Server;

/// The API on `listener`, ready to serve (`Server::run`): its TLS material read, so that a
/// failure shows before the agent reports itself started.
pub fn prepare(listener: TcpListener, state: Arc<AgentState>) -> anyhow::Result<Server> {
    let config = Arc::clone(&state.config);
    listener::prepare(listener, routes::router(state), &config)
}
