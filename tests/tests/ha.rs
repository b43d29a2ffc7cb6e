//! Two gateways of an HA pair on one real PostgreSQL server (issue 14):
//! the lease moves as a pair's operators rely on it. These run the real
//! accessd and accessctl on the host, without the data plane or AWS (the
//! failover with stock WireGuard clients and moto is tests/ha_failover.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use gatehouse_tests::postgres::PgServer;
use gatehouse_tests::{Daemon, ha_role, stderr};
use nix::sys::signal::Signal;

/// Waits (at most `limit`) until `gw` reports `want`; returns how long.
fn until_role(gw: &Daemon, want: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if ha_role(gw) == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "not {want} within {limit:?}:\n{}",
            gw.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// gw-a started and active, then gw-b started.
fn start_pair(pg: &PgServer, dir: &std::path::Path) -> (Daemon, Daemon) {
    let a = Daemon::start_with(&pg.pair_config(dir, "gw-a"));
    until_role(&a, "active", Duration::from_secs(5));
    let b = Daemon::start_with(&pg.pair_config(dir, "gw-b"));
    (a, b)
}

fn kinds(gw: &Daemon) -> Vec<String> {
    gw.audit_of("ha")
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["kind"].as_str().unwrap(),
                r["target"].as_str().unwrap()
            )
        })
        .collect()
}

/// Issue 24, finding 4: a second installation given a node's name (a
/// copied config) refuses to start, naming the installation that reports
/// under it, instead of taking the lease from it every second; the first
/// stays active; once the first has stopped, the name is free.
#[test]
fn a_copied_node_name_refuses_to_start_and_names_the_other() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut copy) = start_pair(&pg, dir.path());
    assert!(copy.stop().success());
    copy.write_config(&pg.pair_config(dir.path(), "gw-a"));
    let refused = copy.offline(&[]);
    assert!(!refused.status.success(), "the copy started");
    let said = stderr(&refused);
    let installation = std::fs::read_to_string(a.state_dir.join("installation-id")).unwrap();
    assert!(
        said.contains("\"gw-a\"") && said.contains(installation.trim()),
        "{said}"
    );
    assert_eq!(ha_role(&a), "active", "the first kept its lease");
    let status = a.ctl_json(&["ha", "status"]);
    assert_eq!(status["lease"]["generation"], 1, "{status}");

    assert!(a.stop().success());
    copy.spawn();
    until_role(&copy, "active", Duration::from_secs(5));
}

/// The first gateway takes the lease; the second stays standby and shares
/// its users. A planned stop (SIGTERM) hands over within 2 s; a killed
/// active (SIGKILL) fails over once its lease runs out, recorded as
/// `ha.failover` with how long the pair had no active gateway; `accessctl
/// ha handover` moves it back; the standby refuses a handover; the audit
/// chain verifies on both.
#[test]
fn planned_stop_kill_and_handover_move_the_lease() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = start_pair(&pg, dir.path());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ha_role(&b), "standby");
    let status = b.ctl_json(&["ha", "status"]);
    assert_eq!(status["lease"]["holder"], "gw-a", "{status}");
    let summary = b.ctl_json(&["status"]);
    assert_eq!(summary["ha"]["role"], "standby", "{summary}");
    assert!(
        summary["store"]
            .as_str()
            .unwrap()
            .starts_with("postgresql://127.0.0.1:"),
        "{summary}"
    );
    let refused = b.ctl(&["ha", "handover"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("standby"), "{}", stderr(&refused));

    a.ctl_json(&["user", "add", "alice", "--group", "research"]);
    let users = b.ctl_json(&["user", "list"]);
    assert!(users.to_string().contains("alice"), "{users}");

    // Planned: SIGTERM releases the lease; b takes over within 2 s.
    let stopped = Instant::now();
    assert!(a.stop().success());
    until_role(&b, "active", Duration::from_secs(5));
    let planned = stopped.elapsed();
    assert!(
        planned <= Duration::from_secs(2),
        "planned handover took {planned:?}"
    );

    a.spawn();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ha_role(&a), "standby");

    // Unplanned: b is killed; a takes over once b's 3 s lease runs out.
    b.kill9();
    let failover = until_role(&a, "active", Duration::from_secs(10));
    eprintln!("failover (SIGKILL until the standby is active, 3 s lease): {failover:?}");
    assert!(
        failover >= Duration::from_millis(1500) && failover <= Duration::from_secs(6),
        "failover took {failover:?} with a 3 s lease"
    );
    let status = a.ctl_json(&["ha", "status"]);
    let last = &status["last_failover"];
    assert_eq!(
        (last["from"].as_str(), last["to"].as_str()),
        (Some("gw-b"), Some("gw-a")),
        "{status}"
    );
    assert!(
        last["without_active_ms"].as_i64().unwrap() >= 2000,
        "{status}"
    );

    // Back to b by a handover.
    b.spawn();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ha_role(&b), "standby");
    let handed = a.ctl_json(&["ha", "handover"]);
    assert_eq!(handed["node"], "gw-a", "{handed}");
    until_role(&b, "active", Duration::from_secs(3));
    assert_eq!(ha_role(&a), "standby");

    let ha_kinds = kinds(&b);
    for expected in [
        "ha.acquire gw-a",
        "ha.release gw-a",
        "ha.acquire gw-b",
        "ha.failover gw-a",
    ] {
        assert!(
            ha_kinds.iter().any(|k| k == expected),
            "{expected} missing: {ha_kinds:?}"
        );
    }
    for gw in [&a, &b] {
        let verified = gw.ctl_json(&["audit", "verify"]);
        assert_eq!(verified["intact"], true, "{verified}");
    }
}

