//! The backup directory: one sub-directory per complete backup, named by its id.
//!
//! A backup is built in `.partial-<id>` and renamed into place only once its manifest is on disk,
//! so a crash at any point never leaves anything that looks complete. Leftovers are removed at
//! the next start.

use std::cmp::Reverse;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::api::{BackupRecord, HookResult, Manifest, Verification};

use super::manifest_rules::{SEQUENCE_MAX, validate_manifest, validate_plain_file_name};

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
/// The last sequence number given to a backup of this directory (see `Manifest::sequence`).
pub const SEQUENCE_FILE: &str = ".sequence";
/// Backups and everything in them are a full copy of a financial ledger: owner only.
pub const DIR_MODE: u32 = 0o700;
pub use tb_proto::backup_files::{FILE_MODE, create_private_file};

use tb_proto::backup_modes::Compression;
pub use tb_proto::clock::now_unix_ms;

/// The stored file of an uncompressed backup, and of a zstd-compressed one.
pub const RAW_FILE: &str = Compression::None.stored_file();
pub const COMPRESSED_FILE: &str = Compression::Zstd.stored_file();

/// A new backup id, e.g. `20261123T101500Z-r0-1a2b3c4d` (see `crate::ids`).
/// Ids are names, not an order: backups order by `Manifest::sequence` (see `order_key`).
pub fn new_backup_id(replica: u8) -> String {
    crate::ids::timestamped(replica)
}

/// Accepts only ids of the form `new_backup_id` makes (the rule lives in the contract, beside
/// the pattern docs/openapi.json carries): no path can escape the backup directory.
pub use tb_proto::ids::validate_backup_id;

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

    /// Complete backups, newest first: by `Manifest::sequence`, never by id or clock (see
    /// `order_key`).
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
        if ids.len() > BACKUPS_LISTED_MAX {
            // Only the bound needs the ids' order, which is roughly by time; the list itself is
            // ordered by sequence below.
            tracing::error!(
                count = ids.len(),
                max = BACKUPS_LISTED_MAX,
                "more backups than can be listed; the oldest by id are left out"
            );
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.truncate(BACKUPS_LISTED_MAX);
        }
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get(&id) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => tracing::warn!(backup = %id, "a backup directory without a manifest"),
                // Listed nowhere, a broken backup would also escape retention: say so loudly.
                Err(error) => tracing::error!(backup = %id, %error, "an unreadable backup"),
            }
        }
        records.sort_unstable_by_key(|record| Reverse(order_key(record)));
        Ok(records)
    }

    /// A complete backup, or None if there is no such backup. Everything in it is untrusted
    /// (backups come back from off-host storage): the id is checked, files are opened only
    /// inside the backup's own directory, and a manifest that fails `validate_manifest` is an
    /// `InvalidData` error.
    pub fn get(&self, id: &str) -> std::io::Result<Option<BackupRecord>> {
        validate_backup_id(id).map_err(std::io::Error::other)?;
        let manifest: Manifest = match self.read_json(id, MANIFEST_FILE)? {
            Some(manifest) => manifest,
            None => return Ok(None),
        };
        validate_manifest(id, &manifest).map_err(|why| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("backup {id} has an invalid manifest, so nothing of it is used: {why}"),
            )
        })?;
        let verification: Option<Verification> = self.read_json(id, VERIFICATION_FILE)?;
        let hooks: Vec<HookResult> = self.read_json(id, HOOKS_FILE)?.unwrap_or_default();
        Ok(Some(BackupRecord {
            id: id.to_string(),
            manifest,
            verification,
            shipped: hooks.iter().all(|hook| hook.ok),
            hooks,
        }))
    }

    /// Opens `name` for reading inside backup `id`'s directory, and nowhere else: `name` must be
    /// a plain file name, neither the backup directory nor the file may be a symbolic link
    /// (O_NOFOLLOW, relative to the opened directory), and the file must be a regular file.
    /// NotFound when the directory or the file does not exist.
    pub fn open_in_backup(&self, id: &str, name: &str) -> std::io::Result<File> {
        validate_backup_id(id).map_err(std::io::Error::other)?;
        validate_plain_file_name(name).map_err(std::io::Error::other)?;
        let store = File::open(&self.dir)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let backup = nix::fcntl::openat(&store, id, flags | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|errno| refuse_link(errno, id))?;
        // O_NONBLOCK: a FIFO planted under a known name must not hang the open.
        let file = nix::fcntl::openat(&backup, name, flags | OFlag::O_NONBLOCK, Mode::empty())
            .map_err(|errno| refuse_link(errno, &format!("{id}/{name}")))?;
        let file = File::from(file);
        if !file.metadata()?.file_type().is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{id}/{name} is not a regular file; refusing to use it"),
            ));
        }
        Ok(file)
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        name: &str,
    ) -> std::io::Result<Option<T>> {
        let file = match self.open_in_backup(id, name) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut bytes = Vec::new();
        // One byte past the bound tells a file that is too large from one that is just right.
        file.take(METADATA_SIZE_MAX_BYTES + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > METADATA_SIZE_MAX_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{id}/{name} is larger than {METADATA_SIZE_MAX_BYTES} bytes"),
            ));
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{id}/{name}: {error}"),
            )
        })
    }

    /// Creates the backup root (if missing) and a backup's partial directory, owner-only.
    pub fn create_partial_dir(&self, id: &str) -> std::io::Result<PathBuf> {
        create_private_dir_all(&self.dir)?;
        let partial = self.partial_dir(id);
        DirBuilder::new().mode(DIR_MODE).create(&partial)?;
        Ok(partial)
    }

    /// The sequence number for a new backup: one more than the last one given here and than any
    /// listed backup's, so backups order correctly whatever the clock does. Recorded before it is
    /// used, so a number is never given twice. Callers hold the control lock (one backup at a
    /// time per host).
    pub fn next_sequence(&self, listed: &[BackupRecord]) -> std::io::Result<u64> {
        let path = self.dir.join(SEQUENCE_FILE);
        let mut text = String::new();
        let read = File::open(&path).and_then(|file| file.take(64).read_to_string(&mut text));
        let last_given = match read {
            Ok(_) => text.trim().parse::<u64>().map_err(|error| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {error}", path.display()),
                )
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(error),
        };
        let last_listed = listed
            .iter()
            .filter_map(|record| record.manifest.sequence)
            .max()
            .unwrap_or(0);
        let next = last_given.max(last_listed) + 1;
        if next > SEQUENCE_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "backup sequence {next} is past {SEQUENCE_MAX}: {} is corrupt",
                    path.display()
                ),
            ));
        }
        write_json_atomically(&path, &next)?;
        Ok(next)
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

