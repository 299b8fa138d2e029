//! What every handler module shares: the router's state and the endpoint table's methods.

use std::sync::Arc;

use axum::routing::MethodFilter;
use tb_proto::endpoints::{Endpoint, Method as EndpointMethod};

use crate::state::AgentState;

pub type AppState = Arc<AgentState>;

/// The endpoint's method as axum filters it: the table is the one place a method is named.
pub fn method_filter(endpoint: Endpoint) -> MethodFilter {
    match endpoint.method() {
        EndpointMethod::Get => MethodFilter::GET,
        EndpointMethod::Post => MethodFilter::POST,
        EndpointMethod::Delete => MethodFilter::DELETE,
    }
}
