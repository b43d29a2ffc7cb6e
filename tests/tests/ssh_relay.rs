//! Relaying and refusals through the SSH jump host; the logins and limits
//! are in `ssh_logins.rs`, the shared helpers in `ssh_common/`.
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

use std::time::{Duration, Instant};

use gatehouse_tests::netns::{GATEWAY_RESEARCH_ADDR, Host, Topology};
use gatehouse_tests::ssh::{BROKER_PORT, SshLab, byte_counts, noise, wait_audit};
use serde_json::Value;

mod ssh_common;

use ssh_common::*;

/// The harness, checked against OpenSSH's sshd as the jump host (on the
/// broker's port, no accessd): what the broker's tests take for granted —
/// keys, `-F` reaching the jump hop, the targets, scp — works with stock
/// parts, so a failure elsewhere in this file is the broker's.
#[test]
fn the_harness_works_with_openssh_as_the_jump_host() {
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    lab.start_targets();
    let gateway = lab.gateway();
    lab.start_sshd_with(
        Host::Gateway,
        &gateway,
        BROKER_PORT,
        "AllowTcpForwarding yes",
    );
    let alice = lab.identity("alice");
    let jump = format!("root@{gateway}:{BROKER_PORT}");
    let run = lab.ssh(
        Host::Client,
        &alice,
        &[
            "-J",
            &jump,
            &format!("root@{RESEARCH}"),
            "ip -4 -o address show dev eth0",
        ],
        LOGIN,
    );
    assert!(
        run.success() && run.stdout.contains(&format!("{RESEARCH}/24")),
        "{run}\n{}",
        lab.sshd_log(Host::Gateway, BROKER_PORT)
    );
    // The client reaches private2 only through a jump host, never directly.
    let direct = lab.ssh(
        Host::Client,
        &alice,
        &[
            "-o",
            "ConnectTimeout=2",
            &format!("root@{PRIVATE2}"),
            "true",
        ],
        REFUSED,
    );
    assert!(!direct.success(), "{direct}");
    let run = lab.ssh(
        Host::Client,
        &alice,
        &["-J", &jump, &format!("root@{PRIVATE2}"), "true"],
        LOGIN,
    );
    assert!(run.success(), "{run}");
    let data = noise(1 << 20, 7);
    let sent = lab.dir().join("payload.bin");
    let copied = lab.dir().join("copied.bin");
    std::fs::write(&sent, &data).unwrap();
    let run = lab.scp(
        Host::Client,
        &alice,
        &[
            "-J",
            &jump,
            sent.to_str().unwrap(),
            &format!("root@{RESEARCH}:{}", copied.display()),
        ],
        LOGIN,
    );
    assert!(run.success(), "{run}");
    assert!(
        std::fs::read(&copied).unwrap() == data,
        "scp altered the file"
    );
    // A key nobody authorized is refused by the jump hop.
    let stranger = lab.identity_unauthorized("stranger");
    let run = lab.ssh(
        Host::Client,
        &stranger,
        &["-J", &jump, &format!("root@{RESEARCH}"), "true"],
        REFUSED,
    );
    assert!(
        !run.success() && run.stderr.contains("Permission denied"),
        "{run}"
    );
    // Names from the gateway namespace's own hosts file reach ssh -J.
    let _hosts = topo.etc_hosts(Host::Gateway, &format!("{RESEARCH}\tresearch.gh-test"));
    let resolved = topo.exec_ok(Host::Gateway, &["getent", "hosts", "research.gh-test"]);
    assert!(resolved.starts_with(RESEARCH), "{resolved}");
}