/// Writes `value` as JSON atomically: temporary name, fsync, rename, fsync of the directory.
pub fn write_json_atomically<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = path.parent().expect("a file inside a directory");
    // A name of its own per write: two writers of the same file (a verify and a backup's
    // verification, say) never share a temporary file, and the last rename wins whole.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let temporary = dir.join(format!(
        ".{}.{}-{}-{:08x}.tmp",
        path.file_name().expect("a file name").to_string_lossy(),
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        rand::random::<u32>()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parent owner-only (0700). An existing directory is left as it
/// is, but one that others can read is reported.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir)?.permissions());
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", mode & 0o7777),
            "the backup directory is open to other users; backups in it are owner-only, but \
             chmod 700 it"
        );
    }
    Ok(())
}

fn refuse_link(errno: nix::errno::Errno, what: &str) -> std::io::Error {
    match errno {
        // O_NOFOLLOW on a symbolic link: ELOOP; O_DIRECTORY on a non-directory: ENOTDIR.
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what} is a symbolic link or not what it should be; refusing to follow it"),
        ),
        errno => {
            let error = std::io::Error::from(errno);
            std::io::Error::new(error.kind(), format!("{what}: {error}"))
        }
    }
}

/// Newest last. Backups with a sequence order by it. A manifest written before sequences
/// existed orders before all of them (it is older than any agent that writes sequences), and
/// among its kind by creation time, then id: the best the older format allows.
pub fn order_key(record: &BackupRecord) -> (bool, u64, u64, String) {
    let manifest = &record.manifest;
    (
        manifest.sequence.is_some(),
        manifest.sequence.unwrap_or(0),
        manifest.created_unix_ms,
        record.id.clone(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
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

    pub(crate) fn manifest(id: &str, sequence: Option<u64>, created_unix_ms: u64) -> Manifest {
        let hash = "ab".repeat(32);
        Manifest {
            format_version: 1,
            backup_id: id.into(),
            cluster_id: "7".into(),
            replica_index: 0,
            replica_count: 3,
            tigerbeetle_version: Some("0.16.78".into()),
            host: "host".into(),
            agent_version: "0".into(),
            created_unix_ms,
            sequence,
            file: "data.tigerbeetle.zst".into(),
            compression: "zstd".into(),
            data_size_bytes: 10,
            data_blake3: hash.clone(),
            stored_size_bytes: 5,
            stored_blake3: hash,
            reflink: false,
            timings: Default::default(),
        }
    }

    fn temporary_store(name: &str) -> Store {
        let dir =
            std::env::temp_dir().join(format!("tb-agent-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create_private_dir_all(&dir).unwrap();
        Store { dir }
    }

    fn write_backup(store: &Store, manifest: &Manifest) {
        let dir = store.backup_dir(&manifest.backup_id);
        std::fs::create_dir(&dir).unwrap();
        write_json_atomically(&dir.join(MANIFEST_FILE), manifest).unwrap();
    }

    #[test]
    fn manifests_are_checked_field_by_field() {
        let id = "20261123T101500Z-r0-1a2b3c4d";
        validate_manifest(id, &manifest(id, Some(1), 1)).unwrap();
        validate_manifest(id, &manifest(id, None, 1)).unwrap();
        let mut raw = manifest(id, Some(1), 1);
        raw.compression = "none".into();
        raw.file = "data.tigerbeetle".into();
        raw.stored_size_bytes = raw.data_size_bytes;
        validate_manifest(id, &raw).unwrap();
        type Tamper = fn(&mut Manifest);
        let cases: &[(&str, Tamper)] = &[
            ("file", |m| {
                m.file = "../../../../../../../../etc/shadow".into()
            }),
            ("file", |m| m.file = "/etc/shadow".into()),
            ("file", |m| m.file = "..".into()),
            ("file", |m| m.file = ".".into()),
            ("file", |m| m.file = "a/b".into()),
            ("file", |m| m.file = "".into()),
            ("file", |m| m.file = "manifest.json".into()),
            ("compression", |m| m.compression = "gzip".into()),
            ("blake3", |m| m.data_blake3 = "AB".repeat(32)),
            ("blake3", |m| m.stored_blake3 = "ab".repeat(31)),
            ("blake3", |m| m.stored_blake3 = "zz".repeat(32)),
            ("sizes", |m| m.data_size_bytes = u64::MAX),
            ("sizes", |m| m.stored_size_bytes = 1 << 50),
            ("backup_id", |m| {
                m.backup_id = "20261123T101500Z-r0-00000000".into()
            }),
            ("cluster_id", |m| m.cluster_id = "-1".into()),
            ("cluster_id", |m| m.cluster_id = "9".repeat(40)),
            ("replica", |m| m.replica_index = 3),
            ("replica", |m| m.replica_count = 7),
            ("host", |m| m.host = "a\nb".into()),
            ("agent_version", |m| m.agent_version = "x".repeat(300)),
            ("format_version", |m| m.format_version = 2),
            ("created_unix_ms", |m| m.created_unix_ms = u64::MAX),
            ("sequence", |m| m.sequence = Some(0)),
            ("sequence", |m| m.sequence = Some(u64::MAX)),
        ];
        for (field, tamper) in cases {
            let mut tampered = manifest(id, Some(1), 1);
            tamper(&mut tampered);
            let error = validate_manifest(id, &tampered).unwrap_err();
            assert!(error.to_string().contains(field), "{field}: {error}");
        }
        // An uncompressed backup whose stored file is not its data.
        raw.stored_blake3 = "cd".repeat(32);
        assert!(validate_manifest(id, &raw).is_err());
    }

    /// Two backups in the same second whose random suffixes sort the other way, and a backup
    /// taken after the clock was stepped back (its id and creation time are the oldest): the
    /// list orders them by sequence. Manifests without a sequence (the older format) come
    /// before them, by creation time.
    #[test]
    fn backups_order_by_sequence_not_by_id_or_clock() {
        let store = temporary_store("order");
        let backups = [
            ("20261123T101500Z-r0-00000001", None, 3_000),
            ("20261123T101500Z-r0-00000002", None, 2_000),
            ("20261123T101501Z-r0-ffffffff", Some(5), 9_000),
            ("20261123T101501Z-r0-00000000", Some(6), 9_000),
            ("20200101T000000Z-r0-aaaaaaaa", Some(7), 1_000),
        ];
        for (id, sequence, created_unix_ms) in backups {
            write_backup(&store, &manifest(id, sequence, created_unix_ms));
        }
        let listed: Vec<String> = store.list().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(
            listed,
            [
                "20200101T000000Z-r0-aaaaaaaa",
                "20261123T101501Z-r0-00000000",
                "20261123T101501Z-r0-ffffffff",
                "20261123T101500Z-r0-00000001",
                "20261123T101500Z-r0-00000002",
            ]
        );
        // The next sequence is past every listed one and every one given before, even when
        // the backups that had them are gone.
        let records = store.list().unwrap();
        assert_eq!(store.next_sequence(&records).unwrap(), 8);
        assert_eq!(store.next_sequence(&[]).unwrap(), 9);
        assert_eq!(store.next_sequence(&records).unwrap(), 10);
        std::fs::remove_dir_all(&store.dir).unwrap();
    }

    /// Files of a backup are opened only inside its directory: a tampered manifest, a symbolic
    /// link in place of a file or of the backup directory, or a FIFO, are refused.
    #[test]
    fn files_open_only_inside_the_backup() {
        let store = temporary_store("open");
        let secret = store.dir.join("secret");
        std::fs::write(&secret, "secret").unwrap();
        let id = "20261123T101500Z-r0-1a2b3c4d";
        let mut tampered = manifest(id, Some(1), 1);
        tampered.file = "../secret".into();
        write_backup(&store, &tampered);
        let error = store.get(id).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
        assert!(error.to_string().contains("invalid manifest"), "{error}");
        assert!(
            store.list().unwrap().is_empty(),
            "a tampered backup is not listed"
        );
        for name in ["../secret", "/tmp", "..", ".", "a/b"] {
            assert!(store.open_in_backup(id, name).is_err(), "{name}");
        }

        let linked = "20261123T101500Z-r0-2a2b3c4d";
        write_backup(&store, &manifest(linked, Some(2), 1));
        let dir = store.backup_dir(linked);
        std::os::unix::fs::symlink(&secret, dir.join("data.tigerbeetle.zst")).unwrap();
        let error = store
            .open_in_backup(linked, "data.tigerbeetle.zst")
            .unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        nix::unistd::mkfifo(&dir.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let error = store.open_in_backup(linked, "fifo").unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");

        // A backup directory that is a link to another backup's directory.
        let alias = "20261123T101500Z-r0-3a2b3c4d";
        std::os::unix::fs::symlink(&dir, store.backup_dir(alias)).unwrap();
        let error = store.open_in_backup(alias, MANIFEST_FILE).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(store.get(alias).is_err());

        std::fs::write(dir.join("data.tigerbeetle.real"), "x").unwrap();
        store
            .open_in_backup(linked, "data.tigerbeetle.real")
            .unwrap();
        std::fs::remove_dir_all(&store.dir).unwrap();
    }

    #[test]
    fn directories_and_files_are_owner_only() {
        let store = temporary_store("modes");
        let root = store.dir.join("a/b");
        let nested = Store { dir: root.clone() };
        let partial = nested
            .create_partial_dir("20261123T101500Z-r0-1a2b3c4d")
            .unwrap();
        let mode = |path: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions())
                & 0o777
        };
        for dir in [&store.dir.join("a"), &root, &partial] {
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
        }
        write_json_atomically(&partial.join(MANIFEST_FILE), &1).unwrap();
        assert_eq!(mode(&partial.join(MANIFEST_FILE)), 0o600);
        create_private_file(&partial.join("x")).unwrap();
        assert_eq!(mode(&partial.join("x")), 0o600);
        std::fs::remove_dir_all(&store.dir).unwrap();
    }

    #[test]
    fn concurrent_atomic_writes_of_one_file_all_succeed_whole() {
        let dir = std::env::temp_dir().join(format!("tb-atomic-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("verification.json");
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for write in 0..50 {
                        let value = serde_json::json!({ "writer": writer, "write": write,
                            "padding": "x".repeat(4096) });
                        write_json_atomically(&path, &value).unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("no write failed");
        }
        let last: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(last["write"], 49);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["verification.json"], "temporary files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
