//! Logins, pre-auth limits and load on the SSH jump host; the relaying and
//! refusals are in `ssh_relay.rs`, the shared helpers in `ssh_common/`.
//!
//! The SSH jump host, end to end (issue 4): accessd's broker in the gateway
//! namespace of a [`Topology`], the stock OpenSSH client in the client
//! namespaces (every option in a `-F` file, which `-J` passes on to the jump
//! hop), and OpenSSH's sshd as the private hosts (research 10.0.3.140,
//! private2 10.0.4.10) and, where a test needs something to protect, on the
//! gateway itself. One test per claim of the list.
//!
//! A refusal only counts when the thing refused was there to be reached: each
//! refusal test first shows, from the gateway namespace, that the target
//! answers, and finds the reason in the audit log.
//!
//! Needs what the VPN tests need plus OpenSSH (client and server); without
//! them each test prints `SKIPPED` (or fails under `GATEHOUSE_E2E=1`). Every
//! client runs under coreutils' `timeout`; every wait is a poll with a
//! deadline. The longest is the aggregated `ssh.auth.fail` record (up to 75 s).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_tests::netns::{Host, Topology};
use gatehouse_tests::ssh::{BROKER_PORT, Identity, SshLab, SshRun, wait_audit};
use serde_json::Value;

mod ssh_common;

use ssh_common::*;

/// Held by the test that loads the machine (50 sessions at once) and by the
/// one that times a login against a baseline, so that on two cores the crowd
/// of one is not measured as slowness by the other.
static TIMED: Mutex<()> = Mutex::new(());

fn timed_alone() -> MutexGuard<'static, ()> {
    TIMED.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn unknown_keys_and_users_who_are_not_active_cannot_log_in() {
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    lab.start_targets();
    let gw = lab.start_broker(&lab.broker_config(""));
    let alice = lab.identity("alice");
    add_active_user(&gw, "alice", "research", &alice);
    let target = format!("root@{RESEARCH}");
    let login_from = |host: Host, id: &Identity, user: &str| {
        lab.ssh(host, id, &["-J", &lab.jump(user), &target, "true"], LOGIN)
    };
    let login = |id: &Identity, user: &str| login_from(Host::Client, id, user);
    let run = login(&alice, "alice");
    assert!(run.success(), "{run}\n{}", gw.log_tail(40));

    // A machine account (--no-login) is active at once: no `user enable`.
    let robot = lab.identity("robot");
    let key = robot.public_key_file.to_str().unwrap();
    let added = gw.ctl_ok(&[
        "user",
        "add",
        "robot",
        "--group",
        "research",
        "--ssh-key",
        key,
        "--no-login",
    ]);
    assert!(added.contains("created user robot (active)"), "{added}");
    let run = login(&robot, "robot");
    assert!(run.success(), "{run}\n{}", gw.log_tail(40));

    // bob logs in while enabled, not after `user disable`.
    let bob = lab.identity("bob");
    add_active_user(&gw, "bob", "research", &bob);
    let run = login(&bob, "bob");
    assert!(run.success(), "{run}\n{}", gw.log_tail(40));
    gw.ctl_ok(&["user", "disable", "bob"]);
    // carol's account expires after a second.
    let carol = lab.identity("carol");
    let key = carol.public_key_file.to_str().unwrap();
    gw.ctl_ok(&[
        "user",
        "add",
        "carol",
        "--group",
        "research",
        "--ssh-key",
        key,
        "--expires",
        "1s",
    ]);
    gw.ctl_ok(&["user", "enable", "carol"]);
    std::thread::sleep(Duration::from_secs(2));
    // dave never enrolled (pending).
    let dave = lab.identity("dave");
    let key = dave.public_key_file.to_str().unwrap();
    gw.ctl_ok(&[
        "user",
        "add",
        "dave",
        "--group",
        "research",
        "--ssh-key",
        key,
    ]);
    // A key nobody registered, offered as alice.
    let stranger = lab.identity_unauthorized("stranger");

    // Two failures per source address, so the per-source penalties (which
    // refuse a connection before authentication) stay out of the way.
    let cases: [(Host, &Identity, &str, &[&str]); 4] = [
        (
            Host::Client,
            &stranger,
            "alice",
            &["unknown", "not registered", "no such key"],
        ),
        (
            Host::Client2,
            &bob,
            "bob",
            &["disabled", "not_active", "not active"],
        ),
        (Host::Client, &carol, "carol", &["expired"]),
        (
            Host::Client2,
            &dave,
            "dave",
            &["pending", "not_active", "not active", "enrol"],
        ),
    ];
    for (host, id, user, why) in cases {
        let run = login_from(host, id, user);
        assert!(
            !run.success() && run.stderr.contains("Permission denied"),
            "{user} with key {} must be refused:\n{run}\n{}",
            id.name,
            gw.log_tail(30)
        );
        let fail = wait_audit(&gw, "ssh.auth.fail", AUDIT_WITHIN, |r| {
            let text = r.to_string();
            text.contains(user) && text.contains(&id.fingerprint)
        })
        .unwrap_or_else(|all| {
            panic!(
                "no ssh.auth.fail naming {user} and key {}: {all:#?}",
                id.fingerprint
            )
        });
        let text = fail.to_string().to_lowercase();
        assert!(
            why.iter().any(|w| text.contains(w)),
            "the reason {user} was refused should say one of {why:?}: {fail}"
        );
        assert!(
            fail["source"]
                .as_str()
                .is_some_and(|s| s.contains(&topo.addr(host).to_string())),
            "ssh.auth.fail must name the source address {}: {fail}",
            topo.addr(host)
        );
    }
}

