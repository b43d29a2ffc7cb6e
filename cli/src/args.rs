//! Argument value parsers shared by the commands: names are checked against
//! the naming rule before any request is made, so a typo is a usage error
//! (exit 2) with the rule spelled out, not a round trip to the daemon.
//! Audit kind prefixes are the exception: completed, never refused.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::time::Duration;

use clap::builder::{PossibleValue, StringValueParser, TypedValueParser};
use gatehouse_config::audit_kind::AuditKind;
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

/// `audit --kind`: a prefix of whole dotted segments, passed on as written.
/// Shells complete every kind and every leading part of one (from
/// [`AuditKind::ALL`]); nothing is refused, because the filter is a prefix
/// match and a newer accessd may write kinds this accessctl does not know.
#[derive(Debug, Clone, Copy)]
pub struct KindPrefix;

impl TypedValueParser for KindPrefix {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        let values = kind_prefixes()
            .into_iter()
            .map(|(prefix, help)| PossibleValue::new(prefix).help(help));
        Some(Box::new(values))
    }
}

/// The long help of `audit --kind`: the rule, then every kind with its summary.
pub fn kind_long_help() -> String {
    let mut help = String::from(
        "Records whose kind starts with these dotted segments: `ssh` matches \
         ssh.auth.fail and ssh.session.end, `vpn.acl` matches vpn.acl.deny, a whole \
         kind matches itself. Any prefix is passed on as written.\n\nKinds:",
    );
    let width = AuditKind::ALL
        .iter()
        .map(|k| k.as_str().len())
        .max()
        .unwrap_or(0);
    let indent = " ".repeat(2 + width + 2);
    for kind in AuditKind::ALL {
        let _ = write!(help, "\n  {:<width$}  ", kind.as_str());
        let lines = wrap_words(kind.summary(), HELP_WIDTH.saturating_sub(indent.len()));
        help.push_str(&lines.join(&format!("\n{indent}")));
    }
    help
}

/// Lines of the kind list stay this short, so that clap (which indents an
/// option's long help by 10 columns) does not wrap them again, losing the
/// hanging indent, on a terminal of 80 columns or more.
const HELP_WIDTH: usize = 70;

/// `text` in lines of at most `width` characters (a longer word stays whole).
fn wrap_words(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// Every kind and every leading part of one, in [`AuditKind::ALL`]'s order
/// with each prefix just before its first kind, and the help to show.
fn kind_prefixes() -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for kind in AuditKind::ALL {
        let name = kind.as_str();
        let prefixes = name.match_indices('.').map(|(at, _)| &name[..at]);
        for prefix in prefixes {
            if !out.iter().any(|(seen, _)| *seen == prefix) {
                out.push((prefix, format!("every {prefix}.* kind")));
            }
        }
        match out.iter_mut().find(|(seen, _)| *seen == name) {
            // `aws.change` is a kind and the prefix of `aws.change.fail`.
            Some(entry) => entry.1 = kind.summary().to_owned(),
            None => out.push((name, kind.summary().to_owned())),
        }
    }
    out
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

    #[test]
    fn kind_prefixes_are_every_kind_and_every_leading_part() {
        let values = kind_prefixes();
        let names: Vec<&str> = values.iter().map(|(name, _)| *name).collect();
        for kind in AuditKind::ALL {
            let name = kind.as_str();
            let at = names.iter().position(|n| *n == name).expect(name);
            assert_eq!(values[at].1, kind.summary());
            let first = name.split('.').next().expect("a segment");
            let prefix_at = names.iter().position(|n| *n == first).expect(first);
            assert!(prefix_at < at, "{first} comes before {name}");
        }
        for prefix in [
            "user",
            "user.key",
            "vpn.acl",
            "ssh.session",
            "aws.change",
            "config.reload",
        ] {
            assert!(names.contains(&prefix), "{prefix} in {names:?}");
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        let every: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| AuditKind::parse(n).is_none())
            .collect();
        assert!(
            every.iter().all(|n| AuditKind::ALL
                .iter()
                .any(|k| k.as_str().starts_with(&format!("{n}.")))),
            "{every:?}"
        );
    }

    #[test]
    fn kind_long_help_lists_every_kind_in_short_lines() {
        let help = kind_long_help();
        let list = help.split("\nKinds:\n").nth(1).expect("a kind list");
        let unwrapped = list.split_whitespace().collect::<Vec<_>>().join(" ");
        for kind in AuditKind::ALL {
            let entry = format!("{} {}", kind.as_str(), kind.summary());
            assert!(unwrapped.contains(&entry), "{entry}");
        }
        for line in list.lines() {
            assert!(line.len() <= HELP_WIDTH, "{line:?}");
        }
    }

    #[test]
    fn words_wrap_at_the_width() {
        assert_eq!(
            wrap_words("an admin closed a   live channel", 12),
            ["an admin", "closed a", "live channel"]
        );
        assert_eq!(
            wrap_words("unbreakable-word x", 4),
            ["unbreakable-word", "x"]
        );
        assert!(wrap_words("", 10).is_empty());
    }
}
