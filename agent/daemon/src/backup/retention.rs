//! Retention: which backups go once a new one is complete.

use super::store::{self, Store, now_unix_ms};
use crate::api::BackupRecord;
use crate::config;
use crate::ops::Locks;

/// Keeps the newest `keep_last` backups and none older than `max_age_days`, but never deletes
/// the newest verified backup.
pub fn apply_retention(config: &config::Backup, locks: &Locks, store: &Store) {
    let backups = match store.list() {
        Ok(backups) => backups,
        Err(error) => {
            tracing::error!(%error, "retention cannot list the backups");
            return;
        }
    };
    let max_age_ms = config.max_age_days.map(|days| u64::from(days) * 86_400_000);
    for doomed in retention_doomed(&backups, config.keep_last, max_age_ms, now_unix_ms()) {
        // A backup being verified, restored or deleted is left for the next run.
        let Some(_lease) = locks.backup(&doomed.id) else {
            continue;
        };
        match store.delete(&doomed.id) {
            Ok(()) => tracing::info!(
                backup = %doomed.id,
                too_many = doomed.too_many,
                too_old = doomed.too_old,
                "retention deleted a backup"
            ),
            Err(error) => {
                tracing::error!(%error, backup = %doomed.id, "retention could not delete")
            }
        }
    }
}

/// A backup retention deletes, and why.
#[derive(Debug, PartialEq, Eq)]
struct Doomed {
    id: String,
    too_many: bool,
    too_old: bool,
}

/// What retention deletes from `backups` (newest first, as `Store::list` orders them by
/// sequence): those past the newest `keep_last` and those older than `max_age_ms`, except the
/// newest verified backup, which is always kept. Age is by the clock at creation; a creation
/// time in the future (a clock stepped back since) counts as age zero.
fn retention_doomed(
    backups: &[BackupRecord],
    keep_last: u32,
    max_age_ms: Option<u64>,
    now_unix_ms: u64,
) -> Vec<Doomed> {
    assert!(
        keep_last >= 1,
        "config validation keeps at least one backup"
    );
    assert!(
        backups
            .windows(2)
            .all(|pair| store::order_key(&pair[0]) >= store::order_key(&pair[1])),
        "backups are listed newest first"
    );
    let newest_verified = backups.iter().position(|backup| {
        backup
            .verification
            .as_ref()
            .is_some_and(|verification| verification.ok)
    });
    let mut doomed = Vec::new();
    for (position, backup) in backups.iter().enumerate() {
        let too_many = position >= keep_last as usize;
        let too_old = max_age_ms
            .is_some_and(|max| now_unix_ms.saturating_sub(backup.manifest.created_unix_ms) > max);
        if (too_many || too_old) && Some(position) != newest_verified {
            doomed.push(Doomed {
                id: backup.id.clone(),
                too_many,
                too_old,
            });
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Verification;

    fn record(
        id: &str,
        sequence: u64,
        created_unix_ms: u64,
        verified: Option<bool>,
    ) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            manifest: store::tests::manifest(id, Some(sequence), created_unix_ms),
            verification: verified.map(|ok| Verification {
                ok,
                verified_unix_ms: 0,
                detail: String::new(),
            }),
            shipped: true,
            hooks: Vec::new(),
        }
    }

    fn doomed_ids(doomed: &[Doomed]) -> Vec<&str> {
        doomed.iter().map(|doomed| doomed.id.as_str()).collect()
    }

    const DAY_MS: u64 = 86_400_000;

    #[test]
    fn retention_keeps_the_newest_and_the_newest_verified() {
        let now = 100 * DAY_MS;
        // Newest first; the two newest failed verification (or were never verified).
        let backups = [
            record("e", 5, now - DAY_MS, Some(false)),
            record("d", 4, now - 2 * DAY_MS, None),
            record("c", 3, now - 40 * DAY_MS, Some(true)),
            record("b", 2, now - 50 * DAY_MS, Some(true)),
            record("a", 1, now - 60 * DAY_MS, Some(true)),
        ];
        // keep_last 2: c is past it and too old, yet it is the newest verified one.
        let doomed = retention_doomed(&backups, 2, Some(30 * DAY_MS), now);
        assert_eq!(doomed_ids(&doomed), ["b", "a"]);
        assert!(
            doomed
                .iter()
                .all(|doomed| doomed.too_many && doomed.too_old)
        );
        // max_age_days alone deletes what is older, but not the newest verified one.
        let doomed = retention_doomed(&backups, 100, Some(45 * DAY_MS), now);
        assert_eq!(doomed_ids(&doomed), ["b", "a"]);
        assert!(
            doomed
                .iter()
                .all(|doomed| !doomed.too_many && doomed.too_old)
        );
        // keep_last alone.
        let doomed = retention_doomed(&backups, 3, None, now);
        assert_eq!(doomed_ids(&doomed), ["b", "a"]);
        assert!(
            doomed
                .iter()
                .all(|doomed| doomed.too_many && !doomed.too_old)
        );
        // Nothing verified: keep_last and age rule alone.
        let unverified: Vec<_> = backups
            .iter()
            .map(|backup| BackupRecord {
                verification: None,
                ..backup.clone()
            })
            .collect();
        assert_eq!(
            doomed_ids(&retention_doomed(&unverified, 1, None, now)),
            ["d", "c", "b", "a"]
        );
    }

    /// After the clock was stepped back, the newest backup has the oldest creation time, and the
    /// older ones have creation times in the future: the newest (by sequence) is kept, and a
    /// creation time in the future is not "old".
    #[test]
    fn retention_after_a_stepped_back_clock() {
        let now = 100 * DAY_MS;
        let backups = [
            record("new", 3, now - 10 * DAY_MS, Some(true)),
            record("old", 2, now + 5 * DAY_MS, Some(true)),
            record("older", 1, now + 4 * DAY_MS, Some(true)),
        ];
        let doomed = retention_doomed(&backups, 2, Some(5 * DAY_MS), now);
        assert_eq!(doomed_ids(&doomed), ["older"]);
        // With one kept, the newest by sequence survives, whatever the clock said.
        assert_eq!(
            doomed_ids(&retention_doomed(&backups, 1, None, now)),
            ["old", "older"]
        );
    }
}
