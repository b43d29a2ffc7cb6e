//! The audit log streams to the team's syslog over TLS (issue 25, part 4):
//! Debian's rsyslog with its GnuTLS driver as the receiver, asking for the
//! gateway's client certificate; the real accessd and accessctl.
//!
//! Under load (`accessctl user add` in a bounded loop), the receiver is
//! stopped for 30 s and started again: afterwards every record has
//! arrived, in order, with no gap in `seq` (duplicates allowed: a record
//! written just before the receiver went away goes again), each message's
//! JSON exactly the mirror's line. Once delivered, the cursor is saved;
//! then accessd is restarted: it goes on from that cursor, so exactly
//! `gateway.stop` and the next `gateway.start` are sent. About 70 s.
//!
//! A receiver whose certificate names another server gets nothing. On an
//! HA pair (a real PostgreSQL server), only the active gateway sends, and
//! after a handover the other goes on from the shared cursor.
//!
//! Needs rsyslog and rsyslog-gnutls (tests/run.sh installs them); skips
//! without them unless `GATEHOUSE_E2E=1`. Loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gatehouse_tests::postgres::PgServer;
use gatehouse_tests::rsyslog::{self, Pki, Rsyslog};
use gatehouse_tests::{Daemon, bin, ha_role, host_sample_config, require};

/// How long the receiver stays down under load.
const OUTAGE: Duration = Duration::from_secs(30);
/// At most this many `user add` calls, whatever the machine's speed.
const MAX_ADDS: u64 = 3000;

