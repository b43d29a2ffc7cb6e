//! Admin handlers for WireGuard devices.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_config::api::{
    CONNECTED_WITHIN_SECS, CreateDeviceRequest, DeviceConfigResponse, DeviceInfo, DeviceListQuery,
    UserState,
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
use crate::vpn::engine::PeerStatus;
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
    let live = LivePeers::of(&gw);
    Ok(Json(
        devices.iter().map(|d| live.merge(device_info(d))).collect(),
    ))
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
    let endpoint = gw.vpn_endpoint().ok_or_else(|| {
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

pub fn device_info(device: &Device) -> DeviceInfo {
    DeviceInfo {
        user: device.user.clone(),
        name: device.name.clone(),
        public_key: device.public_key.clone(),
        address: device.address.to_string(),
        created_at: rfc3339(device.created_at),
        last_activation: rfc3339_opt(device.last_activation),
        last_handshake: rfc3339_opt(device.last_handshake),
        endpoint: device.last_endpoint.map(|e| e.to_string()),
        ..DeviceInfo::default()
    }
}

/// The data plane's view of its peers, by public key (base64, as the store
/// keeps it), to fill in the live fields of [`DeviceInfo`] rows.
pub struct LivePeers {
    /// `None` while the data plane is not running.
    peers: Option<HashMap<String, PeerStatus>>,
}

impl LivePeers {
    pub fn of(gw: &Gateway) -> Self {
        Self::from_status(gw.vpn().map(|engine| engine.peer_status()))
    }

    pub(super) fn from_status(status: Option<Vec<PeerStatus>>) -> Self {
        let peers = status.map(|peers| {
            peers
                .into_iter()
                .map(|p| (STANDARD.encode(p.public_key), p))
                .collect()
        });
        Self { peers }
    }

    /// Whether the data plane is running.
    pub(super) fn running(&self) -> bool {
        self.peers.is_some()
    }

    /// The number of peers in the data plane, and of those connected.
    pub(super) fn counts(&self, now: SystemTime) -> (u64, u64) {
        let Some(peers) = &self.peers else {
            return (0, 0);
        };
        let connected = peers
            .values()
            .filter_map(|p| p.last_handshake)
            .filter(|t| {
                now.duration_since(*t).unwrap_or_default().as_secs() < CONNECTED_WITHIN_SECS
            })
            .count();
        (peers.len() as u64, connected as u64)
    }

    /// `info` with the live fields set: `live` says whether the device is a
    /// peer now; a live peer's handshake is newer than the stored one.
    pub fn merge(&self, mut info: DeviceInfo) -> DeviceInfo {
        let Some(peers) = &self.peers else {
            return info;
        };
        let Some(peer) = peers.get(&info.public_key) else {
            info.live = Some(false);
            return info;
        };
        info.live = Some(true);
        if let Some(endpoint) = peer.endpoint {
            info.endpoint = Some(endpoint.to_string());
        }
        info.rx_bytes = Some(peer.rx_bytes);
        info.tx_bytes = Some(peer.tx_bytes);
        if let Some(handshake) = peer.last_handshake {
            info.last_handshake = Some(humantime::format_rfc3339_seconds(handshake).to_string());
        }
        info
    }
}

fn host_prefix(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn row(key: u8) -> DeviceInfo {
        DeviceInfo {
            user: "alice".into(),
            name: format!("d{key}"),
            public_key: STANDARD.encode([key; 32]),
            address: "10.200.0.2".into(),
            created_at: "2026-05-01T10:00:00Z".into(),
            last_handshake: Some("2026-05-01T10:00:00Z".into()),
            ..DeviceInfo::default()
        }
    }

    fn peer(key: u8, handshake: Option<SystemTime>) -> PeerStatus {
        PeerStatus {
            public_key: [key; 32],
            user: "alice".into(),
            device: format!("d{key}"),
            address: "10.200.0.2".parse().unwrap(),
            allowed_ips: vec!["10.200.0.2".parse().unwrap()],
            endpoint: Some("[2001:db8::7]:40000".parse().unwrap()),
            last_handshake: handshake,
            rx_bytes: 10,
            tx_bytes: 20,
            rx_packets: 0,
            tx_packets: 0,
            dropped_spoofed: 0,
            dropped_policy: 0,
            dropped_malformed: 0,
        }
    }

    #[test]
    fn live_fields_are_merged_by_public_key() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_600_800);
        let live = LivePeers::from_status(Some(vec![
            peer(1, Some(now - Duration::from_secs(5))),
            peer(2, None),
            peer(3, Some(now - Duration::from_secs(600))),
        ]));
        assert!(live.running());
        assert_eq!(live.counts(now), (3, 1));

        let merged = live.merge(row(1));
        assert_eq!(merged.live, Some(true));
        assert_eq!(merged.endpoint.as_deref(), Some("[2001:db8::7]:40000"));
        assert_eq!((merged.rx_bytes, merged.tx_bytes), (Some(10), Some(20)));
        assert_eq!(
            merged.last_handshake.as_deref(),
            Some("2026-11-25T09:59:55Z"),
            "the data plane's handshake wins"
        );
        // A live peer without a handshake keeps the stored one.
        let merged = live.merge(row(2));
        assert_eq!(merged.live, Some(true));
        assert_eq!(
            merged.last_handshake.as_deref(),
            Some("2026-05-01T10:00:00Z")
        );
        // Not in the data plane: marked so, nothing else invented.
        let merged = live.merge(row(9));
        assert_eq!(merged.live, Some(false));
        assert_eq!((merged.endpoint, merged.rx_bytes), (None, None));
    }

    #[test]
    fn the_stored_endpoint_shows_until_the_data_plane_knows_a_newer_one() {
        let stored = Device {
            user: "alice".into(),
            name: "d1".into(),
            public_key: STANDARD.encode([1; 32]),
            address: "10.200.0.2".parse().unwrap(),
            created_at: 0,
            last_activation: None,
            last_handshake: Some(0),
            last_endpoint: Some("198.51.100.7:40123".parse().unwrap()),
        };
        let info = device_info(&stored);
        assert_eq!(info.endpoint.as_deref(), Some("198.51.100.7:40123"));
        let mut quiet = peer(1, None);
        quiet.endpoint = None;
        let merged = LivePeers::from_status(Some(vec![quiet])).merge(info.clone());
        assert_eq!(merged.endpoint.as_deref(), Some("198.51.100.7:40123"));
        let merged = LivePeers::from_status(Some(vec![peer(1, None)])).merge(info);
        assert_eq!(merged.endpoint.as_deref(), Some("[2001:db8::7]:40000"));
    }

    #[test]
    fn without_a_data_plane_rows_stay_as_stored() {
        let live = LivePeers::from_status(None);
        assert!(!live.running());
        assert_eq!(live.counts(SystemTime::now()), (0, 0));
        let merged = live.merge(row(1));
        assert_eq!(merged.live, None);
        let json = serde_json::to_value(&merged).unwrap();
        assert!(json.get("live").is_none() && json.get("rx_bytes").is_none());
    }
}
