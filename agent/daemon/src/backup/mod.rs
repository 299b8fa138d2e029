//! Cold backups that keep the cluster available, verification, retention, shipping hooks,
//! `tigerbeetle recover` for a lost data file, and disaster-recovery restore.
//!
//! TigerBeetle allows copying a data file only while its replica is stopped (or through an atomic
//! clone), so a backup stops this one replica — after the quorum guard says the rest of the
//! cluster keeps committing without it — clones or copies the file, and starts it again. Hashing,
//! compression and shipping happen afterwards, from the copy, with the replica already back.

pub mod cold_copy;
mod configured;
mod create;
mod existing;
pub mod hooks;
pub mod manifest_rules;
mod marker;
pub mod recover;
pub mod restore;
pub mod retention;
pub mod store;

pub use configured::{blocking, store};
pub use create::backup;
pub use existing::{delete, find_backup_blocking, stored_file, verify, verify_files};
pub use marker::{recover_after_crash, remove_marker};
