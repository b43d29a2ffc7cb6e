//! Keeps the data plane's peer table equal to what the store says: a device
//! is a live peer while its user is neither disabled nor expired. Reacts to
//! every store commit and config reload at once (well within a second), and
//! sweeps every few seconds for expiries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use gatehouse_config::Config;
use gatehouse_config::api::UserState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::Engine;
use super::peers::PeerSpec;
use crate::gateway::Gateway;
use crate::host_addrs::local_addresses;
use crate::store::{Device, StoreError, User};
use crate::time_fmt::now_unix;

/// How often expiries are checked when nothing else happens.
const SWEEP: Duration = Duration::from_secs(5);

/// The peers that should be live now. `host_addrs` are the gateway's own
/// addresses, refused to every peer.
pub fn desired_peers(
    config: &Config,
    host_addrs: &[IpAddr],
    users: &[User],
    devices: &[Device],
    now: i64,
) -> Vec<PeerSpec> {
    let policy = config
        .policy()
        .with_gateway_addrs(host_addrs.iter().copied());
    let keepalive = Some(config.vpn.persistent_keepalive).filter(|k| *k > 0);
    let live: HashMap<&str, Arc<_>> = users
        .iter()
        .filter(|u| u.state != UserState::Disabled && !u.is_expired(now))
        .map(|u| (u.name.as_str(), Arc::new(policy.access_for(&u.groups))))
        .collect();
    devices
        .iter()
        .filter_map(|device| {
            let access = live.get(device.user.as_str())?;
            let Some(public_key) = decode_key(&device.public_key) else {
                tracing::warn!(user = %device.user, device = %device.name, "device has a malformed public key; skipped");
                return None;
            };
            Some(PeerSpec {
                public_key,
                address: device.address,
                user: device.user.clone(),
                device: device.name.clone(),
                access: access.clone(),
                keepalive,
            })
        })
        .collect()
}

/// Loads the desired peers from the store and applies them.
pub async fn apply(gateway: &Gateway, engine: &Engine) -> Result<usize, StoreError> {
    let (users, devices) = gateway
        .store()
        .read(|r| Ok((r.users()?, r.devices(None)?)))
        .await?;
    let host_addrs = local_addresses();
    let specs = desired_peers(&gateway.config(), &host_addrs, &users, &devices, now_unix());
    engine.set_peers(&specs);
    Ok(specs.len())
}

/// Re-applies the peer set on every store change, config reload and sweep.
pub fn spawn_peer_sync(
    gateway: Gateway,
    engine: Arc<Engine>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let mut store_changes = gateway.store().subscribe();
    let mut config_changes = gateway.subscribe();
    tracker.spawn(async move {
        let mut last = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = store_changes.changed() => {}
                _ = config_changes.changed() => {}
                () = tokio::time::sleep(SWEEP) => {}
            }
            match apply(&gateway, &engine).await {
                Ok(count) if last != Some(count) => {
                    tracing::info!(peers = count, "data plane peers updated");
                    last = Some(count);
                }
                Ok(_) => {}
                Err(err) => tracing::error!(error = %err, "cannot load peers from the store; keeping the current set"),
            }
        }
    });
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    BASE64.decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[gateway]
name = "gw"
public_endpoint = "vpn.example.com"
[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
"#;

    fn user(name: &str, state: UserState, expires_at: Option<i64>) -> User {
        User {
            name: name.into(),
            state,
            groups: vec!["research".into()],
            created_at: 0,
            expires_at,
            last_seen: None,
            password_hash: None,
            totp_secret: None,
        }
    }

    fn device(user: &str, n: u8) -> Device {
        Device {
            user: user.into(),
            name: format!("d{n}"),
            public_key: BASE64.encode([n; 32]),
            address: std::net::IpAddr::from([10, 200, 0, n]),
            created_at: 0,
            last_activation: None,
            last_handshake: None,
        }
    }

    #[test]
    fn only_enabled_unexpired_users_devices_are_live() {
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let users = [
            user("pending", UserState::Pending, None),
            user("active", UserState::Active, Some(2_000)),
            user("disabled", UserState::Disabled, None),
            user("expired", UserState::Active, Some(500)),
        ];
        let devices = [
            device("pending", 2),
            device("active", 3),
            device("disabled", 4),
            device("expired", 5),
            device("gone", 6),
        ];
        let live: Vec<String> = desired_peers(&config, &[], &users, &devices, 1_000)
            .iter()
            .map(|s| s.user.clone())
            .collect();
        assert_eq!(live, ["pending", "active"]);
    }

    #[test]
    fn each_peer_carries_its_users_policy() {
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let host = ["10.0.3.1".parse().unwrap()];
        let specs = desired_peers(
            &config,
            &host,
            &[user("a", UserState::Active, None)],
            &[device("a", 2)],
            0,
        );
        assert!(
            specs[0]
                .access
                .check("10.0.3.7".parse().unwrap(), Some(22))
                .is_ok()
        );
        assert!(
            specs[0]
                .access
                .check("10.0.4.7".parse().unwrap(), Some(22))
                .is_err()
        );
        assert!(
            specs[0]
                .access
                .check("10.0.3.1".parse().unwrap(), Some(22))
                .is_err(),
            "the host's own address"
        );
        assert_eq!(specs[0].keepalive, Some(25));
    }
}
