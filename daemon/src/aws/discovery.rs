//! Discovery: the facts about the instance accessd runs on (instance id,
//! region, zone, primary network interface, VPC, subnet), from instance
//! metadata (IMDSv2: a session token first) unless the config gives them.
//! A fact the config sets is never asked for.

use std::time::Duration;

use aws_config::imds;
use aws_config::provider_config::ProviderConfig;
use aws_sdk_ec2::config::SharedHttpClient;
use gatehouse_config::file::AwsConfig;

use super::errors::AwsError;

/// Where IMDS answers when nothing overrides it.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// What the provisioner knows about its own instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub region: String,
    pub instance_id: String,
    pub availability_zone: String,
    /// The instance's primary network interface: the elastic IP and the
    /// pool routes point here.
    pub network_interface_id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    /// True when instance metadata was asked (false: all from the config).
    pub from_metadata: bool,
}

/// The IMDSv2 client for `aws.imds_endpoint` (or the environment's
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, or the link-local default).
pub fn imds_client(aws: &AwsConfig, http: &SharedHttpClient) -> Result<imds::Client, AwsError> {
    let provider = ProviderConfig::without_region().with_http_client(http.clone());
    let builder = imds::Client::builder()
        .configure(&provider)
        .max_attempts(2)
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2));
    let builder = match &aws.imds_endpoint {
        Some(url) => builder.endpoint(url).map_err(|err| AwsError::Metadata {
            path: url.clone(),
            detail: err.to_string(),
        })?,
        None => builder,
    };
    Ok(builder.build())
}

/// Fills in every fact the config leaves out from instance metadata.
pub async fn discover(aws: &AwsConfig, imds: &imds::Client) -> Result<Facts, AwsError> {
    let given = &aws.discovery;
    let needs_metadata = aws.region.is_none() || !given.complete();
    let endpoint = aws
        .imds_endpoint
        .clone()
        .or_else(|| std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").ok())
        .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_string());
    let reader = Reader { imds, endpoint };
    let pick = |value: &Option<String>| value.clone();
    let region = match pick(&aws.region) {
        Some(region) => region,
        None => reader.get("placement/region").await?,
    };
    let instance_id = match pick(&given.instance_id) {
        Some(id) => id,
        None => reader.get("instance-id").await?,
    };
    let availability_zone = match pick(&given.availability_zone) {
        Some(az) => az,
        None => reader.get("placement/availability-zone").await?,
    };
    let needs_mac =
        given.network_interface_id.is_none() || given.vpc_id.is_none() || given.subnet_id.is_none();
    let mac = if needs_mac {
        Some(reader.get("mac").await?)
    } else {
        None
    };
    let interface = |what: &str| {
        let mac = mac.clone().unwrap_or_default();
        format!("network/interfaces/macs/{mac}/{what}")
    };
    let network_interface_id = match pick(&given.network_interface_id) {
        Some(id) => id,
        None => reader.get(&interface("interface-id")).await?,
    };
    let vpc_id = match pick(&given.vpc_id) {
        Some(id) => id,
        None => reader.get(&interface("vpc-id")).await?,
    };
    let subnet_id = match pick(&given.subnet_id) {
        Some(id) => id,
        None => reader.get(&interface("subnet-id")).await?,
    };
    Ok(Facts {
        region,
        instance_id,
        availability_zone,
        network_interface_id,
        vpc_id,
        subnet_id,
        from_metadata: needs_metadata,
    })
}

struct Reader<'a> {
    imds: &'a imds::Client,
    endpoint: String,
}

impl Reader<'_> {
    async fn get(&self, path: &str) -> Result<String, AwsError> {
        let full = format!("/latest/meta-data/{path}");
        match self.imds.get(full.clone()).await {
            Ok(value) => {
                let value = value.as_ref().trim().to_string();
                if value.is_empty() {
                    return Err(AwsError::Metadata {
                        path: full,
                        detail: "empty answer".into(),
                    });
                }
                Ok(value)
            }
            Err(imds::client::error::ImdsError::ErrorResponse(response)) => {
                Err(AwsError::Metadata {
                    path: full,
                    detail: format!("HTTP {}", response.response().status().as_u16()),
                })
            }
            Err(err) => Err(AwsError::NotOnEc2 {
                endpoint: self.endpoint.clone(),
                detail: aws_sdk_ec2::error::DisplayErrorContext(err).to_string(),
            }),
        }
    }
}
