//! Keeps the data plane's peer table equal to what the store says: a device
//! is a live peer while its user's [`VpnAccess`] is live (enabled, not
//! expired, and logged in to the portal within the session lifetime unless no
//! login is needed). Reacts to every store commit and config reload at once
//! (well within a second), and sweeps every few seconds for expiries, ending
//! and auditing (`vpn.session.expire`) each VPN session that ran out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use gatehouse_config::Config;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::Engine;
use super::monitor::DISCONNECT_AFTER;
use super::peers::PeerSpec;
use super::session::VpnAccess;
use crate::audit::event::{Actor, Kind, Source, event};
use crate::gateway::Core;
use crate::store::{Device, NewAuditEvent, StoreError, User};
use crate::time_fmt::{now_unix, rfc3339};

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
        .filter(|u| VpnAccess::of(u, &config.vpn, now).is_live(now))
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
                resume_endpoint: resume_endpoint(device, now),
            })
        })
        .collect()
}

/// Where to resume `device`'s tunnel from: its last endpoint, while the
/// session of its last handshake may still be live on the device.
fn resume_endpoint(device: &Device, now: i64) -> Option<SocketAddr> {
    let live_for = i64::try_from(DISCONNECT_AFTER.as_secs()).unwrap_or(i64::MAX);
    device
        .last_endpoint
        .filter(|_| device.last_handshake.is_some_and(|at| now - at < live_for))
}

/// The VPN sessions that have run out at `now`: `(user, login time)` and
/// the audit record of each expiry.
pub fn expired_sessions(
    config: &Config,
    users: &[User],
    now: i64,
) -> Vec<(String, i64, NewAuditEvent)> {
    users
        .iter()
        .filter_map(|user| {
            let access = VpnAccess::of(user, &config.vpn, now);
            let login = user.vpn_login_at?;
            let ended = access.ends_at().filter(|_| access.has_expired(now))?;
            let event = event(Kind::VpnSessionExpire, Actor::Gateway, Source::Local)
                .on(user.name.clone())
                .detail(json!({
                    "login_at": rfc3339(login),
                    "ended_at": rfc3339(ended),
                    "lifetime_secs": config.vpn.session_lifetime.as_secs(),
                }));
            Some((user.name.clone(), login, event))
        })
        .collect()
}

/// What a gateway that just became the active one of an HA pair does for
/// the data plane: the peers catch up with the store, then each recently
/// active device (by the endpoint the previous active stored) gets a
/// handshake, so its tunnel resumes with the same config. Returns how many
/// were sent one. [`resume_again`] follows up.
pub async fn resume_after_takeover(core: &Core, engine: &Engine) -> Result<usize, StoreError> {
    let (specs, _) = set_desired_peers(core, engine).await?;
    let marked = engine.resume_from(&specs);
    engine.set_resume_allowed(true);
    Ok(marked)
}

/// After [`resume_after_takeover`]: the handshake again, after each of
/// [`RESUME_AGAIN_AFTER`], to the devices still without a session. An
/// answer to the first can be lost while the elastic IP moves to this
/// gateway, and the device would otherwise wait for its own rekey (some
/// 15 s). Stops early on `shutdown`.
pub async fn resume_again(core: Core, engine: Arc<Engine>, shutdown: CancellationToken) {
    for pause in RESUME_AGAIN_AFTER {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        match set_desired_peers(&core, &engine).await {
            Ok((specs, _)) => {
                engine.resume_from(&specs);
            }
            Err(error) => tracing::warn!(%error, "cannot read the devices to resume"),
        }
    }
}

/// When a new active gateway sends the resuming handshakes again.
const RESUME_AGAIN_AFTER: [Duration; 3] = [
    Duration::from_millis(700),
    Duration::from_millis(1500),
    Duration::from_secs(3),
];

/// Reads the store and gives the engine the peers that should be live now;
/// returns them, and the users as read.
async fn set_desired_peers(
    core: &Core,
    engine: &Engine,
) -> Result<(Vec<PeerSpec>, Vec<User>), StoreError> {
    let (users, devices) = core
        .store()
        .read(|r| Ok((r.users()?, r.devices(None)?)))
        .await?;
    let config = core.config();
    let specs = desired_peers(
        &config,
        &core.host_addrs().current(),
        &users,
        &devices,
        now_unix(),
    );
    engine.set_peers(&specs);
    Ok((specs, users))
}

/// Loads the desired peers from the store and applies them, then ends and
/// audits the VPN sessions that have run out.
pub async fn apply(core: &Core, engine: &Engine) -> Result<usize, StoreError> {
    let (specs, users) = set_desired_peers(core, engine).await?;
    let config = core.config();
    let now = now_unix();
    let expired = expired_sessions(&config, &users, now);
    if !expired.is_empty() {
        core.store()
            .write(move |w| {
                for (user, login, event) in expired {
                    // A new login since the read keeps its fresh session.
                    if w.end_vpn_session(&user, login)? {
                        w.audit(event)?;
                    }
                }
                Ok(())
            })
            .await?;
    }
    Ok(specs.len())
}

