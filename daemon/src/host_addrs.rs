//! The gateway host's own addresses, which no policy may open: a VPN user
//! or a jump host user reaching the gateway itself (its SSH, its metrics,
//! its admin services) is always refused.

use std::net::IpAddr;

/// Every address configured on any interface of this network namespace.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = match nix::ifaddrs::getifaddrs() {
        Ok(list) => list
            .filter_map(|ifaddr| {
                let addr = ifaddr.address?;
                if let Some(v4) = addr.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot list the host's addresses");
            Vec::new()
        }
    };
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    #[test]
    fn includes_loopback() {
        assert!(super::local_addresses().contains(&std::net::IpAddr::from([127, 0, 0, 1])));
    }
}
