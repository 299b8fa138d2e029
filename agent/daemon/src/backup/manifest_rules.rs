//! The rules a backup's manifest must meet before any of it is used: backups come back from
//! off-host storage, so a manifest is untrusted input. Checked when a backup is written and
//! whenever one is read.

use tb_proto::backup_modes::Compression;

use crate::api::Manifest;

/// Larger than any TigerBeetle data file (the grid's default maximum is 16 TiB).
const DATA_SIZE_MAX_BYTES: u64 = 64 << 40;
/// Sequence numbers stay far from overflow; a larger one in a manifest is not ours.
pub(crate) const SEQUENCE_MAX: u64 = 1 << 53;
/// Bounds on the free-text fields of a manifest.
pub(crate) const MANIFEST_TEXT_MAX_BYTES: usize = 255;
const MANIFEST_FORMAT_VERSION_SUPPORTED: u32 = 1;
/// 9999-12-31T23:59:59Z: a creation time past this is not a time.
const CREATED_UNIX_MS_MAX: u64 = 253_402_300_799_999;

/// Why a manifest (or a file name in one) is refused: the field and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untrusted(String);

/// A name a backup may hold a file under: one path component, no separators, not `.` or `..`,
/// printable ASCII.
pub fn validate_plain_file_name(name: &str) -> Result<(), Untrusted> {
    let plain = !name.is_empty()
        && name.len() <= MANIFEST_TEXT_MAX_BYTES
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\');
    if plain {
        Ok(())
    } else {
        Err(Untrusted(format!(
            "{:?} is not a plain file name",
            name.chars().take(64).collect::<String>()
        )))
    }
}

fn is_lower_hex(text: &str, length: usize) -> bool {
    text.len() == length
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_bounded_text(text: &str) -> bool {
    text.len() <= MANIFEST_TEXT_MAX_BYTES && !text.chars().any(char::is_control)
}

/// Checks every field of a manifest read from backup `id`'s directory before any of it is used:
/// backups come back from off-host storage, so a manifest is untrusted input.
pub fn validate_manifest(id: &str, manifest: &Manifest) -> Result<(), Untrusted> {
    if manifest.format_version != MANIFEST_FORMAT_VERSION_SUPPORTED {
        return Err(Untrusted(format!(
            "format_version {} is not {MANIFEST_FORMAT_VERSION_SUPPORTED}",
            manifest.format_version
        )));
    }
    if manifest.backup_id != id {
        return Err(Untrusted(format!(
            "backup_id {:?} is not the directory's id",
            manifest.backup_id.chars().take(64).collect::<String>()
        )));
    }
    let cluster_id_ok = !manifest.cluster_id.is_empty()
        && manifest.cluster_id.len() <= 39
        && manifest.cluster_id.bytes().all(|b| b.is_ascii_digit())
        && manifest.cluster_id.parse::<u128>().is_ok();
    if !cluster_id_ok {
        return Err(Untrusted("cluster_id is not a decimal u128".to_string()));
    }
    if !(1..=6).contains(&manifest.replica_count)
        || manifest.replica_index >= manifest.replica_count
    {
        return Err(Untrusted(format!(
            "replica {} of {} is not a replica of a 1-6 replica cluster",
            manifest.replica_index, manifest.replica_count
        )));
    }
    let texts = [
        ("host", manifest.host.as_str()),
        ("agent_version", manifest.agent_version.as_str()),
        (
            "tigerbeetle_version",
            manifest.tigerbeetle_version.as_deref().unwrap_or(""),
        ),
    ];
    for (field, text) in texts {
        if !is_bounded_text(text) {
            return Err(Untrusted(format!(
                "{field} is longer than {MANIFEST_TEXT_MAX_BYTES} bytes or holds control characters"
            )));
        }
    }
    if manifest.created_unix_ms > CREATED_UNIX_MS_MAX {
        return Err(Untrusted(format!(
            "created_unix_ms {} is not a time",
            manifest.created_unix_ms
        )));
    }
    if manifest
        .sequence
        .is_some_and(|sequence| sequence == 0 || sequence > SEQUENCE_MAX)
    {
        return Err(Untrusted(format!(
            "sequence must be between 1 and {SEQUENCE_MAX}"
        )));
    }
    validate_stored_file(manifest)
}

/// The stored file's part of a manifest: its name, compression, hashes and sizes.
fn validate_stored_file(manifest: &Manifest) -> Result<(), Untrusted> {
    validate_plain_file_name(&manifest.file).map_err(|why| Untrusted(format!("file: {why}")))?;
    let Some(compression) = Compression::parse(&manifest.compression) else {
        return Err(Untrusted(
            "compression is neither \"zstd\" nor \"none\"".to_string(),
        ));
    };
    let expected_file = compression.stored_file();
    if manifest.file != expected_file {
        return Err(Untrusted(format!(
            "file {:?} is not {expected_file:?}, the name of a {} backup's stored file",
            manifest.file, manifest.compression
        )));
    }
    if !is_lower_hex(&manifest.data_blake3, 64) || !is_lower_hex(&manifest.stored_blake3, 64) {
        return Err(Untrusted(
            "data_blake3 and stored_blake3 must be 64 lowercase hex digits".to_string(),
        ));
    }
    if manifest.data_size_bytes > DATA_SIZE_MAX_BYTES
        || manifest.stored_size_bytes > DATA_SIZE_MAX_BYTES
    {
        return Err(Untrusted(format!(
            "sizes are bounded by {DATA_SIZE_MAX_BYTES} bytes"
        )));
    }
    if compression == Compression::None
        && (manifest.stored_size_bytes != manifest.data_size_bytes
            || manifest.stored_blake3 != manifest.data_blake3)
    {
        return Err(Untrusted(
            "an uncompressed backup's stored file must be its data".to_string(),
        ));
    }
    Ok(())
}
