//! The backup directory: one sub-directory per complete backup, named by its id.
//!
//! A backup is built in `.partial-<id>` and renamed into place only once its manifest is on disk,
//! so a crash at any point never leaves anything that looks complete. Leftovers are removed at
//! the next start.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::api::{BackupRecord, HookResult, Manifest, Verification};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const VERIFICATION_FILE: &str = "verification.json";
pub const HOOKS_FILE: &str = "hooks.json";
pub const PARTIAL_PREFIX: &str = ".partial-";
/// Written before the agent stops the replica for a copy, removed once it runs again. Found at
/// start-up, it means the agent died in between and must bring the replica back.
pub const REPLICA_STOPPED_MARKER: &str = ".replica-stopped-for-backup";
/// Metadata files are small; a larger one is not ours.
const METADATA_SIZE_MAX_BYTES: u64 = 1024 * 1024;
/// Backups listed at most (retention keeps far fewer).
pub const BACKUPS_LISTED_MAX: usize = 1000;

pub use tb_proto::clock::now_unix_ms;

/// A new backup id: UTC time, replica index and randomness, e.g. `20261123T101500Z-r0-1a2b3c4d`.
/// Ids sort by time.
pub fn new_backup_id(replica: u8) -> String {
    let now = now_unix_ms() / 1000;
    let (year, month, day, hour, minute, second) = civil_from_unix(now);
    let random: u32 = rand::random();
    format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z-r{replica}-{random:08x}")
}

/// Accepts only ids of the form `new_backup_id` makes: no path can escape the backup directory.
pub fn validate_backup_id(id: &str) -> Result<(), String> {
    let bytes = id.as_bytes();
    let shape_ok = bytes.len() >= 23
        && bytes.len() <= 32
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[8] == b'T'
        && bytes[9..15].iter().all(u8::is_ascii_digit)
        && &bytes[15..18] == b"Z-r"
        && id[18..].split_once('-').is_some_and(|(replica, random)| {
            !replica.is_empty()
                && replica.bytes().all(|b| b.is_ascii_digit())
                && random.len() == 8
                && random
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
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

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm), UTC.
fn civil_from_unix(seconds: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year as u64,
        month as u64,
        day as u64,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
    )
}

pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn backup_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    pub fn partial_dir(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{PARTIAL_PREFIX}{id}"))
    }

    pub fn marker(&self) -> PathBuf {
        self.dir.join(REPLICA_STOPPED_MARKER)
    }

    /// Removes half-written backups left by a crash; returns their names.
    pub fn remove_partials(&self) -> std::io::Result<Vec<String>> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(removed);
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(PARTIAL_PREFIX) {
                std::fs::remove_dir_all(entry.path())?;
                removed.push(name);
            }
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Complete backups, newest first.
    pub fn list(&self) -> std::io::Result<Vec<BackupRecord>> {
        let mut ids = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries {
                    let name = entry?.file_name().to_string_lossy().into_owned();
                    if validate_backup_id(&name).is_ok() {
                        ids.push(name);
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(BACKUPS_LISTED_MAX);
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get(&id) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => tracing::warn!(backup = %id, "a backup directory without a manifest"),
                // Listed nowhere, a broken backup would also escape retention: say so loudly.
                Err(error) => tracing::error!(backup = %id, %error, "an unreadable backup"),
            }
        }
        Ok(records)
    }

    /// A complete backup, or None if there is no such backup.
    pub fn get(&self, id: &str) -> std::io::Result<Option<BackupRecord>> {
        let dir = self.backup_dir(id);
        let manifest: Manifest = match read_json(&dir.join(MANIFEST_FILE))? {
            Some(manifest) => manifest,
            None => return Ok(None),
        };
        let verification: Option<Verification> = read_json(&dir.join(VERIFICATION_FILE))?;
        let hooks: Vec<HookResult> = read_json(&dir.join(HOOKS_FILE))?.unwrap_or_default();
        Ok(Some(BackupRecord {
            id: id.to_string(),
            manifest,
            verification,
            shipped: hooks.iter().all(|hook| hook.ok),
            hooks,
        }))
    }

    pub fn delete(&self, id: &str) -> std::io::Result<()> {
        // Rename first, so a crash mid-delete leaves a partial (cleaned at start) rather than a
        // backup with missing files.
        let doomed = self.dir.join(format!("{PARTIAL_PREFIX}deleted-{id}"));
        std::fs::rename(self.backup_dir(id), &doomed)?;
        sync_dir(&self.dir)?;
        std::fs::remove_dir_all(&doomed)?;
        Ok(())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.len() > METADATA_SIZE_MAX_BYTES => {
            Err(std::io::Error::other(format!(
                "{} is larger than {METADATA_SIZE_MAX_BYTES} bytes",
                path.display()
            )))
        }
        Ok(_) => {
            let bytes = std::fs::read(path)?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| std::io::Error::other(format!("{}: {error}", path.display())))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Writes `value` as JSON atomically: temporary name, fsync, rename, fsync of the directory.
pub fn write_json_atomically<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = path.parent().expect("a file inside a directory");
    let temporary = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    let mut file = File::create(&temporary)?;
    file.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_traversal_is_refused() {
        let id = new_backup_id(3);
        validate_backup_id(&id).unwrap();
        assert!(id.contains("Z-r3-"), "{id}");
        for bad in [
            "../etc",
            "20261123T101500Z-r0-1a2b3c4d/../../x",
            "20261123T101500Z-r0-1A2B3C4D",
            "..",
            "",
            ".partial-20261123T101500Z-r0-1a2b3c4d",
            "20261123T101500Z-r0-1a2b3c4",
        ] {
            assert!(validate_backup_id(bad).is_err(), "{bad}");
        }
        validate_backup_id("20261123T101500Z-r0-1a2b3c4d").unwrap();
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
        // 2026-11-23T10:15:00Z
        assert_eq!(civil_from_unix(1_795_428_900), (2026, 11, 23, 10, 15, 0));
        // A leap day.
        assert_eq!(civil_from_unix(951_782_400), (2000, 2, 29, 0, 0, 0));
    }
}
