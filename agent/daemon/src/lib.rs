//! tb-agent: the host agent that runs beside each TigerBeetle replica. What it shares with
//! tbctl (API bodies, configuration, inventory, quorum arithmetic) lives in `tb_proto`.

pub mod audit;
pub mod auth;
pub mod backup;
pub mod binary;
pub mod cluster_client;
pub mod control;
pub mod firewall;
pub mod health;
pub mod host;
pub mod http;
pub mod ids;
pub mod lease;
pub mod metrics;
pub mod ops;
pub mod peers;
pub mod probe;
pub mod replica;
pub mod replica_log;
pub mod state;
pub mod statsd;
pub mod status;

// The contract's modules under their old names, so daemon code reads `crate::api`.
pub use tb_proto::tigerbeetle::CLIENT_RELEASE as TIGERBEETLE_CLIENT_VERSION;
pub use tb_proto::{AGENT_VERSION, api, config, inventory};
