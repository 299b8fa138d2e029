//! tb-agent: the host agent that runs beside each TigerBeetle replica, and tbctl, the
//! orchestrator side that calls every agent of a cluster.

pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod binary;
pub mod config;
pub mod control;
pub mod health;
pub mod host;
pub mod inventory;
pub mod metrics;
pub mod ops;
pub mod peers;
pub mod probe;
pub mod replica;
pub mod server;
pub mod state;
pub mod statsd;
pub mod tbctl;

/// The TigerBeetle release of the embedded client. The cluster must be this release or newer.
pub const TIGERBEETLE_CLIENT_VERSION: &str = "0.16.78";
/// The agent's own version.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
