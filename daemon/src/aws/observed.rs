//! What AWS says now: the gateway's elastic IP and security groups (found by
//! tag), the instance's groups (and the rules of those not gatehouse's) and
//! source/dest check, the pool route in each
//! named route table, and the SSM parameter. Describe calls only.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, IpPermission};

use super::Session;
use super::desired::{Desired, GroupRole, Rule, RuleSource, TAG_GATEWAY, TAG_ROLE};
use super::errors::{AwsError, classify};

/// The gateway's elastic IP as AWS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElasticIp {
    pub allocation_id: String,
    pub public_ip: String,
    /// The network interface it is associated with, if any.
    pub network_interface_id: Option<String>,
}

/// One of gatehouse's security groups as AWS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedGroup {
    pub id: String,
    pub name: String,
    pub rules: BTreeSet<Rule>,
}

/// The route for the VPN pool in one route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteState {
    Missing,
    /// To the gateway's network interface.
    Ours,
    /// To something else (named by its target id).
    Elsewhere(String),
}

/// Everything the plan compares with the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub elastic_ip: Option<ElasticIp>,
    pub groups: BTreeMap<GroupRole, ObservedGroup>,
    /// The security groups on the gateway instance now.
    pub instance_groups: Vec<String>,
    /// Those of them that are not gatehouse's own, with their rules.
    pub foreign_groups: Vec<ObservedGroup>,
    pub source_dest_check: Option<bool>,
    /// The instance's `gatehouse:gateway` tag, which the IAM policy needs
    /// to let the gateway change the instance.
    pub instance_tag: Option<String>,
    pub routes: Vec<(String, RouteState)>,
    /// `None`: no parameter; `Some(secure)`: present, SecureString or not.
    pub ssm_parameter: Option<bool>,
}

impl Observed {
    pub fn group_id(&self, role: GroupRole) -> Option<&str> {
        self.groups.get(&role).map(|g| g.id.as_str())
    }
}

