//! Apply: describes, plans, and carries the plan out in order, auditing each
//! change as `aws.change` once AWS has accepted it. Idempotent by
//! construction (it only does what the fresh plan says) and safe to re-run
//! after a failure: a re-run plans only what is still missing. AWS answers
//! that mean "already done" (a duplicate rule, a route that exists) count
//! as done. The steps of an HA active's part run fenced when the caller
//! says so ([`Guard::Fenced`], [`super::fenced`]).

use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, IpPermission, IpRange, Ipv6Range, PrefixListId,
    ResourceType, Tag, TagSpecification, UserIdGroupPair,
};
use ipnet::IpNet;
use serde_json::json;

use super::desired::{Desired, GroupRole, Rule, RuleSource, TAG_GATEWAY, TAG_ROLE, desired};
use super::errors::{AwsError, classify};
use super::fenced::{self, TimeLeft};
use super::observed::{Observed, observe};
use super::plan::{Action, Step, plan};
use super::{Session, ssm_key};
use crate::audit::event::{Actor, Kind, Source as AuditSource, event};
use crate::gateway::Core;

/// A finished apply.
#[derive(Debug)]
pub struct Applied {
    pub actions: Vec<Action>,
    pub elastic_ip: Option<String>,
    /// A fresh plan after the changes (empty unless AWS changed meanwhile).
    pub remaining: Vec<Action>,
}

/// An apply that stopped: what was done before, and why it stopped.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ApplyFailure {
    pub applied: Vec<Action>,
    /// The action that failed (`None`: describing AWS failed before any change).
    pub failed: Option<Action>,
    #[source]
    pub error: AwsError,
}

/// Which part of the footprint an apply changes. The elastic IP's
/// association and the pool routes belong to the active gateway of an HA
/// pair alone; everything else is shared and either node may apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything: a single gateway, or the active one of a pair.
    All,
    /// All but the active gateway's part: a standby.
    Shared,
    /// Only the active gateway's part: an HA take-over.
    Traffic,
}

/// Whether an apply's steps of the active's part are fenced by an HA lease.
#[derive(Clone, Copy)]
pub enum Guard<'a> {
    /// No lease: each call is retried inside the SDK (a single gateway, a
    /// standby's shared part).
    Unfenced,
    /// An HA active's: every step only while the fence holds; the
    /// active's part (the elastic IP's association, the pool routes)
    /// through [`fenced::attempt`].
    Fenced(TimeLeft<'a>),
}

impl Guard<'_> {
    fn holds(&self) -> bool {
        match self {
            Guard::Unfenced => true,
            Guard::Fenced(left) => left().is_some(),
        }
    }
}

impl Scope {
    /// Whether this scope carries `step` out.
    pub fn covers(self, step: &Step) -> bool {
        let holders = Traffic::of(step).is_some();
        match self {
            Scope::All => true,
            Scope::Shared => !holders,
            Scope::Traffic => holders,
        }
    }
}

/// Describes, plans and applies everything under the gateway's apply lock.
pub async fn apply(
    core: &Core,
    session: &Session,
    actor: Actor,
    source: AuditSource,
) -> Result<Applied, ApplyFailure> {
    apply_scoped(core, session, actor, source, Scope::All, Guard::Unfenced).await
}

