//! What the SSH jump host's end-to-end test files share: time bounds,
//! addresses, and helpers for users, checksums and audit records. Each test
//! binary uses a subset, hence the `dead_code` allowance.

#![allow(dead_code, reason = "each test binary uses a subset of these helpers")]

use std::time::Duration;

use gatehouse_tests::Daemon;
use gatehouse_tests::netns::Host;
use gatehouse_tests::ssh::{Identity, SshLab};
use serde_json::Value;

/// One `ssh -J` login with two key exchanges, on a loaded 2-core machine.
pub const LOGIN: Duration = Duration::from_secs(30);
/// A refused login or channel answers at once; this only bounds a hang.
pub const REFUSED: Duration = Duration::from_secs(15);
/// An audit record is written before the action it records is acknowledged;
/// this covers the time until the client's command has returned.
pub const AUDIT_WITHIN: Duration = Duration::from_secs(10);
/// Failed logins under attack are aggregated (per source and minute at most).
pub const AGGREGATE_WITHIN: Duration = Duration::from_secs(75);
/// The issue: disabling a user closes their channels within one second; the
/// client needs a moment more to notice and exit.
pub const REVOKED_WITHIN: Duration = Duration::from_millis(1500);
pub const RESEARCH: &str = "10.0.3.140";
pub const PRIVATE2: &str = "10.0.4.10";

/// `user add NAME --group GROUP --ssh-key <id's .pub>`, then `user enable`:
/// the broker only lets active users in, and until the portal exists
/// enabling is how an admin activates a user.
pub fn add_active_user(gw: &Daemon, name: &str, group: &str, id: &Identity) {
    let key = id.public_key_file.to_str().unwrap();
    gw.ctl_ok(&["user", "add", name, "--group", group, "--ssh-key", key]);
    gw.ctl_ok(&["user", "enable", name]);
    let user = gw.ctl_json(&["user", "show", name]);
    assert!(
        user.to_string().contains("\"active\""),
        "{name} is not active after `user enable`: {user}"
    );
}

/// sha256 of `path`, computed on the client (`jump` None) or on the research
/// host through the jump host.
pub fn sha256(
    lab: &SshLab<'_>,
    host: Host,
    id: &Identity,
    jump: Option<&str>,
    path: &std::path::Path,
) -> String {
    let command = format!("sha256sum {}", path.display());
    let out = match jump {
        Some(jump) => {
            let run = lab.ssh(
                host,
                id,
                &["-J", jump, &format!("root@{RESEARCH}"), &command],
                LOGIN,
            );
            assert!(run.success(), "{run}");
            run.stdout
        }
        None => lab
            .topo()
            .exec_ok(host, &["sha256sum", path.to_str().unwrap()]),
    };
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

/// The newest audit record's `seq` (0 when there is none yet).
pub fn last_seq(gw: &Daemon) -> u64 {
    gw.audit_json(&["--limit", "1"])
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// The largest integer anywhere in `value` that is not a time (`*_secs`,
/// `*_ms`): an aggregated record's count.
pub fn max_count(value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::Array(items) => items.iter().map(max_count).max().unwrap_or(0),
        Value::Object(map) => map
            .iter()
            .filter(|(key, _)| !key.ends_with("_secs") && !key.ends_with("_ms"))
            .map(|(_, v)| max_count(v))
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}