#[test]
fn every_record_reaches_rsyslog_in_order_across_a_receiver_outage_and_a_restart() {
    if !require(
        rsyslog::available(),
        "rsyslogd with its TLS driver is not installed (Debian packages rsyslog and rsyslog-gnutls; tests/run.sh installs them)",
    ) {
        return;
    }
    let began = Instant::now();
    let pki = Pki::make();
    let mut receiver = Rsyslog::start(&pki);
    let mut gw = Daemon::start_with(&config(&pki, &receiver, "localhost"));
    let mirror = gw.state_dir.join("audit.jsonl");

    // gateway.start arrives over TLS, with the client certificate.
    wait_for_seq(&receiver, &gw, 1, Duration::from_secs(20));

    let load = Load::start(&gw.socket, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    let before_outage = newest_seq(&mirror);
    receiver.stop();
    let adds_before = load.adds();
    std::thread::sleep(OUTAGE);
    let adds_during = load.adds() - adds_before;
    // `accessctl status` says the export waits, and how far behind it is.
    let export = &gw.ctl_json(&["status"])["audit_exports"][0];
    assert_eq!(export["name"], "syslog", "{export}");
    assert_eq!(export["connected"], false, "{export}");
    assert!(export["lag_records"].as_u64().unwrap() > 0, "{export}");
    let during_outage = newest_seq(&mirror);
    receiver.spawn();
    std::thread::sleep(Duration::from_secs(5));
    let adds = load.stop();
    assert!(
        adds_during > 0 && during_outage > before_outage,
        "the load wrote records while the receiver was down"
    );

    let newest = newest_seq(&mirror);
    wait_for_seq(&receiver, &gw, newest, Duration::from_secs(60));
    let report = check_stream(&receiver.received(), &mirror, newest, &["research-gw"]);
    eprintln!(
        "{adds} user adds ({adds_during} while the receiver was down, records {before_outage}..{during_outage}); \
         {newest} records arrived, {} duplicates",
        report.duplicates
    );

    // Once the connection has stayed up past the exporter's confirmation
    // span (15 s), the records count as delivered and the cursor is saved.
    wait_for_cursor(&gw.db_path(), newest, Duration::from_secs(30));
    let export = &gw.ctl_json(&["status"])["audit_exports"][0];
    assert_eq!(export["connected"], true, "{export}");
    assert_eq!(export["lag_records"], 0, "{export}");
    assert!(export["reconnects"].as_u64().unwrap() >= 1, "{export}");

    // A restart goes on from the saved cursor: only gateway.stop (written
    // after the exporter stopped) and the new gateway.start are sent.
    assert!(gw.stop().success(), "{}", gw.log_tail(30));
    let before_restart = receiver.received().len();
    gw.spawn();
    let restarted = newest_seq(&mirror);
    assert_eq!(restarted, newest + 2, "gateway.stop and gateway.start");
    wait_for_seq(&receiver, &gw, restarted, Duration::from_secs(30));
    let report = check_stream(&receiver.received(), &mirror, restarted, &["research-gw"]);
    assert_eq!(report.kinds[&(newest + 1)], "gateway.stop");
    assert_eq!(report.kinds[&(newest + 2)], "gateway.start");
    assert_eq!(
        receiver.received().len() - before_restart,
        2,
        "after a restart only the records past the saved cursor are sent"
    );
    assert!(gw.stop().success());
    eprintln!("took {:?}", began.elapsed());
}

/// The receiver's certificate is checked: for a server name it does not
/// carry, the handshake fails, nothing is sent, and accessd's log says why.
#[test]
fn a_receiver_whose_certificate_names_another_server_gets_nothing() {
    if !require(
        rsyslog::available(),
        "rsyslogd with its TLS driver is not installed (Debian packages rsyslog and rsyslog-gnutls; tests/run.sh installs them)",
    ) {
        return;
    }
    let pki = Pki::make();
    let receiver = Rsyslog::start(&pki);
    let mut gw = Daemon::start_with(&config(&pki, &receiver, "logs.example.org"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let log = gw.log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("TLS handshake with the syslog receiver"))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no failed handshake in accessd's log:\n{}",
            gw.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        refused.contains("logs.example.org") && refused.contains("certificate"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());
    assert!(gw.stop().success());
}

/// On an HA pair only the active gateway sends, from the cursor both share
/// in the database: the standby sends nothing, and after a handover the
/// other gateway goes on where the first stopped, with no gap.
#[test]
fn on_an_ha_pair_only_the_active_sends_and_a_handover_leaves_no_gap() {
    if !require(
        rsyslog::available(),
        "rsyslogd with its TLS driver is not installed (Debian packages rsyslog and rsyslog-gnutls; tests/run.sh installs them)",
    ) {
        return;
    }
    let Some(pg) = PgServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::make();
    let receiver = Rsyslog::start(&pki);
    let pair = |node: &str| {
        format!(
            "{}{}",
            pg.pair_config(dir.path(), node),
            syslog_section(&pki, &receiver, "localhost", node)
        )
    };
    let mut a = Daemon::start_with(&pair("gw-a"));
    wait_role(&a, "active");
    let mut b = Daemon::start_with(&pair("gw-b"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ha_role(&b), "standby");
    for n in 0..20 {
        a.ctl_ok(&["user", "add", &format!("a{n}"), "--group", "research"]);
    }
    let first = newest_seq(&a.state_dir.join("audit.jsonl"));
    wait_for_seq(&receiver, &a, first, Duration::from_secs(30));
    let report = check_stream(
        &receiver.received(),
        &a.state_dir.join("audit.jsonl"),
        first,
        &["gw-a"],
    );
    assert_eq!(report.senders.len() as u64, first);

    a.ctl_ok(&["ha", "handover"]);
    wait_role(&b, "active");
    let mirror = b.state_dir.join("audit.jsonl");
    let handed_over = newest_seq(&mirror);
    for n in 0..20 {
        b.ctl_ok(&["user", "add", &format!("b{n}"), "--group", "research"]);
    }
    let newest = newest_seq(&mirror);
    wait_for_seq(&receiver, &b, newest, Duration::from_secs(30));
    let report = check_stream(&receiver.received(), &mirror, newest, &["gw-a", "gw-b"]);
    for seq in handed_over + 1..=newest {
        assert_eq!(
            report.senders[&seq],
            ["gw-b"],
            "record {seq}: only the active gateway sends"
        );
    }
    eprintln!(
        "records 1..={first} from gw-a, to {newest} after the handover, {} duplicates",
        report.duplicates
    );
    assert!(a.stop().success());
    assert!(b.stop().success());
}

/// Waits (at most 10 s) until `gw` has the HA role `want`.
fn wait_role(gw: &Daemon, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ha_role(gw) != want {
        assert!(
            Instant::now() < deadline,
            "not {want} within 10 s:\n{}",
            gw.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sample config with `[audit.syslog]` pointing at `receiver`, trusting
/// `pki`'s CA for `server_name`, with the gateway's client certificate.
fn config(pki: &Pki, receiver: &Rsyslog, server_name: &str) -> String {
    format!(
        "{}{}",
        host_sample_config(),
        syslog_section(pki, receiver, server_name, "research-gw")
    )
}

/// `[audit.syslog]` for `receiver`, with HOSTNAME `hostname`.
fn syslog_section(pki: &Pki, receiver: &Rsyslog, server_name: &str, hostname: &str) -> String {
    format!(
        "\n[audit.syslog]\naddress = \"127.0.0.1:{}\"\nserver_name = \"{server_name}\"\n\
         ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n\
         hostname = \"{hostname}\"\n",
        receiver.port,
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    )
}

/// What [`check_stream`] found.
struct Stream {
    duplicates: usize,
    /// Each seq's kind (from the structured data).
    kinds: HashMap<u64, String>,
    /// Each seq's senders (HOSTNAME), once per message.
    senders: HashMap<u64, Vec<String>>,
}

/// Asserts the received messages carry records 1..=`newest` in order with
/// no gap (a seq is at most one past the highest before it; repeats are
/// duplicates), each an RFC 5424 message from one of `hosts` with the
/// structured data, and each message's JSON exactly the mirror's line for
/// that seq.
fn check_stream(lines: &[String], mirror: &Path, newest: u64, hosts: &[&str]) -> Stream {
    let mirror_lines: HashMap<u64, String> = std::fs::read_to_string(mirror)
        .unwrap()
        .lines()
        .map(|line| (json_seq(line), line.to_string()))
        .collect();
    let mut highest = 0;
    let mut duplicates = 0;
    let mut kinds = HashMap::new();
    let mut senders: HashMap<u64, Vec<String>> = HashMap::new();
    for line in lines {
        let header: Vec<&str> = line.splitn(5, ' ').collect();
        assert!(
            header.len() == 5
                && header[0] == "<109>1"
                && hosts.contains(&header[2])
                && header[3] == "accessd",
            "not the RFC 5424 header accessd writes: {line}"
        );
        let seq: u64 = between(line, "[gatehouse@32473 seq=\"", "\"")
            .parse()
            .unwrap_or_else(|e| panic!("seq in {line}: {e}"));
        let kind = between(line, " kind=\"", "\"");
        let (_, json) = line
            .split_once("] \u{FEFF}")
            .unwrap_or_else(|| panic!("no BOM before the message: {line}"));
        assert_eq!(json_seq(json), seq, "{line}");
        assert_eq!(
            Some(json),
            mirror_lines.get(&seq).map(String::as_str),
            "the message's JSON is the mirror's line"
        );
        assert!(
            seq <= highest + 1,
            "gap: seq {seq} arrived after {highest} (records {}..{} missing)",
            highest + 1,
            seq - 1
        );
        if seq <= highest {
            duplicates += 1;
        }
        highest = highest.max(seq);
        kinds.insert(seq, kind.to_string());
        senders.entry(seq).or_default().push(header[2].to_string());
    }
    assert_eq!(highest, newest, "the newest record arrived");
    Stream {
        duplicates,
        kinds,
        senders,
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let (_, rest) = text
        .split_once(start)
        .unwrap_or_else(|| panic!("no {start:?} in {text}"));
    rest.split_once(end)
        .unwrap_or_else(|| panic!("no {end:?} after {start:?} in {text}"))
        .0
}

fn json_seq(json: &str) -> u64 {
    let value: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    value["seq"].as_u64().unwrap()
}

/// The newest record's seq, from the mirror (written after each commit).
fn newest_seq(mirror: &Path) -> u64 {
    std::fs::read_to_string(mirror)
        .unwrap()
        .lines()
        .last()
        .map_or(0, json_seq)
}

/// Waits until a message with `seq` (or a later one) has arrived.
fn wait_for_seq(receiver: &Rsyslog, gw: &Daemon, seq: u64, within: Duration) {
    let deadline = Instant::now() + within;
    let marker = |n: u64| format!("[gatehouse@32473 seq=\"{n}\"");
    loop {
        let lines = receiver.received();
        if lines.iter().any(|l| l.contains(&marker(seq))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "record {seq} did not reach rsyslog within {within:?} ({} messages)\naccessd:\n{}\nrsyslogd:\n{}",
            lines.len(),
            gw.log_tail(30),
            receiver.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the exporter's cursor in the store reaches `seq`.
fn wait_for_cursor(db: &Path, seq: u64, within: Duration) {
    let deadline = Instant::now() + within;
    let conn = rusqlite::Connection::open(db).unwrap();
    loop {
        let cursor = conn
            .query_row(
                "SELECT seq FROM audit_cursors WHERE name = 'syslog'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map_or(0, |seq| u64::try_from(seq).unwrap());
        if cursor >= seq {
            assert_eq!(cursor, seq, "the cursor is never past the log");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the syslog cursor is at {cursor}, not {seq}, after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `accessctl user add` in a loop on a thread of its own, bounded in time
/// and count, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    adds: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    fn start(socket: &Path, at_most: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let adds = Arc::new(AtomicU64::new(0));
        let socket: PathBuf = socket.to_path_buf();
        let thread = {
            let (stop, adds) = (Arc::clone(&stop), Arc::clone(&adds));
            std::thread::spawn(move || {
                let deadline = Instant::now() + at_most;
                for n in 0..MAX_ADDS {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    let status = Command::new(bin("accessctl"))
                        .arg("--socket")
                        .arg(&socket)
                        .args(["user", "add", &format!("load{n}"), "--group", "research"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap();
                    assert!(status.success(), "accessctl user add load{n}: {status}");
                    adds.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Load {
            stop,
            adds,
            thread: Some(thread),
        }
    }

    fn adds(&self) -> u64 {
        self.adds.load(Ordering::Relaxed)
    }

    /// Stops the loop; returns how many users it added.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.adds()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
