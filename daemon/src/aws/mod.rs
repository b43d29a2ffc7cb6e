//! The AWS provisioner: the gateway's elastic IP, its two security groups,
//! source/dest check, the VPN pool's routes, and its WireGuard key in SSM.
//! `plan` shows what differs from the config, `apply` changes it (ordered,
//! idempotent, safe to re-run after a failure); every change is audited as
//! `aws.change`. Without an `[aws]` section nothing here is ever called.
//!
//! - [`discovery`]: instance facts from IMDSv2, or from the config.
//! - [`desired`]: the footprint the config asks for (pure).
//! - [`observed`]: what AWS says now (describe calls).
//! - [`plan`]: the difference, as ordered actions with reasons (pure).
//! - [`apply`]: carries the actions out and audits each.
//! - [`ssm_key`]: the WireGuard key's home in SSM Parameter Store.
//! - [`startup`]: the key from SSM, and `apply_on_start`, before listeners open.
//! - [`errors`]: errors an operator can act on.
//!
//! Does not own the WireGuard key file ([`crate::wg_key`]) or the audit log.

pub mod apply;
pub mod desired;
pub mod discovery;
pub mod errors;
#[cfg(test)]
mod iam_tests;
pub mod observed;
pub mod plan;
pub mod ssm_key;
pub mod startup;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use gatehouse_config::Config;
use gatehouse_config::api::{AwsAction, AwsFacts};
use gatehouse_config::file::{AwsConfig, PublicEndpoint};

pub use errors::AwsError;

use discovery::Facts;

/// File under `state_dir` remembering the elastic IP across restarts, so
/// `public_endpoint = "auto"` works before the first apply of a new run.
pub const ELASTIC_IP_FILE: &str = "aws-elastic-ip";

/// Clients for EC2 and SSM, and the instance they act for.
pub struct Session {
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub facts: Facts,
}

impl Session {
    /// Discovers the instance and builds the clients: credentials from the
    /// default chain (environment, profile, the instance role via IMDS), the
    /// region from the config or instance metadata, `aws.endpoint_url` for
    /// emulators. Throttling and network errors are retried with backoff.
    pub async fn connect(aws: &AwsConfig) -> Result<Self, AwsError> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let imds = discovery::imds_client(aws, &http)?;
        let facts = discovery::discover(aws, &imds).await?;
        let region = Region::new(facts.region.clone());
        let provider = ProviderConfig::without_region()
            .with_http_client(http.clone())
            .with_region(Some(region.clone()));
        let credentials = DefaultCredentialsChain::builder()
            .configure(provider)
            .imds_client(imds)
            .build()
            .await;
        let retry = RetryConfig::standard()
            .with_max_attempts(errors::MAX_ATTEMPTS)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(5));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .region(region)
            .credentials_provider(credentials)
            .retry_config(retry);
        if let Some(url) = &aws.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        Ok(Self {
            ec2: aws_sdk_ec2::Client::new(&shared),
            ssm: aws_sdk_ssm::Client::new(&shared),
            facts,
        })
    }
}

/// The provisioner's part of the gateway's shared state: one apply at a
/// time, and the elastic IP last seen (kept in the state dir).
pub struct AwsState {
    apply: tokio::sync::Mutex<()>,
    elastic_ip: RwLock<Option<IpAddr>>,
    file: PathBuf,
}

impl AwsState {
    /// Reads the remembered elastic IP, if any, from `state_dir`.
    pub fn load(state_dir: &Path) -> Self {
        let file = state_dir.join(ELASTIC_IP_FILE);
        let remembered = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        Self {
            apply: tokio::sync::Mutex::new(()),
            elastic_ip: RwLock::new(remembered),
            file,
        }
    }

    /// Held for the length of one plan+apply, so two applies never interleave.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.apply.lock().await
    }

    pub fn elastic_ip(&self) -> Option<IpAddr> {
        *self
            .elastic_ip
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the elastic IP AWS reported, and remembers it on disk.
    pub fn set_elastic_ip(&self, ip: Option<IpAddr>) {
        let mut slot = self
            .elastic_ip
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if *slot == ip {
            return;
        }
        *slot = ip;
        let written = match ip {
            Some(ip) => std::fs::write(&self.file, format!("{ip}\n")),
            None => std::fs::remove_file(&self.file).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
        };
        if let Err(err) = written {
            tracing::warn!(path = %self.file.display(), error = %err, "cannot remember the elastic IP");
        }
    }
}

/// `host:port` for device configs: the configured host, or with
/// `public_endpoint = "auto"` the elastic IP once it is known.
pub fn vpn_endpoint(config: &Config, state: &AwsState) -> Option<String> {
    match config.gateway.public_endpoint {
        PublicEndpoint::Host(_) => config.vpn_endpoint(),
        PublicEndpoint::Auto => {
            let ip = state.elastic_ip()?;
            Some(std::net::SocketAddr::new(ip, config.vpn.listen.port()).to_string())
        }
    }
}

/// The portal's base URL: the configured one, or with `public_endpoint =
/// "auto"` `https://<elastic IP>[:port]` once the elastic IP is known.
pub fn portal_url(config: &Config, state: &AwsState) -> Option<String> {
    if let Some(url) = config.portal_url() {
        return Some(url);
    }
    let ip = state.elastic_ip()?;
    Some(match config.portal.listen.port() {
        443 => format!("https://{ip}"),
        port => format!("https://{}", std::net::SocketAddr::new(ip, port)),
    })
}

impl Facts {
    pub fn to_api(&self) -> AwsFacts {
        AwsFacts {
            region: self.region.clone(),
            instance_id: self.instance_id.clone(),
            availability_zone: self.availability_zone.clone(),
            network_interface_id: self.network_interface_id.clone(),
            vpc_id: self.vpc_id.clone(),
            subnet_id: self.subnet_id.clone(),
            from_metadata: self.from_metadata,
        }
    }
}

impl plan::Action {
    pub fn to_api(&self) -> AwsAction {
        AwsAction {
            kind: self.kind,
            resource: self.resource.clone(),
            change: self.change.clone(),
            reason: self.reason.clone(),
        }
    }
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
    fn the_elastic_ip_is_remembered_across_restarts_and_used_by_auto() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(AUTO, "t.toml").unwrap();
        let state = AwsState::load(dir.path());
        assert_eq!(
            vpn_endpoint(&config, &state),
            None,
            "unknown before the first describe"
        );
        assert_eq!(portal_url(&config, &state), None);
        state.set_elastic_ip(Some("198.51.100.9".parse().unwrap()));
        let restarted = AwsState::load(dir.path());
        assert_eq!(restarted.elastic_ip(), state.elastic_ip());
        assert_eq!(
            vpn_endpoint(&config, &restarted).as_deref(),
            Some("198.51.100.9:51820")
        );
        assert_eq!(
            portal_url(&config, &restarted).as_deref(),
            Some("https://198.51.100.9:8443")
        );
        restarted.set_elastic_ip(None);
        assert_eq!(
            AwsState::load(dir.path()).elastic_ip(),
            None,
            "a released address is forgotten"
        );

        let named = AUTO.replace("\"auto\"", "\"vpn.example.com\"");
        let config = Config::parse(&named, "t.toml").unwrap();
        state.set_elastic_ip(Some("198.51.100.9".parse().unwrap()));
        assert_eq!(
            vpn_endpoint(&config, &state).as_deref(),
            Some("vpn.example.com:51820"),
            "a configured host wins"
        );
    }
}
