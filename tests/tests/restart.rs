//! A restart under load loses nothing: with iperf3 pushing TCP through the
//! WireGuard tunnel and a bulk upload streaming through the jump host,
//! SIGTERM stops accessd cleanly (the SSH session is closed with a reason,
//! the VPN session's end and a denial held back for aggregation are
//! recorded, `gateway.stop` is the last record),
//! the audit chain verifies after the restart, and the client's tunnel works
//! again with the same key and address, within seconds (the gateway sends
//! the handshake; the client would wait 15 s), carrying iperf3's flow on.
//! Needs iperf3 (Debian `iperf3`) besides what the VPN and SSH tests need.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use gatehouse_tests::netns::{Host, Topology, WgClient};
use gatehouse_tests::ssh::{SshLab, wait_audit};
use gatehouse_tests::{have_tool, require};

mod ssh_common;

use ssh_common::*;

#[test]
fn a_restart_under_ssh_and_vpn_load_keeps_the_audit_log_whole() {
    if !require(
        have_tool("iperf3"),
        "iperf3 is not installed (Debian package iperf3)",
    ) {
        return;
    }
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    lab.start_targets();
    topo.serve_http(Host::Research, RESEARCH, "research");
    let mut gw = lab.start_broker(&lab.broker_config(""));
    let alice = lab.identity("alice");
    add_active_user(&gw, "alice", "research", &alice);
    let conf = topo.dir().join("alice-laptop.conf");
    gw.ctl_ok(&[
        "device",
        "config",
        "alice",
        "laptop",
        "--out",
        conf.to_str().unwrap(),
    ]);
    let client = WgClient::up(&topo, &conf);
    let url = format!("http://{RESEARCH}/whoami.txt");
    let target = format!("root@{RESEARCH}");
    client
        .wait_fetch(&url, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("no tunnel before the restart: {e}\n{}", gw.log_tail(30)));

    // Load, both bounded in time: iperf3 through the tunnel (reporting every
    // second), and a bulk upload through the jump host.
    let iperf_server = topo.spawn(
        Host::Research,
        "iperf-server",
        &[
            "timeout",
            "90",
            "iperf3",
            "-s",
            "-B",
            RESEARCH,
            "--forceflush",
        ],
    );
    // (Not probed with a connection: iperf3 would take it for a test.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while !topo
        .process_log("iperf-server")
        .contains("Server listening")
    {
        assert!(Instant::now() < deadline, "iperf3 -s did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let iperf = topo.spawn(
        Host::Client,
        "iperf",
        &[
            "timeout",
            "80",
            "iperf3",
            "-c",
            RESEARCH,
            "-t",
            "40",
            "-i",
            "1",
            "--forceflush",
        ],
    );
    let upload: Vec<String> = lab
        .ssh_argv(
            &alice,
            &["-J", &lab.jump("alice"), &target, "cat > /dev/null"],
            Duration::from_secs(60),
        )
        .iter()
        .map(|arg| format!("'{}'", arg.replace('\'', r"'\''")))
        .collect();
    let upload = upload.join(" ");
    let session = topo.spawn(
        Host::Client,
        "session",
        &[
            "sh",
            "-c",
            &format!("head -c 3000000000 /dev/zero | {upload}"),
        ],
    );
    // Both are moving data before the stop.
    let deadline = Instant::now() + LOGIN;
    loop {
        let channels = gw.ctl_json(&["ssh", "list"]);
        let uploaded = channels[0]["bytes_up"].as_u64().unwrap_or(0);
        let reports = iperf_reports(&topo.process_log("iperf"));
        if uploaded > 10_000_000 && reports.iter().filter(|&&bps| bps > 0.0).count() >= 2 {
            eprintln!("before the stop: {uploaded} bytes uploaded, iperf3 {reports:?} bit/s");
            break;
        }
        assert!(
            topo.exited(session).is_none() && Instant::now() < deadline,
            "the load did not start: uploaded {uploaded}, iperf3 {reports:?}\n{}\n{}\n{}",
            topo.process_log("session"),
            topo.process_log("iperf"),
            gw.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Denied packets just before the stop: the first is recorded at once,
    // the second is held back (one vpn.acl.deny per peer and minute) and must
    // be written at the stop all the same.
    client.add_route("10.0.4.0/24");
    let denied = || {
        let replies = client.ping(PRIVATE2, 1, Duration::from_secs(1), None);
        assert_eq!(replies, 0, "{PRIVATE2} answered through the tunnel");
    };
    denied();
    wait_audit(&gw, "vpn.acl.deny", AUDIT_WITHIN, |r| r["actor"] == "alice")
        .unwrap_or_else(|all| panic!("no vpn.acl.deny: {all:#?}"));
    denied();
    let before = gw.ctl_json(&["audit", "verify"]);
    assert_eq!(before["intact"], true, "{before}");

    let status = gw.stop();
    assert!(status.success(), "SIGTERM under load: {status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while topo.exited(session).is_none() {
        assert!(
            Instant::now() < deadline,
            "the SSH session outlived accessd"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    gw.spawn();
    let after = gw.ctl_json(&["audit", "verify"]);
    assert_eq!(
        after["intact"], true,
        "the chain after the restart: {after}"
    );
    let records = gw.audit_json(&[]);
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "no record is missing");
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    let stop = kinds
        .iter()
        .position(|k| *k == "gateway.stop")
        .expect("gateway.stop");
    let end = records
        .iter()
        .position(|r| r["kind"] == "ssh.session.end" && r["actor"] == "alice")
        .expect("the streaming session's ssh.session.end");
    assert!(
        end < stop,
        "ssh.session.end is written before gateway.stop: {kinds:?}"
    );
    assert!(
        records[end].to_string().contains("shutting down"),
        "the session's end gives the reason: {}",
        records[end]
    );
    let vpn_end = records
        .iter()
        .position(|r| r["kind"] == "vpn.disconnect" && r["actor"] == "alice")
        .expect("the tunnel's vpn.disconnect");
    assert!(vpn_end < stop, "{kinds:?}");
    let denials = kinds[..stop]
        .iter()
        .filter(|k| **k == "vpn.acl.deny")
        .count();
    assert_eq!(
        denials, 2,
        "the denial held back for the minute is recorded at the stop: {kinds:?}"
    );
    assert_eq!(kinds[stop + 1], "gateway.start", "{kinds:?}");

    // The tunnel comes back by itself, at once: same key, same address.
    // accessd sends the device a handshake from its stored endpoint; left to
    // itself, a client re-handshakes only at WireGuard's rekey timeout, 15 s
    // after its packets stop being answered.
    let back = Instant::now();
    client
        .wait_fetch(&url, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no tunnel after the restart: {e}\n{}", gw.log_tail(30)));
    let resumed_after = back.elapsed();
    eprintln!("the tunnel answered {resumed_after:?} after the restart");
    assert!(
        resumed_after < Duration::from_secs(8),
        "the tunnel waited for the client's rekey timeout ({resumed_after:?}) instead of being \
         resumed by the gateway:\n{}\n{}",
        client.show(),
        gw.log_tail(30)
    );
    // iperf3's TCP flow, alive across the restart, moves data again: a
    // whole second reported after the tunnel came back carries traffic.
    let resumed_at = iperf_reports(&topo.process_log("iperf")).len();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reports = iperf_reports(&topo.process_log("iperf"));
        if reports.iter().skip(resumed_at + 1).any(|&bps| bps > 1e6) {
            break;
        }
        assert!(
            Instant::now() < deadline && topo.exited(iperf).is_none(),
            "iperf3 did not recover after the restart: {reports:?} bit/s\n{}",
            topo.process_log("iperf")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_audit(&gw, "vpn.connect", AUDIT_WITHIN, |r| {
        r["seq"].as_u64().unwrap_or(0) > stop as u64 + 1
    })
    .unwrap_or_else(|all| panic!("no vpn.connect after the restart: {all:#?}"));
    topo.stop(iperf);
    topo.stop(iperf_server);
    eprintln!(
        "iperf3 across the restart (bit/s per second): {:?}",
        iperf_reports(&topo.process_log("iperf"))
    );
}

/// The per-second bit rates iperf3 (`-i 1 --forceflush`) has printed so far.
fn iperf_reports(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| {
            l.contains("sec")
                && l.contains("bits/sec")
                && !l.contains("sender")
                && !l.contains("receiver")
        })
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| w.ends_with("bits/sec"))?;
            let value: f64 = words.get(at.checked_sub(1)?)?.parse().ok()?;
            let scale = match words[at].chars().next()? {
                'G' => 1e9,
                'M' => 1e6,
                'K' => 1e3,
                _ => 1.0,
            };
            Some(value * scale)
        })
        .collect()
}
