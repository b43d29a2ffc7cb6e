//! `accessctl aws plan|apply|status`: the gateway's AWS footprint (elastic
//! IP, security groups, source/dest check, VPC routes, the SSM-held key).
//! accessd makes the AWS calls; this only renders what it answers, like
//! `terraform plan` for people and as JSON for scripts.

use std::time::Duration;

use clap::Subcommand;
use gatehouse_config::api::{
    AwsAction, AwsActionKind, AwsApplyResponse, AwsFacts, AwsPlanResponse, AwsStatusResponse,
};

use crate::Ctx;
use crate::client::ClientError;
use crate::output::OutputError;

/// Applies can wait on AWS retries with backoff: give them longer than the
/// default request timeout.
const APPLY_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Show what `aws apply` would change, and why (changes nothing).
    #[command(
        long_about = "Show what `aws apply` would change, and why. Nothing is changed.\n\n\
        accessd describes the gateway's elastic IP, its two security groups (the \
        gateway's own, and `targets` for private hosts), the instance's source/dest \
        check, the VPN pool's route in each aws.private_route_tables entry, and the \
        SSM parameter holding its WireGuard key, and compares them with the config. \
        Each line is one action: + create, ~ modify, - delete (drift such as port 22 \
        opened to the world is revoked).\n\n\
        Exits 0 whether or not there are changes; `--json` gives the actions for scripts \
        (`.actions | length` is 0 when in sync).\n\n\
        Example:\n  accessctl aws plan\n  accessctl --json aws plan | jq '.actions | length'"
    )]
    Plan,
    /// Carry out the plan (audited as aws.change); safe to re-run.
    #[command(
        long_about = "Carry out the plan: allocate and associate the elastic IP, \
        create and correct the security groups, turn source/dest check off and add the \
        pool routes (with vpn.nat = \"route\"), store the WireGuard key in SSM.\n\n\
        Every change is written to the audit log as aws.change. A second apply finds \
        nothing to do. If a step fails (a missing IAM permission is named), the changes \
        before it stay; fix the cause and run apply again: it continues where it stopped. \
        gatehouse never releases the elastic IP and never changes untagged resources \
        other than the pool route in the route tables the config names.\n\n\
        Example:\n  accessctl aws apply"
    )]
    Apply,
    /// Show the gateway's AWS resources as AWS describes them now.
    #[command(long_about = "Show the instance facts (from instance metadata or the \
        config), the elastic IP, the security groups with their ingress rules, source/dest \
        check, the pool routes, the SSM parameter, and how many changes are pending.\n\n\
        Example:\n  accessctl aws status")]
    Status,
}

/// Why an `aws` command failed.
#[derive(Debug, thiserror::Error)]
pub enum AwsCliError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Output(#[from] OutputError),
}

pub async fn run(cmd: AwsCommand, ctx: &Ctx) -> Result<(), AwsCliError> {
    match cmd {
        AwsCommand::Plan => {
            let reply = ctx.client.get::<AwsPlanResponse>("/v1/aws/plan").await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else {
                ctx.out.emit(&render_plan(&reply.body))?;
            }
        }
        AwsCommand::Apply => {
            let client = ctx.client.clone().with_timeout(APPLY_TIMEOUT);
            let reply = client
                .post::<(), AwsApplyResponse>("/v1/aws/apply", None)
                .await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else {
                ctx.out.emit(&render_apply(&reply.body))?;
            }
        }
        AwsCommand::Status => {
            let reply = ctx
                .client
                .get::<AwsStatusResponse>("/v1/aws/status")
                .await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else {
                ctx.out.emit(&render_status(&reply.body))?;
            }
        }
    }
    Ok(())
}

fn symbol(kind: AwsActionKind) -> &'static str {
    match kind {
        AwsActionKind::Create => "+",
        AwsActionKind::Modify => "~",
        AwsActionKind::Delete => "-",
    }
}

fn facts_line(gateway: &str, facts: &AwsFacts) -> String {
    format!(
        "gateway {gateway}: instance {} in {} ({}), interface {}, {}, {}{}\n",
        facts.instance_id,
        facts.region,
        facts.availability_zone,
        facts.network_interface_id,
        facts.vpc_id,
        facts.subnet_id,
        if facts.from_metadata {
            ""
        } else {
            " (from the config)"
        }
    )
}

/// One block per action: `+ resource` / `    change` / `    # reason`.
fn render_actions(actions: &[AwsAction]) -> String {
    let mut out = String::new();
    for a in actions {
        out.push_str(&format!(
            "  {} {}\n      {}\n      # {}\n",
            symbol(a.kind),
            a.resource,
            a.change,
            a.reason
        ));
    }
    out
}

fn counts(actions: &[AwsAction]) -> String {
    let n = |kind| actions.iter().filter(|a| a.kind == kind).count();
    format!(
        "{} to create, {} to modify, {} to delete",
        n(AwsActionKind::Create),
        n(AwsActionKind::Modify),
        n(AwsActionKind::Delete)
    )
}

/// `Warning: ...` lines, after a blank line, or nothing.
fn render_warnings(warnings: &[String]) -> String {
    let mut out = String::new();
    if !warnings.is_empty() {
        out.push('\n');
    }
    for w in warnings {
        out.push_str(&format!("Warning: {w}\n"));
    }
    out
}

