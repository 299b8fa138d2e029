//! The shape of the ids this agent makes, for backups and for jobs: UTC time, replica index and
//! randomness, e.g. `20261123T101500Z-r0-1a2b3c4d` (`tb_proto::ids` holds the patterns the
//! contract accepts). A leaf: backups and jobs each name their ids from here.

use tb_proto::clock::now_unix_ms;

/// A new id: the current UTC second, the replica's index and 32 random bits.
pub fn timestamped(replica: u8) -> String {
    let now = now_unix_ms() / 1000;
    let (year, month, day, hour, minute, second) = civil_from_unix(now);
    let random: u32 = rand::random();
    format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z-r{replica}-{random:08x}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
        // 2026-11-23T10:15:00Z
        assert_eq!(civil_from_unix(1_795_428_900), (2026, 11, 23, 10, 15, 0));
        // A leap day.
        assert_eq!(civil_from_unix(951_782_400), (2000, 2, 29, 0, 0, 0));
    }
}
