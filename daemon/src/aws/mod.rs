//! The AWS provisioner: the gateway's elastic IP, its two security groups,
//! source/dest check, the VPN pool's routes, and its keys in SSM (the
//! WireGuard key, and the secrets key that seals the store's TOTP secrets).
//! `plan` shows what differs from the config, `apply` changes it (ordered,
//! idempotent, safe to re-run after a failure); every change is audited as
//! `aws.change`. Without an `[aws]` section nothing here is ever called.
//!
//! - [`discovery`]: instance facts from IMDSv2, or from the config.
//! - [`desired`]: the footprint the config asks for (pure).
//! - [`observed`]: what AWS says now (describe calls).
//! - [`exposure`]: other groups on the instance that open guarded ports wider (pure).
//! - [`plan`]: the difference, as ordered actions with reasons (pure).
//! - [`apply`]: carries the actions out and audits each (a record the
//!   store refuses is kept and written later: [`spawn_audit_retry`]).
//! - [`fenced`]: the calls an HA lease fences: no SDK retries, an operation
//!   timeout within the fence's time, the fence asked before each attempt.
//! - [`ssm_key`]: the SSM calls behind the keys' home in Parameter Store.
//! - [`startup`]: connecting, the keys (resolved by [`crate::keys::resolve`],
//!   audited when stored in SSM), and `apply_on_start`, before listeners open.
//! - [`errors`]: errors an operator can act on.
//! - [`identity`]: an instance identity document and its PKCS #7
//!   signature, checked (pure), and [`joining`]: what EC2 says of the
//!   instance, for private hosts joining by instance identity.
//!
//! Does not own the keys, their files or which home wins ([`crate::keys`]),
//! the audit log, or the elastic IP's use in configs and links
//! ([`crate::access::public`]); it records what it sees in
//! [`crate::gateway::AwsState`].

pub mod apply;
pub mod desired;
pub mod discovery;
pub mod errors;
pub mod exposure;
pub mod fenced;
#[cfg(test)]
mod iam_tests;
pub mod identity;
pub mod joining;
pub mod observed;
pub mod plan;
pub mod ssm_key;
pub mod startup;

use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use gatehouse_config::api::{AwsAction, AwsFacts};
use gatehouse_config::file::AwsConfig;

pub use errors::AwsError;

use discovery::Facts;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Core;

/// How often kept `aws.change` records are offered to the store again.
pub const AUDIT_RETRY: Duration = Duration::from_secs(30);

/// With `[aws]`: writes the `aws.change` records the store refused, every
/// [`AUDIT_RETRY`] while any are kept, and once more on shutdown.
pub fn spawn_audit_retry(core: &Core, tracker: &TaskTracker, shutdown: CancellationToken) {
    let core = core.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(AUDIT_RETRY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => apply::write_kept_records(&core).await,
            }
        }
        apply::write_kept_records(&core).await;
    });
}

/// Clients for EC2 and SSM, and the instance they act for.
pub struct Session {
    pub ec2: aws_sdk_ec2::Client,
    /// EC2 for the calls an HA lease fences ([`fenced`]): no retries in
    /// the SDK, each operation bounded by [`fenced::CALL_TIMEOUT`].
    pub ec2_fenced: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    /// S3 for the audit export (`[audit.s3]`); path-style addressing with
    /// `aws.endpoint_url` (emulators answer on one host name).
    pub s3: aws_sdk_s3::Client,
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
        let fenced = aws_sdk_ec2::config::Builder::from(&shared)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(fenced::CALL_TIMEOUT)
                    .build(),
            )
            .build();
        Ok(Self {
            ec2: aws_sdk_ec2::Client::new(&shared),
            ec2_fenced: aws_sdk_ec2::Client::from_conf(fenced),
            ssm: aws_sdk_ssm::Client::new(&shared),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(aws.endpoint_url.is_some())
                    .build(),
            ),
            facts,
        })
    }
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
