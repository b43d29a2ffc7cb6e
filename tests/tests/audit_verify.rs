//! `accessctl audit verify` on a filled log (issue 26 item 5): the stock
//! accessctl against a real accessd, with its progress line on a terminal
//! (a pty from util-linux `script`) and none on a pipe or with `--json`.
//!
//! The ignored `verify_bench` times the check on a log of 1 million records
//! (tests/src/audit_fill.rs) on SQLite and on PostgreSQL, with accessd's
//! peak resident memory (VmHWM) after start and after the check; with
//! `BENCH_BEFORE` (a directory holding another build's accessd and
//! accessctl) it checks the same log with that build too
//! (tests/bench/audit-verify-bench.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_tests::audit_fill::fill_daemon;
use gatehouse_tests::postgres::PgServer;
use gatehouse_tests::{Daemon, bin, have_tool, output_within, require, stderr, stdout};
use serde_json::Value;

/// Records in the log of the progress test: three pages of accessd's
/// 10,000.
const RECORDS: u64 = 25_000;

/// `accessctl --socket S ARGS` under a pseudo-terminal (`script`), so
/// stdout and stderr are a terminal; everything it wrote, as the terminal
/// got it.
fn on_a_terminal(gw: &Daemon, args: &str) -> String {
    let command = format!(
        "{} --socket {} {args}",
        bin("accessctl").display(),
        gw.socket.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qefc", &command, "/dev/null"]);
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{command}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn verify_shows_its_progress_on_a_terminal_only() {
    if !require(
        have_tool("script"),
        "script is not installed (Debian package util-linux)",
    ) {
        return;
    }
    let mut gw = Daemon::start();
    fill_daemon(&mut gw, RECORDS, 1);

    // On a pipe: the result on stdout, nothing on stderr.
    let piped = gw.ctl(&["audit", "verify"]);
    assert!(piped.status.success(), "{}", stderr(&piped));
    let result = stdout(&piped);
    assert!(result.starts_with("audit log intact: "), "{result}");
    assert_eq!(stderr(&piped), "", "no progress on a pipe");
    let records: u64 = result
        .trim_start_matches("audit log intact: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(records > RECORDS, "{result}");

    // On a terminal: the line, redrawn with \r per page, then blanked,
    // then the same result.
    // (The total is the log's at the start of each check: a checkpoint
    // may have been added since.)
    let shown = on_a_terminal(&gw, "audit verify");
    for page in ["0", "10,000", "20,000"] {
        let line = format!("\r{page} / ");
        assert!(shown.contains(&line), "no {line:?} in {shown:?}");
    }
    assert!(
        shown.contains(" records checked (") && shown.contains("records/s"),
        "{shown:?}"
    );
    let last = shown.trim_end().rsplit(['\r', '\n']).next().unwrap();
    assert!(
        last.starts_with("audit log intact: "),
        "the result last: {shown:?}"
    );

    // --json on a terminal: the report, no progress.
    let json = on_a_terminal(&gw, "--json audit verify");
    assert!(!json.contains("records checked"), "{json:?}");
    let report: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["records"], records);
}

/// One accessd of the build in `dir`, on `gw`'s config, state and socket
/// (`gw` stopped); SIGTERM and reaped on drop.
struct Build {
    child: Child,
}

impl Build {
    fn start(dir: &Path, gw: &Daemon, log: &Path) -> Build {
        let log = File::create(log).unwrap();
        let child = Command::new(dir.join("accessd"))
            .arg("--config")
            .arg(&gw.config)
            .arg("--state-dir")
            .arg(&gw.state_dir)
            .arg("--admin-socket")
            .arg(&gw.socket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::os::unix::net::UnixStream::connect(&gw.socket).is_err() {
            assert!(Instant::now() < deadline, "accessd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Build { child }
    }

    /// `VmHWM` (peak resident set) of the process, in MiB.
    fn peak_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }
}

impl Drop for Build {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `accessctl audit verify --json` of the build in `dir` against its own
/// accessd on `gw`'s state: one line of figures.
fn bench_build(gw: &Daemon, dir: &Path, backend: &str, label: &str) -> String {
    let log = gw.dir.path().join(format!("accessd-{label}.log"));
    let accessd = Build::start(dir, gw, &log);
    let at_start = accessd.peak_mib();
    let started = Instant::now();
    let mut cmd = Command::new(dir.join("accessctl"));
    cmd.arg("--socket")
        .arg(&gw.socket)
        .args(["--json", "audit", "verify"]);
    let out = output_within(cmd, Duration::from_secs(1800));
    let took = started.elapsed().as_secs_f64();
    let peak = accessd.peak_mib();
    let result = match serde_json::from_str::<Value>(stdout(&out).trim()) {
        Ok(report) if report["intact"] == true => format!(
            "intact, {} records ({:.0} records/s)",
            report["records"],
            report["records"].as_f64().unwrap_or(0.0) / took
        ),
        Ok(report) => format!("NOT intact: {report}"),
        Err(_) => format!(
            "failed ({}): {}",
            out.status,
            stderr(&out).trim().replace('\n', " ")
        ),
    };
    drop(accessd);
    format!(
        "verify {backend} {label}: {took:.1} s, accessd peak RSS {peak:.0} MiB (after start {at_start:.0} MiB): {result}"
    )
}

/// The check on a log of `BENCH_RECORDS` (default 1,000,000) records over
/// 30 days, on SQLite and (with a PostgreSQL server) on PostgreSQL: time,
/// accessd's peak RSS, and the result, of this build and of the one in
/// `BENCH_BEFORE` when given.
#[test]
#[ignore = "a benchmark: tests/bench/audit-verify-bench.sh runs it"]
fn verify_bench() {
    let n: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let after = bin("accessd").parent().unwrap().to_path_buf();
    let mut builds: Vec<(&str, PathBuf)> = Vec::new();
    if let Some(before) = std::env::var_os("BENCH_BEFORE") {
        builds.push(("before", PathBuf::from(before)));
    }
    builds.push(("after", after));
    let pg = PgServer::start();
    let backends: Vec<(&str, Option<&PgServer>)> = std::iter::once(("sqlite", None))
        .chain(pg.as_ref().map(|pg| ("postgres", Some(pg))))
        .collect();
    for (backend, pg) in backends {
        let dir = tempfile::tempdir().unwrap();
        let mut gw = match pg {
            None => Daemon::start(),
            Some(pg) => Daemon::start_with(&pg.gateway_config(dir.path(), "")),
        };
        let took = fill_daemon(&mut gw, n, 30);
        println!(
            "verify {backend}: filled {n} records in {:.0} s ({:.0} records/s)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        gw.stop();
        for (label, dir) in &builds {
            println!("{}", bench_build(&gw, dir, backend, label));
        }
    }
}
