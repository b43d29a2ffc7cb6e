//! A restart under load loses nothing: with a WireGuard client pinging
//! through the tunnel and an SSH session streaming through the jump host,
//! SIGTERM stops accessd cleanly (the SSH session is closed with a reason,
//! the VPN session's end is recorded, `gateway.stop` is the last record),
//! the audit chain verifies after the restart, and the client's tunnel works
//! again with the same key and address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use gatehouse_tests::netns::{Host, Topology, WgClient};
use gatehouse_tests::ssh::{SshLab, wait_audit};
use serde_json::Value;

mod ssh_common;

use ssh_common::*;

#[test]
fn a_restart_under_ssh_and_vpn_load_keeps_the_audit_log_whole() {
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
    client
        .wait_fetch(&url, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("no tunnel before the restart: {e}\n{}", gw.log_tail(30)));

    // Load: pings through the tunnel, and a session streaming through the
    // jump host; both bounded in time.
    let pinger = topo.spawn(
        Host::Client,
        "pinger",
        &["ping", "-q", "-i", "0.05", "-w", "40", RESEARCH],
    );
    let ticks = "i=0; while [ $i -lt 800 ]; do echo tick $i; i=$((i+1)); sleep 0.05; done";
    let target = format!("root@{RESEARCH}");
    let argv = lab.ssh_argv(
        &alice,
        &["-J", &lab.jump("alice"), &target, ticks],
        Duration::from_secs(60),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let session = topo.spawn(Host::Client, "session", &argv);
    let deadline = Instant::now() + LOGIN;
    while !topo.process_log("session").contains("tick 10\n") {
        assert!(
            topo.exited(session).is_none() && Instant::now() < deadline,
            "the session did not start streaming:\n{}\n{}",
            topo.process_log("session"),
            gw.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let records: Vec<Value> = gw
        .ctl_ok(&["--json", "audit"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
    assert_eq!(kinds[stop + 1], "gateway.start", "{kinds:?}");

    // The tunnel comes back by itself: same key, same address.
    client
        .wait_fetch(&url, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no tunnel after the restart: {e}\n{}", gw.log_tail(30)));
    wait_audit(&gw, "vpn.connect", AUDIT_WITHIN, |r| {
        r["seq"].as_u64().unwrap_or(0) > stop as u64 + 1
    })
    .unwrap_or_else(|all| panic!("no vpn.connect after the restart: {all:#?}"));
    topo.stop(pinger);
}
