//! `vpn.nat = "masquerade"`: a masquerade rule for the VPN pool, installed
//! on start and removed on stop, so replies from the private subnets come
//! back without VPC routes.
//!
//! It drives the `nft` binary (Debian's `nftables` package) with a small
//! ruleset in a table of its own. The binary is the interface nftables
//! documents and keeps stable; the Rust crates either wrap the same binary
//! (`nftables`) or speak raw netlink with far more code than one rule needs.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;

#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("cannot run nft (install the nftables package): {0}")]
    Spawn(std::io::Error),
    #[error("nft refused the masquerade rule for {pool}: {stderr}")]
    Refused { pool: IpNet, stderr: String },
}

/// The installed rule; removing it is explicit ([`Masquerade::remove`]) so
/// shutdown can order it.
pub struct Masquerade {
    family: &'static str,
    table: String,
}

impl Masquerade {
    /// Installs (or replaces) the masquerade rule for traffic from `pool`
    /// leaving through any interface but the tunnel.
    pub fn install(pool: IpNet, interface: &str) -> Result<Self, NatError> {
        let (family, table, rules) = ruleset(pool, interface);
        // A table left by a crash would double the rule: start clean.
        let _ = nft(&["delete", "table", family, &table], None);
        let output = nft(&["-f", "-"], Some(&rules)).map_err(NatError::Spawn)?;
        if !output.status.success() {
            return Err(NatError::Refused {
                pool,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        tracing::info!(%pool, table, "installed the masquerade rule for the VPN pool");
        Ok(Self { family, table })
    }

    pub fn remove(self) {
        match nft(&["delete", "table", self.family, &self.table], None) {
            Ok(out) if out.status.success() => {
                tracing::info!(table = self.table, "removed the masquerade rule")
            }
            Ok(out) => {
                tracing::warn!(table = self.table, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "cannot remove the masquerade rule")
            }
            Err(err) => {
                tracing::warn!(table = self.table, error = %err, "cannot run nft to remove the masquerade rule")
            }
        }
    }
}

/// (family, table name, ruleset text) for `pool` on `interface`.
fn ruleset(pool: IpNet, interface: &str) -> (&'static str, String, String) {
    let (family, match_key) = match pool {
        IpNet::V4(_) => ("ip", "ip saddr"),
        IpNet::V6(_) => ("ip6", "ip6 saddr"),
    };
    let table = format!("gatehouse-{interface}");
    let rules = format!(
        "table {family} {table} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    {match_key} {pool} oifname != \"{interface}\" masquerade\n  }}\n}}\n"
    );
    (family, table, rules)
}

fn nft(args: &[&str], stdin: Option<&str>) -> std::io::Result<std::process::Output> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    child.wait_with_output()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_the_pool_leaving_through_other_interfaces() {
        let (family, table, rules) = ruleset("10.200.0.0/24".parse().unwrap(), "gatehouse0");
        assert_eq!((family, table.as_str()), ("ip", "gatehouse-gatehouse0"));
        assert!(
            rules.contains("ip saddr 10.200.0.0/24 oifname != \"gatehouse0\" masquerade"),
            "{rules}"
        );
        assert!(rules.contains("type nat hook postrouting"), "{rules}");
        let (family, _, rules) = ruleset("fd00:200::/64".parse().unwrap(), "gh0");
        assert_eq!(family, "ip6");
        assert!(rules.contains("ip6 saddr fd00:200::/64"), "{rules}");
    }
}
