//! Admin handlers for WireGuard devices.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use gatehouse_config::api::{
    CreateDeviceRequest, DeviceConfigResponse, DeviceInfo, DeviceListQuery, UserState,
};
use gatehouse_config::names::check_name;
use serde_json::json;

use super::Caller;
use super::error::ApiFailure;
use super::extract::{Body, PathArgs, Query};
use super::users::{admin_event, not_found_user};
use crate::gateway::Gateway;
use crate::store::{Device, NewDevice};
use crate::time_fmt::{now_unix, rfc3339, rfc3339_opt};
use crate::wg_key::is_public_key;

pub async fn list(
    State(gw): State<Gateway>,
    Query(query): Query<DeviceListQuery>,
) -> Result<Json<Vec<DeviceInfo>>, ApiFailure> {
    let devices = gw
        .store()
        .read(move |r| {
            if let Some(user) = &query.user
                && r.user(user)?.is_none()
            {
                return Err(not_found_user(user));
            }
            r.devices(query.user.as_deref())
        })
        .await?;
    Ok(Json(devices.iter().map(device_info).collect()))
}

/// Registers a device by its public key and answers with everything its
/// wg-quick file needs. The private key never comes here.
pub async fn create(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(user): PathArgs<String>,
    Body(req): Body<CreateDeviceRequest>,
) -> Result<Json<DeviceConfigResponse>, ApiFailure> {
    let config = gw.config();
    check_name("device", &req.name).map_err(ApiFailure::invalid_name)?;
    if !is_public_key(&req.public_key) {
        return Err(ApiFailure::invalid_value(
            "public_key is not a WireGuard public key (32 bytes, base64)",
        ));
    }
    let endpoint = config.vpn_endpoint().ok_or_else(|| {
        ApiFailure::invalid_value(
            "gateway.public_endpoint is \"auto\" and no elastic IP is known yet: run `accessctl aws apply`, or set a host name in the config",
        )
    })?;
    let pool = config.vpn.pool;
    let reserved = [config.vpn.gateway_address()];
    let new = NewDevice {
        user: user.clone(),
        name: req.name.clone(),
        public_key: req.public_key.clone(),
        created_at: now_unix(),
    };
    let target = format!("{user}/{}", req.name);
    let (actor, source) = (caller.actor(), caller.source());
    let (device, groups) = gw
        .store()
        .write(move |w| {
            let owner = w.user(&new.user)?.ok_or_else(|| not_found_user(&new.user))?;
            if owner.state == UserState::Disabled {
                return Err(crate::store::StoreError::Conflict { what: "disabled user", name: owner.name });
            }
            let device = w.create_device(new, pool, &reserved)?;
            w.audit(crate::store::NewAuditEvent {
                kind: "device.create".into(),
                actor,
                source,
                target,
                detail: json!({ "address": device.address.to_string(), "public_key": device.public_key }),
            })?;
            Ok((device, owner.groups))
        })
        .await?;
    let allowed_ips = config
        .policy()
        .access_for(&groups)
        .subnets()
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(Json(DeviceConfigResponse {
        interface_address: host_prefix(device.address),
        device: device_info(&device),
        gateway_public_key: gw.key().public_base64(),
        endpoint,
        allowed_ips,
        persistent_keepalive: config.vpn.persistent_keepalive,
        mtu: config.vpn.mtu,
    }))
}

pub async fn revoke(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs((user, device)): PathArgs<(String, String)>,
) -> Result<Json<DeviceInfo>, ApiFailure> {
    let event = admin_event(
        &caller,
        "device.revoke",
        &format!("{user}/{device}"),
        json!({}),
    );
    let removed = gw
        .store()
        .write(move |w| {
            let removed = w.delete_device(&user, &device)?;
            let mut event = event;
            event.detail =
                json!({ "address": removed.address.to_string(), "public_key": removed.public_key });
            w.audit(event)?;
            Ok(removed)
        })
        .await?;
    Ok(Json(device_info(&removed)))
}

pub(super) fn device_info(device: &Device) -> DeviceInfo {
    DeviceInfo {
        user: device.user.clone(),
        name: device.name.clone(),
        public_key: device.public_key.clone(),
        address: device.address.to_string(),
        created_at: rfc3339(device.created_at),
        last_activation: rfc3339_opt(device.last_activation),
        last_handshake: rfc3339_opt(device.last_handshake),
    }
}

fn host_prefix(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}
