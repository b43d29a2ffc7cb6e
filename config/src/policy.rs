//! Access policy: which destinations a user's groups may reach.
//!
//! A user may reach the union of their groups' subnets (restricted to a
//! group's ports where it lists some), minus the ranges that are always
//! refused — loopback, link-local (instance metadata included), multicast and
//! the gateway's own addresses — whatever a group says. The WireGuard data
//! plane and the SSH broker both ask the same [`AccessSet`], so the tunnel and
//! the jump host can never disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// What one `[[group]]` grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRule {
    pub subnets: Vec<IpNet>,
    /// `None`: every port. `Some`: only these ports of port-bearing
    /// protocols; ICMP echo stays allowed, anything whose port cannot be
    /// told is refused.
    pub ports: Option<BTreeSet<u16>>,
}

/// What a packet carries that a port rule can judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A destination port (the first fragment of TCP, UDP, SCTP, UDP-Lite,
    /// DCCP).
    Port(u16),
    /// ICMP or ICMPv6 echo (ping): no port, allowed wherever its address is.
    Echo,
    /// Anything whose port cannot be told: later fragments, other
    /// protocols, tunnels, extension-header chains too long to walk. A
    /// group with `ports` refuses it.
    Unknown,
}

/// The policy of the running config: every group's rule, and the gateway's
/// own addresses (always refused).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    groups: BTreeMap<String, GroupRule>,
    gateway_addrs: Vec<IpAddr>,
}

/// What one user may reach, compiled from their groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessSet {
    /// Each granted subnet with its port restriction (`None`: every port).
    grants: Vec<(IpNet, Option<BTreeSet<u16>>)>,
    gateway_addrs: Vec<IpAddr>,
}

/// Why a destination is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// Inside a range no group can open.
    AlwaysRefused(RefusedRange),
    /// One of the gateway's own addresses.
    GatewayAddress,
    /// Outside every subnet of the user's groups.
    NotInGroups,
    /// Inside a granted subnet, but not on a port any matching group allows.
    PortNotAllowed,
    /// Inside a granted subnet whose groups all restrict ports, and the
    /// packet's port cannot be told.
    PortUnknown,
    /// The packet asks to be source-routed (IPv4 LSRR/SSRR options, an IPv6
    /// routing header with segments left): always refused.
    SourceRouted,
}

/// The ranges that are refused whatever a group says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedRange {
    Unspecified,
    Loopback,
    /// 169.254.0.0/16 and fe80::/10; instance metadata lives here.
    LinkLocal,
    /// The EC2 instance metadata service's IPv6 address, fd00:ec2::254.
    InstanceMetadata,
    Multicast,
    Broadcast,
}

impl Policy {
    pub fn new(groups: impl IntoIterator<Item = (String, GroupRule)>) -> Self {
        Self {
            groups: groups.into_iter().collect(),
            gateway_addrs: Vec::new(),
        }
    }

    /// Adds the gateway's own addresses to the always-refused set.
    pub fn with_gateway_addrs(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.gateway_addrs.extend(addrs);
        self.gateway_addrs.sort();
        self.gateway_addrs.dedup();
        self
    }

    pub fn group(&self, name: &str) -> Option<&GroupRule> {
        self.groups.get(name)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&str, &GroupRule)> {
        self.groups.iter().map(|(name, rule)| (name.as_str(), rule))
    }

    /// What a member of `user_groups` may reach. Groups the config no longer
    /// has grant nothing.
    pub fn access_for<S: AsRef<str>>(&self, user_groups: &[S]) -> AccessSet {
        let grants = user_groups
            .iter()
            .filter_map(|g| self.groups.get(g.as_ref()))
            .flat_map(|rule| rule.subnets.iter().map(|net| (*net, rule.ports.clone())))
            .collect();
        AccessSet {
            grants,
            gateway_addrs: self.gateway_addrs.clone(),
        }
    }
}

impl AccessSet {
    /// The union of the granted subnets, merged and sorted: exactly what a
    /// device's `AllowedIPs` lists (a split tunnel).
    pub fn subnets(&self) -> Vec<IpNet> {
        let nets: Vec<IpNet> = self.grants.iter().map(|(net, _)| *net).collect();
        IpNet::aggregate(&nets)
    }

