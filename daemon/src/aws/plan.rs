//! The plan: the difference between the desired state and what AWS says,
//! as an ordered list of actions, each with its reason (pure, no I/O).
//!
//! Order: the SSM key; then what later steps refer to (elastic IP, security
//! groups); revocations before authorisations, so drift such as port 22
//! open to the world closes first; then the instance's groups (with
//! `aws.exclusive_groups`, less the other groups that open guarded ports
//! wider than configured, see [`super::exposure`]), the elastic
//! IP association, source/dest check, and the routes. Only gatehouse-tagged
//! resources are changed, plus the pool route in the route tables the
//! config names; the elastic IP is never released.

use gatehouse_config::api::AwsActionKind;

use super::desired::{Desired, GroupRole, Rule, TAG_GATEWAY};
use super::discovery::Facts;
use super::exposure::{exposing_groups, exposures};
use super::observed::{Observed, RouteState};

/// One change the apply makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Store the running WireGuard key in SSM (`overwrite`: replace a
    /// parameter that is not a SecureString).
    PutKey {
        overwrite: bool,
    },
    AllocateAddress,
    CreateGroup(GroupRole),
    Revoke(GroupRole, Rule),
    Authorize(GroupRole, Rule),
    /// Set the instance's groups to the gateway group and `keep`.
    SetInstanceGroups {
        keep: Vec<String>,
    },
    AssociateAddress,
    DisableSourceDestCheck,
    CreateRoute {
        table: String,
    },
    ReplaceRoute {
        table: String,
    },
}

/// A step with what a person reads about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub step: Step,
    pub kind: AwsActionKind,
    pub resource: String,
    pub change: String,
    pub reason: String,
}

/// Everything to do to turn `observed` into `desired`; empty when in sync.
pub fn plan(desired: &Desired, observed: &Observed, facts: &Facts) -> Vec<Action> {
    let mut actions = Vec::new();
    let name = &desired.gateway;
    let tag = format!("{TAG_GATEWAY}={name}");
    let param = &desired.ssm_parameter;

    match observed.ssm_parameter {
        None => actions.push(Action {
            step: Step::PutKey { overwrite: false },
            kind: AwsActionKind::Create,
            resource: format!("ssm parameter {param}"),
            change: "store the gateway's WireGuard private key (SecureString)".into(),
            reason: "no key in SSM: a replaced instance could not keep the gateway's public key"
                .into(),
        }),
        Some(false) => actions.push(Action {
            step: Step::PutKey { overwrite: true },
            kind: AwsActionKind::Modify,
            resource: format!("ssm parameter {param}"),
            change: "store the running WireGuard key again, as a SecureString".into(),
            reason:
                "the parameter is not a SecureString: the private key must be encrypted at rest"
                    .into(),
        }),
        Some(true) => {}
    }

    if observed.elastic_ip.is_none() {
        actions.push(Action {
            step: Step::AllocateAddress,
            kind: AwsActionKind::Create,
            resource: "elastic IP".into(),
            change: format!("allocate a VPC elastic IP tagged {tag}"),
            reason: "no elastic IP is tagged for this gateway".into(),
        });
    }

    for role in GroupRole::ALL {
        let want = desired.rules(role);
        let group_name = role.group_name(name);
        let label = match observed.groups.get(&role) {
            Some(group) => format!("security group {} ({})", group.id, group.name),
            None => format!("security group {group_name}"),
        };
        let have = match observed.groups.get(&role) {
            Some(group) => group.rules.clone(),
            None => {
                actions.push(Action {
                    step: Step::CreateGroup(role),
                    kind: AwsActionKind::Create,
                    resource: label.clone(),
                    change: format!("create in {} tagged {tag}", facts.vpc_id),
                    reason: match role {
                        GroupRole::Gateway => "the gateway needs its own security group".into(),
                        GroupRole::Targets => {
                            "private hosts need a group that admits only the gateway".into()
                        }
                    },
                });
                Default::default()
            }
        };
        for rule in have.iter().filter(|r| !want.contains_key(*r)) {
            actions.push(Action {
                step: Step::Revoke(role, rule.clone()),
                kind: AwsActionKind::Delete,
                resource: label.clone(),
                change: format!("revoke ingress {rule}"),
                reason: "drift: this rule is not in the desired state".into(),
            });
        }
        for (rule, why) in want.iter().filter(|(r, _)| !have.contains(*r)) {
            actions.push(Action {
                step: Step::Authorize(role, rule.clone()),
                kind: AwsActionKind::Create,
                resource: label.clone(),
                change: format!("authorize ingress {rule}"),
                reason: why.clone(),
            });
        }
    }

    actions.extend(instance_groups(desired, observed, facts));

    let eni = &facts.network_interface_id;
    let associated = observed
        .elastic_ip
        .as_ref()
        .and_then(|a| a.network_interface_id.as_deref());
    if associated != Some(eni.as_str()) {
        let ip = observed
            .elastic_ip
            .as_ref()
            .map_or("the new elastic IP".to_string(), |a| {
                format!("{} ({})", a.public_ip, a.allocation_id)
            });
        actions.push(Action {
            step: Step::AssociateAddress,
            kind: AwsActionKind::Modify,
            resource: format!("elastic IP {ip}"),
            change: format!("associate with {eni} (reassociation allowed)"),
            reason: match associated {
                None => "the elastic IP is not associated with the gateway".into(),
                Some(other) => format!(
                    "the elastic IP is associated with {other}, not this gateway (failover takes it over)"
                ),
            },
        });
    }

    if desired.route_mode {
        if observed.source_dest_check != Some(false) {
            actions.push(Action {
                step: Step::DisableSourceDestCheck,
                kind: AwsActionKind::Modify,
                resource: format!("instance {}", facts.instance_id),
                change: "turn source/dest check off".into(),
                reason:
                    "vpn.nat = \"route\": the gateway forwards packets with the devices' addresses"
                        .into(),
            });
        }
        for (table, state) in &observed.routes {
            let (step, kind, reason) = match state {
                RouteState::Ours => continue,
                RouteState::Missing => (
                    Step::CreateRoute {
                        table: table.clone(),
                    },
                    AwsActionKind::Create,
                    "replies to VPN devices must come back through the gateway".to_string(),
                ),
                RouteState::Elsewhere(target) => (
                    Step::ReplaceRoute {
                        table: table.clone(),
                    },
                    AwsActionKind::Modify,
                    format!("the pool's route points at {target}, not the gateway"),
                ),
            };
            actions.push(Action {
                step,
                kind,
                resource: format!("route table {table}"),
                change: format!("route {} to {eni}", desired.pool),
                reason,
            });
        }
    }
    actions
}

