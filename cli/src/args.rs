//! Argument value parsers shared by the commands: names are checked against
//! the naming rule before any request is made, so a typo is a usage error
//! (exit 2) with the rule spelled out, not a round trip to the daemon.

use std::time::Duration;

use gatehouse_config::names;

/// A user name (`[a-z][a-z0-9._-]{0,31}`).
pub fn user_name(s: &str) -> Result<String, String> {
    names::check_name("user", s).map(|()| s.to_owned())
}

/// A group name (same rule as users).
pub fn group_name(s: &str) -> Result<String, String> {
    names::check_name("group", s).map(|()| s.to_owned())
}

/// A device name (same rule as users).
pub fn device_name(s: &str) -> Result<String, String> {
    names::check_name("device", s).map(|()| s.to_owned())
}

/// A positive human duration: `30d`, `12h`, `1w 2d`.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected a duration like 30d, 12h or 90m)"))?;
    if d.as_secs() == 0 {
        return Err("the duration must be at least one second".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        assert_eq!(user_name("alice").as_deref(), Ok("alice"));
        let err = user_name("Alice").expect_err("uppercase");
        assert!(err.contains("invalid user name \"Alice\""), "{err}");
        assert!(group_name("research").is_ok());
        assert!(device_name("laptop-2").is_ok());
        assert!(device_name("../etc").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            positive_duration("30d"),
            Ok(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(positive_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("soon").is_err());
    }
}
