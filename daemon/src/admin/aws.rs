//! Admin handlers for the AWS provisioner: plan, apply, status. Each call
//! connects afresh from the running config (a reload takes effect at once);
//! without an `[aws]` section they answer `aws_not_configured` and make no
//! AWS call.

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use gatehouse_config::api::{
    AwsApplyResponse, AwsElasticIp, AwsGroupStatus, AwsParameterStatus, AwsPlanResponse,
    AwsRouteStatus, AwsStatusResponse, ErrorCode,
};

use super::error::ApiFailure;
use super::{AdminState, Caller};
use crate::aws::apply::{ApplyFailure, Guard, Scope, apply as run_apply, apply_scoped, plan_only};
use crate::aws::desired::GroupRole;
use crate::aws::observed::RouteState;
use crate::aws::plan::warnings;
use crate::aws::{AwsError, Session};
use crate::gateway::Core;

pub async fn plan(State(admin): State<AdminState>) -> Result<Json<AwsPlanResponse>, ApiFailure> {
    let gw = &admin.core;
    let session = connect(gw).await?;
    let (desired, observed, actions) = plan_only(gw, &session).await.map_err(aws_failure)?;
    Ok(Json(AwsPlanResponse {
        gateway: desired.gateway.clone(),
        facts: session.facts.to_api(),
        actions: actions.iter().map(|a| a.to_api()).collect(),
        warnings: warnings(&desired, &observed),
    }))
}

pub async fn apply(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Result<Json<AwsApplyResponse>, ApiFailure> {
    let gw = &admin.core;
    let session = connect(gw).await?;
    let by = caller.requester();
    // One of an HA pair: the elastic IP and the pool routes are the active
    // gateway's alone, and it changes them only while it holds the lease.
    let applied = match &admin.running.ha {
        None => run_apply(gw, &session, by.actor, by.source).await,
        Some(ha) => {
            let scope = if ha.is_active() {
                Scope::All
            } else {
                Scope::Shared
            };
            let ha = ha.clone();
            let left = move || ha.time_left();
            let guard = match scope {
                Scope::Shared => Guard::Unfenced,
                _ => Guard::Fenced(&left),
            };
            apply_scoped(gw, &session, by.actor, by.source, scope, guard).await
        }
    }
    .map_err(apply_failure)?;
    Ok(Json(AwsApplyResponse {
        gateway: gw.config().gateway.name.clone(),
        facts: session.facts.to_api(),
        applied: applied.actions.iter().map(|a| a.to_api()).collect(),
        elastic_ip: applied.elastic_ip,
        remaining: applied.remaining.iter().map(|a| a.to_api()).collect(),
    }))
}

pub async fn status(
    State(admin): State<AdminState>,
) -> Result<Json<AwsStatusResponse>, ApiFailure> {
    let gw = &admin.core;
    let session = connect(gw).await?;
    let (desired, observed, pending) = plan_only(gw, &session).await.map_err(aws_failure)?;
    let security_groups = GroupRole::ALL
        .into_iter()
        .filter_map(|role| {
            let group = observed.groups.get(&role)?;
            Some(AwsGroupStatus {
                role: role.tag().to_string(),
                id: group.id.clone(),
                name: group.name.clone(),
                ingress: group.rules.iter().map(ToString::to_string).collect(),
            })
        })
        .collect();
    let routes = observed
        .routes
        .iter()
        .map(|(table, state)| AwsRouteStatus {
            route_table_id: table.clone(),
            destination: desired.pool.to_string(),
            state: match state {
                RouteState::Ours => "ok".into(),
                RouteState::Missing => "missing".into(),
                RouteState::Elsewhere(target) => format!("points at {target}"),
            },
        })
        .collect();
    Ok(Json(AwsStatusResponse {
        gateway: desired.gateway.clone(),
        facts: session.facts.to_api(),
        elastic_ip: observed.elastic_ip.as_ref().map(|a| AwsElasticIp {
            public_ip: a.public_ip.clone(),
            allocation_id: a.allocation_id.clone(),
            network_interface_id: a.network_interface_id.clone(),
        }),
        security_groups,
        source_dest_check: observed.source_dest_check,
        routes,
        ssm_parameter: AwsParameterStatus {
            name: desired.ssm_parameter.clone(),
            present: observed.ssm_parameter.is_some(),
            secure_string: observed.ssm_parameter == Some(true),
        },
        pending: pending.iter().map(|a| a.to_api()).collect(),
        warnings: warnings(&desired, &observed),
    }))
}

async fn connect(gw: &Core) -> Result<Session, ApiFailure> {
    let config = gw.config();
    let Some(aws) = &config.aws else {
        return Err(ApiFailure::new(
            StatusCode::CONFLICT,
            ErrorCode::AwsNotConfigured,
            "the config has no [aws] section, so gatehouse makes no AWS call; add one (see packaging/gatehouse.toml) and run `accessctl reload`",
        ));
    };
    Session::connect(aws).await.map_err(aws_failure)
}

fn aws_failure(err: AwsError) -> ApiFailure {
    tracing::warn!(error = %err, "aws request failed");
    let status = match err {
        AwsError::NotOnEc2 { .. } | AwsError::Unreachable { .. } | AwsError::Throttled { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiFailure::new(status, ErrorCode::AwsFailed, err.to_string())
}

fn apply_failure(failure: ApplyFailure) -> ApiFailure {
    let details = failure
        .applied
        .iter()
        .map(|a| format!("done: {}: {}", a.resource, a.change))
        .collect();
    let message = failure.to_string();
    aws_failure(failure.error)
        .with_message(message)
        .with_details(details)
}
