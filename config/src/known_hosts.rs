//! Host patterns (`*` and `?` on the text of an address, as ssh_config's
//! `Host` and `known_hosts` match them; there is no CIDR) for the hosts in
//! a subnet. One rule for two uses:
//! - [`Cover::Exactly`]: the SSH host CA's `@cert-authority` line, so a
//!   member trusts the CA for the hosts their groups may reach and for no
//!   other;
//! - [`Cover::AtLeast`]: the portal's ssh_config `Host` lines for
//!   `ProxyJump`, where a wider pattern only sends more hosts through the
//!   jump host, which enforces the policy anyway.
//!
//! An IPv4 subnet becomes the octet wildcards that cover it: `10.0.3.0/24`
//! is `10.0.3.*`, `10.0.2.0/23` is `10.0.2.*` and `10.0.3.*`, a `/32` is
//! the address itself. IPv6 addresses have several spellings, so no
//! wildcard covers a subnet reliably.

use ipnet::{IpNet, Ipv4Net};

/// How a subnet's patterns may relate to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// Never an address outside it: a prefix off an octet boundary is
    /// listed by its parts at the next boundary (at most 128). An IPv6
    /// subnet gives no pattern (its hosts are reached by name).
    Exactly,
    /// At most 32 patterns: a prefix that would need more is given by the
    /// wider pattern at the octet boundary above it. An IPv6 subnet gives
    /// its network address, for the member to adapt.
    AtLeast,
}

/// The patterns for `subnets`, each once, in order.
pub fn host_patterns(subnets: &[IpNet], cover: Cover) -> Vec<String> {
    let mut patterns = Vec::new();
    for subnet in subnets {
        for pattern in subnet_patterns(subnet, cover) {
            if !patterns.contains(&pattern) {
                patterns.push(pattern);
            }
        }
    }
    patterns
}

/// The patterns for one subnet.
pub fn subnet_patterns(net: &IpNet, cover: Cover) -> Vec<String> {
    let v4 = match (net, cover) {
        (IpNet::V4(v4), _) => v4.trunc(),
        (IpNet::V6(_), Cover::Exactly) => return Vec::new(),
        (IpNet::V6(v6), Cover::AtLeast) => return vec![v6.network().to_string()],
    };
    let len = v4.prefix_len();
    let next = len.div_ceil(8) * 8;
    let parts: Vec<Ipv4Net> = if cover == Cover::Exactly || next - len <= 5 {
        v4.subnets(next).map(Iterator::collect).unwrap_or_default()
    } else {
        Ipv4Net::new(v4.network(), len / 8 * 8)
            .map(|wider| vec![wider.trunc()])
            .unwrap_or_default()
    };
    parts.iter().map(octet_pattern).collect()
}

/// `10.0.3.*` for a /24, `10.*` for a /8, the address for a /32.
fn octet_pattern(net: &Ipv4Net) -> String {
    let fixed = usize::from(net.prefix_len() / 8);
    let mut text: Vec<String> = net
        .network()
        .octets()
        .iter()
        .take(fixed)
        .map(ToString::to_string)
        .collect();
    if fixed < 4 {
        text.push("*".into());
    }
    text.join(".")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn patterns(subnets: &[&str], cover: Cover) -> Vec<String> {
        let nets: Vec<IpNet> = subnets.iter().map(|s| s.parse().unwrap()).collect();
        host_patterns(&nets, cover)
    }

    #[test]
    fn whole_octets_are_one_wildcard_either_way() {
        for cover in [Cover::Exactly, Cover::AtLeast] {
            assert_eq!(patterns(&["10.0.3.0/24"], cover), ["10.0.3.*"]);
            assert_eq!(patterns(&["10.1.0.0/16"], cover), ["10.1.*"]);
            assert_eq!(patterns(&["10.0.0.0/8"], cover), ["10.*"]);
            assert_eq!(patterns(&["10.0.3.140/32"], cover), ["10.0.3.140"]);
            assert_eq!(patterns(&["10.0.2.0/23"], cover), ["10.0.2.*", "10.0.3.*"]);
            assert_eq!(
                patterns(&["10.0.3.16/30"], cover),
                ["10.0.3.16", "10.0.3.17", "10.0.3.18", "10.0.3.19"]
            );
            let twelve = patterns(&["10.0.0.0/12"], cover);
            assert_eq!((twelve.len(), twelve[15].as_str()), (16, "10.15.*"));
        }
    }

    /// Exactly never widens: a wider pattern would trust the CA for hosts
    /// outside the subnet. AtLeast widens past 32 patterns.
    #[test]
    fn only_at_least_widens() {
        assert_eq!(patterns(&["10.0.0.0/17"], Cover::AtLeast), ["10.0.*"]);
        let exact = patterns(&["10.0.0.0/17"], Cover::Exactly);
        assert_eq!((exact.len(), exact[127].as_str()), (128, "10.0.127.*"));
    }

    #[test]
    fn duplicates_go_and_ipv6_depends_on_the_use() {
        let subnets = ["10.0.3.0/24", "fd00::/64", "10.0.3.0/24", "10.0.2.0/24"];
        assert_eq!(patterns(&subnets, Cover::Exactly), ["10.0.3.*", "10.0.2.*"]);
        assert_eq!(
            patterns(&subnets, Cover::AtLeast),
            ["10.0.3.*", "fd00::", "10.0.2.*"]
        );
    }
}