/// Puts the gateway group on the instance and, with `aws.exclusive_groups`,
/// takes off the other groups that open guarded ports wider than configured.
fn instance_groups(desired: &Desired, observed: &Observed, facts: &Facts) -> Option<Action> {
    let gateway_group = observed.group_id(GroupRole::Gateway);
    let attached = gateway_group.is_some_and(|id| observed.instance_groups.iter().any(|g| g == id));
    let detach = if desired.exclusive_groups {
        exposing_groups(&exposures(desired, &observed.foreign_groups))
    } else {
        Vec::new()
    };
    if attached && detach.is_empty() {
        return None;
    }
    let keep: Vec<String> = observed
        .instance_groups
        .iter()
        .filter(|g| !detach.contains(g))
        .cloned()
        .collect();
    let list = |ids: &[String]| {
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        }
    };
    let (change, reason) = if detach.is_empty() {
        (
            format!(
                "add {} to its security groups (keeping {})",
                gateway_group.unwrap_or("the gateway's security group"),
                list(&keep)
            ),
            "the gateway's rules apply only on its own network interface".to_string(),
        )
    } else {
        (
            format!(
                "detach {} from it (keeping {}{})",
                list(&detach),
                gateway_group.unwrap_or("the gateway's security group"),
                keep.iter()
                    .filter(|g| Some(g.as_str()) != gateway_group)
                    .map(|g| format!(", {g}"))
                    .collect::<String>()
            ),
            "aws.exclusive_groups: they open TCP 22, the portal or the jump port wider than configured"
                .to_string(),
        )
    };
    Some(Action {
        step: Step::SetInstanceGroups { keep },
        kind: AwsActionKind::Modify,
        resource: format!("instance {}", facts.instance_id),
        change,
        reason,
    })
}

