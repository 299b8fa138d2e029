//! `[backup] schedule`: when the agent takes a backup by itself (issue 15, item 3: scheduled
//! backups live in the agent, so every deployment gets them without a timer and a client).
//!
//! The schedule is a 5-field cron expression (minute hour day-of-month month day-of-week) read
//! in UTC, parsed once when the configuration is read: a bad expression stops the agent with the
//! key and the reason, and nothing downstream parses it again.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest randomized delay: a day (a daily schedule spread over the whole day).
pub const RANDOMIZED_DELAY_MAX_S: u32 = 86_400;

/// Why a `[backup] schedule` text is not a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "{expression:?} is not a 5-field cron expression (minute hour day-of-month month \
         day-of-week, UTC; e.g. \"30 2 * * *\" for 02:30 every day)"
    )]
    NotFiveFields { expression: String },
    /// Five fields, but not a cron expression: croner's reason.
    #[error("{expression:?} is not a valid cron expression: {reason}")]
    Invalid { expression: String, reason: String },
    #[error("{expression:?} never matches a date")]
    NeverMatches { expression: String },
}

/// A parsed schedule: the expression as written (for the effective configuration and the
/// operator) and the parsed form every tick is computed from.
#[derive(Clone)]
pub struct BackupSchedule {
    expression: String,
    cron: croner::Cron,
}

impl BackupSchedule {
    /// `text` as a schedule; an empty (or blank) text is no schedule at all.
    pub fn parse(text: &str) -> Result<Option<BackupSchedule>, ScheduleError> {
        let expression = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if expression.is_empty() {
            return Ok(None);
        }
        let fields = expression.split(' ').count();
        // croner also reads 6- and 7-field forms (seconds, years) and @-nicknames; the contract
        // is the 5 fields every cron reader agrees on.
        if fields != 5 || expression.starts_with('@') {
            return Err(ScheduleError::NotFiveFields { expression });
        }
        let cron = match croner::Cron::from_str(&expression) {
            Ok(cron) => cron,
            Err(error) => {
                let reason = error.to_string();
                return Err(ScheduleError::Invalid { expression, reason });
            }
        };
        let schedule = BackupSchedule { expression, cron };
        // An expression that never matches (31 February) would leave the scheduler idle forever
        // with no word: refused here instead.
        if schedule.next_tick_after(UNIX_EPOCH).is_none() {
            let expression = schedule.expression;
            return Err(ScheduleError::NeverMatches { expression });
        }
        Ok(Some(schedule))
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first tick strictly after `after` (whole minutes, UTC), if the expression has one
    /// within croner's search horizon.
    pub fn next_tick_after(&self, after: SystemTime) -> Option<SystemTime> {
        let since_epoch = after.duration_since(UNIX_EPOCH).ok()?;
        let seconds = i64::try_from(since_epoch.as_secs()).ok()?;
        let at: DateTime<Utc> = DateTime::from_timestamp(seconds, since_epoch.subsec_nanos())?;
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        let next_s = u64::try_from(next.timestamp()).ok()?;
        Some(UNIX_EPOCH + Duration::from_secs(next_s))
    }
}

impl std::fmt::Debug for BackupSchedule {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.expression)
    }
}

impl PartialEq for BackupSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl Serialize for BackupSchedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.expression)
    }
}

/// For `#[serde(deserialize_with)]`: the key's string as a schedule ("" is none); a bad
/// expression is an error at the key, with the reason.
pub fn optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BackupSchedule>, D::Error> {
    let text = String::deserialize(deserializer)?;
    BackupSchedule::parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        let parsed: DateTime<Utc> = text.parse().unwrap();
        UNIX_EPOCH + Duration::from_secs(parsed.timestamp() as u64)
    }

    #[test]
    fn empty_is_none_and_bad_expressions_say_why() {
        assert!(BackupSchedule::parse("").unwrap().is_none());
        assert!(BackupSchedule::parse("   ").unwrap().is_none());
        for (bad, reason) in [
            ("* * * *", "not a 5-field"),
            ("0 * * * * *", "not a 5-field"),
            ("@daily", "not a 5-field"),
            ("61 * * * *", "not a valid cron"),
            ("0 25 * * *", "not a valid cron"),
            ("x y z w v", "not a valid cron"),
            ("0 0 31 2 *", "never matches"),
        ] {
            let error = BackupSchedule::parse(bad).unwrap_err().to_string();
            assert!(error.contains(reason), "{bad}: {error}");
        }
        let schedule = BackupSchedule::parse(" 30  2 * * * ").unwrap().unwrap();
        assert_eq!(schedule.expression(), "30 2 * * *");
    }

    #[test]
    fn ticks_are_utc_and_strictly_after() {
        let daily = BackupSchedule::parse("30 2 * * *").unwrap().unwrap();
        let tick = at("2026-03-01T02:30:00Z");
        assert_eq!(
            daily.next_tick_after(at("2026-03-01T00:00:00Z")),
            Some(tick)
        );
        // At the tick itself the next one is a day later: a run never fires twice for a tick.
        assert_eq!(
            daily.next_tick_after(tick),
            Some(at("2026-03-02T02:30:00Z"))
        );
        let sundays = BackupSchedule::parse("0 4 * * 0").unwrap().unwrap();
        // 2026-03-01 is a Sunday.
        assert_eq!(
            sundays.next_tick_after(at("2026-03-01T04:00:01Z")),
            Some(at("2026-03-08T04:00:00Z"))
        );
    }
}
