//! Wall-clock helpers: the store keeps unix seconds, the API shows RFC 3339 UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// 9999-12-31T23:59:59Z, the last time RFC 3339 can write.
pub const MAX_UNIX: i64 = 253_402_300_799;

/// RFC 3339, UTC, whole seconds; a time past [`MAX_UNIX`] is shown as it
/// (the format has four-digit years), never a panic.
pub fn rfc3339(unix: i64) -> String {
    let secs = u64::try_from(unix.min(MAX_UNIX)).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// RFC 3339, UTC, with milliseconds (what the audit log stamps records with).
pub fn rfc3339_millis(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

pub fn rfc3339_opt(unix: Option<i64>) -> Option<String> {
    unix.map(rfc3339)
}

/// Parses an RFC 3339 time (a `Z` or no offset) into unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    let secs = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_year_9999_do_not_panic() {
        assert_eq!(rfc3339(MAX_UNIX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(MAX_UNIX + 1), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-25T10:00:00Z"), Some(1_795_600_800));
        assert_eq!(parse_rfc3339(&rfc3339(1_795_600_800)), Some(1_795_600_800));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
