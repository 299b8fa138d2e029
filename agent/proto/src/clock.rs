//! Wall-clock time as the API and manifests carry it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is before 1970.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_millis() as u64)
}

/// `time` as RFC 3339 in UTC, to the second (`2026-03-01T02:30:00Z`), as the API writes times.
pub fn rfc3339(time: SystemTime) -> String {
    // Before 1970 (a clock not yet set) reads as the epoch, as `now_unix_ms` does.
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let utc = i64::try_from(seconds)
        .ok()
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
        .unwrap_or_default();
    utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The inverse of [`rfc3339`] (any offset); None for a text that is not RFC 3339 or a time
/// before 1970.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let seconds = u64::try_from(parsed.timestamp()).ok()?;
    Some(UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_is_utc_to_the_second() {
        let time = UNIX_EPOCH + Duration::from_millis(1_772_332_200_999);
        assert_eq!(rfc3339(time), "2026-03-01T02:30:00Z");
        let whole = UNIX_EPOCH + Duration::from_secs(1_772_332_200);
        assert_eq!(parse_rfc3339("2026-03-01T02:30:00Z"), Some(whole));
        assert_eq!(parse_rfc3339("2026-03-01T03:30:00+01:00"), Some(whole));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
