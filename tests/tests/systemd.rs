//! accessd under systemd's `Type=notify` protocol, with the test as the
//! service manager: `READY=1` only once the admin socket answers, watchdog
//! pings at half of `WATCHDOG_USEC`, `STOPPING=1` on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gatehouse_tests::{bin, host_sample_config};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The next notification within `within`, or `None`.
fn next(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let len = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

#[test]
fn ready_after_the_listeners_then_watchdog_pings_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(&config, host_sample_config()).unwrap();
    let notify = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&notify).unwrap();
    let admin = dir.path().join("admin.sock");
    let log = std::fs::File::create(dir.path().join("accessd.log")).unwrap();
    let mut child = Command::new(bin("accessd"))
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--admin-socket")
        .arg(&admin)
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let logged = || std::fs::read_to_string(dir.path().join("accessd.log")).unwrap();

    let ready = next(&manager, Duration::from_secs(20)).unwrap_or_else(&logged);
    assert!(ready.contains("READY=1"), "first notification: {ready}");
    assert!(
        UnixStream::connect(&admin).is_ok(),
        "READY=1 came before the admin socket answered"
    );
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let message = next(&manager, Duration::from_secs(2)).expect("a watchdog ping");
        if message.contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    eprintln!("3 watchdog pings in {:?}", started.elapsed());

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let mut stopping = false;
    while let Some(message) = next(&manager, Duration::from_secs(5)) {
        if message.contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM:\n{}", logged());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
