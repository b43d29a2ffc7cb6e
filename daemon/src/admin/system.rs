//! Admin handlers for the gateway as a whole: status, reload, groups, audit.

use std::time::SystemTime;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use gatehouse_config::api::{
    AuditQuery, AuditRecord, GroupInfo, ReloadResponse, SshStatus, StatusResponse, UserCounts,
    UserState, VerifyReport, VpnStatus,
};

use super::Caller;
use super::devices::{LivePeers, device_info};
use super::error::ApiFailure;
use super::extract::Query;
use crate::gateway::Gateway;
use crate::store::AuditFilter;
use crate::time_fmt::{parse_rfc3339, rfc3339};

/// The most records one audit query returns; `--follow` pages through more.
const AUDIT_PAGE_MAX: u64 = 10_000;

pub async fn status(State(gw): State<Gateway>) -> Result<Json<StatusResponse>, ApiFailure> {
    let config = gw.config();
    let (users, devices, audit_records) = gw
        .store()
        .read(|r| Ok((r.users()?, r.devices(None)?, r.audit_count()?)))
        .await?;
    let count = |state| users.iter().filter(|u| u.state == state).count() as u64;
    let live = LivePeers::of(&gw);
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
        endpoint: gw.vpn_endpoint(),
        users: UserCounts {
            total: users.len() as u64,
            pending: count(UserState::Pending),
            active: count(UserState::Active),
            disabled: count(UserState::Disabled),
        },
        devices: devices.len() as u64,
        groups: config.groups.len() as u64,
        audit_records,
        vpn,
        ssh: ssh_status(&gw),
        portal: gw.portal().map(|p| p.status(&config)),
    }))
}

/// The jump host's `(host, port, known_hosts line)`: the public endpoint's
/// host (or the listen address) and the host key, as `~/.ssh/known_hosts`
/// wants it (a non-22 port as `[host]:port`). Also used by the portal's
/// ssh_config snippet.
pub(crate) fn ssh_known_hosts(gw: &Gateway) -> Option<(String, u16, String)> {
    let ssh = gw.ssh()?;
    let config = gw.config();
    let host_key = ssh.host_key().to_openssh().unwrap_or_default();
    let listen = ssh.listen();
    let host = match &config.gateway.public_endpoint {
        gatehouse_config::file::PublicEndpoint::Host(host) => host.clone(),
        gatehouse_config::file::PublicEndpoint::Auto => listen.ip().to_string(),
    };
    let known_host = match listen.port() {
        22 => host.clone(),
        port => format!("[{host}]:{port}"),
    };
    let key_only: String = host_key.split(' ').take(2).collect::<Vec<_>>().join(" ");
    Some((host, listen.port(), format!("{known_host} {key_only}")))
}

/// The jump host's part of the status: listen address, host key, a ready
/// `known_hosts` line and the live channels.
fn ssh_status(gw: &Gateway) -> Option<SshStatus> {
    let ssh = gw.ssh()?;
    let key = ssh.host_key();
    let host_key = key.to_openssh().unwrap_or_default();
    let listen = ssh.listen();
    let key_only: String = host_key.split(' ').take(2).collect::<Vec<_>>().join(" ");
    Some(SshStatus {
        listen: listen.to_string(),
        host_key_fingerprint: crate::ssh::auth::fingerprint(key),
        known_hosts: ssh_known_hosts(gw)?.2,
        host_key: key_only,
        connections: ssh.registry().connection_count() as u64,
        channels: ssh.registry().channels(),
    })
}

pub async fn reload(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Result<Json<ReloadResponse>, ApiFailure> {
    let reloaded = gw.reload(&caller.actor(), &caller.source()).await?;
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

pub async fn groups(State(gw): State<Gateway>) -> Result<Json<Vec<GroupInfo>>, ApiFailure> {
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
    State(gw): State<Gateway>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiFailure> {
    let time = |key: &str, value: Option<String>| match value {
        None => Ok(None),
        Some(text) => parse_rfc3339(&text).map(Some).ok_or_else(|| {
            ApiFailure::bad_request(format!("{key}={text:?} is not an RFC 3339 time"))
        }),
    };
    let filter = AuditFilter {
        since: time("since", query.since)?,
        until: time("until", query.until)?,
        user: query.user,
        kind_prefix: query.kind,
        after_seq: query.after_seq,
        limit: Some(query.limit.unwrap_or(AUDIT_PAGE_MAX).min(AUDIT_PAGE_MAX)),
    };
    Ok(Json(
        gw.store().read(move |r| r.audit_records(&filter)).await?,
    ))
}

pub async fn verify(State(gw): State<Gateway>) -> Result<Json<VerifyReport>, ApiFailure> {
    Ok(Json(gw.store().read(|r| r.verify_audit()).await?))
}