/// As [`apply`], for the steps `scope` covers, each made only while `guard`
/// holds (an HA active's fence: a node that lost the lease changes nothing
/// more, and a call of its part ends before the lease can pass).
pub async fn apply_scoped(
    core: &Core,
    session: &Session,
    actor: Actor,
    source: AuditSource,
    scope: Scope,
    guard: Guard<'_>,
) -> Result<Applied, ApplyFailure> {
    let _one_at_a_time = core.aws().lock().await;
    write_kept_records(core).await;
    let stop = |applied: Vec<Action>, failed, error| ApplyFailure {
        applied,
        failed,
        error,
    };
    let want = desired(&core.config());
    let before = observe(session, &want)
        .await
        .map_err(|e| stop(Vec::new(), None, e))?;
    let mut ids = Ids::from(&before);
    let actions = plan(&want, &before, &session.facts);
    let mut applied = Vec::new();
    for action in actions.into_iter().filter(|a| scope.covers(&a.step)) {
        if !guard.holds() {
            return Err(stop(applied, Some(action), AwsError::NotActive));
        }
        let done = match (guard, Traffic::of(&action.step)) {
            (Guard::Fenced(left), Some(step)) => {
                fenced::attempt(step.action(), left, || {
                    step.execute(session, &session.ec2_fenced, &want, &ids)
                })
                .await
            }
            _ => execute(core, session, &want, &mut ids, &action.step).await,
        };
        match done {
            Ok(outcome) => {
                let record = event(Kind::AwsChange, actor.clone(), source.clone())
                    .on(action.resource.clone())
                    .detail(json!({
                        "kind": action.kind,
                        "change": action.change,
                        "reason": action.reason,
                        "result": outcome,
                    }));
                tracing::info!(resource = %action.resource, change = %action.change, result = %outcome, "aws change");
                // Made whatever the log says: a refused record is kept and
                // written later; no further change is made unaudited.
                let kept = core.aws().unwritten();
                if let Err(err) = kept.write_or_keep(core.store(), record).await {
                    return Err(stop(applied, Some(action), AwsError::Audit(err)));
                }
                applied.push(action);
            }
            Err(error) => {
                tracing::warn!(resource = %action.resource, change = %action.change, error = %error, "aws change failed");
                let record = event(Kind::AwsChangeFail, actor.clone(), source.clone())
                    .on(action.resource.clone())
                    .detail(json!({
                        "kind": action.kind,
                        "change": action.change,
                        "error": error.to_string(),
                    }));
                // The failure stands even if it cannot be audited now.
                let kept = core.aws().unwritten();
                let _ = kept.write_or_keep(core.store(), record).await;
                return Err(stop(applied, Some(action), error));
            }
        }
    }
    let after = observe(session, &want)
        .await
        .map_err(|e| stop(applied.clone(), None, e))?;
    remember_elastic_ip(core, &after);
    Ok(Applied {
        elastic_ip: after.elastic_ip.as_ref().map(|a| a.public_ip.clone()),
        remaining: plan(&want, &after, &session.facts)
            .into_iter()
            .filter(|a| scope.covers(&a.step))
            .collect(),
        actions: applied,
    })
}

/// Writes the `aws.change` records the store refused before (oldest
/// first; those it refuses again stay kept). Each apply begins with this,
/// and [`super::spawn_audit_retry`] calls it while any are kept.
pub async fn write_kept_records(core: &Core) {
    let kept = core.aws().unwritten();
    if kept.kept() > 0 {
        let written = kept.write_kept(core.store()).await;
        if written > 0 {
            tracing::info!(
                written,
                still_kept = kept.kept(),
                "wrote AWS change records the store had refused"
            );
        }
    }
}

/// Describes and plans without changing anything.
pub async fn plan_only(
    core: &Core,
    session: &Session,
) -> Result<(Desired, Observed, Vec<Action>), AwsError> {
    let want = desired(&core.config());
    let observed = observe(session, &want).await?;
    remember_elastic_ip(core, &observed);
    let actions = plan(&want, &observed, &session.facts);
    Ok((want, observed, actions))
}

/// Keeps the gateway's idea of its elastic IP in line with AWS (only an
/// address associated with this gateway counts).
fn remember_elastic_ip(core: &Core, observed: &Observed) {
    let ip = observed
        .elastic_ip
        .as_ref()
        .and_then(|a| a.public_ip.parse().ok());
    core.aws().set_elastic_ip(ip);
}

impl ApplyFailure {
    fn describe(&self) -> String {
        let done = self.applied.len();
        match &self.failed {
            Some(action) => format!(
                "apply stopped at \"{}: {}\": {}; the {done} change(s) before it are made and audited; fix the cause and run `accessctl aws apply` again (it continues from here)",
                action.resource, action.change, self.error
            ),
            None => format!(
                "cannot describe the gateway's AWS resources: {}",
                self.error
            ),
        }
    }
}

/// The ids later steps refer to; filled in as the apply creates them.
struct Ids {
    groups: [Option<String>; 2],
    allocation_id: Option<String>,
}

impl Ids {
    fn from(observed: &Observed) -> Self {
        Self {
            groups: GroupRole::ALL.map(|r| observed.group_id(r).map(str::to_string)),
            allocation_id: observed
                .elastic_ip
                .as_ref()
                .map(|a| a.allocation_id.clone()),
        }
    }

    fn group(&self, role: GroupRole) -> Result<&str, AwsError> {
        self.groups[role as usize]
            .as_deref()
            .ok_or(AwsError::Incomplete {
                action: "ec2:CreateSecurityGroup",
                what: "a group id (the security group was not created)",
            })
    }
}

fn tags(resource: ResourceType, gateway: &str, role: Option<GroupRole>) -> TagSpecification {
    let mut spec = TagSpecification::builder()
        .resource_type(resource)
        .tags(Tag::builder().key(TAG_GATEWAY).value(gateway).build());
    if let Some(role) = role {
        spec = spec.tags(Tag::builder().key(TAG_ROLE).value(role.tag()).build());
    }
    spec.build()
}