/// Re-applies the peer set on every store change, config reload and sweep.
pub fn spawn_peer_sync(
    core: Core,
    engine: Arc<Engine>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let mut store_changes = core.store().subscribe();
    let mut config_changes = core.subscribe();
    tracker.spawn(async move {
        let mut last = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = store_changes.changed() => {}
                _ = config_changes.changed() => {}
                () = tokio::time::sleep(SWEEP) => {}
            }
            match apply(&core, &engine).await {
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
    use gatehouse_config::api::UserState;

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
            no_login: true,
            vpn_login_at: None,
        }
    }

    fn person(name: &str, vpn_login_at: Option<i64>) -> User {
        User {
            no_login: false,
            vpn_login_at,
            ..user(name, UserState::Active, None)
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
            last_endpoint: None,
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
    fn with_require_login_only_a_fresh_portal_login_makes_devices_live() {
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        assert!(config.vpn.require_login, "the default");
        let lifetime = 12 * 3600;
        let now = 100_000;
        let users = [
            person("never", None),
            person("fresh", Some(now - 60)),
            person("stale", Some(now - lifetime)),
            user("machine", UserState::Active, None),
        ];
        let devices = [
            device("never", 2),
            device("fresh", 3),
            device("stale", 4),
            device("machine", 5),
        ];
        let live: Vec<String> = desired_peers(&config, &[], &users, &devices, now)
            .iter()
            .map(|s| s.user.clone())
            .collect();
        assert_eq!(live, ["fresh", "machine"]);

        let expired = expired_sessions(&config, &users, now);
        assert_eq!(expired.len(), 1, "only the stale session ends");
        let (name, login, event) = &expired[0];
        assert_eq!((name.as_str(), *login), ("stale", now - lifetime));
        assert_eq!(event.kind.as_str(), "vpn.session.expire");
        assert_eq!(event.detail["lifetime_secs"], lifetime);
    }

    #[test]
    fn require_login_false_keeps_every_enabled_users_devices_live() {
        let text = format!("{CONFIG}\n[vpn]\nrequire_login = false\n");
        let config = Config::parse(&text, "t.toml").unwrap();
        let users = [person("never", None), person("stale", Some(0))];
        let devices = [device("never", 2), device("stale", 3)];
        assert_eq!(
            desired_peers(&config, &[], &users, &devices, 100_000).len(),
            2
        );
        assert!(expired_sessions(&config, &users, 100_000).is_empty());
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
                .check(
                    "10.0.3.7".parse().unwrap(),
                    gatehouse_config::policy::Transport::Port(22)
                )
                .is_ok()
        );
        assert!(
            specs[0]
                .access
                .check(
                    "10.0.4.7".parse().unwrap(),
                    gatehouse_config::policy::Transport::Port(22)
                )
                .is_err()
        );
        assert!(
            specs[0]
                .access
                .check(
                    "10.0.3.1".parse().unwrap(),
                    gatehouse_config::policy::Transport::Port(22)
                )
                .is_err(),
            "the host's own address"
        );
        assert_eq!(specs[0].keepalive, Some(25));
    }

    #[test]
    fn a_device_is_resumed_from_its_last_endpoint_only_while_its_session_may_live() {
        let config = Config::parse(CONFIG, "t.toml").unwrap();
        let now = 100_000;
        let endpoint: SocketAddr = "198.51.100.7:40123".parse().unwrap();
        let with = |n: u8, handshake: Option<i64>, endpoint: Option<SocketAddr>| Device {
            last_handshake: handshake,
            last_endpoint: endpoint,
            ..device("a", n)
        };
        let devices = [
            with(2, Some(now - 30), Some(endpoint)),
            with(3, Some(now - 179), Some(endpoint)),
            with(4, Some(now - 180), Some(endpoint)),
            with(5, None, Some(endpoint)),
            with(6, Some(now - 30), None),
        ];
        let users = [user("a", UserState::Active, None)];
        let resumed: Vec<(String, Option<SocketAddr>)> =
            desired_peers(&config, &[], &users, &devices, now)
                .into_iter()
                .map(|s| (s.device, s.resume_endpoint))
                .collect();
        assert_eq!(
            resumed,
            [
                ("d2".to_string(), Some(endpoint)),
                ("d3".to_string(), Some(endpoint)),
                ("d4".to_string(), None),
                ("d5".to_string(), None),
                ("d6".to_string(), None),
            ]
        );
    }
}
