//! Admin handlers for WireGuard devices: parse, call [`crate::access`], render.

use axum::Json;
use axum::extract::{ConnectInfo, State};
use gatehouse_config::api::{
    CreateDeviceRequest, DeviceConfigResponse, DeviceInfo, DeviceListQuery,
};

use super::error::ApiFailure;
use super::extract::{Body, PathArgs, Query};
use super::{AdminState, Caller};
use crate::access::KeyOrigin;

pub async fn list(
    State(admin): State<AdminState>,
    Query(query): Query<DeviceListQuery>,
) -> Result<Json<Vec<DeviceInfo>>, ApiFailure> {
    Ok(Json(admin.access.devices(query.user.as_deref()).await?))
}

/// Registers a device by its public key (`accessctl device add/config`
/// makes the key pair on the admin's side).
pub async fn create(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(user): PathArgs<String>,
    Body(req): Body<CreateDeviceRequest>,
) -> Result<Json<DeviceConfigResponse>, ApiFailure> {
    let config = admin
        .access
        .create_device(
            &caller.requester(),
            &user,
            &req.name,
            &req.public_key,
            KeyOrigin::Client,
        )
        .await?;
    Ok(Json(config))
}

pub async fn revoke(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs((user, device)): PathArgs<(String, String)>,
) -> Result<Json<DeviceInfo>, ApiFailure> {
    Ok(Json(
        admin
            .access
            .revoke_device(&caller.requester(), &user, &device)
            .await?,
    ))
}