#[test]
fn ssh_and_scp_pass_through_the_jump_host_and_the_audit_counts_the_bytes() {
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

    let run = lab.ssh(
        Host::Client,
        &alice,
        &["-J", &jump, &format!("root@{RESEARCH}"), "true"],
        LOGIN,
    );
    assert!(run.success(), "{run}\n{}", gw.log_tail(40));
    // It really is the research host that answered.
    let run = lab.ssh(
        Host::Client,
        &alice,
        &[
            "-J",
            &jump,
            &format!("root@{RESEARCH}"),
            "ip -4 -o address show dev eth0",
        ],
        LOGIN,
    );
    assert!(
        run.success() && run.stdout.contains(&format!("{RESEARCH}/24")),
        "{run}\n{}",
        gw.log_tail(40)
    );

    // scp a few MiB up and back down; the namespaces share the file system,
    // so the "remote" path is in the lab dir too.
    let size = 4 << 20;
    let data = noise(size, 0x5eed_4a11_ce00_0001);
    let sent = lab.dir().join("payload.bin");
    let uploaded = lab.dir().join("uploaded.bin");
    let downloaded = lab.dir().join("downloaded.bin");
    std::fs::write(&sent, &data).unwrap();
    let up = lab.scp(
        Host::Client,
        &alice,
        &[
            "-J",
            &jump,
            sent.to_str().unwrap(),
            &format!("root@{RESEARCH}:{}", uploaded.display()),
        ],
        LOGIN,
    );
    assert!(up.success(), "{up}\n{}", gw.log_tail(40));
    let local_sum = sha256(&lab, Host::Client, &alice, None, &sent);
    let remote_sum = sha256(&lab, Host::Client, &alice, Some(&jump), &uploaded);
    assert_eq!(remote_sum, local_sum, "the upload arrived altered");
    let down = lab.scp(
        Host::Client,
        &alice,
        &[
            "-J",
            &jump,
            &format!("root@{RESEARCH}:{}", uploaded.display()),
            downloaded.to_str().unwrap(),
        ],
        LOGIN,
    );
    assert!(down.success(), "{down}\n{}", gw.log_tail(40));
    assert!(
        std::fs::read(&downloaded).unwrap() == data,
        "the download differs from what was sent"
    );

    // One session.end per scp carries the bytes each way: the file one way
    // (plus SSH and SFTP framing, well under 10 %), little the other way.
    let size = u64::try_from(size).unwrap();
    let transfers = |records: &[Value]| -> Vec<Value> {
        records
            .iter()
            .filter(|r| {
                let counts = byte_counts(&r["detail"]);
                counts.iter().map(|(_, n)| *n).max().unwrap_or(0) >= size
            })
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + AUDIT_WITHIN;
    let ends = loop {
        let ends = transfers(&gw.audit_of("ssh.session.end"));
        if ends.len() >= 2 || Instant::now() > deadline {
            break ends;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        ends.len(),
        2,
        "expected one ssh.session.end with about {size} bytes for each scp, got:\n{:#?}",
        gw.audit_of("ssh.session")
    );
    for end in &ends {
        let counts = byte_counts(&end["detail"]);
        let most = counts.iter().map(|(_, n)| *n).max().unwrap();
        let least = counts.iter().map(|(_, n)| *n).min().unwrap();
        assert!(
            counts.len() >= 2 && most <= size + size / 10 + (256 << 10) && least < 512 << 10,
            "byte counts do not match what crossed ({size} bytes one way): {counts:?} in {end}"
        );
        assert_eq!(end["actor"], "alice", "{end}");
    }
    // session.start names the key, the source and the resolved address.
    let start = wait_audit(&gw, "ssh.session.start", AUDIT_WITHIN, |r| {
        r["actor"] == "alice"
    })
    .unwrap_or_else(|all| panic!("no ssh.session.start for alice: {all:#?}"));
    let text = start.to_string();
    assert!(
        text.contains(&alice.fingerprint)
            && text.contains(RESEARCH)
            && start["source"]
                .as_str()
                .is_some_and(|s| s.contains(&topo.addr(Host::Client).to_string())),
        "ssh.session.start must name the key {}, the target {RESEARCH} and the source {}: {start}",
        alice.fingerprint,
        topo.addr(Host::Client)
    );
}

#[test]
fn refused_targets_are_audited_with_the_reason() {
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    lab.start_targets();
    // Something to protect on the gateway: sshd on every address (its own,
    // loopback) and "instance metadata" on 169.254.169.254:80.
    lab.start_sshd(Host::Gateway, "0.0.0.0", 22);
    topo.exec_ok(
        Host::Gateway,
        &["ip", "address", "add", "169.254.169.254/32", "dev", "lo"],
    );
    topo.serve_http(Host::Gateway, "0.0.0.0", "gateway");
    // Names the gateway resolves (its namespace's own /etc/hosts, in place
    // before accessd starts).
    let _hosts = topo.etc_hosts(
        Host::Gateway,
        &format!(
            "169.254.169.254\tmetadata.gh-test\n{PRIVATE2}\tprivate2.gh-test\n\
             127.0.0.1\tloopback.gh-test\n{RESEARCH}\tresearch.gh-test"
        ),
    );
    let gw = lab.start_broker(&lab.broker_config(""));
    let resolved = topo.exec_ok(Host::Gateway, &["getent", "hosts", "metadata.gh-test"]);
    assert!(
        resolved.starts_with("169.254.169.254"),
        "the gateway namespace does not use its own hosts file: {resolved}"
    );
    let alice = lab.identity("alice");
    add_active_user(&gw, "alice", "research", &alice);
    let jump = lab.jump("alice");
    let gateway_public = lab.gateway();
    let gateway_research = GATEWAY_RESEARCH_ADDR.to_string();

    // (target, port, what the reason should say, the address behind a name)
    let subnet = &[
        "not_in_groups",
        "groups",
        "not allowed",
        "outside",
        "subnet",
    ][..];
    let metadata = &["always_refused", "link-local", "metadata"][..];
    let refusals: Vec<(&str, u16, &[&str], Option<&str>)> = vec![
        (PRIVATE2, 22, subnet, None),
        ("169.254.169.254", 80, metadata, None),
        ("metadata.gh-test", 80, metadata, Some("169.254.169.254")),
        ("private2.gh-test", 22, subnet, Some(PRIVATE2)),
        (
            "loopback.gh-test",
            22,
            &["always_refused", "loopback"],
            Some("127.0.0.1"),
        ),
        (
            &gateway_research,
            22,
            &["gateway", "own", "self", "local"],
            None,
        ),
        (
            &gateway_public,
            22,
            &["gateway", "own", "self", "local", "subnet", "not allowed"],
            None,
        ),
        ("127.0.0.1", 22, &["always_refused", "loopback"], None),
        (RESEARCH, 80, &["port"], None),
    ];
    // Each target answers from the gateway: only the broker stands in the way.
    for (target, port, _, behind) in &refusals {
        let addr = behind.unwrap_or(target);
        assert!(
            topo.tcp_open(Host::Gateway, addr, *port, Duration::from_secs(2)),
            "{addr}:{port} does not answer in the gateway namespace: the test proves nothing"
        );
    }
    // And names do resolve at the gateway: an allowed one works.
    let control = lab.ssh(
        Host::Client,
        &alice,
        &["-J", &jump, "root@research.gh-test", "true"],
        LOGIN,
    );
    assert!(control.success(), "{control}\n{}", gw.log_tail(40));

    for (target, port, why, behind) in &refusals {
        let before = last_seq(&gw);
        let run = lab.ssh(
            Host::Client,
            &alice,
            &[
                "-J",
                &jump,
                "-p",
                &port.to_string(),
                &format!("root@{target}"),
                "true",
            ],
            REFUSED,
        );
        assert!(
            !run.success() && !run.timed_out(),
            "{target}:{port} must be refused at once:\n{run}\n{}",
            gw.log_tail(30)
        );
        let deny = wait_audit(&gw, "ssh.forward.deny", AUDIT_WITHIN, |r| {
            r["seq"].as_u64() > Some(before) && r.to_string().contains(target)
        })
        .unwrap_or_else(|all| panic!("no ssh.forward.deny for {target}:{port}: {all:#?}"));
        let text = deny.to_string().to_lowercase();
        assert!(
            why.iter().any(|w| text.contains(w)),
            "the reason for refusing {target}:{port} should say one of {why:?}: {deny}"
        );
        if let Some(addr) = behind {
            assert!(
                text.contains(addr),
                "the record for {target} should name the address it resolved to ({addr}): {deny}"
            );
        }
        assert_eq!(deny["actor"], "alice", "{deny}");
        let started: Vec<Value> = gw
            .audit_of("ssh.session.start")
            .into_iter()
            .filter(|r| r["seq"].as_u64() > Some(before))
            .collect();
        assert!(
            started.is_empty(),
            "a session was started while refusing {target}:{port}: {started:#?}"
        );
    }
    // The instance metadata server never saw the gateway ask.
    let http = topo.process_log("http-gw-0.0.0.0");
    assert!(
        !http.contains("SSH-2.0"),
        "the broker relayed to the metadata address:\n{http}"
    );
}

#[test]
fn a_session_gets_the_hint_and_no_shell_and_remote_or_agent_forwarding_is_refused() {
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
    let gateway = format!("alice@{}", lab.gateway());
    let port = BROKER_PORT.to_string();
    let direct = |args: &[&str]| {
        let mut all = vec!["-p", port.as_str()];
        all.extend_from_slice(args);
        lab.ssh(Host::Client, &alice, &all, REFUSED)
    };

    let shell = direct(&[&gateway]);
    assert!(
        !shell.success() && !shell.timed_out() && shell.text().contains("jump host"),
        "asking for a shell must get the one-line hint and no shell:\n{shell}\n{}",
        gw.log_tail(30)
    );
    for args in [
        &[gateway.as_str(), "echo SHELL-$((6*7))"][..],
        &["-t", "-t", gateway.as_str(), "echo SHELL-$((6*7))"][..],
        &["-s", gateway.as_str(), "sftp"][..],
    ] {
        let run = direct(args);
        assert!(
            !run.success() && !run.timed_out() && !run.text().contains("SHELL-42"),
            "{args:?} must be refused:\n{run}"
        );
    }

    // -R: the server must refuse to listen for us.
    let remote = direct(&[
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        "0:127.0.0.1:22",
        &gateway,
    ]);
    assert!(
        !remote.success() && !remote.timed_out() && remote.text().contains("forwarding failed"),
        "-R must be refused:\n{remote}\n{}",
        gw.log_tail(30)
    );

    // -A, with an agent to forward.
    let agent = lab.dir().join("agent.sock");
    let agent_s = agent.to_str().unwrap();
    topo.spawn(
        Host::Client,
        "ssh-agent",
        &["ssh-agent", "-D", "-a", agent_s],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.exists() {
        assert!(Instant::now() < deadline, "ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let forward_agent = format!("IdentityAgent={agent_s}");
    let run = direct(&[
        "-A",
        "-o",
        &forward_agent,
        &gateway,
        "echo SHELL-$((6*7)) $SSH_AUTH_SOCK",
    ]);
    assert!(
        !run.success() && !run.timed_out() && !run.text().contains("SHELL-42"),
        "-A must not get a session:\n{run}"
    );

    // ssh -W, as a ProxyCommand, works like -J.
    let proxy = format!(
        "ProxyCommand=ssh -F {} -W %h:%p -p {BROKER_PORT} {gateway}",
        alice.config.display()
    );
    let run = lab.ssh(
        Host::Client,
        &alice,
        &["-o", &proxy, &format!("root@{RESEARCH}"), "echo via-W"],
        LOGIN,
    );
    assert!(
        run.success() && run.stdout.contains("via-W"),
        "{run}\n{}",
        gw.log_tail(30)
    );
    // The broker is still fine: -J too.
    let run = lab.ssh(
        Host::Client,
        &alice,
        &[
            "-J",
            &lab.jump("alice"),
            &format!("root@{RESEARCH}"),
            "true",
        ],
        LOGIN,
    );
    assert!(run.success(), "{run}\n{}", gw.log_tail(30));
}

#[test]
fn a_target_that_never_answers_does_not_stall_the_users_other_channels() {
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    lab.start_targets();
    let connect_timeout = Duration::from_secs(8);
    let gw = lab.start_broker(&lab.broker_config("connect_timeout = \"8s\""));
    let alice = lab.identity("alice");
    add_active_user(&gw, "alice", "research", &alice);
    // 10.0.3.99 is inside research's subnet, but its frames go to a MAC
    // nobody has: SYNs vanish without an answer or an error.
    let dead = "10.0.3.99";
    topo.exec_ok(
        Host::Gateway,
        &[
            "ip",
            "neigh",
            "replace",
            dead,
            "lladdr",
            "02:00:5e:00:03:99",
            "dev",
            "research",
            "nud",
            "permanent",
        ],
    );
    // One SSH connection, two local forwards: each accepted local connection
    // is one direct-tcpip channel on it.
    let (dead_port, live_port) = (10_099_u16, 10_140_u16);
    let forwards = [
        format!("127.0.0.1:{dead_port}:{dead}:22"),
        format!("127.0.0.1:{live_port}:{RESEARCH}:22"),
    ];
    let gateway = format!("alice@{}", lab.gateway());
    let port = BROKER_PORT.to_string();
    let argv = lab.ssh_argv(
        &alice,
        &[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &forwards[0],
            "-L",
            &forwards[1],
            "-p",
            &port,
            &gateway,
        ],
        Duration::from_secs(120),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    topo.spawn(Host::Client, "forwarder", &argv);
    topo.wait_tcp(
        Host::Client,
        "127.0.0.1",
        live_port,
        Duration::from_secs(15),
        "ssh -L",
    );

    // Hold a channel to the dead target open (its connect is pending).
    let hold = format!("exec 3<>/dev/tcp/127.0.0.1/{dead_port}; sleep 30");
    topo.spawn(Host::Client, "holder", &["bash", "-c", &hold]);
    std::thread::sleep(Duration::from_millis(300));

    let live = || {
        lab.ssh(
            Host::Client,
            &alice,
            &[
                "-p",
                &live_port.to_string(),
                "-o",
                &format!("HostKeyAlias={RESEARCH}"),
                "root@127.0.0.1",
                "echo second-channel",
            ],
            LOGIN,
        )
    };
    for attempt in 0..3 {
        let run = live();
        assert!(
            run.success() && run.stdout.contains("second-channel"),
            "attempt {attempt}: {run}\n{}\n{}",
            topo.process_log("forwarder"),
            gw.log_tail(30)
        );
        assert!(
            run.elapsed < connect_timeout / 2,
            "attempt {attempt}: a second channel took {:?} while a connect to {dead} was \
             pending (connect_timeout {connect_timeout:?}): the dead target stalls it",
            run.elapsed
        );
    }
    // The pending one ends as a refused connect, audited, after connect_timeout.
    wait_audit(&gw, "ssh", connect_timeout + AUDIT_WITHIN, |r| {
        r.to_string().contains(dead) && r["kind"] != "ssh.session.start"
    })
    .unwrap_or_else(|all| panic!("no record of the failed connect to {dead}: {all:#?}"));
}

#[test]
fn disabling_the_user_closes_a_live_channel_within_a_second() {
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
    let ticks = "i=0; while [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); sleep 0.05; done";
    let argv = lab.ssh_argv(
        &alice,
        &["-J", &lab.jump("alice"), &target, ticks],
        Duration::from_secs(60),
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let pid = topo.spawn(Host::Client, "session", &argv);
    let deadline = Instant::now() + LOGIN;
    while !topo.process_log("session").contains("tick 10\n") {
        assert!(
            topo.exited(pid).is_none() && Instant::now() < deadline,
            "the session did not start streaming:\n{}\n{}",
            topo.process_log("session"),
            gw.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    gw.ctl_ok(&["user", "disable", "alice"]);
    let disabled = Instant::now();
    let status = loop {
        if let Some(status) = topo.exited(pid) {
            break status;
        }
        assert!(
            disabled.elapsed() < Duration::from_secs(10),
            "the session still runs 10 s after `user disable`:\n{}",
            gw.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = disabled.elapsed();
    let log = topo.process_log("session");
    assert!(
        took <= REVOKED_WITHIN && !status.success() && !log.contains("tick 599"),
        "the channel closed {took:?} after `user disable` ({status}); the issue says within 1 s:\n{}",
        gw.log_tail(30)
    );
    let end = wait_audit(&gw, "ssh.session.end", AUDIT_WITHIN, |r| {
        r["actor"] == "alice"
    })
    .unwrap_or_else(|all| panic!("no ssh.session.end for alice: {all:#?}"));
    let text = end.to_string().to_lowercase();
    assert!(
        ["disable", "revok"].iter().any(|w| text.contains(w)),
        "ssh.session.end should give the reason (user disabled): {end}"
    );
}
