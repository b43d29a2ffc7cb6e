//! The failover of an HA pair as its users see it (issue 14): a member
//! enrolled at the portal (a session in the shared store) has a stock
//! wireguard-go client that pings the research host through the pair's
//! elastic IP every 100 ms, and an `ssh -J` key. The active gateway is
//! killed (SIGKILL), stopped (SIGTERM) or paused (SIGSTOP), or the database
//! goes away; the standby takes the lease, moves the elastic IP and the pool
//! route in moto, which the edge follows, and resumes the client's tunnel
//! with a handshake. The client's config never changes; after each, no
//! acknowledged audit record is missing, the chain verifies and the portal
//! session from before still works.
//! `tests/bench/failover-bench.sh` runs [`failover_bench`] for the figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_tests::ha_lab::{ELASTIC_IP, PORTAL_PORT, PairLab, time_until};
use gatehouse_tests::netns::{Host, WgClient};
use gatehouse_tests::portal::PASSWORD;
use gatehouse_tests::ssh::{Identity, SshLab};
use gatehouse_tests::{Daemon, ha_role, stderr, stdout};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const RESEARCH: &str = "10.0.3.140";
const LOGIN: Duration = Duration::from_secs(30);

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What clients see of a gateway: its WireGuard key, SSH host key and
/// portal certificate.
fn identity(gw: &Daemon) -> [String; 3] {
    let status = gw.ctl_json(&["status"]);
    [
        &status["wireguard_public_key"],
        &status["ssh"]["host_key_fingerprint"],
        &status["portal"]["tls_fingerprint"],
    ]
    .map(|v| {
        v.as_str()
            .unwrap_or_else(|| panic!("no identity in {status}"))
            .to_string()
    })
}

/// The pair up: gw-a active (elastic IP on it), gw-b standby, both showing
/// one identity; alice enrolled at the portal through the elastic IP (her
/// session cookie in `jar`; the login opens her VPN session), her laptop
/// connected through gw-a, her SSH key registered.
struct Pair<'l> {
    lab: &'l PairLab,
    a: Daemon,
    b: Daemon,
    client: WgClient<'l>,
    ssh: SshLab<'l>,
    alice: Identity,
    jar: PathBuf,
}

fn pair_with_a_client<'l>(lab: &'l PairLab, lease: &str) -> Pair<'l> {
    let ssh = SshLab::new(&lab.topo).expect("OpenSSH (tests/run.sh installs it)");
    let a = lab.start(0, lease);
    time_until(Duration::from_secs(15), || ha_role(&a) == "active").expect("gw-a active");
    let hop_a = lab.world.nodes[0].addr.clone();
    time_until(Duration::from_secs(15), || {
        lab.elastic_ip_hop().as_deref() == Some(&hop_a)
    })
    .unwrap_or_else(|| {
        panic!(
            "the edge never routed the elastic IP to gw-a:\n{}",
            lab.router_log()
        )
    });
    let b = lab.start(1, lease);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ha_role(&b), "standby");
    assert_eq!(
        identity(&a),
        identity(&b),
        "the two nodes show clients different keys"
    );

    let alice = ssh.identity("alice");
    let added = a.ctl_json(&[
        "user",
        "add",
        "alice",
        "--group",
        "research",
        "--ssh-key",
        alice.public_key_file.to_str().unwrap(),
    ]);
    let token = added["enrollment"]["token"].as_str().unwrap().to_string();
    let jar = lab.dir().join("alice.cookies");
    let (status, body) = portal(
        lab,
        &jar,
        &format!("/api/v1/enroll/{token}"),
        Some(&json!({ "password": PASSWORD })),
    );
    assert_eq!(status, 200, "enrolling through the elastic IP: {body}");
    let conf = lab.dir().join("alice-laptop.conf");
    a.ctl_ok(&[
        "device",
        "config",
        "alice",
        "laptop",
        "--out",
        conf.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains(&format!("Endpoint = {ELASTIC_IP}:51820")),
        "{text}"
    );
    let client = WgClient::up(&lab.topo, &conf);
    client
        .wait_fetch(
            &lab.topo.whoami_url(Host::Research),
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("no tunnel through gw-a: {e}\n{}", a.log_tail(30)));
    Pair {
        lab,
        a,
        b,
        client,
        ssh,
        alice,
        jar,
    }
}

