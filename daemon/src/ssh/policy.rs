//! The jump host's target decision, without I/O: given what a user asked for
//! (a host and port) and what the name resolved to, which exact address may
//! the gateway connect to, or why not.
//!
//! The address rule is the data plane's ([`AccessSet::check`]: inside one of
//! the user's groups' subnets, outside the always-refused ranges), plus every
//! address of this host. The port rule is the jump host's own: the port must
//! be in `ssh.allowed_ports` OR in the `ports` of a group whose subnets
//! contain the address. A group without `ports` opens its subnets to the VPN
//! on every port, but through the jump host only on `ssh.allowed_ports`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use gatehouse_config::policy::{DenyReason, Policy};

/// What the client asked for: `host_to_connect` and `port_to_connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub host: String,
    pub port: u16,
}

/// Why a direct-tcpip target is refused. Shown to the client (one line) and
/// written into `ssh.forward.deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetDenied {
    /// The port field is not a TCP port (0 or above 65535).
    BadPort { port: u32 },
    /// The host is empty, too long, or not a plausible name.
    BadHost,
    /// The name did not resolve (or resolution timed out).
    Unresolved { error: String },
    /// Resolved, but no address passed the policy; the first one's reason.
    Address { addr: IpAddr, reason: DenyReason },
    /// The address is allowed, but the port is not.
    Port { addr: IpAddr, port: u16 },
}

/// The policy inputs for one user, captured once per channel.
pub struct TargetPolicy<'a> {
    pub policy: &'a Policy,
    pub user_groups: &'a [String],
    pub allowed_ports: &'a [u16],
    /// The gateway host's own addresses (always refused).
    pub local_addrs: &'a [IpAddr],
}

impl TargetPolicy<'_> {
    /// The first of `resolved` (in order) that the user may reach on
    /// `port`. Addresses are canonicalised first (`::ffff:a.b.c.d` is
    /// `a.b.c.d`), and the returned address is the one to connect to.
    pub fn pick(&self, resolved: &[IpAddr], port: u16) -> Result<SocketAddr, TargetDenied> {
        let mut first_denial = None;
        for addr in resolved {
            let addr = addr.to_canonical();
            match self.check(addr, port) {
                Ok(()) => return Ok(SocketAddr::new(addr, port)),
                Err(denied) => {
                    first_denial.get_or_insert(denied);
                }
            }
        }
        Err(first_denial.unwrap_or(TargetDenied::Unresolved {
            error: "no addresses".into(),
        }))
    }

    /// May the user reach `addr:port` through the jump host?
    pub fn check(&self, addr: IpAddr, port: u16) -> Result<(), TargetDenied> {
        let addr = addr.to_canonical();
        let deny = |reason| TargetDenied::Address { addr, reason };
        if self.local_addrs.iter().any(|a| a.to_canonical() == addr) {
            // Loopback and the like say so; the host's other addresses are
            // "the gateway itself".
            return Err(deny(match gatehouse_config::policy::always_refused(addr) {
                Some(range) => DenyReason::AlwaysRefused(range),
                None => DenyReason::GatewayAddress,
            }));
        }
        let access = self.policy.access_for(self.user_groups);
        // Address only: a group's port list is applied below, the SSH way.
        access.check_address(addr).map_err(deny)?;
        let group_opens_port = self
            .user_groups
            .iter()
            .filter_map(|name| self.policy.group(name))
            .filter(|rule| rule.subnets.iter().any(|net| net.contains(&addr)))
            .any(|rule| match &rule.ports {
                Some(ports) => ports.contains(&port),
                None => self.allowed_ports.contains(&port),
            });
        if group_opens_port {
            Ok(())
        } else {
            Err(TargetDenied::Port { addr, port })
        }
    }
}

/// Checks the shape of a requested target before anything is resolved.
pub fn parse_requested(host: &str, port: u32) -> Result<Requested, TargetDenied> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(TargetDenied::BadPort { port })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let plausible = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%'));
    if !plausible {
        return Err(TargetDenied::BadHost);
    }
    Ok(Requested {
        host: host.to_string(),
        port,
    })
}

