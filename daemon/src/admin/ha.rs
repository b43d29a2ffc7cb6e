//! Admin handlers for an HA pair: `GET /v1/ha` (each node's role, the lease,
//! the last failover) and `POST /v1/ha/handover` (the active releases the
//! lease; the standby takes over within a second).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use gatehouse_config::api::{
    ErrorCode, HaFailover, HaHandoverResponse, HaLease, HaNode, HaStatusResponse,
};

use super::AdminState;
use super::error::ApiFailure;
use crate::audit::event::Kind;
use crate::ha::{Ha, HaError, RoleKind};
use crate::store::AuditFilter;

fn ha_of(admin: &AdminState) -> Result<&Ha, ApiFailure> {
    admin.running.ha.as_ref().ok_or_else(|| {
        ApiFailure::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            "this gateway is not one of an HA pair (no [ha] section)",
        )
    })
}

pub async fn status(State(admin): State<AdminState>) -> Result<Json<HaStatusResponse>, ApiFailure> {
    let ha = ha_of(&admin)?;
    let state = ha.state();
    let config = admin.core.config();
    let lease_ttl_secs = config.ha.as_ref().map_or(0, |h| h.lease_ttl.as_secs());
    let (lease, nodes, database_error) = match ha.view().await {
        Ok(view) => {
            let lease = HaLease {
                holder: view.holder.clone(),
                generation: view.generation,
                acquired_at: view.acquired_ms.map(at_ms),
                renewed_at: view.renewed_ms.map(at_ms),
                expires_at: at_ms(view.expires_ms),
                expires_in_ms: view.expires_ms - view.now_ms,
            };
            let nodes = view
                .nodes
                .iter()
                .map(|n| HaNode {
                    node: n.node.clone(),
                    role: n.role.clone(),
                    generation: n.generation,
                    seen_at: at_ms(n.seen_ms),
                    seen_ago_ms: view.now_ms - n.seen_ms,
                    last_renewal: n.detail["last_renewal"].as_str().map(str::to_string),
                    failovers: n.detail["failovers"].as_u64().unwrap_or(0),
                })
                .collect();
            (Some(lease), nodes, None)
        }
        Err(error) => (None, Vec::new(), Some(error.to_string())),
    };
    let last_failover = admin
        .core
        .store()
        .read(|r| {
            r.audit_records(&AuditFilter {
                kind_prefix: Some(Kind::HaFailover.as_str().into()),
                limit: Some(1),
                ..AuditFilter::default()
            })
        })
        .await
        .ok()
        .and_then(|records| records.into_iter().next())
        .map(|r| HaFailover {
            at: r.time,
            from: r.detail["from"].as_str().map(str::to_string),
            to: r.target,
            generation: r.detail["generation"].as_i64().unwrap_or(0),
            cause: r.detail["cause"].as_str().unwrap_or("expired").to_string(),
            without_active_ms: r.detail["without_active_ms"].as_i64(),
            takeover_ms: r.detail["takeover_ms"].as_u64(),
        });
    Ok(Json(HaStatusResponse {
        node: state.node,
        role: match (state.role, ha.is_active()) {
            (RoleKind::Active, true) => "active",
            _ => "standby",
        }
        .into(),
        generation: state.generation,
        lease_ttl_secs,
        lease,
        nodes,
        last_failover,
        database_error,
    }))
}

pub async fn handover(
    State(admin): State<AdminState>,
) -> Result<Json<HaHandoverResponse>, ApiFailure> {
    let ha = ha_of(&admin)?;
    let node = ha.state().node;
    match ha.handover().await {
        Ok(released_generation) => Ok(Json(HaHandoverResponse {
            node,
            released_generation,
        })),
        Err(error @ HaError::NotActive { .. }) => Err(ApiFailure::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            error.to_string(),
        )),
        Err(error) => Err(ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StoreUnavailable,
            error.to_string(),
        )),
    }
}

/// Unix milliseconds as RFC 3339 with milliseconds.
fn at_ms(ms: i64) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    crate::time_fmt::rfc3339_millis(at)
}