#[test]
fn fifty_concurrent_jump_sessions_complete() {
    const SESSIONS: usize = 50;
    let _alone = timed_alone();
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    lab.start_targets();
    // The defaults allow 8 unauthenticated connections per source address;
    // 50 clients starting at once from one address is a deliberate crowd.
    let gw = lab.start_broker(&lab.broker_config(
        "max_channels_per_user = 64\nmax_connections_per_user = 64\nmax_startups_per_source = 64",
    ));
    let alice = lab.identity("alice");
    add_active_user(&gw, "alice", "research", &alice);
    let jump = lab.jump("alice");
    let target = format!("root@{RESEARCH}");
    // One first, so every host key is in known_hosts before the crowd.
    let run = lab.ssh(Host::Client, &alice, &["-J", &jump, &target, "true"], LOGIN);
    assert!(run.success(), "{run}\n{}", gw.log_tail(40));

    let limit = Duration::from_secs(150);
    let started = Instant::now();
    let pids: Vec<(usize, u32)> = (0..SESSIONS)
        .map(|i| {
            let command = format!("echo session-{i}-ok");
            let argv = lab.ssh_argv(&alice, &["-J", &jump, &target, &command], limit);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            (i, topo.spawn(Host::Client, &format!("session-{i}"), &argv))
        })
        .collect();
    let mut failed = Vec::new();
    for (i, pid) in pids {
        let status = loop {
            if let Some(status) = topo.exited(pid) {
                break status;
            }
            assert!(
                started.elapsed() < limit + Duration::from_secs(10),
                "session {i} still runs after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = topo.process_log(&format!("session-{i}"));
        if !status.success() || !log.contains(&format!("session-{i}-ok")) {
            failed.push(format!("session {i} ({status}): {log}"));
        }
    }
    let took = started.elapsed();
    eprintln!("{SESSIONS} concurrent ssh -J sessions took {took:?}");
    assert!(
        failed.is_empty(),
        "{} of {SESSIONS} concurrent sessions failed:\n{}\n{}",
        failed.len(),
        failed.join("\n"),
        gw.log_tail(40)
    );
    let deadline = Instant::now() + AUDIT_WITHIN;
    loop {
        let ends = gw.audit_of("ssh.session.end").len();
        if ends > SESSIONS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ends} ssh.session.end records for {} sessions",
            SESSIONS + 1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_burst_of_failed_logins_is_slowed_and_aggregated_while_another_address_logs_in() {
    const ATTEMPTS: usize = 24;
    let _alone = timed_alone();
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    lab.start_targets();
    let gw = lab.start_broker(&lab.broker_config(""));
    let alice = lab.identity("alice");
    add_active_user(&gw, "alice", "research", &alice);
    let jump = lab.jump("alice");
    let target = format!("root@{RESEARCH}");
    let attacker = topo.addr(Host::Client).to_string();
    // alice from client2 first: what "normal" takes here.
    let baseline = lab.ssh(
        Host::Client2,
        &alice,
        &["-J", &jump, &target, "true"],
        LOGIN,
    );
    assert!(baseline.success(), "{baseline}\n{}", gw.log_tail(40));

    // A key nobody registered, sprayed over user names from one address.
    let intruder = lab.identity("intruder");
    let port = BROKER_PORT.to_string();
    let burst_limit = Duration::from_secs(90);
    let burst = Instant::now();
    let mut runs: Vec<SshRun> = Vec::new();
    for i in 0..ATTEMPTS {
        if burst.elapsed() > burst_limit {
            break;
        }
        let user = format!("spray{i:02}@{}", lab.gateway());
        let run = lab.ssh(
            Host::Client,
            &intruder,
            &["-o", "ConnectTimeout=8", "-p", &port, &user, "true"],
            Duration::from_secs(10),
        );
        assert!(
            !run.success(),
            "an unknown key logged in as spray{i:02}:\n{run}"
        );
        runs.push(run);
    }
    let elapsed: Vec<Duration> = runs.iter().map(|r| r.elapsed).collect();
    let first = median(&elapsed[..3]);
    let last = median(&elapsed[elapsed.len() - 3..]);
    // Slowed: later attempts take longer, or are cut off before the key is
    // even looked at (closed, reset, timed out: no "Permission denied").
    let cut_off = runs
        .iter()
        .filter(|r| !r.stderr.contains("Permission denied"))
        .count();
    eprintln!(
        "{} failed logins in {:?}: first {first:?}, last {last:?}, {cut_off} cut off before auth",
        runs.len(),
        burst.elapsed()
    );
    assert!(
        last >= first * 2 + Duration::from_millis(300) || cut_off > 0,
        "the burst was not slowed: first attempts {first:?}, last {last:?}, none refused early:\n{}",
        runs.iter()
            .map(|r| format!("{:?} {}", r.elapsed, r.stderr.trim()))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Meanwhile another address logs in normally.
    let run = lab.ssh(
        Host::Client2,
        &alice,
        &["-J", &jump, &target, "true"],
        LOGIN,
    );
    assert!(
        run.success() && run.elapsed < baseline.elapsed * 3 + Duration::from_secs(1),
        "alice from {} while {attacker} is penalised (baseline {:?}): {run}\n{}",
        topo.addr(Host::Client2),
        baseline.elapsed,
        gw.log_tail(30)
    );

    // Audited in aggregate: fewer records than attempts, one with a count.
    let from_attacker = |records: &[Value]| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["source"].as_str().is_some_and(|s| s.contains(&attacker)))
            .cloned()
            .collect()
    };
    let aggregated = |r: &Value| {
        r["source"].as_str().is_some_and(|s| s.contains(&attacker)) && max_count(&r["detail"]) > 1
    };
    let found = wait_audit(&gw, "ssh.auth.fail", AGGREGATE_WITHIN, aggregated).or_else(|_| {
        // A window may only close when the next failure arrives: one more,
        // from the other address.
        let nudge = lab.ssh(
            Host::Client2,
            &intruder,
            &["-p", &port, &format!("late@{}", lab.gateway()), "true"],
            Duration::from_secs(10),
        );
        assert!(!nudge.success(), "{nudge}");
        wait_audit(&gw, "ssh.auth.fail", AUDIT_WITHIN, aggregated)
    });
    let aggregate = found.unwrap_or_else(|all| {
        panic!(
            "no aggregated ssh.auth.fail (a count above 1) from {attacker}: {:#?}",
            from_attacker(&all)
        )
    });
    let records = from_attacker(&gw.audit_of("ssh.auth.fail"));
    assert!(
        records.len() <= runs.len() / 2,
        "{} ssh.auth.fail records for {} attempts from {attacker}: not aggregated \
         (e.g. {aggregate})",
        records.len(),
        runs.len()
    );
}

/// `ssh.max_channels_per_user` counts live channels (a third is refused and
/// audited while two are open), and a logged-in connection that holds no
/// channel is closed after `ssh.idle_timeout` even though the client's
/// keepalives keep the SSH connection itself busy (russh#316).
#[test]
fn the_channel_limit_holds_and_a_connection_without_channels_is_closed_when_idle() {
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    lab.start_targets();
    let gw =
        lab.start_broker(&lab.broker_config("max_channels_per_user = 2\nidle_timeout = \"3s\""));
    // Keepalives every second on both hops: the inner ones cross the
    // channels, so the two long sessions are never idle.
    let alice = lab.identity_with("alice", "  ServerAliveInterval 1\n");
    add_active_user(&gw, "alice", "research", &alice);
    let jump = lab.jump("alice");
    let target = format!("root@{RESEARCH}");
    let run = lab.ssh(Host::Client, &alice, &["-J", &jump, &target, "true"], LOGIN);
    assert!(run.success(), "{run}\n{}", gw.log_tail(40));

    let hold = Duration::from_secs(40);
    let pids: Vec<u32> = (0..2)
        .map(|i| {
            let argv = lab.ssh_argv(&alice, &["-J", &jump, &target, "sleep 30"], hold);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            topo.spawn(Host::Client, &format!("hold-{i}"), &argv)
        })
        .collect();
    let deadline = Instant::now() + LOGIN;
    while gw.ctl_json(&["ssh", "list"]).as_array().map_or(0, Vec::len) < 2 {
        assert!(
            Instant::now() < deadline,
            "two channels never opened:\n{}",
            gw.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let third = lab.ssh(
        Host::Client,
        &alice,
        &["-J", &jump, &target, "true"],
        REFUSED,
    );
    assert!(!third.success(), "a third channel: {third}");
    let denied = wait_audit(&gw, "ssh.forward.deny", AUDIT_WITHIN, |r| {
        r["detail"].to_string().contains("too_many_channels")
    });
    assert!(denied.is_ok(), "no too_many_channels denial: {denied:?}");
    for pid in pids {
        topo.stop(pid);
    }

    let gateway = format!("alice@{}", lab.gateway());
    let port = BROKER_PORT.to_string();
    let idle = lab.ssh(
        Host::Client,
        &alice,
        &["-N", "-p", &port, &gateway],
        Duration::from_secs(30),
    );
    assert!(
        !idle.timed_out() && idle.elapsed < Duration::from_secs(15),
        "a connection without channels stayed open: {idle}"
    );
    let log = gw.log_tail(200);
    assert!(log.contains("idle: no channel for 3s"), "{log}");
}
