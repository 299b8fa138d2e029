//! A backup id that has been checked: holding a `BackupId` proves the text matches
//! `ids::BACKUP_ID_PATTERN`, so it can name a lock or a directory without escaping the backup
//! directory. It parses from text (`FromStr`, and serde for paths and bodies) and nowhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A backup id of the shape `20261123T101500Z-r0-1a2b3c4d` (see `ids::validate_backup_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

pub use crate::ids::InvalidBackupId;

impl BackupId {
    pub fn parse(text: &str) -> Result<BackupId, InvalidBackupId> {
        crate::ids::validate_backup_id(text).map(|()| BackupId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for BackupId {
    type Err = InvalidBackupId;

    fn from_str(text: &str) -> Result<BackupId, InvalidBackupId> {
        BackupId::parse(text)
    }
}

impl TryFrom<String> for BackupId {
    type Error = InvalidBackupId;

    fn try_from(text: String) -> Result<BackupId, InvalidBackupId> {
        crate::ids::validate_backup_id(&text).map(|()| BackupId(text))
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.0
    }
}

impl AsRef<str> for BackupId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_what_the_rule_accepts_with_the_rule_s_sentence() {
        let id: BackupId = "20261123T101500Z-r0-1a2b3c4d".parse().unwrap();
        assert_eq!(id.as_str(), "20261123T101500Z-r0-1a2b3c4d");
        let error = BackupId::parse("../etc").unwrap_err();
        assert_eq!(
            error.to_string(),
            crate::ids::validate_backup_id("../etc")
                .unwrap_err()
                .to_string()
        );
        let from_json: Result<BackupId, _> = serde_json::from_str("\"x/..\"");
        assert!(from_json.is_err());
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"20261123T101500Z-r0-1a2b3c4d\""
        );
    }
}
