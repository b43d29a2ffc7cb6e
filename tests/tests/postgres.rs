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