    /// May this user send `transport` to `dst`? A group without `ports`
    /// allows everything to its subnets; one with `ports` allows those
    /// ports and ICMP echo, and refuses what has no port it can judge.
    pub fn check(&self, dst: IpAddr, transport: Transport) -> Result<(), DenyReason> {
        self.check_with(dst, Some(transport))
    }

    /// May this user reach `dst` at all, ports aside? (The jump host
    /// applies ports its own way.)
    pub fn check_address(&self, dst: IpAddr) -> Result<(), DenyReason> {
        self.check_with(dst, None)
    }

    fn check_with(&self, dst: IpAddr, transport: Option<Transport>) -> Result<(), DenyReason> {
        if let Some(range) = always_refused(dst) {
            return Err(DenyReason::AlwaysRefused(range));
        }
        if self.gateway_addrs.contains(&dst) {
            return Err(DenyReason::GatewayAddress);
        }
        let mut matched = false;
        for (net, ports) in &self.grants {
            if !net.contains(&dst) {
                continue;
            }
            matched = true;
            match (ports, transport) {
                (None, _) | (Some(_), None | Some(Transport::Echo)) => return Ok(()),
                (Some(ports), Some(Transport::Port(port))) if ports.contains(&port) => {
                    return Ok(());
                }
                (Some(_), Some(Transport::Port(_) | Transport::Unknown)) => {}
            }
        }
        Err(match (matched, transport) {
            (false, _) => DenyReason::NotInGroups,
            (true, Some(Transport::Unknown)) => DenyReason::PortUnknown,
            (true, _) => DenyReason::PortNotAllowed,
        })
    }
}

/// The always-refused range `addr` falls in, if any. IPv4-mapped IPv6
/// addresses are judged as the IPv4 address they carry.
pub fn always_refused(addr: IpAddr) -> Option<RefusedRange> {
    match addr {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => refused_v6(v6),
        },
    }
}

/// The always-refused ranges as networks, for config validation.
pub fn always_refused_nets() -> Vec<(IpNet, RefusedRange)> {
    let v4 = |a, b, c, d, len| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len));
    let v6 = |addr: Ipv6Addr, len| IpNet::V6(Ipv6Net::new_assert(addr, len));
    vec![
        (v4(0, 0, 0, 0, 8), RefusedRange::Unspecified),
        (v4(127, 0, 0, 0, 8), RefusedRange::Loopback),
        (v4(169, 254, 0, 0, 16), RefusedRange::LinkLocal),
        (v4(224, 0, 0, 0, 4), RefusedRange::Multicast),
        (v4(255, 255, 255, 255, 32), RefusedRange::Broadcast),
        (v6(Ipv6Addr::UNSPECIFIED, 128), RefusedRange::Unspecified),
        (v6(Ipv6Addr::LOCALHOST, 128), RefusedRange::Loopback),
        (
            v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
            RefusedRange::LinkLocal,
        ),
        (
            v6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
            RefusedRange::Multicast,
        ),
        (v6(METADATA_V6, 128), RefusedRange::InstanceMetadata),
    ]
}

/// True when two networks share at least one address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlwaysRefused(range) => write!(f, "{range} addresses are always refused"),
            Self::GatewayAddress => f.write_str("the gateway's own addresses are always refused"),
            Self::NotInGroups => f.write_str("outside the subnets of the user's groups"),
            Self::PortNotAllowed => f.write_str("port not allowed by the user's groups"),
            Self::PortUnknown => f.write_str(
                "the user's groups allow only some ports, and this packet's port cannot be told",
            ),
            Self::SourceRouted => f.write_str("source-routed packets are always refused"),
        }
    }
}

impl DenyReason {
    /// A short stable label, for metrics and audit details.
    pub fn label(&self) -> &'static str {
        match self {
            Self::AlwaysRefused(range) => range.label(),
            Self::GatewayAddress => "gateway",
            Self::NotInGroups => "not_in_groups",
            Self::PortNotAllowed => "port",
            Self::PortUnknown => "port_unknown",
            Self::SourceRouted => "source_route",
        }
    }
}

impl RefusedRange {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link_local",
            Self::InstanceMetadata => "metadata",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
        }
    }
}

