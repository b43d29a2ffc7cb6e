//! The PostgreSQL harness works (issue 14's shared store is tested against
//! it): a private server starts on loopback, takes the role's password and
//! no other, keeps what is written, and is gone after drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use gatehouse_tests::postgres::PgServer;

#[test]
fn a_private_server_starts_authenticates_and_stops() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    pg.psql("CREATE TABLE t (n integer); INSERT INTO t VALUES (41), (1)");
    assert_eq!(pg.psql("SELECT sum(n) FROM t").trim(), "42");
    assert!(pg.url().ends_with(&format!(":{}/gatehouse", pg.port())));

    // A wrong password is refused (SCRAM, not trust).
    let psql = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin/psql"))
        .find(|p| p.exists())
        .unwrap();
    let wrong = Command::new(&psql)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "gatehouse",
        ])
        .args(["-d", "gatehouse", "-c", "SELECT 1"])
        .env("PGPASSWORD", "not the password")
        .output()
        .unwrap();
    assert!(!wrong.status.success(), "a wrong password got in");

    let port = pg.port();
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens after drop"
    );
}

/// Two gateways given one `[store]` keep one set of users and one audit
/// chain in PostgreSQL: what one adds, the other lists; both verify the
/// whole chain, and neither has an SQLite file. The password is never in
/// their logs. A wrong password stops the start with a clear error.
#[test]
fn two_gateways_on_one_postgres_share_users_and_one_audit_chain() {
    use gatehouse_tests::{Daemon, stderr};
    let Some(pg) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = pg.gateway_config(dir.path(), "");
    let mut a = Daemon::start_with(&config);
    let b = Daemon::start_with(&config);
    let added = a.ctl_json(&["user", "add", "alice", "--group", "research"]);
    assert_eq!(added["user"]["name"], "alice", "{added}");
    b.ctl_json(&["user", "add", "bob", "--group", "research", "--no-login"]);
    for gw in [&a, &b] {
        let users = gw.ctl_json(&["user", "list"]);
        let names: Vec<&str> = users
            .as_array()
            .or_else(|| users["users"].as_array())
            .unwrap()
            .iter()
            .filter_map(|u| u["name"].as_str())
            .collect();
        assert_eq!(names, ["alice", "bob"], "{users}");
        let verified = gw.ctl_json(&["audit", "verify"]);
        assert_eq!(verified["intact"], true, "{verified}");
        assert!(
            !gw.db_path().exists(),
            "no SQLite file beside a shared store"
        );
        assert!(
            !gw.log_text().contains(pg.password()),
            "the password is in the log"
        );
    }
    assert_eq!(pg.psql("SELECT count(*) FROM users").trim(), "2");
    let kinds = pg.psql("SELECT string_agg(kind, ',' ORDER BY seq) FROM audit_log");
    assert!(kinds.contains("user.add"), "{kinds}");

    let stopped = a.stop();
    assert!(stopped.success(), "{stopped}: {}", a.log_tail(400));
    std::fs::write(dir.path().join("pg-password"), "not-the-password\n").unwrap();
    let refused = a.offline(&[]);
    let said = stderr(&refused);
    assert!(!refused.status.success(), "started with a wrong password");
    assert!(
        said.contains("PostgreSQL store 127.0.0.1:") && said.contains("password"),
        "{said}"
    );
}
