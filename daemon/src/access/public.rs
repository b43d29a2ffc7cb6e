//! What clients are told to connect to. With `gateway.public_endpoint =
//! "auto"` that is the elastic IP the provisioner manages, once it is known;
//! with a host name, that name. Device configs, enrollment links, the
//! portal's status URL and the jump host's `known_hosts` line all come from
//! here, so the admin API and the portal cannot tell different stories.

use std::net::SocketAddr;

use gatehouse_config::Config;
use gatehouse_config::file::PublicEndpoint;

use super::Access;
use crate::gateway::AwsState;

/// The jump host as a client reaches and pins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    /// The host name or address in `ssh -J user@HOST`.
    pub host: String,
    pub port: u16,
    /// A ready `~/.ssh/known_hosts` line (a non-22 port as `[host]:port`).
    pub known_hosts: String,
    /// `ssh-ed25519 AAAA...` without a comment.
    pub host_key: String,
}

impl Access {
    /// `host:port` for device configs; `None` while `"auto"` has no elastic IP yet.
    pub fn vpn_endpoint(&self) -> Option<String> {
        vpn_endpoint(&self.core.config(), self.core.aws())
    }

    /// The portal's base URL; `None` while it cannot be known.
    pub fn portal_url(&self) -> Option<String> {
        portal_url(&self.core.config(), self.core.aws())
    }

    /// The link an enrollment token is used at (a path when the portal's
    /// address is not known yet).
    pub fn enrollment_url(&self, token: &str) -> String {
        match self.portal_url() {
            Some(base) => format!("{base}/enroll/{token}"),
            None => format!("/enroll/{token}"),
        }
    }

    /// The running jump host, as clients reach and pin it.
    pub fn jump_host(&self) -> Option<JumpHost> {
        let listen = self.jump_host?;
        let config = self.core.config();
        let host = match &config.gateway.public_endpoint {
            PublicEndpoint::Host(host) => host.clone(),
            PublicEndpoint::Auto => self
                .core
                .aws()
                .elastic_ip()
                .map_or_else(|| listen.ip().to_string(), |ip| ip.to_string()),
        };
        let openssh = self
            .core
            .ssh_host_key()
            .public_key()
            .to_openssh()
            .unwrap_or_default();
        let host_key: String = openssh.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let pinned = match listen.port() {
            22 => host.clone(),
            port => format!("[{host}]:{port}"),
        };
        Some(JumpHost {
            known_hosts: format!("{pinned} {host_key}"),
            host,
            port: listen.port(),
            host_key,
        })
    }
}

/// See [`Access::vpn_endpoint`].
fn vpn_endpoint(config: &Config, aws: &AwsState) -> Option<String> {
    match config.gateway.public_endpoint {
        PublicEndpoint::Host(_) => config.vpn_endpoint(),
        PublicEndpoint::Auto => {
            let ip = aws.elastic_ip()?;
            Some(SocketAddr::new(ip, config.vpn.listen.port()).to_string())
        }
    }
}

/// See [`Access::portal_url`].
pub(crate) fn portal_url(config: &Config, aws: &AwsState) -> Option<String> {
    if let Some(url) = config.portal_url() {
        return Some(url);
    }
    let ip = aws.elastic_ip()?;
    Some(match config.portal.listen.port() {
        443 => format!("https://{ip}"),
        port => format!("https://{}", SocketAddr::new(ip, port)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTO: &str = r#"
[gateway]
name = "gw"
public_endpoint = "auto"
[portal]
listen = "0.0.0.0:8443"
[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
[aws]
region = "eu-west-3"
"#;

    #[test]
    fn auto_uses_the_elastic_ip_once_known_and_a_configured_host_wins() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(AUTO, "t.toml").unwrap();
        let aws = AwsState::load(dir.path());
        assert_eq!(
            vpn_endpoint(&config, &aws),
            None,
            "unknown before the first describe"
        );
        assert_eq!(portal_url(&config, &aws), None);
        aws.set_elastic_ip(Some("198.51.100.9".parse().unwrap()));
        assert_eq!(
            vpn_endpoint(&config, &aws).as_deref(),
            Some("198.51.100.9:51820")
        );
        assert_eq!(
            portal_url(&config, &aws).as_deref(),
            Some("https://198.51.100.9:8443")
        );

        let named = AUTO.replace("\"auto\"", "\"vpn.example.com\"");
        let config = Config::parse(&named, "t.toml").unwrap();
        assert_eq!(
            vpn_endpoint(&config, &aws).as_deref(),
            Some("vpn.example.com:51820"),
            "a configured host wins"
        );
    }
}