/// A portal request from the client namespace through the elastic IP, with
/// the member's cookies in `jar` (a POST when `body` is given). Returns
/// (status, body).
fn portal(lab: &PairLab, jar: &std::path::Path, path: &str, body: Option<&Value>) -> (u16, String) {
    let jar = jar.to_str().unwrap();
    let url = format!("https://{ELASTIC_IP}:{PORTAL_PORT}{path}");
    let mut argv = vec![
        "curl",
        "-sk",
        "--noproxy",
        "*",
        "--max-time",
        "10",
        "-b",
        jar,
        "-c",
        jar,
        "-o",
        "/dev/stdout",
        "-w",
        "\n%{http_code}",
    ];
    let body = body.map(Value::to_string);
    if let Some(body) = &body {
        argv.extend(["-H", "content-type: application/json", "-d", body]);
    }
    argv.push(&url);
    let out = lab.topo.exec(Host::Client, &argv);
    let text = stdout(&out);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

impl Pair<'_> {
    /// The portal session from before still works, now answered by
    /// whichever node is active.
    fn assert_portal_session_works(&self) {
        let (status, body) = portal(self.lab, &self.jar, "/api/v1/whoami", None);
        assert_eq!(status, 200, "the portal session from before: {body}");
        assert!(body.contains("alice"), "{body}");
    }

    /// `ssh -J alice@<elastic IP>` to the research host's sshd; the first
    /// run records the jump host's key (accept-new), later ones must see
    /// the same.
    fn ssh_jump(&self) {
        let jump = format!("alice@{ELASTIC_IP}:2222");
        let target = format!("root@{RESEARCH}");
        let run = self.ssh.ssh(
            Host::Client,
            &self.alice,
            &["-J", &jump, &target, "echo through-the-pair"],
            LOGIN,
        );
        assert!(
            run.success() && run.stdout.contains("through-the-pair"),
            "{run}\ngw-a:\n{}\ngw-b:\n{}",
            self.a.log_tail(20),
            self.b.log_tail(20)
        );
    }

    fn active(&self) -> &Daemon {
        if ha_role(&self.a) == "active" {
            &self.a
        } else {
            &self.b
        }
    }
}

