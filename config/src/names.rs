//! The naming rule shared by users, groups and devices: `[a-z][a-z0-9._-]{0,31}`.
//! Short, lowercase and shell-safe, so a name can appear in a path, a tag, a
//! log line or a URL without escaping.

/// The rule as people read it, for error messages.
pub const NAME_RULE: &str =
    "1 to 32 characters: a lowercase letter, then lowercase letters, digits, '.', '_' or '-'";

/// True when `name` follows the naming rule.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 32
        && first.is_ascii_lowercase()
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Checks `name`, returning a message that names what was wrong with it.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(format!("invalid {what} name {name:?}: {NAME_RULE}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_shapes() {
        for ok in ["a", "alice", "bob.smith", "ops_2", "x-y", &"a".repeat(32)] {
            assert!(is_valid_name(ok), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "Alice",
            "1bob",
            ".x",
            "-x",
            "a b",
            "a/b",
            "ä",
            &"a".repeat(33),
            "a\n",
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert!(
            check_name("user", "Bob")
                .unwrap_err()
                .contains("invalid user name \"Bob\"")
        );
    }
}