impl fmt::Display for RefusedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local (instance metadata included)",
            Self::InstanceMetadata => "instance metadata",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
        })
    }
}

const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn refused_v4(addr: Ipv4Addr) -> Option<RefusedRange> {
    if addr.is_loopback() {
        Some(RefusedRange::Loopback)
    } else if addr.is_link_local() {
        Some(RefusedRange::LinkLocal)
    } else if addr.is_multicast() {
        Some(RefusedRange::Multicast)
    } else if addr.is_broadcast() {
        Some(RefusedRange::Broadcast)
    } else if addr.octets()[0] == 0 {
        Some(RefusedRange::Unspecified)
    } else {
        None
    }
}

fn refused_v6(addr: Ipv6Addr) -> Option<RefusedRange> {
    if addr.is_unspecified() {
        Some(RefusedRange::Unspecified)
    } else if addr.is_loopback() {
        Some(RefusedRange::Loopback)
    } else if addr.is_unicast_link_local() {
        Some(RefusedRange::LinkLocal)
    } else if addr.is_multicast() {
        Some(RefusedRange::Multicast)
    } else if addr == METADATA_V6 {
        Some(RefusedRange::InstanceMetadata)
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sample() -> Policy {
        Policy::new([
            (
                "research".to_string(),
                GroupRule {
                    subnets: vec![net("10.0.3.0/24")],
                    ports: None,
                },
            ),
            (
                "app-admins".to_string(),
                GroupRule {
                    subnets: vec![net("10.0.2.0/24")],
                    ports: Some([22, 9000].into_iter().collect()),
                },
            ),
            (
                "wide".to_string(),
                GroupRule {
                    subnets: vec![net("0.0.0.0/1"), net("169.254.0.0/16")],
                    ports: None,
                },
            ),
        ])
        .with_gateway_addrs([ip("10.0.1.10"), ip("10.200.0.1")])
    }

    #[test]
    fn union_of_the_users_groups_only() {
        let access = sample().access_for(&["research"]);
        assert_eq!(access.subnets(), vec![net("10.0.3.0/24")]);
        assert_eq!(access.check(ip("10.0.3.140"), Transport::Port(22)), Ok(()));
        assert_eq!(
            access.check(ip("10.0.2.5"), Transport::Port(22)),
            Err(DenyReason::NotInGroups)
        );

        let both = sample().access_for(&["research", "app-admins", "no-such-group"]);
        // Adjacent subnets merge: AllowedIPs stays short.
        assert_eq!(both.subnets(), vec![net("10.0.2.0/23")]);
    }

    #[test]
    fn ports_restrict_everything_but_icmp_echo() {
        let access = sample().access_for(&["app-admins"]);
        assert_eq!(access.check(ip("10.0.2.5"), Transport::Port(22)), Ok(()));
        assert_eq!(
            access.check(ip("10.0.2.5"), Transport::Port(80)),
            Err(DenyReason::PortNotAllowed)
        );
        assert_eq!(access.check(ip("10.0.2.5"), Transport::Echo), Ok(()));
        // What has no port to judge is refused where ports are restricted ...
        assert_eq!(
            access.check(ip("10.0.2.5"), Transport::Unknown),
            Err(DenyReason::PortUnknown)
        );
        assert_eq!(access.check_address(ip("10.0.2.5")), Ok(()));
        // ... and allowed where they are not.
        let research = sample().access_for(&["research"]);
        assert_eq!(research.check(ip("10.0.3.5"), Transport::Unknown), Ok(()));
    }

    #[test]
    fn a_group_without_ports_wins_over_one_with_ports() {
        let policy = Policy::new([
            (
                "a".to_string(),
                GroupRule {
                    subnets: vec![net("10.0.2.0/24")],
                    ports: Some([22].into()),
                },
            ),
            (
                "b".to_string(),
                GroupRule {
                    subnets: vec![net("10.0.2.0/25")],
                    ports: None,
                },
            ),
        ]);
        let access = policy.access_for(&["a", "b"]);
        assert_eq!(access.check(ip("10.0.2.5"), Transport::Port(443)), Ok(()));
        assert_eq!(
            access.check(ip("10.0.2.200"), Transport::Port(443)),
            Err(DenyReason::PortNotAllowed)
        );
    }

    #[test]
    fn always_refused_whatever_a_group_says() {
        let access = sample().access_for(&["wide"]);
        for (addr, want) in [
            (
                "127.0.0.1",
                DenyReason::AlwaysRefused(RefusedRange::Loopback),
            ),
            (
                "169.254.169.254",
                DenyReason::AlwaysRefused(RefusedRange::LinkLocal),
            ),
            (
                "0.0.0.0",
                DenyReason::AlwaysRefused(RefusedRange::Unspecified),
            ),
            ("10.0.1.10", DenyReason::GatewayAddress),
            ("10.200.0.1", DenyReason::GatewayAddress),
        ] {
            assert_eq!(
                access.check(ip(addr), Transport::Port(80)),
                Err(want),
                "{addr}"
            );
        }
        for (addr, want) in [
            ("::1", RefusedRange::Loopback),
            ("fe80::1", RefusedRange::LinkLocal),
            ("fd00:ec2::254", RefusedRange::InstanceMetadata),
            ("ff02::1", RefusedRange::Multicast),
            ("::ffff:169.254.169.254", RefusedRange::LinkLocal),
            ("::ffff:127.0.0.1", RefusedRange::Loopback),
            ("224.0.0.1", RefusedRange::Multicast),
            ("255.255.255.255", RefusedRange::Broadcast),
        ] {
            assert_eq!(always_refused(ip(addr)), Some(want), "{addr}");
        }
        assert_eq!(always_refused(ip("10.0.3.1")), None);
        assert_eq!(always_refused(ip("2001:db8::1")), None);
    }

    #[test]
    fn refused_nets_agree_with_the_address_check() {
        for (net, range) in always_refused_nets() {
            assert_eq!(always_refused(net.network()), Some(range), "{net}");
            assert_eq!(always_refused(net.broadcast()), Some(range), "{net}");
        }
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        assert!(overlaps(&net("10.0.0.0/16"), &net("10.0.3.0/24")));
        assert!(overlaps(&net("10.0.3.0/24"), &net("10.0.0.0/16")));
        assert!(!overlaps(&net("10.0.3.0/24"), &net("10.0.4.0/24")));
        assert!(!overlaps(&net("10.0.3.0/24"), &net("fd00::/8")));
    }

    fn arb_v4_net() -> impl Strategy<Value = IpNet> {
        (any::<u32>(), 8u8..=32).prop_map(|(bits, len)| {
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(bits), len).trunc())
        })
    }

    proptest! {
        #[test]
        fn merged_subnets_cover_exactly_the_union(
            nets in proptest::collection::vec(arb_v4_net(), 1..6),
            probes in proptest::collection::vec(any::<u32>(), 32),
        ) {
            let policy = Policy::new([("g".to_string(), GroupRule { subnets: nets.clone(), ports: None })]);
            let merged = policy.access_for(&["g"]).subnets();
            for pair in merged.windows(2) {
                prop_assert!(!overlaps(&pair[0], &pair[1]));
            }
            let mut probes: Vec<IpAddr> = probes.into_iter().map(|b| IpAddr::V4(Ipv4Addr::from(b))).collect();
            probes.extend(nets.iter().flat_map(|n| [n.network(), n.broadcast()]));
            for addr in probes {
                prop_assert_eq!(
                    merged.iter().any(|n| n.contains(&addr)),
                    nets.iter().any(|n| n.contains(&addr)),
                );
            }
        }

        #[test]
        fn check_allows_only_granted_and_never_refused(
            nets in proptest::collection::vec(arb_v4_net(), 1..4),
            probe in any::<u32>(),
            port in proptest::option::of(any::<u16>()),
            unknown in any::<bool>(),
        ) {
            let policy = Policy::new([("g".to_string(), GroupRule { subnets: nets.clone(), ports: None })]);
            let addr = IpAddr::V4(Ipv4Addr::from(probe));
            let transport = match (port, unknown) {
                (Some(port), _) => Transport::Port(port),
                (None, true) => Transport::Unknown,
                (None, false) => Transport::Echo,
            };
            let allowed = policy.access_for(&["g"]).check(addr, transport).is_ok();
            let expected = nets.iter().any(|n| n.contains(&addr)) && always_refused(addr).is_none();
            prop_assert_eq!(allowed, expected);
        }
    }
}
