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

use gatehouse_tests::Daemon;
use gatehouse_tests::netns::{GATEWAY_RESEARCH_ADDR, Host, Topology};
use gatehouse_tests::ssh::{
    BROKER_PORT, Identity, SshLab, SshRun, audit, byte_counts, noise, wait_audit,
};
use serde_json::Value;

/// One `ssh -J` login with two key exchanges, on a loaded 2-core machine.
const LOGIN: Duration = Duration::from_secs(30);
/// A refused login or channel answers at once; this only bounds a hang.
const REFUSED: Duration = Duration::from_secs(15);
/// An audit record is written before the action it records is acknowledged;
/// this covers the time until the client's command has returned.
const AUDIT_WITHIN: Duration = Duration::from_secs(10);
/// Failed logins under attack are aggregated (per source and minute at most).
const AGGREGATE_WITHIN: Duration = Duration::from_secs(75);
/// The issue: disabling a user closes their channels within one second; the
/// client needs a moment more to notice and exit.
const REVOKED_WITHIN: Duration = Duration::from_millis(1500);
const RESEARCH: &str = "10.0.3.140";
const PRIVATE2: &str = "10.0.4.10";

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
        let ends = transfers(&audit(&gw, "ssh.session.end"));
        if ends.len() >= 2 || Instant::now() > deadline {
            break ends;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        ends.len(),
        2,
        "expected one ssh.session.end with about {size} bytes for each scp, got:\n{:#?}",
        audit(&gw, "ssh.session")
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
        let started: Vec<Value> = audit(&gw, "ssh.session.start")
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

#[test]
fn fifty_concurrent_jump_sessions_complete() {
    const SESSIONS: usize = 50;
    let Some(topo) = Topology::create() else {
        return;
    };
    let Some(lab) = SshLab::new(&topo) else {
        return;
    };
    lab.start_targets();
    // The defaults allow 8 unauthenticated connections per source address;
    // 50 clients starting at once from one address is a deliberate crowd.
    let gw = lab.start_broker(
        &lab.broker_config("max_channels_per_user = 64\nmax_startups_per_source = 64"),
    );
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
        let ends = audit(&gw, "ssh.session.end").len();
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
    let records = from_attacker(&audit(&gw, "ssh.auth.fail"));
    assert!(
        records.len() <= runs.len() / 2,
        "{} ssh.auth.fail records for {} attempts from {attacker}: not aggregated \
         (e.g. {aggregate})",
        records.len(),
        runs.len()
    );
}

/// `user add NAME --group GROUP --ssh-key <id's .pub>`, then `user enable`:
/// the broker only lets active users in, and until the portal exists
/// enabling is how an admin activates a user.
fn add_active_user(gw: &Daemon, name: &str, group: &str, id: &Identity) {
    let key = id.public_key_file.to_str().unwrap();
    gw.ctl_ok(&["user", "add", name, "--group", group, "--ssh-key", key]);
    gw.ctl_ok(&["user", "enable", name]);
    let user = gw.ctl_json(&["user", "show", name]);
    assert!(
        user.to_string().contains("\"active\""),
        "{name} is not active after `user enable`: {user}"
    );
}

/// sha256 of `path`, computed on the client (`jump` None) or on the research
/// host through the jump host.
fn sha256(
    lab: &SshLab<'_>,
    host: Host,
    id: &Identity,
    jump: Option<&str>,
    path: &std::path::Path,
) -> String {
    let command = format!("sha256sum {}", path.display());
    let out = match jump {
        Some(jump) => {
            let run = lab.ssh(
                host,
                id,
                &["-J", jump, &format!("root@{RESEARCH}"), &command],
                LOGIN,
            );
            assert!(run.success(), "{run}");
            run.stdout
        }
        None => lab
            .topo()
            .exec_ok(host, &["sha256sum", path.to_str().unwrap()]),
    };
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

/// The newest audit record's `seq` (0 when there is none yet).
fn last_seq(gw: &Daemon) -> u64 {
    let records = gw.ctl_ok(&["--json", "audit", "--limit", "1"]);
    records
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// The largest integer anywhere in `value` that is not a time (`*_secs`,
/// `*_ms`): an aggregated record's count.
fn max_count(value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::Array(items) => items.iter().map(max_count).max().unwrap_or(0),
        Value::Object(map) => map
            .iter()
            .filter(|(key, _)| !key.ends_with("_secs") && !key.ends_with("_ms"))
            .map(|(_, v)| max_count(v))
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}
