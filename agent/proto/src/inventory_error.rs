//! Why the inventory reader refuses an inventory: the first broken rule, as a value.
//!
//! The `Display` texts are the contract of docs/inventory.md ("Rules, in the order they are
//! checked"), shared with `nix/inventory.nix`: `scripts/check-nix` compares both readers'
//! refusals byte by byte, so a text changes only together with the Nix reader and the document.

use crate::inventory::NESTING_DEPTH_MAX;

/// The first rule an inventory breaks (without the `inventory <path>: ` prefix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "the inventory must not nest objects and lists more than {NESTING_DEPTH_MAX} levels deep"
    )]
    TooDeep,
    #[error("the inventory must be a JSON object")]
    NotAnObject,
    /// The value at `path` breaks a rule. `path` is dotted from the document's root, with list
    /// elements in brackets: `all.hosts.tb-0.tb_agent_url`, `all.vars.tb_agent_tokens[1].name`.
    #[error("{path}: {reason}")]
    Key { path: String, reason: Reason },
}

impl InventoryError {
    pub(crate) fn key(path: impl Into<String>, reason: Reason) -> InventoryError {
        InventoryError::Key {
            path: path.into(),
            reason,
        }
    }

    /// The key path the error names, if it names one.
    pub fn path(&self) -> Option<&str> {
        match self {
            InventoryError::Key { path, .. } => Some(path),
            InventoryError::TooDeep | InventoryError::NotAnObject => None,
        }
    }
}

/// The inventory is copied whole to every host (`/etc/tigerbeetle/inventory.json`, 0644) and,
/// on NixOS, into the world-readable store: a secret in it (`ansible_become_password`,
/// `ansible_ssh_pass`, ...) would be readable by every local user of every host.
const SECRET_KEY_REASON: &str = "looks like a secret, and the inventory is copied to every host \
     (0644, and into the Nix store on NixOS): keep secrets out of it (Ansible Vault, a vars \
     file, a secret manager)";

/// Which rule a key breaks, with the facts its message names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// `all` is not `{ "vars": {...}, "hosts": {...} }`.
    #[error("must be an object with vars and hosts")]
    NotVarsAndHosts,
    #[error("must be an object")]
    NotAnObject,
    #[error(
        "host names must be 1 to 63 characters among A-Z a-z 0-9 . _ - , start with a letter or digit and not be all digits (tbctl --replica reads digits as a replica index)"
    )]
    HostName,
    #[error("{SECRET_KEY_REASON}")]
    LooksSecret,
    /// A known key at the other level; the level where it belongs.
    #[error("belongs in {belongs_in}, not here")]
    Misplaced { belongs_in: &'static str },
    #[error(
        "unknown key (keys starting with tigerbeetle_ or tb_agent_ are reserved for this project: check the spelling)"
    )]
    UnknownKey,
    #[error("is required")]
    Required,
    /// The value breaks its key's value rule (one of the `REASON_*` texts of the reader).
    #[error("{0}")]
    Value(&'static str),
    #[error("unknown key (a token has name, scopes and sha256)")]
    UnknownTokenKey,
    #[error("\"{name}\" is used twice")]
    TokenNameTwice { name: String },
    /// A TLS file given without the others it needs (their key paths).
    #[error("needs {needs}")]
    Needs { needs: &'static str },
    #[error("{replica} is not below the replica count {replica_count}")]
    ReplicaBeyondCount { replica: u8, replica_count: u8 },
    #[error("replica {replica} is already host {host}")]
    ReplicaTaken { replica: u8, host: String },
    #[error("no host has tigerbeetle_replica {replica}")]
    ReplicaMissing { replica: u8 },
    #[error("{address} is also the address of host {host}")]
    AddressTaken { address: String, host: String },
    #[error("must start with https:// because all.vars.tb_agent_tls_cert_file is set")]
    UrlNeedsHttps,
    #[error(
        "must start with http:// because TLS is not configured (all.vars.tb_agent_tls_cert_file)"
    )]
    UrlNeedsHttp,
    #[error("{listen} is the replica's own address")]
    ListenIsReplicaAddress { listen: String },
    #[error(
        "{ip} is a public address and bearer tokens would cross it in clear text: set all.vars.tb_agent_tls_cert_file and all.vars.tb_agent_tls_key_file"
    )]
    ListenPublicWithoutTls { ip: String },
    #[error(
        "\"nixos\" needs all.vars.tigerbeetle_nixos_flake (the flake whose nixosConfigurations.<host> rollout.yml builds and activates on this host)"
    )]
    NixosWithoutFlake,
}