fn permission(rule: &Rule, ids: &Ids, description: Option<&str>) -> Result<IpPermission, AwsError> {
    let mut p = IpPermission::builder().ip_protocol(&rule.protocol);
    if rule.protocol != "-1" {
        p = p.from_port(rule.from_port).to_port(rule.to_port);
    }
    let described = |text: &str| format!("gatehouse: {text}");
    p = match &rule.source {
        RuleSource::Cidr(IpNet::V4(net)) => p.ip_ranges(
            IpRange::builder()
                .cidr_ip(net.to_string())
                .set_description(description.map(described))
                .build(),
        ),
        RuleSource::Cidr(IpNet::V6(net)) => p.ipv6_ranges(
            Ipv6Range::builder()
                .cidr_ipv6(net.to_string())
                .set_description(description.map(described))
                .build(),
        ),
        RuleSource::GatewayGroup => p.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(ids.group(GroupRole::Gateway)?)
                .set_description(description.map(described))
                .build(),
        ),
        RuleSource::OtherGroup(id) => {
            p.user_id_group_pairs(UserIdGroupPair::builder().group_id(id).build())
        }
        RuleSource::PrefixList(id) => {
            p.prefix_list_ids(PrefixListId::builder().prefix_list_id(id).build())
        }
    };
    Ok(p.build())
}

fn is_code<E: aws_sdk_ec2::error::ProvideErrorMetadata, R>(
    err: &aws_sdk_ec2::error::SdkError<E, R>,
    code: &str,
) -> bool {
    err.as_service_error().and_then(|e| e.code()) == Some(code)
}

/// Carries out one step; returns what AWS answered, for the audit record.
async fn execute(
    core: &Core,
    session: &Session,
    want: &Desired,
    ids: &mut Ids,
    step: &Step,
) -> Result<String, AwsError> {
    let facts = &session.facts;
    let ec2 = &session.ec2;
    match step {
        Step::PutKey { overwrite } => {
            ssm_key::put(
                session,
                &want.ssm_parameter,
                &want.gateway,
                core.key(),
                *overwrite,
            )
            .await?;
            Ok(format!(
                "stored {} (public key {})",
                want.ssm_parameter,
                core.key().public_base64()
            ))
        }
        Step::AllocateAddress => {
            const ACTION: &str = "ec2:AllocateAddress";
            let out = session
                .ec2
                .allocate_address()
                .domain(DomainType::Vpc)
                .tag_specifications(tags(ResourceType::ElasticIp, &want.gateway, None))
                .send()
                .await
                .map_err(|e| classify(ACTION, e))?;
            let id = out.allocation_id().ok_or(AwsError::Incomplete {
                action: ACTION,
                what: "an allocation id",
            })?;
            ids.allocation_id = Some(id.to_string());
            Ok(format!("{id} ({})", out.public_ip().unwrap_or("?")))
        }
        Step::CreateGroup(role) => {
            const ACTION: &str = "ec2:CreateSecurityGroup";
            let out = session
                .ec2
                .create_security_group()
                .group_name(role.group_name(&want.gateway))
                .description(role.description(&want.gateway))
                .vpc_id(&facts.vpc_id)
                .tag_specifications(tags(
                    ResourceType::SecurityGroup,
                    &want.gateway,
                    Some(*role),
                ))
                .send()
                .await
                .map_err(|e| classify(ACTION, e))?;
            let id = out.group_id().ok_or(AwsError::Incomplete {
                action: ACTION,
                what: "a group id",
            })?;
            ids.groups[*role as usize] = Some(id.to_string());
            Ok(id.to_string())
        }
        Step::Revoke(role, rule) => {
            const ACTION: &str = "ec2:RevokeSecurityGroupIngress";
            let group = ids.group(*role)?.to_string();
            ec2.revoke_security_group_ingress()
                .group_id(&group)
                .ip_permissions(permission(rule, ids, None)?)
                .send()
                .await
                .map_err(|e| classify(ACTION, e))?;
            Ok(format!("revoked on {group}"))
        }
        Step::Authorize(role, rule) => {
            const ACTION: &str = "ec2:AuthorizeSecurityGroupIngress";
            let group = ids.group(*role)?.to_string();
            let reason = want.rules(*role).get(rule).map(String::as_str);
            let sent = ec2
                .authorize_security_group_ingress()
                .group_id(&group)
                .ip_permissions(permission(rule, ids, reason)?)
                .send()
                .await;
            match sent {
                Ok(_) => Ok(format!("authorized on {group}")),
                Err(err) if is_code(&err, "InvalidPermission.Duplicate") => {
                    Ok(format!("already authorized on {group}"))
                }
                Err(err) => Err(classify(ACTION, err)),
            }
        }
        Step::SetInstanceGroups { keep } => {
            const ACTION: &str = "ec2:ModifyInstanceAttribute";
            let mut groups = keep.clone();
            groups.push(ids.group(GroupRole::Gateway)?.to_string());
            groups.dedup();
            session
                .ec2
                .modify_instance_attribute()
                .instance_id(&facts.instance_id)
                .set_groups(Some(groups.clone()))
                .send()
                .await
                .map_err(|e| classify(ACTION, e))?;
            Ok(format!("groups now {}", groups.join(", ")))
        }
        Step::DisableSourceDestCheck => {
            const ACTION: &str = "ec2:ModifyInstanceAttribute";
            session
                .ec2
                .modify_instance_attribute()
                .instance_id(&facts.instance_id)
                .source_dest_check(AttributeBooleanValue::builder().value(false).build())
                .send()
                .await
                .map_err(|e| classify(ACTION, e))?;
            Ok("source/dest check off".into())
        }
        Step::AssociateAddress => Traffic::Associate.execute(session, ec2, want, ids).await,
        Step::CreateRoute { table } => {
            Traffic::CreateRoute(table)
                .execute(session, ec2, want, ids)
                .await
        }
        Step::ReplaceRoute { table } => {
            Traffic::ReplaceRoute(table)
                .execute(session, ec2, want, ids)
                .await
        }
    }
}

