//! Review finding 2: slow requests cannot exhaust the gateway. One source
//! opens more connections than the portal serves at once, each sending its
//! headers and a `Content-Length` but never the body. Before the fix they
//! were held for ever and filled every slot: another source could not log
//! in. Now one source holds at most `MAX_CONNECTIONS_PER_SOURCE`, a request
//! whose body does not arrive is answered 408 after the request timeout,
//! and the jump host keeps accepting.
//!
//! Loopback only: the stalling client binds 127.0.0.1, the member 127.0.0.2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_tests::Daemon;
use gatehouse_tests::portal::{Portal, Session};
use serde_json::json;

/// More than the portal's 1,024 slots.
const STALLED: usize = 1100;
/// The portal's cap per source (a quarter of its slots).
const PER_SOURCE: usize = 256;

/// Opens `STALLED` TLS connections from 127.0.0.1 to `port`, sends each a
/// request head promising a body, and holds them. Prints `opened N` once
/// done, then, after `wait_secs`, `answered K` for how many got a 408.
fn stall(port: u16, wait_secs: u64) -> Child {
    let script = format!(
        r#"
import resource, socket, ssl, sys, time, select
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
held = []
deadline = time.time() + 60
for i in range({STALLED}):
    if time.time() > deadline: break
    try:
        s = socket.create_connection(("127.0.0.1", {port}), timeout=2, source_address=("127.0.0.1", 0))
        t = ctx.wrap_socket(s, server_hostname="localhost")
        t.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        held.append(t)
    except Exception:
        pass
print("opened", len(held), flush=True)
time.sleep({wait_secs})
answered = 0
for t in held:
    t.setblocking(False)
    try:
        if t.recv(64).startswith(b"HTTP/1.1 408"): answered += 1
    except Exception:
        pass
print("answered", answered, flush=True)
"#
    );
    Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn port_of(listen: &str) -> u16 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn one_stalling_source_cannot_lock_others_out_of_the_portal_or_the_jump_host() {
    let daemon = Daemon::start();
    let portal = Portal::of(&daemon);
    let mut account = portal.enroll(&daemon, "alice");
    let status = daemon.ctl_json(&["status"]);
    let portal_port = port_of(status["portal"]["listen"].as_str().unwrap());
    let ssh_port = port_of(status["ssh"]["listen"].as_str().unwrap());

    // Request timeout (30 s) plus slack before the stalled ones look.
    let mut staller = stall(portal_port, 40);
    let mut lines = BufReader::new(staller.stdout.take().unwrap()).lines();
    let opened = lines.next().unwrap().unwrap();
    eprintln!("stalling client: {opened}");
    let opened: usize = opened.trim_start_matches("opened ").parse().unwrap();
    // Its connections past the per-source cap were closed at once (one
    // slot may be the enrollment's kept-alive connection from 127.0.0.1).
    assert!(
        (200..=PER_SOURCE).contains(&opened),
        "one source holds {opened} connections: the per-source cap is {PER_SOURCE}"
    );

    // Another source logs in, at once.
    let t0 = Instant::now();
    let member = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&portal.cert_pem).unwrap())
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let code = account.next_code();
    let login = member
        .post(format!("{}/api/v1/login", portal.base))
        .json(&json!({ "user": "alice", "password": account.password, "totp_code": code }))
        .send()
        .expect("the portal must answer another source while one stalls");
    assert_eq!(login.status(), 200);
    let _session = Session::from_login(login);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // The jump host still accepts and speaks SSH.
    let mut ssh = TcpStream::connect(("127.0.0.1", ssh_port)).unwrap();
    ssh.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut banner = String::new();
    BufReader::new(&mut ssh).read_line(&mut banner).unwrap();
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");

    // The stalled requests were answered 408 after the request timeout.
    let answered = lines.next().unwrap().unwrap();
    eprintln!("stalling client: {answered}");
    let answered: usize = answered.trim_start_matches("answered ").parse().unwrap();
    assert!(answered >= 1, "no stalled request was answered 408");
    assert!(
        answered <= PER_SOURCE,
        "one source held {answered} requests, more than its {PER_SOURCE} connections"
    );
    let _ = staller.wait();
}
