//! The shapes of the ids the API takes in its paths and bodies. Each rule is written once here,
//! as code and as the regular expression `docs/openapi.json` carries (a test checks the document
//! holds exactly these patterns), so the contract can be neither looser nor stricter than the
//! server.

/// Backup ids as `new_backup_id` makes them: `20261123T101500Z-r0-1a2b3c4d` (UTC time, replica
/// index, 8 random lowercase hex digits). At most 32 bytes, so the replica index has 1 to 5 digits.
pub const BACKUP_ID_PATTERN: &str = "^[0-9]{8}T[0-9]{6}Z-r[0-9]{1,5}-[0-9a-f]{8}$";

/// Job ids: `<kind>-<backup id shape>`; only the kinds that run as jobs.
pub const JOB_ID_PATTERN: &str = "^(start|stop|restart|backup|recover|restore|backup_verify|backup_delete)-[0-9]{8}T[0-9]{6}Z-r[0-9]{1,5}-[0-9a-f]{8}$";

/// Lease and transfer ids: 32 lowercase hex digits, neither 0 nor all f (TigerBeetle reserves
/// both).
pub const LEASE_ID_PATTERN: &str = "^(?!0{32}$)(?!f{32}$)[0-9a-f]{32}$";

/// Accepts only ids that match `BACKUP_ID_PATTERN`: no path can escape the backup directory.
pub fn validate_backup_id(id: &str) -> Result<(), InvalidBackupId> {
    let bytes = id.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    let shape_ok = bytes.len() >= 28
        && bytes.len() <= 32
        && digits(0..8)
        && bytes[8] == b'T'
        && digits(9..15)
        && &bytes[15..18] == b"Z-r"
        && id[18..].split_once('-').is_some_and(|(replica, random)| {
            (1..=5).contains(&replica.len())
                && replica.bytes().all(|b| b.is_ascii_digit())
                && random.len() == 8
                && random.bytes().all(is_lower_hex)
        });
    if shape_ok {
        Ok(())
    } else {
        Err(InvalidBackupId {
            id: id.chars().take(64).collect::<String>(),
        })
    }
}

/// Why a text is not a backup id: the sentence the API answers with (`bad_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid backup id {id:?}: ids look like 20261123T101500Z-r0-1a2b3c4d")]
pub struct InvalidBackupId {
    /// The text's first 64 characters: a refusal does not echo a long input whole.
    pub id: String,
}

/// Why a text is not a cluster id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidClusterId {
    /// Empty, or a character other than a decimal digit.
    #[error("must be {CLUSTER_ID_EXPECTED}")]
    NotDecimal,
    #[error("must be {CLUSTER_ID_EXPECTED} (at most 2^128 - 1)")]
    TooLarge,
}

/// A TigerBeetle cluster id, parsed once where it enters (the agent's configuration file, the
/// inventory): nothing downstream re-parses it. On the wire and in files it is a decimal string
/// (TOML integers stop at 2^63, JSON numbers at 2^53 in many readers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(pub u128);

/// Why a text is not a cluster id (the same words for the config file's key).
pub const CLUSTER_ID_EXPECTED: &str = "a decimal u128 written as a string, e.g. \"0\"";

impl ClusterId {
    pub fn get(self) -> u128 {
        self.0
    }
}

impl std::str::FromStr for ClusterId {
    type Err = InvalidClusterId;

    /// Decimal digits only: no sign, no hex, no spaces (`u128::from_str` alone takes a `+`).
    fn from_str(text: &str) -> Result<ClusterId, InvalidClusterId> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidClusterId::NotDecimal);
        }
        // Only digits: the one way left to fail is a number above u128::MAX.
        text.parse::<u128>()
            .map(ClusterId)
            .map_err(|_| InvalidClusterId::TooLarge)
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// A cluster id given as text elsewhere (a backup's manifest, a request's confirmation) names
/// this cluster when it reads as the same number.
impl PartialEq<String> for ClusterId {
    fn eq(&self, other: &String) -> bool {
        other.parse::<ClusterId>().is_ok_and(|other| other == *self)
    }
}

impl PartialEq<ClusterId> for String {
    fn eq(&self, other: &ClusterId) -> bool {
        other == self
    }
}

impl serde::Serialize for ClusterId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ClusterId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ClusterId, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ClusterId;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str(CLUSTER_ID_EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ClusterId, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

pub fn is_lower_hex(byte: u8) -> bool {
    byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_parse_once_and_keep_their_decimal_form() {
        assert_eq!("0".parse::<ClusterId>(), Ok(ClusterId(0)));
        let max = u128::MAX.to_string();
        assert_eq!(max.parse::<ClusterId>(), Ok(ClusterId(u128::MAX)));
        for bad in [
            "",
            "+1",
            "-1",
            "0x10",
            " 1",
            "1 ",
            "340282366920938463463374607431768211456",
        ] {
            assert!(bad.parse::<ClusterId>().is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&ClusterId(u128::MAX)).unwrap();
        assert_eq!(json, format!("\"{max}\""));
        assert_eq!(
            serde_json::from_str::<ClusterId>(&json).unwrap(),
            ClusterId(u128::MAX)
        );
        let number = serde_json::from_str::<ClusterId>("7")
            .unwrap_err()
            .to_string();
        assert!(
            number.contains("a decimal u128 written as a string"),
            "{number}"
        );
        assert!(ClusterId(7) == "007".to_string() && "7".to_string() == ClusterId(7));
        assert!(ClusterId(7) != "x".to_string());
    }

    #[test]
    fn backup_ids_of_every_allowed_shape() {
        for good in [
            "20261123T101500Z-r0-1a2b3c4d",
            "00000000T000000Z-r99999-00000000",
            "99999999T999999Z-r12-ffffffff",
        ] {
            validate_backup_id(good).unwrap();
        }
        for bad in [
            "",
            "..",
            "20261123T101500Z-r-1a2b3c4d",
            "20261123T101500Z-r123456-1a2b3c4d",
            "20261123T101500Z-r0-1A2B3C4D",
            "20261123T101500Z-r0-1a2b3c4",
            "20261123T101500Z-r0-1a2b3c4d0",
            "20261123t101500Z-r0-1a2b3c4d",
            "20261123T101500Z-r0-1a2b3c4/",
            "2026112T3101500Z-r0-1a2b3c4d",
            "20261123T101500Z-r٣-1a2b3c4d",
        ] {
            assert!(validate_backup_id(bad).is_err(), "{bad}");
        }
    }
}
