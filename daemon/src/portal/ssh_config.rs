//! The ssh_config snippet the devices page offers: a `gatehouse-jump` host
//! whose key is pinned through its own known_hosts file, and `ProxyJump` for
//! host patterns covering the user's subnets; with the host CA, the same
//! file trusts it for those hosts, so signed hosts show no fingerprint
//! prompt. Pure text; the handlers are in [`super::pages`]; what goes in
//! the known_hosts file is the access service's (`Access::member_ssh`), the
//! patterns `gatehouse_config::known_hosts`'.

use gatehouse_config::known_hosts::{Cover, subnet_patterns};

use crate::access::host_certs::MemberSsh;

/// The known_hosts file the snippet names, beside `~/.ssh/config`.
pub const KNOWN_HOSTS_FILE: &str = "~/.ssh/gatehouse_known_hosts";

/// ssh_config text for `user` of `gateway`: the `gatehouse-jump` host,
/// pinned, and `ProxyJump gatehouse-jump` for host patterns covering the
/// user's subnets; the known_hosts lines to save come first, as comments.
pub fn ssh_snippet(gateway: &str, user: &str, ssh: &MemberSsh) -> String {
    let jump = &ssh.jump;
    let saved: String = ssh
        .known_hosts
        .lines()
        .map(|line| format!("# {line}\n"))
        .collect();
    let what = match ssh.host_ca {
        true => {
            "#    the jump host's key, so a machine in the middle is refused, and trusts\n\
             #    the gateway's host CA for your subnets' hosts, so the hosts it signed\n\
             #    need no fingerprint prompt (the devices page offers it as a download):\n"
        }
        false => "#    the jump host's key, so a machine in the middle is refused:\n",
    };
    let mut out = format!(
        "# gatehouse: SSH to {user}'s subnets through the jump host of {gateway}.\n\
         # 1. Save the next lines (without '# ') as {KNOWN_HOSTS_FILE}; they pin\n\
         {what}{saved}\
         # 2. Append the rest of this file to ~/.ssh/config.\n\n\
         Host gatehouse-jump\n    HostName {}\n    Port {}\n    User {user}\n    \
         UserKnownHostsFile {KNOWN_HOSTS_FILE}\n    StrictHostKeyChecking yes\n",
        jump.host, jump.port
    );
    for net in &ssh.subnets {
        out.push_str(&format!(
            "\n# {net}\nHost {}\n    ProxyJump gatehouse-jump\n",
            subnet_patterns(net, Cover::AtLeast).join(" ")
        ));
        if ssh.host_ca {
            // Both files: hosts the CA signed match its line; others are
            // asked about once and kept in the usual file, listed first.
            out.push_str(&format!(
                "    UserKnownHostsFile ~/.ssh/known_hosts {KNOWN_HOSTS_FILE}\n"
            ));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::access::JumpHost;

    fn member(host_ca: bool) -> MemberSsh {
        let pin = "[vpn.example.com]:2222 ssh-ed25519 AAAA";
        let mut known_hosts = format!("{pin}\n");
        if host_ca {
            known_hosts
                .push_str("@cert-authority 10.0.3.* ssh-ed25519 BBBB gatehouse-host-ca@gw\n");
        }
        MemberSsh {
            jump: JumpHost {
                host: "vpn.example.com".into(),
                port: 2222,
                known_hosts: pin.into(),
                host_key: "ssh-ed25519 AAAA".into(),
            },
            subnets: vec!["10.0.3.0/24".parse().unwrap()],
            known_hosts,
            host_ca,
        }
    }

    #[test]
    fn snippet_pins_the_jump_host() {
        let text = ssh_snippet("gw", "alice", &member(false));
        assert!(text.contains("# [vpn.example.com]:2222 ssh-ed25519 AAAA\n"));
        assert!(text.contains("StrictHostKeyChecking yes"));
        assert!(text.contains("Host 10.0.3.*\n    ProxyJump gatehouse-jump\n"));
        assert!(!text.contains("cert-authority") && !text.contains("known_hosts ~/"));
    }

    /// With the host CA, the file to save trusts it for the member's
    /// hosts, and their Host blocks read that file too.
    #[test]
    fn with_the_host_ca_the_subnets_read_the_ca_line() {
        let text = ssh_snippet("gw", "alice", &member(true));
        assert!(
            text.contains("# @cert-authority 10.0.3.* ssh-ed25519 BBBB gatehouse-host-ca@gw\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Host 10.0.3.*\n    ProxyJump gatehouse-jump\n    \
                 UserKnownHostsFile ~/.ssh/known_hosts ~/.ssh/gatehouse_known_hosts\n"
            ),
            "{text}"
        );
    }
}
