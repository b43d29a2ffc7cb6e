//! The gateway host's own addresses, which no policy may open: a VPN user
//! or a jump host user reaching the gateway itself (its SSH, its metrics,
//! its admin services) is always refused.
//!
//! Fails closed: the list is taken at start-up (no list, no start), and
//! when a later listing fails the last known list stays in force — never
//! an empty one, which would open the gateway's own services to every
//! group whose subnets cover them.

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a listing is used before the interfaces are listed again.
const MAX_AGE: Duration = Duration::from_secs(5);

/// Lists the addresses of every interface (the real one: `getifaddrs`).
pub type Lister = fn() -> Result<Vec<IpAddr>, nix::Error>;

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot list the host's own addresses (refused by policy, so accessd does not run without them): {0}"
)]
pub struct HostAddrsError(#[source] nix::Error);

/// The host's addresses, listed again every few seconds.
pub struct HostAddrs {
    lister: Lister,
    last: Mutex<(Instant, Vec<IpAddr>)>,
}

impl HostAddrs {
    /// Lists the interfaces of this network namespace now.
    pub fn load() -> Result<Self, HostAddrsError> {
        Self::with_lister(interface_addresses)
    }

    /// As [`HostAddrs::load`], with another lister (tests).
    pub fn with_lister(lister: Lister) -> Result<Self, HostAddrsError> {
        let first = lister().map_err(HostAddrsError)?;
        Ok(Self {
            lister,
            last: Mutex::new((Instant::now(), normalized(first))),
        })
    }

    /// The addresses, listed again when the last listing is older than a
    /// few seconds. A failed listing keeps the last known list.
    pub fn current(&self) -> Vec<IpAddr> {
        self.current_at(Instant::now())
    }

    fn current_at(&self, now: Instant) -> Vec<IpAddr> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(last.0) >= MAX_AGE {
            match (self.lister)() {
                Ok(list) => *last = (now, normalized(list)),
                Err(err) => {
                    // Tried again at the next use after MAX_AGE, not at every packet.
                    last.0 = now;
                    tracing::warn!(error = %err, kept = last.1.len(), "cannot list the host's addresses; the last known list stays in force");
                }
            }
        }
        last.1.clone()
    }

    /// The addresses other hosts can reach this one by: [`HostAddrs::current`]
    /// without loopback and link-local ones (what an HA node registers, and
    /// what SSH certificates list in `source-address`).
    pub fn reachable(&self) -> Vec<IpAddr> {
        self.current()
            .into_iter()
            .filter(|ip| !ip.is_loopback() && !is_link_local(ip))
            .collect()
    }
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// Every address configured on any interface of this network namespace.
pub fn interface_addresses() -> Result<Vec<IpAddr>, nix::Error> {
    Ok(nix::ifaddrs::getifaddrs()?
        .filter_map(|ifaddr| {
            let addr = ifaddr.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}

fn normalized(mut addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    static FAIL: AtomicBool = AtomicBool::new(false);

    fn flaky() -> Result<Vec<IpAddr>, nix::Error> {
        if FAIL.load(Ordering::SeqCst) {
            Err(nix::Error::EMFILE)
        } else {
            Ok(vec![[10, 0, 1, 10].into(), [127, 0, 0, 1].into()])
        }
    }

    fn failing() -> Result<Vec<IpAddr>, nix::Error> {
        Err(nix::Error::ENOMEM)
    }

    fn with_link_local() -> Result<Vec<IpAddr>, nix::Error> {
        Ok(vec![
            [10, 0, 1, 10].into(),
            [127, 0, 0, 1].into(),
            [169, 254, 1, 1].into(),
            "fe80::1".parse().unwrap(),
            "::1".parse().unwrap(),
            "2001:db8::5".parse().unwrap(),
        ])
    }

    #[test]
    fn reachable_leaves_out_loopback_and_link_local() {
        let addrs = HostAddrs::with_lister(with_link_local).unwrap();
        let expected: Vec<IpAddr> = vec![[10, 0, 1, 10].into(), "2001:db8::5".parse().unwrap()];
        assert_eq!(addrs.reachable(), expected);
    }

    #[test]
    fn includes_loopback() {
        let addrs = HostAddrs::load().unwrap().current();
        assert!(addrs.contains(&IpAddr::from([127, 0, 0, 1])));
    }

    #[test]
    fn a_failed_listing_keeps_the_last_known_list() {
        FAIL.store(false, Ordering::SeqCst);
        let addrs = HostAddrs::with_lister(flaky).unwrap();
        let known = addrs.current();
        assert_eq!(known.len(), 2);
        FAIL.store(true, Ordering::SeqCst);
        let later = Instant::now() + MAX_AGE * 2;
        assert_eq!(addrs.current_at(later), known, "never an empty list");
        assert_eq!(addrs.current_at(later + MAX_AGE * 2), known);
    }

    #[test]
    fn no_listing_at_start_is_an_error() {
        let err = HostAddrs::with_lister(failing).err().unwrap();
        assert!(
            err.to_string()
                .contains("cannot list the host's own addresses"),
            "{err}"
        );
    }
}
