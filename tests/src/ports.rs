//! Loopback ports for the servers a test starts (the portal, the identity
//! provider, PostgreSQL, rsyslog, sshd, Chromium's debugger).
//!
//! A port is handed out once per test process, from 20000 to 31999: below
//! Linux's ephemeral range (32768 and up by default), so no outgoing
//! connection of a test running beside it can be holding it when the server
//! binds it a moment later. Asking the kernel for port 0 did not have that
//! property: CI once saw the portal's port taken in the gap
//! (`Address already in use`) while three SSO tests ran at once.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20_000;
const COUNT: u32 = 12_000;

/// A port of 127.0.0.1 nothing listens on now, never handed out before in
/// this process.
pub fn free_port() -> u16 {
    // Test binaries run one after another; starting each at a place of its
    // own keeps a server a previous binary left in TIME_WAIT out of the way.
    static NEXT: LazyLock<AtomicU32> =
        LazyLock::new(|| AtomicU32::new(std::process::id().wrapping_mul(7919) % COUNT));
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % COUNT;
        let port = u16::try_from(FIRST + offset).expect("ports below 32000 fit in u16");
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free port of 127.0.0.1 between {FIRST} and {}",
        FIRST + COUNT - 1
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        assert!(
            ports.iter().all(|p| (20_000..32_000).contains(p)),
            "{ports:?}"
        );
    }
}