/// What a person should know that apply will not change (pure): an
/// instance without the tag the IAM policy needs, and the other groups that
/// open guarded ports wider than configured (unless `aws.exclusive_groups`,
/// when the plan detaches them instead).
pub fn warnings(desired: &Desired, observed: &Observed) -> Vec<String> {
    let mut warnings = Vec::new();
    if observed.instance_tag.as_deref() != Some(desired.gateway.as_str()) {
        warnings.push(format!(
            "the gateway instance is not tagged {TAG_GATEWAY}={}: packaging/iam-policy.json lets the gateway change only the instance with that tag, so setting its security groups or source/dest check will be refused",
            desired.gateway
        ));
    }
    if !desired.exclusive_groups {
        warnings.extend(
            exposures(desired, &observed.foreign_groups)
                .iter()
                .map(|e| {
                    format!(
                        "{}; set aws.exclusive_groups = true to have apply detach it",
                        e.describe()
                    )
                }),
        );
    }
    warnings
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::aws::desired::{RuleSource, desired};
    use crate::aws::observed::{ElasticIp, ObservedGroup};

    const CONFIG: &str = r#"
[gateway]
name = "gw"
public_endpoint = "auto"
[ssh]
listen = "0.0.0.0:2222"
[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
[aws]
region = "eu-west-3"
admin_cidrs = ["203.0.113.7/32"]
private_route_tables = ["rtb-1"]
"#;

    fn facts() -> Facts {
        Facts {
            region: "eu-west-3".into(),
            instance_id: "i-1".into(),
            availability_zone: "eu-west-3a".into(),
            network_interface_id: "eni-1".into(),
            vpc_id: "vpc-1".into(),
            subnet_id: "subnet-1".into(),
            from_metadata: false,
        }
    }

    fn empty() -> Observed {
        Observed {
            elastic_ip: None,
            groups: BTreeMap::new(),
            instance_groups: vec!["sg-default".into()],
            foreign_groups: Vec::new(),
            source_dest_check: Some(true),
            instance_tag: Some("gw".into()),
            routes: vec![("rtb-1".into(), RouteState::Missing)],
            ssm_parameter: None,
        }
    }

    /// What AWS would say after the plan for `empty()` ran.
    fn in_sync(want: &Desired) -> Observed {
        let group = |role, id: &str| ObservedGroup {
            id: id.into(),
            name: GroupRole::group_name(role, "gw"),
            rules: want.rules(role).keys().cloned().collect::<BTreeSet<_>>(),
        };
        Observed {
            elastic_ip: Some(ElasticIp {
                allocation_id: "eipalloc-1".into(),
                public_ip: "198.51.100.9".into(),
                network_interface_id: Some("eni-1".into()),
            }),
            groups: BTreeMap::from([
                (GroupRole::Gateway, group(GroupRole::Gateway, "sg-gw")),
                (GroupRole::Targets, group(GroupRole::Targets, "sg-t")),
            ]),
            instance_groups: vec!["sg-default".into(), "sg-gw".into()],
            foreign_groups: Vec::new(),
            source_dest_check: Some(false),
            instance_tag: Some("gw".into()),
            routes: vec![("rtb-1".into(), RouteState::Ours)],
            ssm_parameter: Some(true),
        }
    }

    #[test]
    fn a_fresh_account_gets_everything_in_order() {
        let want = desired(&gatehouse_config::Config::parse(CONFIG, "t").unwrap());
        let actions = plan(&want, &empty(), &facts());
        let steps: Vec<String> = actions
            .iter()
            .map(|a| {
                format!("{:?}", a.step)
                    .split(['(', ' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        let first = |name: &str| steps.iter().position(|s| s == name).unwrap();
        assert_eq!(steps[0], "PutKey");
        assert!(first("AllocateAddress") < first("CreateGroup"));
        assert!(first("CreateGroup") < first("Authorize"));
        assert!(first("Authorize") < first("SetInstanceGroups"));
        assert!(first("SetInstanceGroups") < first("AssociateAddress"));
        assert!(first("AssociateAddress") < first("DisableSourceDestCheck"));
        assert_eq!(steps.last().map(String::as_str), Some("CreateRoute"));
        assert!(actions.iter().all(|a| !a.reason.is_empty()));
        let attach = actions
            .iter()
            .find_map(|a| match &a.step {
                Step::SetInstanceGroups { keep } => Some(keep.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(attach, ["sg-default"], "other groups stay");
    }

    #[test]
    fn in_sync_plans_nothing_and_drift_is_repaired_revocations_first() {
        let want = desired(&gatehouse_config::Config::parse(CONFIG, "t").unwrap());
        let synced = in_sync(&want);
        assert_eq!(plan(&want, &synced, &facts()), []);

        let mut drifted = synced.clone();
        let world_22 = Rule {
            protocol: "tcp".into(),
            from_port: 22,
            to_port: 22,
            source: RuleSource::Cidr("0.0.0.0/0".parse().unwrap()),
        };
        let gateway = drifted.groups.get_mut(&GroupRole::Gateway).unwrap();
        gateway.rules.insert(world_22.clone());
        let udp = gateway
            .rules
            .iter()
            .find(|r| r.protocol == "udp")
            .cloned()
            .unwrap();
        gateway.rules.remove(&udp);
        drifted.elastic_ip.as_mut().unwrap().network_interface_id = Some("eni-standby".into());
        drifted.routes = vec![("rtb-1".into(), RouteState::Elsewhere("nat-1".into()))];
        let actions = plan(&want, &drifted, &facts());
        let steps: Vec<&Step> = actions.iter().map(|a| &a.step).collect();
        assert_eq!(
            steps,
            [
                &Step::Revoke(GroupRole::Gateway, world_22),
                &Step::Authorize(GroupRole::Gateway, udp),
                &Step::AssociateAddress,
                &Step::ReplaceRoute {
                    table: "rtb-1".into()
                },
            ]
        );
        assert!(actions[0].reason.contains("drift"));
        assert!(actions[2].reason.contains("eni-standby"));
    }

    #[test]
    fn a_plaintext_parameter_is_rewritten_as_securestring() {
        let want = desired(&gatehouse_config::Config::parse(CONFIG, "t").unwrap());
        let mut observed = in_sync(&want);
        observed.ssm_parameter = Some(false);
        let actions = plan(&want, &observed, &facts());
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0].step, Step::PutKey { overwrite: true });
    }

    #[test]
    fn a_foreign_group_opening_port_22_is_only_detached_with_exclusive_groups() {
        let config = gatehouse_config::Config::parse(CONFIG, "t").unwrap();
        let mut want = desired(&config);
        let mut observed = in_sync(&want);
        observed.instance_groups = vec!["sg-default".into(), "sg-gw".into(), "sg-open".into()];
        observed.foreign_groups = vec![
            ObservedGroup {
                id: "sg-default".into(),
                name: "default".into(),
                rules: BTreeSet::new(),
            },
            ObservedGroup {
                id: "sg-open".into(),
                name: "team-ssh".into(),
                rules: BTreeSet::from([Rule {
                    protocol: "tcp".into(),
                    from_port: 22,
                    to_port: 22,
                    source: RuleSource::Cidr("0.0.0.0/0".parse().unwrap()),
                }]),
            },
        ];
        assert_eq!(
            plan(&want, &observed, &facts()),
            [],
            "warned of, not planned"
        );

        want.exclusive_groups = true;
        let actions = plan(&want, &observed, &facts());
        assert_eq!(actions.len(), 1, "{actions:#?}");
        assert_eq!(
            actions[0].step,
            Step::SetInstanceGroups {
                keep: vec!["sg-default".into(), "sg-gw".into()]
            }
        );
        assert!(
            actions[0].change.contains("detach sg-open")
                && actions[0].reason.contains("exclusive_groups"),
            "{:?}",
            actions[0]
        );
    }

    #[test]
    fn warnings_name_an_untagged_instance_and_wide_groups_unless_they_are_detached() {
        let config = gatehouse_config::Config::parse(CONFIG, "t").unwrap();
        let mut want = desired(&config);
        let mut observed = in_sync(&want);
        assert_eq!(warnings(&want, &observed), Vec::<String>::new());
        observed.instance_tag = None;
        observed.foreign_groups = vec![ObservedGroup {
            id: "sg-open".into(),
            name: "team-ssh".into(),
            rules: BTreeSet::from([Rule {
                protocol: "-1".into(),
                from_port: -1,
                to_port: -1,
                source: RuleSource::Cidr("0.0.0.0/0".parse().unwrap()),
            }]),
        }];
        let warned = warnings(&want, &observed);
        assert_eq!(warned.len(), 2, "{warned:#?}");
        assert!(
            warned[0].contains("not tagged gatehouse:gateway=gw"),
            "{warned:#?}"
        );
        assert!(warned[1].contains("sg-open (team-ssh)"), "{warned:#?}");
        want.exclusive_groups = true;
        assert_eq!(
            warnings(&want, &observed).len(),
            1,
            "planned, not warned of"
        );
    }
}