/// Every audit record (seq and hash) `gw` shows.
fn records(gw: &Daemon) -> BTreeSet<(u64, String)> {
    gw.audit_json(&[])
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// After a failover: every record acknowledged before is still in the
/// chain `now` shows, and the chain verifies.
fn assert_no_record_lost(before: &BTreeSet<(u64, String)>, now: &Daemon) {
    let after = records(now);
    let lost: Vec<_> = before.difference(&after).collect();
    assert!(lost.is_empty(), "acknowledged audit records lost: {lost:?}");
    let verified = now.ctl_json(&["audit", "verify"]);
    assert_eq!(verified["intact"], true, "{verified}");
}

/// One run: `stop` stops the active at a moment it returns (unix time);
/// returns how long the client's pings went unanswered from then on.
fn outage(lab: &PairLab, name: &str, stop: impl FnOnce() -> f64) -> Duration {
    let ping = start_ping(lab, name);
    std::thread::sleep(Duration::from_secs(2));
    let stopped_at = stop();
    let resumed = time_until(Duration::from_secs(30), || {
        first_reply_after(&lab.topo.process_log(name), stopped_at + 0.3).is_some()
    });
    lab.topo.stop(ping);
    let log = lab.topo.process_log(name);
    assert!(
        resumed.is_some(),
        "the client's pings never came back:\n{}\nEIP router:\n{}",
        tail(&log),
        lab.router_log()
    );
    // The last reply before the stop, and the first after it.
    let first = first_reply_after(&log, stopped_at).unwrap();
    let gap = first - stopped_at;
    Duration::from_secs_f64(gap.max(0.0))
}

/// Pings the research host from the client every 100 ms (at most 60 s).
fn start_ping(lab: &PairLab, name: &str) -> u32 {
    lab.topo.spawn(
        Host::Client,
        name,
        &[
            "ping", "-D", "-n", "-i", "0.1", "-W", "1", "-w", "60", RESEARCH,
        ],
    )
}

/// The timestamps of the `ping -D` replies in `log`.
fn reply_times(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect()
}

/// The timestamp of the first `ping -D` reply line after `after`, past the
/// replies that were already in flight.
fn first_reply_after(log: &str, after: f64) -> Option<f64> {
    let replies = reply_times(log);
    // Replies that answer pings sent before the stop still arrive within a
    // few ms: the outage starts at the last of those.
    let last_before = replies
        .iter()
        .copied()
        .filter(|t| *t <= after + 0.25)
        .fold(after, f64::max);
    replies.into_iter().find(|t| *t > last_before + 0.25)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// How many times the edge moved the elastic IP (the EIP router's log).
fn elastic_ip_moves(lab: &PairLab) -> usize {
    lab.router_log()
        .lines()
        .filter(|l| l.contains(&format!("{ELASTIC_IP}/32 ->")))
        .count()
}

/// Kill -9 of the active while the client pings every 100 ms and runs an
/// iperf3 flow (20 Mbit/s, 25 s): the standby takes over and the client
/// resumes with no change, within 10 s (5 s lease); the same TCP flow goes
/// on to its end; the edge now routes the elastic IP to gw-b; `ha status`
/// names the failover; no acknowledged record is lost and the chain
/// verifies; the portal session from before works; a new `ssh -J` through
/// the elastic IP reaches the research host with the same host key.
#[test]
fn a_killed_active_fails_over_and_a_stock_client_resumes_unchanged() {
    let Some(lab) = PairLab::create() else {
        return;
    };
    let mut pair = pair_with_a_client(&lab, "5s");
    pair.ssh.start_targets();
    pair.ssh_jump();
    let before = records(&pair.a);

    lab.topo.spawn(
        Host::Research,
        "iperf3-server",
        &["iperf3", "-s", "-B", RESEARCH],
    );
    lab.topo.wait_tcp(
        Host::Research,
        RESEARCH,
        5201,
        Duration::from_secs(10),
        "iperf3",
    );
    lab.topo.spawn(
        Host::Client,
        "iperf3",
        &[
            "iperf3", "-c", RESEARCH, "-t", "25", "-b", "20M", "-i", "1", "-J",
        ],
    );
    let gap = outage(&lab, "ping-kill", || {
        let at = now_unix();
        pair.a.kill9();
        at
    });
    eprintln!("failover (kill -9 until the client's pings are answered again): {gap:?}");
    let b = &pair.b;
    assert!(
        gap <= Duration::from_secs(10),
        "failover took {gap:?}\ngw-b:\n{}\nEIP router:\n{}",
        b.log_tail(40),
        lab.router_log()
    );
    assert_eq!(ha_role(b), "active");
    assert_eq!(
        lab.elastic_ip_hop().as_deref(),
        Some(lab.world.nodes[1].addr.as_str())
    );
    assert!(
        pair.client
            .wait_fetch(&lab.topo.whoami_url(Host::Research), Duration::from_secs(5))
            .is_ok()
    );

    // The iperf3 flow (one TCP connection through the tunnel) survives and
    // moves data again after the failover.
    let report = time_until(Duration::from_secs(40), || {
        serde_json::from_str::<Value>(&lab.topo.process_log("iperf3")).is_ok()
    });
    let log = lab.topo.process_log("iperf3");
    assert!(report.is_some(), "iperf3 did not finish:\n{log}");
    let report: Value = serde_json::from_str(&log).unwrap();
    assert!(report.get("error").is_none(), "iperf3 failed: {log}");
    let intervals = report["intervals"].as_array().unwrap();
    let bytes: Vec<u64> = intervals
        .iter()
        .map(|i| i["sum"]["bytes"].as_u64().unwrap_or(0))
        .collect();
    eprintln!("iperf3 bytes per second across the failover: {bytes:?}");
    assert!(bytes.len() >= 24, "{bytes:?}");
    assert!(
        bytes[bytes.len() - 3..].iter().all(|b| *b > 0),
        "the flow did not resume after the failover: {bytes:?}"
    );

    // The failover is recorded once the take-over is done.
    time_until(Duration::from_secs(10), || {
        b.ctl_json(&["ha", "status"])["last_failover"]["from"] == "gw-a"
    })
    .unwrap_or_else(|| panic!("no failover recorded: {}", b.ctl_json(&["ha", "status"])));
    assert_no_record_lost(&before, b);
    pair.assert_portal_session_works();
    pair.ssh_jump();
}

/// A planned stop (SIGTERM on the active) hands over at once: the client's
/// pings are answered again within 2 s; nothing acknowledged is lost and
/// the portal session works on the new active.
#[test]
fn a_planned_stop_hands_the_client_over_within_two_seconds() {
    let Some(lab) = PairLab::create() else {
        return;
    };
    let mut pair = pair_with_a_client(&lab, "5s");
    let before = records(&pair.a);
    let gap = outage(&lab, "ping-term", || {
        let at = now_unix();
        let started = Instant::now();
        assert!(pair.a.stop().success());
        eprintln!("SIGTERM to exit: {:?}", started.elapsed());
        at
    });
    eprintln!("planned handover (SIGTERM until the client's pings are answered again): {gap:?}");
    assert!(
        gap <= Duration::from_secs(2),
        "planned handover took {gap:?}"
    );
    assert_eq!(ha_role(&pair.b), "active");
    // gw-a's own records of stopping are acknowledged too.
    let mut before = before;
    before.extend(records(&pair.b));
    assert_no_record_lost(&before, &pair.b);
    pair.assert_portal_session_works();
}

/// The active is paused (SIGSTOP) past its 3 s lease while the client
/// pings: gw-b takes over and the client resumes; woken (SIGCONT), gw-a
/// finds it lost the lease and steps down without touching AWS: the
/// elastic IP moved exactly once (to gw-b) and stays there.
#[test]
fn a_paused_active_steps_down_without_flapping_the_elastic_ip() {
    let Some(lab) = PairLab::create() else {
        return;
    };
    let pair = pair_with_a_client(&lab, "3s");
    let before = records(&pair.a);
    let moves = elastic_ip_moves(&lab);
    let gap = outage(&lab, "ping-stop", || {
        let at = now_unix();
        pair.a.signal(Signal::SIGSTOP);
        at
    });
    eprintln!("failover (SIGSTOP until the client's pings are answered again): {gap:?}");
    assert!(gap <= Duration::from_secs(10), "{gap:?}");
    assert_eq!(ha_role(&pair.b), "active");
    std::thread::sleep(Duration::from_secs(1));

    pair.a.signal(Signal::SIGCONT);
    time_until(Duration::from_secs(5), || ha_role(&pair.a) == "standby").unwrap_or_else(|| {
        panic!(
            "gw-a did not step down after SIGCONT:\n{}",
            pair.a.log_tail(30)
        )
    });
    let ping = start_ping(&lab, "ping-after-wake");
    std::thread::sleep(Duration::from_secs(4));
    lab.topo.stop(ping);
    assert_eq!(
        (ha_role(&pair.a), ha_role(&pair.b)),
        ("standby".into(), "active".into())
    );
    assert_eq!(
        elastic_ip_moves(&lab),
        moves + 1,
        "the elastic IP flapped:\n{}",
        lab.router_log()
    );
    assert_eq!(
        lab.elastic_ip_hop().as_deref(),
        Some(lab.world.nodes[1].addr.as_str())
    );
    let replies = reply_times(&lab.topo.process_log("ping-after-wake"));
    assert!(
        replies.len() >= 30,
        "the client lost traffic when gw-a woke: {} replies in 4 s",
        replies.len()
    );
    let stepped_down = pair
        .b
        .audit_of("ha.release")
        .iter()
        .any(|r| r["target"] == "gw-a" && r["detail"]["released"] == false);
    assert!(stepped_down, "no step-down of gw-a recorded");
    assert_no_record_lost(&before, &pair.b);
    pair.assert_portal_session_works();
}

/// PostgreSQL stops for 10 s under the pair while the client pings: the
/// tunnel keeps forwarding all along (fail static: no reply missing for
/// more than a second), an admin action is refused with
/// `store_unavailable`, nobody moves the elastic IP; once the database is
/// back, gw-a is active again, actions work on both, nothing acknowledged
/// is lost and the portal session works.
#[test]
fn a_lost_database_leaves_tunnels_forwarding_and_both_nodes_recover() {
    let Some(lab) = PairLab::create() else {
        return;
    };
    let pair = pair_with_a_client(&lab, "5s");
    let before = records(&pair.a);
    let moves = elastic_ip_moves(&lab);
    let ping = start_ping(&lab, "ping-db");
    std::thread::sleep(Duration::from_secs(1));
    let down_at = now_unix();
    lab.pg.stop();
    let refused = pair
        .a
        .ctl(&["--json", "user", "add", "bob", "--group", "research"]);
    assert!(
        !refused.status.success(),
        "an action succeeded without its store"
    );
    let said = format!("{}{}", stdout(&refused), stderr(&refused));
    assert!(said.contains("store_unavailable"), "{said}");
    std::thread::sleep(
        Duration::from_secs(10).saturating_sub(Duration::from_secs_f64(now_unix() - down_at)),
    );
    lab.pg.restart();
    let back = time_until(Duration::from_secs(15), || ha_role(&pair.a) == "active");
    assert!(
        back.is_some(),
        "gw-a is not active again after the database came back:\n{}",
        pair.a.log_tail(30)
    );
    std::thread::sleep(Duration::from_secs(2));
    lab.topo.stop(ping);
    let replies = reply_times(&lab.topo.process_log("ping-db"));
    let worst = replies.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    eprintln!(
        "database outage of 10 s: {} ping replies, longest gap {worst:.2} s",
        replies.len()
    );
    assert!(
        worst < 1.0,
        "the tunnel stopped forwarding for {worst:.2} s while the database was away"
    );
    assert_eq!(ha_role(&pair.b), "standby");
    assert_eq!(elastic_ip_moves(&lab), moves, "{}", lab.router_log());

    pair.b
        .ctl_json(&["user", "add", "bob", "--group", "research"]);
    assert!(
        pair.a
            .ctl_json(&["user", "list"])
            .to_string()
            .contains("bob")
    );
    for gw in [&pair.a, &pair.b] {
        assert_no_record_lost(&before, gw);
        assert!(!gw.log_text().contains("panicked"), "{}", gw.log_tail(40));
    }
    assert_eq!(pair.active().ctl_json(&["ha", "status"])["role"], "active");
    pair.assert_portal_session_works();
}

/// The benchmark (tests/bench/failover-bench.sh): five kill -9 failovers,
/// each figure printed, and the median.
#[test]
#[ignore = "a benchmark: tests/bench/failover-bench.sh runs it"]
fn failover_bench() {
    let Some(lab) = PairLab::create() else {
        return;
    };
    let mut figures = Vec::new();
    let Pair {
        mut a,
        mut b,
        client: _client,
        ..
    } = pair_with_a_client(&lab, "5s");
    for run in 1..=5 {
        // Whichever is active is killed; then it comes back as the standby.
        let active = if ha_role(&a) == "active" {
            &mut a
        } else {
            &mut b
        };
        let gap = outage(&lab, &format!("ping-bench-{run}"), || {
            let at = now_unix();
            active.kill9();
            at
        });
        println!("run {run}: failover {:.2} s", gap.as_secs_f64());
        figures.push(gap);
        active.spawn();
        time_until(Duration::from_secs(15), || ha_role(active) == "standby")
            .expect("back as standby");
    }
    figures.sort();
    println!(
        "median failover: {:.2} s (5 runs)",
        figures[2].as_secs_f64()
    );
}