impl TargetDenied {
    /// A short machine-readable reason for the audit record.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadPort { .. } => "bad_port",
            Self::BadHost => "bad_host",
            Self::Unresolved { .. } => "unresolved",
            Self::Address {
                reason: DenyReason::NotInGroups,
                ..
            } => "not_in_groups",
            Self::Address {
                reason: DenyReason::GatewayAddress,
                ..
            } => "gateway_address",
            Self::Address {
                reason: DenyReason::AlwaysRefused(_),
                ..
            } => "always_refused",
            // The jump host always knows its port: these two cannot arise
            // from its address-only check, and would mean "port".
            Self::Address {
                reason:
                    DenyReason::PortNotAllowed | DenyReason::PortUnknown | DenyReason::SourceRouted,
                ..
            }
            | Self::Port { .. } => "port_not_allowed",
        }
    }
}

impl fmt::Display for TargetDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPort { port } => write!(f, "port {port} is not a TCP port"),
            Self::BadHost => f.write_str("the target host is not a valid name or address"),
            Self::Unresolved { error } => write!(f, "the target host did not resolve: {error}"),
            Self::Address { addr, reason } => write!(f, "{addr} is refused: {reason}"),
            Self::Port { addr, port } => write!(
                f,
                "port {port} of {addr} is not open through the jump host (a group's ports, or ssh.allowed_ports for a group without ports)"
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use gatehouse_config::policy::{GroupRule, RefusedRange};

    use super::*;

    fn policy() -> Policy {
        let rule = |nets: &[&str], ports: Option<&[u16]>| GroupRule {
            subnets: nets.iter().map(|n| n.parse().unwrap()).collect(),
            ports: ports.map(|p| p.iter().copied().collect::<BTreeSet<u16>>()),
        };
        Policy::new([
            ("research".to_string(), rule(&["10.0.3.0/24"], None)),
            (
                "app-admins".to_string(),
                rule(&["10.0.2.0/24"], Some(&[22, 3001])),
            ),
            // A database group: its own port only, on both paths.
            ("db".to_string(), rule(&["10.0.5.0/24"], Some(&[5432]))),
            // Would open metadata and loopback if the policy let it.
            (
                "evil".to_string(),
                rule(&["169.254.0.0/16", "127.0.0.0/8"], None),
            ),
        ])
        .with_gateway_addrs(["10.200.0.1".parse().unwrap()])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn check(groups: &[&str], addr: &str, port: u16) -> Result<(), TargetDenied> {
        let policy = policy();
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let local = [ip("10.0.1.10"), ip("127.0.0.1")];
        TargetPolicy {
            policy: &policy,
            user_groups: &groups,
            allowed_ports: &[22],
            local_addrs: &local,
        }
        .check(ip(addr), port)
    }

    #[test]
    fn allows_group_subnets_on_allowed_ports() {
        assert_eq!(check(&["research"], "10.0.3.140", 22), Ok(()));
        assert_eq!(check(&["app-admins"], "10.0.2.5", 22), Ok(()));
    }

    #[test]
    fn refuses_outside_the_groups() {
        let err = check(&["research"], "10.0.2.5", 22).unwrap_err();
        assert_eq!(err.code(), "not_in_groups");
        assert_eq!(
            check(&[], "10.0.3.140", 22).unwrap_err().code(),
            "not_in_groups"
        );
    }

    #[test]
    fn refuses_metadata_loopback_and_the_gateway_whatever_the_groups() {
        let all = ["research", "app-admins", "evil"];
        for addr in [
            "169.254.169.254",
            "127.0.0.1",
            "fd00:ec2::254",
            "fe80::1",
            "::1",
        ] {
            let err = check(&all, addr, 22).unwrap_err();
            assert_eq!(err.code(), "always_refused", "{addr}: {err}");
        }
        assert_eq!(
            check(&all, "169.254.169.254", 80).unwrap_err(),
            TargetDenied::Address {
                addr: ip("169.254.169.254"),
                reason: DenyReason::AlwaysRefused(RefusedRange::LinkLocal)
            }
        );
        // The host's own address, and the VPN gateway address.
        assert_eq!(
            check(&all, "10.0.1.10", 22).unwrap_err().code(),
            "gateway_address"
        );
        assert_eq!(
            check(&all, "10.200.0.1", 22).unwrap_err().code(),
            "gateway_address"
        );
        // IPv4-mapped IPv6 is the IPv4 address.
        assert_eq!(
            check(&all, "::ffff:127.0.0.1", 22).unwrap_err().code(),
            "always_refused"
        );
        assert_eq!(
            check(&all, "::ffff:10.0.1.10", 22).unwrap_err().code(),
            "gateway_address"
        );
    }

    /// Review finding 8: a group limited to `ports = [5432]` got port 22
    /// through the jump host (from `ssh.allowed_ports`) although its VPN
    /// packets to 22 are dropped. A group's `ports`, when set, are the
    /// whole list for its hosts on both paths.
    #[test]
    fn a_groups_ports_are_the_whole_list_for_its_hosts() {
        assert_eq!(check(&["db"], "10.0.5.7", 5432), Ok(()));
        assert_eq!(
            check(&["db"], "10.0.5.7", 22).unwrap_err(),
            TargetDenied::Port {
                addr: ip("10.0.5.7"),
                port: 22
            }
        );
        // A group without `ports` over the same hosts still opens
        // ssh.allowed_ports there.
        let policy = Policy::new([
            (
                "db".to_string(),
                GroupRule {
                    subnets: vec!["10.0.5.0/24".parse().unwrap()],
                    ports: Some([5432].into_iter().collect()),
                },
            ),
            (
                "ops".to_string(),
                GroupRule {
                    subnets: vec!["10.0.5.0/24".parse().unwrap()],
                    ports: None,
                },
            ),
        ]);
        let groups = ["db".to_string(), "ops".to_string()];
        let both = TargetPolicy {
            policy: &policy,
            user_groups: &groups,
            allowed_ports: &[22],
            local_addrs: &[],
        };
        assert_eq!(both.check(ip("10.0.5.7"), 22), Ok(()));
        assert_eq!(both.check(ip("10.0.5.7"), 5432), Ok(()));
        assert!(both.check(ip("10.0.5.7"), 80).is_err());
    }

    #[test]
    fn port_rule_is_a_matching_groups_ports_or_allowed_ports() {
        // A group without `ports` opens only ssh.allowed_ports here.
        assert_eq!(
            check(&["research"], "10.0.3.140", 80).unwrap_err(),
            TargetDenied::Port {
                addr: ip("10.0.3.140"),
                port: 80
            }
        );
        // A group's own ports are open in its subnets ...
        assert_eq!(check(&["app-admins"], "10.0.2.5", 3001), Ok(()));
        assert_eq!(
            check(&["app-admins"], "10.0.2.5", 4000).unwrap_err().code(),
            "port_not_allowed"
        );
        // ... but not in another group's subnets.
        assert_eq!(
            check(&["app-admins", "research"], "10.0.3.140", 3001)
                .unwrap_err()
                .code(),
            "port_not_allowed"
        );
    }

    #[test]
    fn a_name_resolving_to_refused_addresses_is_refused_and_the_checked_address_is_used() {
        let policy = policy();
        let groups = vec!["research".to_string(), "evil".to_string()];
        let target = TargetPolicy {
            policy: &policy,
            user_groups: &groups,
            allowed_ports: &[22],
            local_addrs: &[],
        };
        let err = target
            .pick(&[ip("169.254.169.254"), ip("127.0.0.1")], 22)
            .unwrap_err();
        assert_eq!(err.code(), "always_refused");
        assert!(err.to_string().contains("169.254.169.254"), "{err}");
        // Mixed answers: the allowed one is picked, never the refused one.
        let picked = target
            .pick(&[ip("127.0.0.1"), ip("::ffff:10.0.3.7")], 22)
            .unwrap();
        assert_eq!(picked, "10.0.3.7:22".parse().unwrap());
        assert!(target.pick(&[], 22).is_err());
    }

    #[test]
    fn requested_targets_are_parsed() {
        assert_eq!(
            parse_requested("10.0.3.140", 22).unwrap(),
            Requested {
                host: "10.0.3.140".into(),
                port: 22
            }
        );
        assert_eq!(parse_requested("[fd00::1]", 22).unwrap().host, "fd00::1");
        assert!(parse_requested("db.internal", 5432).is_ok());
        assert_eq!(
            parse_requested("x", 0),
            Err(TargetDenied::BadPort { port: 0 })
        );
        assert_eq!(
            parse_requested("x", 70000),
            Err(TargetDenied::BadPort { port: 70000 })
        );
        assert_eq!(parse_requested("", 22), Err(TargetDenied::BadHost));
        assert_eq!(parse_requested("a b", 22), Err(TargetDenied::BadHost));
        assert_eq!(
            parse_requested(&"a".repeat(300), 22),
            Err(TargetDenied::BadHost)
        );
    }
}
