//! Bearer tokens: their scopes and how a secret is hashed for configuration files. The agent
//! stores only these hashes; tbctl, Nix and Ansible produce them the same way.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Control,
    Backup,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Control => "control",
            Scope::Backup => "backup",
        }
    }
}

/// Length of a generated secret, in bytes, before hex encoding.
pub const SECRET_SIZE_BYTES: usize = 32;

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub fn hash_secret_hex(secret: &str) -> String {
    hex::encode(hash_secret(secret))
}

/// A new random secret, hex encoded.
pub fn generate_secret() -> String {
    let bytes: [u8; SECRET_SIZE_BYTES] = rand::random();
    hex::encode(bytes)
}
