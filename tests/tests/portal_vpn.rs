//! The portal login gates the tunnel (`vpn.require_login`, the default): a
//! device is not a peer until its user logs in to the portal; the login
//! opens a VPN session of `vpn.session_lifetime`, at whose end the peer is
//! removed (audited `vpn.session.expire`) until the next login. Runs in the
//! network namespaces of `gatehouse_tests::netns`, with the portal reached
//! over the gateway's public address from the client namespace (curl) and a
//! stock wireguard-go client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use gatehouse_tests::netns::{Host, POOL, Topology, WgClient};
use gatehouse_tests::portal::PASSWORD;
use gatehouse_tests::{Daemon, stdout};
use serde_json::{Value, json};

const RESEARCH_URL: &str = "http://10.0.3.140/whoami.txt";

/// POSTs JSON to the portal from the client namespace; returns (status, body).
fn portal_post(topo: &Topology, url: &str, body: &Value) -> (u16, String) {
    let body = body.to_string();
    let out = topo.exec(
        Host::Client,
        &[
            "curl",
            "-sk",
            "--max-time",
            "20",
            "-o",
            "/dev/stdout",
            "-w",
            "\n%{http_code}",
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            url,
        ],
    );
    let text = stdout(&out);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

fn device_live(gw: &Daemon) -> Option<bool> {
    let list = gw.ctl_json(&["device", "list"]);
    list[0]["live"].as_bool()
}

fn wait_live(gw: &Daemon, want: bool, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if device_live(gw) == Some(want) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the device did not become live={want} within {within:?}:\n{}",
        gw.log_tail(30)
    );
}

#[test]
fn a_portal_login_opens_the_tunnel_for_the_session_lifetime() {
    let Some(topo) = Topology::create() else {
        return;
    };
    let portal = format!("https://{}:8443", topo.addr(Host::Gateway));
    let config = topo
        .gateway_config(POOL, "")
        .replacen(
            "require_login = false",
            "require_login = true\nsession_lifetime = \"6s\"",
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:8443\"",
            &format!("listen = \"{}:8443\"", topo.addr(Host::Gateway)),
            1,
        );
    let gw = topo.start_gateway(&config);
    let added = gw.ctl_json(&["user", "add", "alice", "--group", "research"]);
    let token = added["enrollment"]["token"].as_str().unwrap().to_string();
    let conf = topo.dir().join("alice-laptop.conf");
    gw.ctl_ok(&[
        "device",
        "config",
        "alice",
        "laptop",
        "--out",
        conf.to_str().unwrap(),
    ]);
    // No login yet: the device is not a peer.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        device_live(&gw),
        Some(false),
        "a device waits for a portal login"
    );

    // Enrolling ends logged in: the tunnel opens.
    let (status, body) = portal_post(
        &topo,
        &format!("{portal}/api/v1/enroll/{token}"),
        &json!({ "password": PASSWORD }),
    );
    assert_eq!(status, 200, "{body}");
    let took = wait_live(&gw, true, Duration::from_secs(3));
    eprintln!("peer live {took:?} after the enrollment answered");
    let client = WgClient::up_in(&topo, Host::Client, &conf);
    let fetched = client
        .wait_fetch(RESEARCH_URL, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("no traffic after login: {e}\n{}", gw.log_tail(30)));
    assert_eq!(fetched.trim(), "research");

    // The session runs out (6 s): the peer is removed and that is audited.
    let took = wait_live(&gw, false, Duration::from_secs(12));
    eprintln!("peer removed {took:?} after it was seen live (session_lifetime 6s)");
    let expired = gw.ctl_ok(&["--json", "audit", "--kind", "vpn.session.expire"]);
    assert!(expired.contains("alice"), "{expired}");

    // A password login opens it again.
    let (status, body) = portal_post(
        &topo,
        &format!("{portal}/api/v1/login"),
        &json!({ "user": "alice", "password": PASSWORD }),
    );
    assert_eq!(status, 200, "{body}");
    // (Only the peer is checked here: the stock client's handshake retry
    // can take longer than this short session; the first login proved the
    // traffic.)
    wait_live(&gw, true, Duration::from_secs(3));
    let logins = gw.ctl_ok(&["--json", "audit", "--kind", "portal.login.ok"]);
    assert!(logins.contains("alice"), "{logins}");
    drop(client);
}
