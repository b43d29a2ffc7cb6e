//! Admin handlers for the gateway as a whole: status, reload, groups, audit.

use std::time::SystemTime;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use gatehouse_config::api::{
    AuditKeyResponse, AuditQuery, AuditRecord, AuditStatus, AuditSummary, GroupInfo,
    ReloadResponse, SshStatus, StatusResponse, UserCounts, UserState, VerifyReport, VpnStatus,
};

use super::error::ApiFailure;
use super::extract::Query;
use super::{AdminState, Caller};
use crate::access::device_info;
use crate::access::review;
use crate::store::audit_facets::SUMMARY_PAGE_MAX;
use crate::time_fmt::rfc3339;

pub async fn status(State(admin): State<AdminState>) -> Result<Json<StatusResponse>, ApiFailure> {
    let gw = &admin.core;
    let config = gw.config();
    let (users, devices, audit_records) = gw
        .store()
        .read(|r| Ok((r.users()?, r.devices(None)?, r.audit_count()?)))
        .await?;
    let count = |state| users.iter().filter(|u| u.state == state).count() as u64;
    let live = admin.access.live_peers();
    let vpn = live.running().then(|| {
        let (peers, connected) = live.counts(SystemTime::now());
        VpnStatus {
            interface: config.vpn.interface.clone(),
            listen: config.vpn.listen.to_string(),
            peers,
            connected,
            peers_detail: devices
                .iter()
                .map(|d| live.merge(device_info(d)))
                .filter(|d| d.live == Some(true))
                .collect(),
        }
    });
    Ok(Json(StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        gateway: config.gateway.name.clone(),
        started_at: rfc3339(gw.started_at()),
        uptime_secs: gw.uptime().as_secs(),
        config_path: gw.config_path().display().to_string(),
        wireguard_public_key: gw.key().public_base64(),
        endpoint: admin.access.vpn_endpoint(),
        users: UserCounts {
            total: users.len() as u64,
            pending: count(UserState::Pending),
            active: count(UserState::Active),
            disabled: count(UserState::Disabled),
        },
        devices: devices.len() as u64,
        groups: config.groups.len() as u64,
        audit_records,
        audit_break: gw.store().audit_break(),
        vpn,
        ssh: ssh_status(&admin),
        portal: admin
            .running
            .portal
            .as_ref()
            .map(|p| p.status(admin.access.portal_url())),
        store: gw.store().db_name().to_string(),
        ha: admin.running.ha.as_ref().map(|ha| {
            let state = ha.state();
            gatehouse_config::api::HaRole {
                node: state.node,
                role: if ha.is_active() { "active" } else { "standby" }.into(),
                generation: state.generation,
            }
        }),
        audit_exports: admin
            .running
            .exports
            .iter()
            .map(|export| {
                let figures = export.stats.figures();
                gatehouse_config::api::AuditExportStatus {
                    name: export.name.to_string(),
                    receiver: export.receiver.clone(),
                    connected: figures.connected,
                    lag_records: figures.lag,
                    reconnects: figures.reconnects,
                }
            })
            .collect(),
    }))
}

/// The jump host's part of the status: listen address, host key, a ready
/// `known_hosts` line, the two CAs and the live channels.
fn ssh_status(admin: &AdminState) -> Option<SshStatus> {
    let ssh = admin.running.ssh.as_ref()?;
    let jump = admin.access.jump_host()?;
    Some(SshStatus {
        listen: ssh.listen().to_string(),
        host_key_fingerprint: crate::keys::ssh_host::fingerprint(
            admin.core.ssh_host_key().public_key(),
        ),
        known_hosts: jump.known_hosts,
        host_key: jump.host_key,
        user_ca_fingerprint: admin.core.user_ca().map(|ca| ca.fingerprint()),
        host_ca_fingerprint: admin.core.host_ca().map(|ca| ca.fingerprint()),
        connections: ssh.registry().connection_count() as u64,
        channels: ssh.registry().channels(),
    })
}

