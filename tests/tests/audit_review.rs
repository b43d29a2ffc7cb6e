//! Audit review end to end (issue 26): a real accessd over a log filled as a
//! busy team fills it, asked with the stock `accessctl audit` commands:
//! filters by host and client network, `audit summary` by host, user and
//! day, and `audit export` as CSV and JSON lines, each checked against the
//! records themselves. The ignored `review_bench` times the same commands
//! on a log of 1 million records, on SQLite and on PostgreSQL
//! (tests/bench/audit-review-bench.sh runs it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use accessd::keys::secrets::SecretsKey;
use accessd::store::{Store, StoreOptions};
use gatehouse_tests::postgres::PgServer;
use gatehouse_tests::{Daemon, bin, stderr, stdout};
use serde_json::Value;

/// The stopped gateway's store, opened as accessd opens it.
fn open_store(gw: &Daemon) -> Store {
    let mut config = gatehouse_config::Config::load(&gw.config).unwrap();
    config.gateway.state_dir = gw.state_dir.clone();
    config.audit.mirror = gw.state_dir.join(gatehouse_config::file::AUDIT_MIRROR_FILE);
    let secrets = match &config.gateway.secrets_key_file {
        Some(file) => SecretsKey::load_file(file).unwrap(),
        None => SecretsKey::load_local(&gw.state_dir).unwrap().unwrap(),
    };
    Store::open(&StoreOptions::from_config(&config, Arc::new(secrets)).unwrap()).unwrap()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Stops `gw`, fills its log with `n` records over `days` days, starts it.
fn fill(gw: &mut Daemon, n: u64, days: u64) -> Duration {
    gw.stop();
    let started = Instant::now();
    let store = open_store(gw);
    gatehouse_tests::audit_fill::fill_audit_log(&store, n, now_unix(), days, |done| {
        if done % 100_000 == 0 {
            eprintln!("filled {done} of {n} records");
        }
    });
    drop(store);
    let took = started.elapsed();
    gw.spawn();
    took
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn review_answers_who_reached_which_host_when_and_how_much() {
    let mut gw = Daemon::start();
    fill(&mut gw, 5_000, 2);

    // Filters: records about hosts of one network, newest five.
    let records = lines(&gw.ctl_ok(&["audit", "--host", "10.0.3.0/24", "--limit", "5", "--json"]));
    assert_eq!(records.len(), 5);
    for r in &records {
        let host = r["detail"]["dst"]
            .as_str()
            .or_else(|| r["detail"]["resolved"].as_str())
            .unwrap();
        assert!(host.starts_with("10.0.3."), "{r}");
    }
    let from = lines(&gw.ctl_ok(&[
        "audit",
        "--source",
        "198.51.100.89",
        "--outcome",
        "refused",
        "--json",
    ]));
    assert!(!from.is_empty());
    for r in &from {
        let kind = r["kind"].as_str().unwrap();
        assert!(kind.ends_with(".fail") || kind.ends_with(".deny"), "{r}");
        assert!(
            r["source"].as_str().unwrap().starts_with("198.51.100.89"),
            "{r}"
        );
    }

    // Per host: what every record of that host adds up to.
    // A host reached both ways.
    let every = lines(&gw.ctl_ok(&["audit", "summary", "--by", "host", "--json"]));
    let host = every
        .iter()
        .map(|r| r["host"].as_str().unwrap())
        .find(|h| {
            ["vpn", "ssh"].iter().all(|via| {
                every.iter().any(|r| {
                    r["host"] == *h && r["via"] == *via && r["bytes_down"].as_u64() > Some(0)
                })
            })
        })
        .unwrap()
        .to_string();
    let host = host.as_str();
    let rows = lines(&gw.ctl_ok(&["audit", "summary", "--by", "host", "--host", host, "--json"]));
    assert!(rows.len() > 1, "{rows:?}");
    let exported = lines(&gw.ctl_ok(&["audit", "export", "--host", host, "--outcome", "ok"]));
    for via in ["vpn", "ssh"] {
        let summed: u64 = rows
            .iter()
            .filter(|r| r["via"] == via)
            .map(|r| r["bytes_down"].as_u64().unwrap())
            .sum();
        let counted: u64 = exported
            .iter()
            .filter(|r| r["kind"].as_str().unwrap().starts_with(via))
            .map(|r| r["detail"]["bytes_down"].as_u64().unwrap_or(0))
            .sum();
        assert!(counted > 0, "{via}");
        assert_eq!(summed, counted, "{via}");
    }
    assert!(rows.iter().all(|r| r["host"] == host), "{rows:?}");
    let users: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["user"].as_str().unwrap()).collect();
    let table = gw.ctl_ok(&["audit", "summary", "--by", "host", "--host", host]);
    for user in &users {
        assert!(table.contains(user), "{user} missing:\n{table}");
    }

    // Per user: only the hosts they reached.
    let alice = lines(&gw.ctl_ok(&[
        "audit", "summary", "--by", "user", "--user", "user7", "--json",
    ]));
    assert!(!alice.is_empty() && alice.iter().all(|r| r["user"] == "user7"));

    // Per day: every record counted once.
    let days = lines(&gw.ctl_ok(&["audit", "summary", "--by", "day", "--json"]));
    let total: u64 = days.iter().map(|d| d["records"].as_u64().unwrap()).sum();
    let status = gw.ctl_json(&["status"]);
    assert_eq!(total, status["audit_records"].as_u64().unwrap(), "{days:?}");

    // Export: CSV and JSON lines are the same records, in the same order.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("host.csv");
    gw.ctl_ok(&[
        "audit",
        "export",
        "--format",
        "csv",
        "--host",
        host,
        "--out",
        csv.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(csv).unwrap();
    let all = lines(&gw.ctl_ok(&["audit", "export", "--host", host]));
    let csv_seqs: Vec<u64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let json_seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(csv_seqs, json_seqs);
    assert!(csv.starts_with("seq,time,kind,actor,source,target,via,outcome,user,device,host,port,bytes_up,bytes_down,detail,hash\r\n"));

    // Bad input: named, and refused before any request.
    let bad = gw.ctl(&["audit", "--host", "db.internal"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("not an address or a network"),
        "{}",
        stderr(&bad)
    );
    let bad = gw.ctl(&["audit", "summary", "--by", "week"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("user, host, day, hour, kind"),
        "{}",
        stderr(&bad)
    );
}

/// How long `accessctl` takes to answer `args`: the median of three runs.
fn timed(gw: &Daemon, args: &[&str]) -> (Duration, usize) {
    let mut runs = Vec::new();
    let mut size = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let out = Command::new(bin("accessctl"))
            .arg("--socket")
            .arg(&gw.socket)
            .args(args)
            .output()
            .unwrap();
        runs.push(started.elapsed());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        size = stdout(&out).lines().count();
    }
    runs.sort();
    (runs[1], size)
}

/// The review commands on a log of `BENCH_RECORDS` (default 1,000,000)
/// records over 30 days, on SQLite and (with a PostgreSQL server) on
/// PostgreSQL: one line per command with the median answer time.
#[test]
#[ignore = "a benchmark: tests/bench/audit-review-bench.sh runs it"]
fn review_bench() {
    let n: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let commands: &[(&str, &[&str])] = &[
        ("newest 100", &["audit", "--limit", "100", "--json"]),
        (
            "--host one host, newest 100",
            &["audit", "--host", "10.0.3.17", "--limit", "100", "--json"],
        ),
        (
            "--host /24 --since 7d, 100",
            &[
                "audit",
                "--host",
                "10.0.4.0/24",
                "--since",
                "7d",
                "--limit",
                "100",
                "--json",
            ],
        ),
        (
            "--source one client, 100",
            &[
                "audit",
                "--source",
                "198.51.100.70",
                "--limit",
                "100",
                "--json",
            ],
        ),
        (
            "--outcome refused --via ssh, 100",
            &[
                "audit",
                "--outcome",
                "refused",
                "--via",
                "ssh",
                "--limit",
                "100",
                "--json",
            ],
        ),
        (
            "--target, 100",
            &[
                "audit",
                "--target",
                "10.0.3.17:22",
                "--limit",
                "100",
                "--json",
            ],
        ),
        (
            "--user --since 24h, 100",
            &[
                "audit", "--user", "user7", "--since", "24h", "--limit", "100", "--json",
            ],
        ),
        (
            "export --since 24h (JSON lines)",
            &["audit", "export", "--since", "24h"],
        ),
        (
            "export --since 24h --format csv",
            &["audit", "export", "--since", "24h", "--format", "csv"],
        ),
        (
            "summary --by host --host one host",
            &[
                "audit",
                "summary",
                "--by",
                "host",
                "--host",
                "10.0.3.17",
                "--json",
            ],
        ),
        (
            "summary --by user --user one user",
            &[
                "audit", "summary", "--by", "user", "--user", "user7", "--json",
            ],
        ),
        (
            "summary --by host, 30 days (all pages)",
            &["audit", "summary", "--by", "host", "--json"],
        ),
        (
            "summary --by user --since 7d (all pages)",
            &[
                "audit", "summary", "--by", "user", "--since", "7d", "--json",
            ],
        ),
        (
            "summary --by day (30 days)",
            &["audit", "summary", "--by", "day", "--json"],
        ),
        (
            "summary --by hour --since 24h",
            &[
                "audit", "summary", "--by", "hour", "--since", "24h", "--json",
            ],
        ),
        (
            "summary --by kind",
            &["audit", "summary", "--by", "kind", "--json"],
        ),
    ];
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
        let took = fill(&mut gw, n, 30);
        println!(
            "review {backend}: filled {n} records in {:.0} s ({:.0} records/s)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
        for (name, args) in commands {
            let (median, lines) = timed(&gw, args);
            println!(
                "review {backend}: {name}: {} ms ({lines} lines)",
                median.as_millis()
            );
        }
        // The deepest page of the summaries of many pages, asked alone as
        // accessctl asks for each page.
        let week_ago =
            humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(7 * 86_400));
        for (name, query) in [
            ("summary --by host, 30 days", "by=host".to_string()),
            (
                "summary --by user --since 7d",
                format!("by=user&since={week_ago}"),
            ),
        ] {
            let rows = |offset: u64| -> (Duration, Value) {
                let started = Instant::now();
                let out = Command::new("curl")
                    .args([
                        "-sS",
                        "--fail-with-body",
                        "--max-time",
                        "60",
                        "--unix-socket",
                    ])
                    .arg(&gw.socket)
                    .arg(format!(
                        "http://localhost/v1/audit/summary?{query}&offset={offset}&limit=1000"
                    ))
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{name}: {}", stdout(&out));
                (
                    started.elapsed(),
                    serde_json::from_slice(&out.stdout).unwrap(),
                )
            };
            // Find the last page, then time it three times.
            let mut offset = 0;
            while rows(offset).1["more"] == Value::Bool(true) {
                offset += 1000;
            }
            let mut runs: Vec<Duration> = (0..3).map(|_| rows(offset).0).collect();
            runs.sort();
            println!(
                "review {backend}: {name}, last page alone (offset {offset}): {} ms",
                runs[1].as_millis()
            );
        }
        gw.stop();
    }
}
