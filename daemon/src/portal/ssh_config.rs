//! The ssh_config snippet the devices page offers: a `gatehouse-jump` host
//! whose key is pinned through its own known_hosts file, and `ProxyJump` for
//! host patterns covering the user's subnets. Pure text; the handler is in
//! [`super::pages`].

/// ssh_config text: a `gatehouse-jump` host whose key is pinned through its
/// own known_hosts file, and `ProxyJump gatehouse-jump` for host patterns
/// covering the user's subnets.
pub fn ssh_snippet(
    gateway: &str,
    user: &str,
    host: &str,
    port: u16,
    known_hosts: &str,
    subnets: &[ipnet::IpNet],
) -> String {
    let mut out = format!(
        "# gatehouse: SSH to {user}'s subnets through the jump host of {gateway}.\n\
         # 1. Save the next line (without '# ') as ~/.ssh/gatehouse_known_hosts; it pins\n\
         #    the jump host's key, so a machine in the middle is refused:\n\
         # {known_hosts}\n\
         # 2. Append the rest of this file to ~/.ssh/config.\n\n\
         Host gatehouse-jump\n    HostName {host}\n    Port {port}\n    User {user}\n    \
         UserKnownHostsFile ~/.ssh/gatehouse_known_hosts\n    StrictHostKeyChecking yes\n"
    );
    for net in subnets {
        out.push_str(&format!(
            "\n# {net}\nHost {}\n    ProxyJump gatehouse-jump\n",
            host_patterns(net).join(" ")
        ));
    }
    out
}

/// ssh_config `Host` patterns matching the addresses of `net`. IPv4
/// patterns work by whole octets, so a prefix off an octet boundary is
/// listed by its subnets at the next boundary when there are at most 32 of
/// them, else by the wider pattern (the jump host enforces the policy
/// either way). IPv6 prefixes cannot be written as patterns; the network
/// address is given for the user to adapt.
fn host_patterns(net: &ipnet::IpNet) -> Vec<String> {
    let ipnet::IpNet::V4(v4) = net else {
        return vec![net.network().to_string()];
    };
    let len = v4.prefix_len();
    let next = len.div_ceil(8) * 8;
    let nets: Vec<ipnet::Ipv4Net> = if next - len <= 5 {
        v4.subnets(next).map(Iterator::collect).unwrap_or_default()
    } else {
        ipnet::Ipv4Net::new(v4.network(), len / 8 * 8)
            .map(|n| vec![n.trunc()])
            .unwrap_or_default()
    };
    nets.iter()
        .map(|n| {
            let fixed = usize::from(n.prefix_len() / 8);
            let mut parts: Vec<String> = n.network().octets()[..fixed]
                .iter()
                .map(ToString::to_string)
                .collect();
            if fixed < 4 {
                parts.push("*".into());
            }
            parts.join(".")
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_cover_octet_and_odd_prefixes() {
        let p = |s: &str| host_patterns(&s.parse().unwrap());
        assert_eq!(p("10.0.3.0/24"), ["10.0.3.*"]);
        assert_eq!(p("10.1.0.0/16"), ["10.1.*"]);
        assert_eq!(p("10.0.3.7/32"), ["10.0.3.7"]);
        assert_eq!(p("10.0.2.0/23"), ["10.0.2.*", "10.0.3.*"]);
        assert_eq!(p("10.0.0.0/12").len(), 16);
        assert_eq!(p("10.0.0.0/12")[15], "10.15.*");
        assert_eq!(p("10.0.0.0/17"), ["10.0.*"]);
        assert_eq!(
            p("10.0.3.16/30"),
            ["10.0.3.16", "10.0.3.17", "10.0.3.18", "10.0.3.19"]
        );
    }

    #[test]
    fn snippet_pins_the_jump_host() {
        let nets = ["10.0.3.0/24".parse().unwrap()];
        let text = ssh_snippet(
            "gw",
            "alice",
            "vpn.example.com",
            2222,
            "[vpn.example.com]:2222 ssh-ed25519 AAAA",
            &nets,
        );
        assert!(text.contains("# [vpn.example.com]:2222 ssh-ed25519 AAAA"));
        assert!(text.contains("StrictHostKeyChecking yes"));
        assert!(text.contains("Host 10.0.3.*\n    ProxyJump gatehouse-jump"));
    }
}