pub fn render_plan(plan: &AwsPlanResponse) -> String {
    let mut out = facts_line(&plan.gateway, &plan.facts);
    out.push_str(&render_warnings(&plan.warnings));
    if plan.actions.is_empty() {
        out.push_str("\nNo changes. The AWS resources match the config.\n");
        return out;
    }
    out.push_str("\naccessd will perform these actions (in this order):\n\n");
    out.push_str(&render_actions(&plan.actions));
    out.push_str(&format!(
        "\nPlan: {}. Run `accessctl aws apply` to make them.\n",
        counts(&plan.actions)
    ));
    out
}

pub fn render_apply(applied: &AwsApplyResponse) -> String {
    let mut out = facts_line(&applied.gateway, &applied.facts);
    if applied.applied.is_empty() {
        out.push_str("\nNo changes were needed.\n");
    } else {
        out.push_str("\nApplied (each audited as aws.change):\n\n");
        out.push_str(&render_actions(&applied.applied));
        out.push_str(&format!(
            "\nApply complete: {}.\n",
            counts(&applied.applied).replace(" to ", " ")
        ));
    }
    if let Some(ip) = &applied.elastic_ip {
        out.push_str(&format!("Elastic IP: {ip}\n"));
    }
    if !applied.remaining.is_empty() {
        out.push_str(&format!(
            "\nAWS changed while applying; still to do:\n\n{}",
            render_actions(&applied.remaining)
        ));
    }
    out
}

pub fn render_status(status: &AwsStatusResponse) -> String {
    let mut out = facts_line(&status.gateway, &status.facts);
    out.push('\n');
    match &status.elastic_ip {
        Some(ip) => out.push_str(&format!(
            "elastic IP        {} ({}), {}\n",
            ip.public_ip,
            ip.allocation_id,
            match &ip.network_interface_id {
                Some(eni) if *eni == status.facts.network_interface_id => {
                    format!("associated with {eni}")
                }
                Some(eni) => format!("associated with {eni} (not this gateway)"),
                None => "not associated".into(),
            }
        )),
        None => out.push_str("elastic IP        none\n"),
    }
    out.push_str(&format!(
        "source/dest check {}\n",
        match status.source_dest_check {
            Some(true) => "on",
            Some(false) => "off",
            None => "unknown",
        }
    ));
    out.push_str(&format!(
        "ssm parameter     {} ({})\n",
        status.ssm_parameter.name,
        match (
            status.ssm_parameter.present,
            status.ssm_parameter.secure_string
        ) {
            (false, _) => "missing",
            (true, true) => "SecureString",
            (true, false) => "present but NOT a SecureString",
        }
    ));
    for route in &status.routes {
        out.push_str(&format!(
            "route             {} in {}: {}\n",
            route.destination, route.route_table_id, route.state
        ));
    }
    for group in &status.security_groups {
        out.push_str(&format!(
            "security group    {} {} ({})\n",
            group.role, group.id, group.name
        ));
        for rule in &group.ingress {
            out.push_str(&format!("                    ingress {rule}\n"));
        }
    }
    out.push_str(&render_warnings(&status.warnings));
    if status.pending.is_empty() {
        out.push_str("\nIn sync: no changes pending.\n");
    } else {
        out.push_str(&format!(
            "\n{} change(s) pending ({}); see `accessctl aws plan`.\n",
            status.pending.len(),
            counts(&status.pending)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> AwsFacts {
        AwsFacts {
            region: "eu-west-3".into(),
            instance_id: "i-1".into(),
            availability_zone: "eu-west-3a".into(),
            network_interface_id: "eni-1".into(),
            vpc_id: "vpc-1".into(),
            subnet_id: "subnet-1".into(),
            from_metadata: true,
        }
    }

    #[test]
    fn plan_reads_like_terraform() {
        let plan = AwsPlanResponse {
            gateway: "gw".into(),
            facts: facts(),
            actions: vec![
                AwsAction {
                    kind: AwsActionKind::Delete,
                    resource: "security group sg-1 (gatehouse-gw-gateway)".into(),
                    change: "revoke ingress TCP 22 from 0.0.0.0/0".into(),
                    reason: "drift: this rule is not in the desired state".into(),
                },
                AwsAction {
                    kind: AwsActionKind::Create,
                    resource: "route table rtb-1".into(),
                    change: "route 10.200.0.0/24 to eni-1".into(),
                    reason: "replies".into(),
                },
            ],
            warnings: Vec::new(),
        };
        let text = render_plan(&plan);
        assert!(text.contains("  - security group sg-1 (gatehouse-gw-gateway)\n      revoke ingress TCP 22 from 0.0.0.0/0\n      # drift"), "{text}");
        assert!(text.contains("  + route table rtb-1"), "{text}");
        assert!(
            text.contains("Plan: 1 to create, 0 to modify, 1 to delete."),
            "{text}"
        );
        let empty = AwsPlanResponse {
            actions: Vec::new(),
            ..plan
        };
        assert!(render_plan(&empty).contains("No changes."));
        let warned = AwsPlanResponse {
            warnings: vec!["security group sg-9 (team) on the gateway instance lets ...".into()],
            ..empty
        };
        let text = render_plan(&warned);
        assert!(
            text.contains("\nWarning: security group sg-9 (team)") && text.contains("No changes."),
            "{text}"
        );
    }
}
