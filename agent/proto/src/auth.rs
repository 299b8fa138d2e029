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

/// Why a token file's text (or `tb-agent hash-token`'s input) holds no usable secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretTextError {
    #[error("empty")]
    Empty,
    #[error("holds more than one word; it must hold only the secret")]
    MoreThanOneWord,
}

/// The secret in a token file's text: the text without surrounding whitespace (editors add a
/// newline). The one rule for reading a secret before it is sent or hashed: tbctl's token
/// files, the agents' peer token file and `tb-agent hash-token` must agree on it, or a hash
/// in a config would not match the secret presented.
pub fn secret_from_text(text: &str) -> Result<&str, SecretTextError> {
    let secret = text.trim();
    if secret.is_empty() {
        return Err(SecretTextError::Empty);
    }
    if secret.contains(char::is_whitespace) {
        return Err(SecretTextError::MoreThanOneWord);
    }
    Ok(secret)
}

/// The SHA-256 (hex) that configurations list for the secret in a token file's `text`:
/// [`secret_from_text`], then [`hash_secret_hex`].
pub fn token_sha256(text: &str) -> Result<String, SecretTextError> {
    secret_from_text(text).map(hash_secret_hex)
}

/// The SHA-256 of a secret (already read with [`secret_from_text`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_holds_one_word_and_its_hash_ignores_the_newline() {
        assert_eq!(secret_from_text("  s3cret\n"), Ok("s3cret"));
        assert_eq!(secret_from_text(" \n"), Err(SecretTextError::Empty));
        assert_eq!(
            secret_from_text("a b\n"),
            Err(SecretTextError::MoreThanOneWord)
        );
        assert_eq!(token_sha256("abc\n"), Ok(hash_secret_hex("abc")));
        assert_eq!(
            hash_secret_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
