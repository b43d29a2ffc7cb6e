//! Backup and restore, end to end: `accessctl backup` from a running
//! accessd, `accessd restore` with it stopped, and the restored gateway
//! serving exactly what the backup held with an intact audit chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::os::unix::fs::PermissionsExt;

use gatehouse_tests::{Daemon, stderr, stdout};

fn restore(daemon: &Daemon, file: &std::path::Path) -> std::process::Output {
    daemon.offline(&["restore".as_ref(), file.as_os_str()])
}

#[test]
fn a_backup_restores_users_devices_and_an_intact_audit_chain() {
    let mut daemon = Daemon::start();
    daemon.ctl_ok(&["user", "add", "alice", "--group", "research"]);
    let laptop = daemon.ctl_json(&["device", "config", "alice", "laptop"]);
    let file = daemon.dir.path().join("gw-backup.db");
    let info = daemon.ctl_json(&["backup", file.to_str().unwrap()]);
    assert_eq!(info["users"], 1);
    assert_eq!(info["devices"], 1);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a backup holds secrets");
    let again = daemon.ctl(&["backup", file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    let head_seq = info["audit_head_seq"].as_u64().unwrap();
    let kinds = daemon.ctl_ok(&["audit", "--kind", "admin.backup"]);
    assert!(
        kinds.contains("admin.backup"),
        "the backup is audited: {kinds}"
    );

    // Life goes on after the backup ...
    daemon.ctl_ok(&["user", "add", "bob", "--group", "research"]);
    // ... and a restore is refused while accessd runs.
    let refused = restore(&daemon, &file);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("stop it first"),
        "{}",
        stderr(&refused)
    );

    assert!(daemon.stop().success());
    let restored = restore(&daemon, &file);
    assert!(restored.status.success(), "{}", stderr(&restored));
    let said = stdout(&restored);
    assert!(said.contains("1 user(s), 1 device(s)"), "{said}");
    assert!(said.contains("gatehouse.db.replaced-"), "{said}");

    daemon.spawn();
    let users = daemon.ctl_json(&["user", "list"]);
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice"], "bob came after the backup");
    let shown = daemon.ctl_json(&["user", "show", "alice"]);
    assert_eq!(
        shown["devices"][0]["public_key"],
        laptop["device"]["public_key"]
    );
    let verify = daemon.ctl_json(&["audit", "verify"]);
    assert_eq!(verify["intact"], true, "{verify}");
    let records = verify["records"].as_u64().unwrap();
    // The backup's records, then what the restarted gateway wrote since.
    assert!(records >= head_seq, "{records} < {head_seq}");
    // The chain continues from the restored head.
    daemon.ctl_ok(&["user", "add", "carol", "--group", "research"]);
    let verify = daemon.ctl_json(&["audit", "verify"]);
    assert_eq!(verify["intact"], true, "{verify}");
    assert_eq!(verify["records"].as_u64().unwrap(), records + 1);

    let junk = daemon.dir.path().join("junk.db");
    std::fs::write(&junk, "not a backup").unwrap();
    assert!(daemon.stop().success());
    let refused = restore(&daemon, &junk);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not a usable gatehouse backup"),
        "{}",
        stderr(&refused)
    );
}
