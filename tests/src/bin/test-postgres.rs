//! Runs one private PostgreSQL server ([`gatehouse_tests::postgres::PgServer`])
//! for as long as its standard input stays open: `tests/run.sh` starts it
//! before `cargo test`, so the store's unit tests run against a real server
//! (`GATEHOUSE_TEST_POSTGRES`), and closes the pipe afterwards, which stops
//! and removes the server.
//!
//! Prints one line, `URL PASSWORD`, once the server accepts connections.
//! Exits 2 (after the harness printed why) when the server cannot run here.

use std::io::{Read, Write};

use gatehouse_tests::postgres::PgServer;

fn main() -> std::process::ExitCode {
    let Some(pg) = PgServer::start() else {
        return std::process::ExitCode::from(2);
    };
    let mut out = std::io::stdout();
    if writeln!(out, "{} {}", pg.url(), pg.password())
        .and_then(|()| out.flush())
        .is_err()
    {
        return std::process::ExitCode::FAILURE;
    }
    // Until the other end closes the pipe (or dies).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(pg);
    std::process::ExitCode::SUCCESS
}
