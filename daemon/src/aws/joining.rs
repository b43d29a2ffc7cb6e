//! What EC2 says of an instance that asks to join by its identity
//! (`ssh.host_join`): its VPC, private address and name, and whether it
//! carries the `gatehouse:host` tag. One DescribeInstances call; the rules
//! are the access service's (`access::host_join`).

use aws_sdk_ec2::types::Filter;

use super::Session;
use super::errors::{AwsError, classify};

/// The tag an instance must carry to join (any value).
pub const TAG_HOST: &str = "gatehouse:host";

/// An instance as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoiningInstance {
    pub vpc_id: Option<String>,
    pub private_ip: Option<String>,
    pub private_dns_name: Option<String>,
    /// It carries [`TAG_HOST`].
    pub tagged: bool,
}

/// The instance `instance_id`, `None` when EC2 knows none of that id.
pub async fn describe(
    session: &Session,
    instance_id: &str,
) -> Result<Option<JoiningInstance>, AwsError> {
    const ACTION: &str = "ec2:DescribeInstances";
    // A filter, not instance_ids: an unknown id is an empty answer, not an
    // error to tell from the others.
    let out = session
        .ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-id")
                .values(instance_id)
                .build(),
        )
        .send()
        .await
        .map_err(|e| classify(ACTION, e))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(instance_id))
        .map(|i| JoiningInstance {
            vpc_id: i.vpc_id().map(str::to_string),
            private_ip: i.private_ip_address().map(str::to_string),
            private_dns_name: i
                .private_dns_name()
                .filter(|name| !name.is_empty())
                .map(str::to_string),
            tagged: i.tags().iter().any(|t| t.key() == Some(TAG_HOST)),
        }))
}
