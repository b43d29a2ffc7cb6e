//! The ssh_config snippet the devices page offers: a `gatehouse-jump` host
//! whose key is pinned through its own known_hosts file, and `ProxyJump` for
//! host patterns covering the user's subnets. Pure text; the handler is in
//! [`super::pages`]; the patterns are `gatehouse_config::known_hosts`'.

use gatehouse_config::known_hosts::{Cover, subnet_patterns};

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
            subnet_patterns(net, Cover::AtLeast).join(" ")
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