/// A step of the active gateway's part: the elastic IP's association and
/// the pool routes. Each is one call (or two: a duplicate route is
/// replaced), needs nothing created before it in the same apply, and is
/// made with the client it is given (the fenced one under a lease).
#[derive(Debug, Clone, Copy)]
enum Traffic<'a> {
    Associate,
    CreateRoute(&'a str),
    ReplaceRoute(&'a str),
}

impl<'a> Traffic<'a> {
    fn of(step: &'a Step) -> Option<Traffic<'a>> {
        match step {
            Step::AssociateAddress => Some(Traffic::Associate),
            Step::CreateRoute { table } => Some(Traffic::CreateRoute(table)),
            Step::ReplaceRoute { table } => Some(Traffic::ReplaceRoute(table)),
            _ => None,
        }
    }

    fn action(self) -> &'static str {
        match self {
            Traffic::Associate => "ec2:AssociateAddress",
            Traffic::CreateRoute(_) => "ec2:CreateRoute",
            Traffic::ReplaceRoute(_) => "ec2:ReplaceRoute",
        }
    }

    /// Carries the step out with `ec2`; returns what AWS answered.
    async fn execute(
        self,
        session: &Session,
        ec2: &aws_sdk_ec2::Client,
        want: &Desired,
        ids: &Ids,
    ) -> Result<String, AwsError> {
        let facts = &session.facts;
        match self {
            Traffic::Associate => {
                const ACTION: &str = "ec2:AssociateAddress";
                let allocation = ids.allocation_id.clone().ok_or(AwsError::Incomplete {
                    action: "ec2:AllocateAddress",
                    what: "an allocation id (the elastic IP was not allocated)",
                })?;
                let out = ec2
                    .associate_address()
                    .allocation_id(&allocation)
                    .network_interface_id(&facts.network_interface_id)
                    .allow_reassociation(true)
                    .send()
                    .await
                    .map_err(|e| classify(ACTION, e))?;
                Ok(format!(
                    "{allocation} → {} ({})",
                    facts.network_interface_id,
                    out.association_id().unwrap_or("?")
                ))
            }
            Traffic::CreateRoute(table) => {
                const ACTION: &str = "ec2:CreateRoute";
                let sent = match want.pool {
                    IpNet::V4(_) => ec2
                        .create_route()
                        .destination_cidr_block(want.pool.to_string()),
                    IpNet::V6(_) => ec2
                        .create_route()
                        .destination_ipv6_cidr_block(want.pool.to_string()),
                }
                .route_table_id(table)
                .network_interface_id(&facts.network_interface_id)
                .send()
                .await;
                match sent {
                    Ok(_) => Ok(format!("{} → {}", want.pool, facts.network_interface_id)),
                    // Real AWS refuses a duplicate; point the existing route at us.
                    Err(err) if is_code(&err, "RouteAlreadyExists") => {
                        replace_route(session, ec2, want, table).await
                    }
                    Err(err) => Err(classify(ACTION, err)),
                }
            }
            Traffic::ReplaceRoute(table) => replace_route(session, ec2, want, table).await,
        }
    }
}

async fn replace_route(
    session: &Session,
    ec2: &aws_sdk_ec2::Client,
    want: &Desired,
    table: &str,
) -> Result<String, AwsError> {
    const ACTION: &str = "ec2:ReplaceRoute";
    let eni = &session.facts.network_interface_id;
    match want.pool {
        IpNet::V4(_) => ec2
            .replace_route()
            .destination_cidr_block(want.pool.to_string()),
        IpNet::V6(_) => ec2
            .replace_route()
            .destination_ipv6_cidr_block(want.pool.to_string()),
    }
    .route_table_id(table)
    .network_interface_id(eni)
    .send()
    .await
    .map_err(|e| classify(ACTION, e))?;
    Ok(format!("{} → {eni} (replaced)", want.pool))
}