/// Describes the current footprint of the gateway `desired` is for.
pub async fn observe(session: &Session, desired: &Desired) -> Result<Observed, AwsError> {
    let elastic_ip = elastic_ip(session, &desired.gateway).await?;
    let groups = groups(session, &desired.gateway).await?;
    let (instance_groups, source_dest_check, instance_tag) = instance(session).await?;
    let foreign_groups = foreign_groups(session, &instance_groups, &groups).await?;
    let routes = routes(session, desired).await?;
    let ssm_parameter = ssm_parameter(session, &desired.ssm_parameter).await?;
    Ok(Observed {
        elastic_ip,
        groups,
        instance_groups,
        foreign_groups,
        source_dest_check,
        instance_tag,
        routes,
        ssm_parameter,
    })
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

/// The elastic IP tagged for `gateway`, if any (read only).
pub(crate) async fn elastic_ip(
    session: &Session,
    gateway: &str,
) -> Result<Option<ElasticIp>, AwsError> {
    const ACTION: &str = "ec2:DescribeAddresses";
    let out = session
        .ec2
        .describe_addresses()
        .filters(tag_filter(TAG_GATEWAY, gateway))
        .send()
        .await
        .map_err(|e| classify(ACTION, e))?;
    let mut found = Vec::new();
    for address in out.addresses() {
        let (Some(allocation_id), Some(public_ip)) = (address.allocation_id(), address.public_ip())
        else {
            continue;
        };
        found.push(ElasticIp {
            allocation_id: allocation_id.to_string(),
            public_ip: public_ip.to_string(),
            // Some emulators report a disassociated address with an empty id.
            network_interface_id: address
                .network_interface_id()
                .filter(|id| !id.is_empty())
                .map(str::to_string),
        });
    }
    if found.len() > 1 {
        return Err(AwsError::Ambiguous {
            what: "elastic IP",
            gateway: gateway.to_string(),
            ids: found
                .iter()
                .map(|a| a.allocation_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(found.pop())
}

async fn groups(
    session: &Session,
    gateway: &str,
) -> Result<BTreeMap<GroupRole, ObservedGroup>, AwsError> {
    const ACTION: &str = "ec2:DescribeSecurityGroups";
    let out = session
        .ec2
        .describe_security_groups()
        .filters(tag_filter(TAG_GATEWAY, gateway))
        .filters(
            Filter::builder()
                .name("vpc-id")
                .values(&session.facts.vpc_id)
                .build(),
        )
        .send()
        .await
        .map_err(|e| classify(ACTION, e))?;
    let mut by_role: BTreeMap<GroupRole, Vec<Found<'_>>> = BTreeMap::new();
    for group in out.security_groups() {
        let role_tag = group
            .tags()
            .iter()
            .find(|t| t.key() == Some(TAG_ROLE))
            .and_then(|t| t.value());
        let Some(role) = GroupRole::ALL
            .into_iter()
            .find(|r| Some(r.tag()) == role_tag)
        else {
            continue;
        };
        let Some(id) = group.group_id() else { continue };
        by_role.entry(role).or_default().push((
            id.to_string(),
            group.group_name().unwrap_or_default().to_string(),
            group.ip_permissions(),
        ));
    }
    let gateway_id = match by_role.get(&GroupRole::Gateway).map(Vec::as_slice) {
        Some([(id, _, _)]) => Some(id.clone()),
        _ => None,
    };
    let mut groups = BTreeMap::new();
    for (role, mut found) in by_role {
        if found.len() > 1 {
            return Err(AwsError::Ambiguous {
                what: match role {
                    GroupRole::Gateway => "gateway security group",
                    GroupRole::Targets => "targets security group",
                },
                gateway: gateway.to_string(),
                ids: found
                    .iter()
                    .map(|(id, _, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let Some((id, name, permissions)) = found.pop() else {
            continue;
        };
        let rules = permissions
            .iter()
            .flat_map(|p| rules_of(p, gateway_id.as_deref()))
            .collect();
        groups.insert(role, ObservedGroup { id, name, rules });
    }
    Ok(groups)
}

/// The instance's groups other than gatehouse's two, with their rules.
async fn foreign_groups(
    session: &Session,
    instance_groups: &[String],
    ours: &BTreeMap<GroupRole, ObservedGroup>,
) -> Result<Vec<ObservedGroup>, AwsError> {
    const ACTION: &str = "ec2:DescribeSecurityGroups";
    let foreign: Vec<String> = instance_groups
        .iter()
        .filter(|id| !ours.values().any(|g| &g.id == *id))
        .cloned()
        .collect();
    if foreign.is_empty() {
        return Ok(Vec::new());
    }
    let out = session
        .ec2
        .describe_security_groups()
        .set_group_ids(Some(foreign.clone()))
        .send()
        .await
        .map_err(|e| classify(ACTION, e))?;
    let gateway_group = ours.get(&GroupRole::Gateway).map(|g| g.id.as_str());
    let mut found = Vec::new();
    for id in &foreign {
        let Some(group) = out
            .security_groups()
            .iter()
            .find(|g| g.group_id() == Some(id.as_str()))
        else {
            continue;
        };
        found.push(ObservedGroup {
            id: id.clone(),
            name: group.group_name().unwrap_or_default().to_string(),
            rules: group
                .ip_permissions()
                .iter()
                .flat_map(|p| rules_of(p, gateway_group))
                .collect(),
        });
    }
    Ok(found)
}

/// A tagged group as found: id, name, ingress permissions.
type Found<'a> = (String, String, &'a [IpPermission]);

/// Splits one AWS permission (many sources) into rules (one source each).
fn rules_of(permission: &IpPermission, gateway_group: Option<&str>) -> Vec<Rule> {
    let protocol = permission.ip_protocol().unwrap_or("-1").to_string();
    let (from_port, to_port) = if protocol == "-1" {
        (-1, -1)
    } else {
        (
            permission.from_port().unwrap_or(-1),
            permission.to_port().unwrap_or(-1),
        )
    };
    let mut sources = Vec::new();
    for range in permission.ip_ranges() {
        if let Some(net) = range.cidr_ip().and_then(|c| c.parse().ok()) {
            sources.push(RuleSource::Cidr(net));
        }
    }
    for range in permission.ipv6_ranges() {
        if let Some(net) = range.cidr_ipv6().and_then(|c| c.parse().ok()) {
            sources.push(RuleSource::Cidr(net));
        }
    }
    for list in permission.prefix_list_ids() {
        if let Some(id) = list.prefix_list_id() {
            sources.push(RuleSource::PrefixList(id.to_string()));
        }
    }
    for pair in permission.user_id_group_pairs() {
        if let Some(id) = pair.group_id() {
            sources.push(if Some(id) == gateway_group {
                RuleSource::GatewayGroup
            } else {
                RuleSource::OtherGroup(id.to_string())
            });
        }
    }
    sources
        .into_iter()
        .map(|source| Rule {
            protocol: protocol.clone(),
            from_port,
            to_port,
            source,
        })
        .collect()
}

/// The instance's groups, source/dest check and `gatehouse:gateway` tag.
async fn instance(
    session: &Session,
) -> Result<(Vec<String>, Option<bool>, Option<String>), AwsError> {
    const ACTION: &str = "ec2:DescribeInstances";
    let out = session
        .ec2
        .describe_instances()
        .instance_ids(&session.facts.instance_id)
        .send()
        .await
        .map_err(|e| classify(ACTION, e))?;
    let instance = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(session.facts.instance_id.as_str()))
        .ok_or(AwsError::Incomplete {
            action: ACTION,
            what: "the gateway's instance (check aws.instance_id)",
        })?;
    let groups = instance
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect();
    let tag = instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(TAG_GATEWAY))
        .and_then(|t| t.value())
        .map(str::to_string);
    Ok((groups, instance.source_dest_check(), tag))
}

async fn routes(
    session: &Session,
    desired: &Desired,
) -> Result<Vec<(String, RouteState)>, AwsError> {
    const ACTION: &str = "ec2:DescribeRouteTables";
    if desired.route_tables.is_empty() {
        return Ok(Vec::new());
    }
    let out = session
        .ec2
        .describe_route_tables()
        .set_route_table_ids(Some(desired.route_tables.clone()))
        .send()
        .await
        .map_err(|e| classify(ACTION, e))?;
    let pool = desired.pool.to_string();
    let mut states = Vec::new();
    for table_id in &desired.route_tables {
        let table = out
            .route_tables()
            .iter()
            .find(|t| t.route_table_id() == Some(table_id.as_str()));
        let route = table.into_iter().flat_map(|t| t.routes()).find(|r| {
            r.destination_cidr_block() == Some(pool.as_str())
                || r.destination_ipv6_cidr_block() == Some(pool.as_str())
        });
        let state = match route {
            None => RouteState::Missing,
            Some(r)
                if r.network_interface_id()
                    == Some(session.facts.network_interface_id.as_str()) =>
            {
                RouteState::Ours
            }
            Some(r) => RouteState::Elsewhere(
                [
                    r.network_interface_id(),
                    r.instance_id(),
                    r.gateway_id(),
                    r.nat_gateway_id(),
                    r.transit_gateway_id(),
                    r.vpc_peering_connection_id(),
                ]
                .into_iter()
                .flatten()
                .next()
                .unwrap_or("an unknown target")
                .to_string(),
            ),
        };
        states.push((table_id.clone(), state));
    }
    Ok(states)
}

async fn ssm_parameter(session: &Session, name: &str) -> Result<Option<bool>, AwsError> {
    const ACTION: &str = "ssm:GetParameter";
    // Without decryption: only whether it exists and its type.
    match session.ssm.get_parameter().name(name).send().await {
        Ok(out) => Ok(Some(
            out.parameter().and_then(|p| p.r#type())
                == Some(&aws_sdk_ssm::types::ParameterType::SecureString),
        )),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_parameter_not_found()) =>
        {
            Ok(None)
        }
        Err(err) => Err(classify(ACTION, err)),
    }
}