pub async fn reload(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Result<Json<ReloadResponse>, ApiFailure> {
    let gw = &admin.core;
    let by = caller.requester();
    let reloaded = gw.reload(by.actor, by.source).await?;
    Ok(Json(ReloadResponse {
        config_path: gw.config_path().display().to_string(),
        groups: reloaded.config.groups.len() as u64,
        restart_required: reloaded
            .restart_required
            .iter()
            .map(ToString::to_string)
            .collect(),
    }))
}

pub async fn groups(State(admin): State<AdminState>) -> Result<Json<Vec<GroupInfo>>, ApiFailure> {
    let gw = &admin.core;
    let config = gw.config();
    let users = gw.store().read(|r| r.users()).await?;
    let groups = config
        .groups
        .iter()
        .map(|g| GroupInfo {
            name: g.name.clone(),
            subnets: g.subnets.iter().map(ToString::to_string).collect(),
            ports: g.ports.clone(),
            members: users.iter().filter(|u| u.groups.contains(&g.name)).count() as u64,
        })
        .collect();
    Ok(Json(groups))
}

pub async fn audit(
    State(admin): State<AdminState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiFailure> {
    let filter = review::filter(&query).map_err(|e| ApiFailure::bad_request(e.to_string()))?;
    Ok(Json(
        admin
            .core
            .store()
            .read(move |r| r.audit_records(&filter))
            .await?,
    ))
}

/// `GET /v1/audit/summary?by=…`: one page of the matching records grouped.
pub async fn audit_summary(
    State(admin): State<AdminState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditSummary>, ApiFailure> {
    let by = query
        .by
        .ok_or_else(|| ApiFailure::bad_request("by= is missing: user, host, day, hour or kind"))?;
    let filter = review::filter(&query).map_err(|e| ApiFailure::bad_request(e.to_string()))?;
    let (offset, limit) = (
        query.offset.unwrap_or(0),
        query.limit.unwrap_or(SUMMARY_PAGE_MAX),
    );
    Ok(Json(
        admin
            .core
            .store()
            .read(move |r| r.audit_summary(&filter, by, offset, limit))
            .await?,
    ))
}

pub async fn audit_key(State(admin): State<AdminState>) -> Json<AuditKeyResponse> {
    let gateway = admin.core.config().gateway.name.clone();
    let keys = admin.core.store().audit_keys();
    Json(AuditKeyResponse {
        public_key: keys.public_line(&gateway),
        fingerprint: keys.fingerprint(),
        namespace: crate::keys::audit::SIGNATURE_NAMESPACE.to_string(),
        allowed_signers: keys.allowed_signers_line(&gateway),
    })
}

pub async fn audit_status(
    State(admin): State<AdminState>,
) -> Result<Json<AuditStatus>, ApiFailure> {
    Ok(Json(
        crate::export::status::audit_status(&admin.core).await?,
    ))
}

/// `GET /v1/audit/verify`: the report at the end, or with `progress=true`
/// JSON lines as the check goes ([`super::verify_stream`]). The check stops
/// when the client goes away or accessd shuts down.
pub async fn verify(
    State(admin): State<AdminState>,
    Query(query): Query<gatehouse_config::api::VerifyQuery>,
) -> Result<axum::response::Response, ApiFailure> {
    use super::verify_stream;
    use crate::store::audit_verify::Verified;
    use axum::response::IntoResponse as _;

    let store = admin.core.store().clone();
    let stop = admin.shutdown.child_token();
    if query.progress {
        return Ok(verify_stream::respond(store, stop));
    }
    // Dropped with this future when the client goes away.
    let _guard = stop.clone().drop_guard();
    match verify_stream::check(&store, stop, None).await? {
        Verified::Report(report) => Ok(Json::<VerifyReport>(report).into_response()),
        Verified::Stopped(()) => {
            let error = verify_stream::shutting_down();
            let status = axum::http::StatusCode::SERVICE_UNAVAILABLE;
            Err(ApiFailure::new(status, error.code, error.message))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::{Method, StatusCode};

    use crate::testing::{CONFIG, TestGateway};

    #[tokio::test]
    async fn review_queries_are_checked_and_answered() {
        let gw = TestGateway::new(CONFIG).await;
        gw.add_user("alice", "research").await;
        // Every parameter that means nothing is named in a 400.
        for (path, named) in [
            ("/v1/audit?host=db.internal", "host=\"db.internal\""),
            ("/v1/audit?source=300.1.1.1", "source=\"300.1.1.1\""),
            ("/v1/audit?since=yesterday", "since=\"yesterday\""),
            ("/v1/audit/summary", "by= is missing"),
        ] {
            let answer = gw.admin(Method::GET, path, None).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {answer:?}");
            let message = answer.json["message"].as_str().unwrap();
            assert!(message.contains(named), "{path}: {message}");
        }
        let bad_enum = gw.admin(Method::GET, "/v1/audit?outcome=maybe", None).await;
        assert_eq!(bad_enum.status, StatusCode::BAD_REQUEST, "{bad_enum:?}");

        // The admin's own change, found by how it came and summarised.
        let admin = gw
            .admin(Method::GET, "/v1/audit?via=admin&outcome=ok", None)
            .await;
        let kinds: Vec<&str> = admin
            .json
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&"user.add"), "{kinds:?}");
        let days = gw
            .admin(Method::GET, "/v1/audit/summary?by=day", None)
            .await;
        assert_eq!(days.status, StatusCode::OK, "{days:?}");
        assert_eq!(days.json["by"], "day");
        assert!(
            days.json["rows"][0]["changes"].as_u64().unwrap() >= 1,
            "{:?}",
            days.json
        );
        assert_eq!(days.json["more"], false);
    }
}
