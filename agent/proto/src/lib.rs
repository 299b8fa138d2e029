//! tb-proto: the contract between `tb-agent` and `tbctl` (and what Nix and Ansible must agree
//! with): API bodies, the inventory, the agent's configuration file, quorum arithmetic,
//! TigerBeetle facts and the backup file format.

pub mod api;
pub mod auth;
pub mod backup_files;
pub mod backup_id;
pub mod backup_modes;
pub mod backup_schedule;
pub mod bounded_file;
pub mod clock;
pub mod config;
pub mod endpoints;
pub mod host_config;
pub mod ids;
pub mod inventory;
pub mod inventory_error;
pub mod lease;
pub mod quorum;
pub mod render;
pub mod tigerbeetle;

/// The version of this repository's tools (agent, tbctl, contract).
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
