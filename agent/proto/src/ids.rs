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
pub fn validate_backup_id(id: &str) -> Result<(), String> {
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
        Err(format!(
            "invalid backup id {:?}: ids look like 20261123T101500Z-r0-1a2b3c4d",
            id.chars().take(64).collect::<String>()
        ))
    }
}

pub fn is_lower_hex(byte: u8) -> bool {
    byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

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
