//! What the SSH jump host's end-to-end test files share: time bounds,
//! addresses, and helpers for users, checksums, audit records, the portal
//! (curl from the client namespace) and ssh-keygen. Each test
//! binary uses a subset, hence the `dead_code` allowance.

#![allow(dead_code, reason = "each test binary uses a subset of these helpers")]

use std::path::Path;
use std::time::Duration;

use gatehouse_tests::netns::{Host, Topology};
use gatehouse_tests::ssh::{Identity, SshLab};
use gatehouse_tests::{Daemon, stdout};
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

/// curl from the client namespace with a cookie jar, `args` before the
/// URL; (status, body).
pub fn curl(topo: &Topology, jar: &Path, args: &[String], url: &str) -> (u16, String) {
    let jar = jar.to_str().unwrap();
    let mut argv: Vec<&str> = vec![
        "curl",
        "-sk",
        "--max-time",
        "20",
        "-c",
        jar,
        "-b",
        jar,
        "-o",
        "/dev/stdout",
        "-w",
        "\n%{http_code}",
    ];
    argv.extend(args.iter().map(String::as_str));
    argv.push(url);
    let text = stdout(&topo.exec(Host::Client, &argv));
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// A JSON call to the portal API; (status, answer).
pub fn portal(
    topo: &Topology,
    jar: &Path,
    url: &str,
    csrf: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let args = [
        "-H".to_string(),
        "content-type: application/json".into(),
        "-H".into(),
        format!("x-csrf-token: {}", csrf.unwrap_or("")),
        "-d".into(),
        body.to_string(),
    ];
    let (status, text) = curl(topo, jar, &args, url);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A fresh ed25519 key pair `dir/name` (and `.pub`), without a passphrase.
pub fn new_key(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    gatehouse_tests::ssh::new_key(&path, name);
    path
}

/// `ssh-keygen ARGS` on the test host; (success, stdout + stderr).
pub fn keygen(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("ssh-keygen")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `accessctl user add NAME --group GROUP --ssh-key <id's .pub>`, then
/// enrollment on the portal at `base` from the client namespace with
/// [`gatehouse_tests::portal::PASSWORD`], its cookies in `jar`; returns the
/// login answer (with `csrf_token`).
pub fn enroll_on_portal(
    topo: &Topology,
    gw: &Daemon,
    base: &str,
    jar: &Path,
    (name, group, id): (&str, &str, &Identity),
) -> Value {
    let added = gw.ctl_json(&[
        "user",
        "add",
        name,
        "--group",
        group,
        "--ssh-key",
        id.public_key_file.to_str().unwrap(),
    ]);
    let token = added["enrollment"]["token"].as_str().unwrap();
    let (status, login) = portal(
        topo,
        jar,
        &format!("{base}/api/v1/enroll/{token}"),
        None,
        &serde_json::json!({ "password": gatehouse_tests::portal::PASSWORD }),
    );
    assert_eq!(status, 200, "{login}");
    login
}
