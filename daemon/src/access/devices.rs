//! Devices: the one place a device is created, revoked and given its
//! config, whichever door asks; and device rows with the data plane's live
//! fields.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_config::api::{CONNECTED_WITHIN_SECS, DeviceConfigResponse, DeviceInfo};
use gatehouse_config::names::check_name;
use serde_json::json;

use super::{Access, Requester};
use crate::audit::event::{Kind, event};
use crate::auth::Standing;
use crate::keys::wireguard::is_public_key;
use crate::store::{Device, NewDevice, StoreError};
use crate::time_fmt::{now_unix, rfc3339, rfc3339_opt};
use crate::vpn::engine::PeerStatus;

/// Where a device's key pair was made (audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// In the browser or another client: the gateway saw only the public key.
    Client,
    /// The gateway made it because the browser could not; the private key
    /// was returned once and not kept.
    Gateway,
}

/// Why a device operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    InvalidName(String),
    #[error("public_key is not a WireGuard public key (32 bytes, base64)")]
    InvalidPublicKey,
    /// `public_endpoint = "auto"` and the provisioner has not seen the
    /// elastic IP yet: a config would point nowhere.
    #[error(
        "gateway.public_endpoint is \"auto\" and no elastic IP is known yet: run `accessctl aws apply`, or set a host name in the config"
    )]
    EndpointUnknown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Access {
    /// Registers `user`'s device by its public key and answers with
    /// everything its wg-quick file needs. The private key never comes here.
    pub async fn create_device(
        &self,
        by: &Requester,
        user: &str,
        name: &str,
        public_key: &str,
        origin: KeyOrigin,
    ) -> Result<DeviceConfigResponse, DeviceError> {
        check_name("device", name).map_err(|e| DeviceError::InvalidName(e.to_string()))?;
        if !is_public_key(public_key) {
            return Err(DeviceError::InvalidPublicKey);
        }
        // Checked before anything is stored: a config without an endpoint
        // is no use, and the device would hold an address for nothing.
        let endpoint = self.vpn_endpoint().ok_or(DeviceError::EndpointUnknown)?;
        let config = self.core.config();
        let pool = config.vpn.pool;
        let reserved = [config.vpn.gateway_address()];
        let limit = config.vpn.max_devices_per_user;
        let new = NewDevice {
            user: user.to_string(),
            name: name.to_string(),
            public_key: public_key.to_string(),
            created_at: now_unix(),
        };
        let audit = event(Kind::DeviceCreate, by.actor.clone(), by.source.clone())
            .on(format!("{user}/{name}"));
        let via = by.door.as_str();
        let (device, groups) = self
            .core
            .store()
            .write(move |w| {
                let owner = w.user(&new.user)?.ok_or_else(|| StoreError::NotFound {
                    what: "user",
                    name: new.user.clone(),
                })?;
                if Standing::of(&owner, now_unix()) == Standing::Disabled {
                    return Err(StoreError::UserDisabled { name: owner.name });
                }
                // Counted in the transaction: racing adds cannot pass it.
                let held = w.devices(Some(&owner.name))?.len();
                if held >= usize::try_from(limit).unwrap_or(usize::MAX) {
                    return Err(StoreError::DeviceLimit {
                        user: owner.name,
                        limit,
                    });
                }
                let device = w.create_device(new, pool, &reserved)?;
                w.audit(audit.detail(json!({
                    "address": device.address.to_string(),
                    "public_key": device.public_key,
                    "via": via,
                    "key_made_by": match origin {
                        KeyOrigin::Client => "client",
                        KeyOrigin::Gateway => "gateway",
                    },
                })))?;
                Ok((device, owner.groups))
            })
            .await?;
        Ok(self.device_config(&device, &groups, endpoint))
    }

    /// Removes `user`'s device `name`.
    pub async fn revoke_device(
        &self,
        by: &Requester,
        user: &str,
        name: &str,
    ) -> Result<DeviceInfo, DeviceError> {
        let (user, name) = (user.to_string(), name.to_string());
        let audit = event(Kind::DeviceRevoke, by.actor.clone(), by.source.clone())
            .on(format!("{user}/{name}"));
        let via = by.door.as_str();
        let removed = self
            .core
            .store()
            .write(move |w| {
                let removed = w.delete_device(&user, &name)?;
                w.audit(audit.detail(json!({
                    "address": removed.address.to_string(),
                    "public_key": removed.public_key,
                    "via": via,
                })))?;
                Ok(removed)
            })
            .await?;
        Ok(device_info(&removed))
    }

    /// Devices (of `user`, or all), with the data plane's live fields.
    /// An unknown `user` is an error, not an empty list.
    pub async fn devices(&self, user: Option<&str>) -> Result<Vec<DeviceInfo>, StoreError> {
        let user = user.map(str::to_string);
        let devices = self
            .core
            .store()
            .read(move |r| {
                if let Some(name) = &user
                    && r.user(name)?.is_none()
                {
                    return Err(StoreError::NotFound {
                        what: "user",
                        name: name.clone(),
                    });
                }
                r.devices(user.as_deref())
            })
            .await?;
        let live = self.live_peers();
        Ok(devices.iter().map(|d| live.merge(device_info(d))).collect())
    }

    /// The data plane's view of its peers.
    pub fn live_peers(&self) -> LivePeers {
        LivePeers::from_status(self.vpn.as_ref().map(|engine| engine.peer_status()))
    }

    /// The config of `device`, owned by a member of `groups`: the policy's
    /// subnets as AllowedIPs (never a default route), the gateway's key and
    /// endpoint, the configured MTU and keepalive.
    fn device_config(
        &self,
        device: &Device,
        groups: &[String],
        endpoint: String,
    ) -> DeviceConfigResponse {
        let config = self.core.config();
        let allowed_ips = config
            .policy()
            .access_for(groups)
            .subnets()
            .iter()
            .map(ToString::to_string)
            .collect();
        DeviceConfigResponse {
            interface_address: host_prefix(device.address),
            device: device_info(device),
            gateway_public_key: self.core.key().public_base64(),
            endpoint,
            allowed_ips,
            persistent_keepalive: config.vpn.persistent_keepalive,
            mtu: config.vpn.mtu,
        }
    }
}

/// A stored device as the API shows it (live fields unset).
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
    pub fn from_status(status: Option<Vec<PeerStatus>>) -> Self {
        let peers = status.map(|peers| {
            peers
                .into_iter()
                .map(|p| (STANDARD.encode(p.public_key), p))
                .collect()
        });
        Self { peers }
    }

    /// Whether the data plane is running.
    pub fn running(&self) -> bool {
        self.peers.is_some()
    }

    /// The number of peers in the data plane, and of those connected.
    pub fn counts(&self, now: SystemTime) -> (u64, u64) {
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