/// A paused active (SIGSTOP past its lease) finds on waking (SIGCONT) that
/// it lost the lease and steps down; the standby took over meanwhile, and
/// from then on exactly one of them is active.
#[test]
fn a_paused_active_steps_down_when_it_wakes() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = start_pair(&pg, dir.path());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ha_role(&b), "standby");

    a.signal(Signal::SIGSTOP);
    until_role(&b, "active", Duration::from_secs(8));
    std::thread::sleep(Duration::from_secs(1));
    a.signal(Signal::SIGCONT);
    until_role(&a, "standby", Duration::from_secs(3));
    for _ in 0..10 {
        let roles = (ha_role(&a), ha_role(&b));
        assert_eq!(roles, ("standby".to_string(), "active".to_string()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let records = b.audit_of("ha.release");
    let stepped_down = records
        .iter()
        .any(|r| r["target"] == "gw-a" && r["detail"]["released"] == false);
    assert!(stepped_down, "no step-down of gw-a recorded: {records:?}");
}

/// PostgreSQL stops for 10 s under a running pair: an action that needs the
/// store is refused at once with `store_unavailable` (and a sentence that
/// says so), the active steps down when it cannot renew, nothing panics; once
/// the database is back, both nodes recover by themselves: the last active
/// is active again (no needless failover), actions work, and the chain
/// verifies on both.
#[test]
fn a_lost_database_refuses_actions_clearly_and_both_nodes_recover() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = start_pair(&pg, dir.path());
    a.ctl_json(&["user", "add", "alice", "--group", "research"]);

    pg.stop();
    let asked = Instant::now();
    let refused = a.ctl(&["--json", "user", "add", "bob", "--group", "research"]);
    assert!(
        !refused.status.success(),
        "an action succeeded without its store"
    );
    let said = format!("{}{}", gatehouse_tests::stdout(&refused), stderr(&refused));
    assert!(said.contains("store_unavailable"), "{said}");
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "refused only after {:?}",
        asked.elapsed()
    );
    // Nobody can renew: the active steps down within its 3 s lease.
    until_role(&a, "standby", Duration::from_secs(6));
    assert_eq!(ha_role(&b), "standby");
    std::thread::sleep(Duration::from_secs(6));
    pg.restart();

    let back = Instant::now();
    loop {
        let roles = [ha_role(&a), ha_role(&b)];
        if roles.iter().any(|r| r == "active") {
            // The last holder takes its lease back: gw-b leaves it to gw-a
            // for one TTL after the outage, so the elastic IP stays put.
            assert_eq!(
                roles,
                ["active", "standby"],
                "the lease moved after the outage"
            );
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "no active gateway after the database came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.ctl_json(&["user", "add", "bob", "--group", "research"]);
    let users = a.ctl_json(&["user", "list"]).to_string();
    assert!(users.contains("alice") && users.contains("bob"), "{users}");
    for gw in [&a, &b] {
        let verified = gw.ctl_json(&["audit", "verify"]);
        assert_eq!(verified["intact"], true, "{verified}");
        assert!(!gw.log_text().contains("panicked"), "{}", gw.log_tail(40));
    }
}
