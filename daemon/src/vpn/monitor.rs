//! Turns data plane state into audit records and store updates, once a
//! second: `vpn.connect` when a device's session starts, `vpn.disconnect`
//! after three minutes without a handshake (or when the peer is removed),
//! `vpn.acl.deny` aggregated per peer and minute, and the devices' last
//! handshake times. All records of one tick commit in one transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{Engine, PeerStatus};
use crate::gateway::Gateway;
use crate::store::NewAuditEvent;

/// A session without a handshake for this long has ended (WireGuard rekeys
/// every two minutes while traffic flows).
pub const DISCONNECT_AFTER: Duration = Duration::from_secs(180);
/// At most one `vpn.acl.deny` record per peer in this period.
pub const DENY_PERIOD: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_secs(1);

/// What the monitor remembers between ticks.
#[derive(Default)]
pub struct Monitor {
    connected: HashMap<[u8; 32], Session>,
    last_deny: HashMap<[u8; 32], Instant>,
    stored_handshake: HashMap<[u8; 32], i64>,
}

struct Session {
    label: String,
    rx: u64,
    tx: u64,
}

/// Work for the store after one tick.
#[derive(Default)]
pub struct TickOutput {
    pub events: Vec<NewAuditEvent>,
    /// (user, device, unix time of the last handshake)
    pub handshakes: Vec<(String, String, i64)>,
}

impl Monitor {
    /// Compares the engine's state with the last tick's.
    pub fn tick(&mut self, engine: &Engine, now: SystemTime, now_mono: Instant) -> TickOutput {
        let mut out = TickOutput::default();
        let peers = engine.peer_status();
        let mut seen = Vec::with_capacity(peers.len());
        for status in &peers {
            seen.push(status.public_key);
            self.session(status, now, &mut out);
            if let Some(at) = status.last_handshake.and_then(unix) {
                let stored = self.stored_handshake.entry(status.public_key).or_default();
                // Keep store writes rare: every new session, then each minute.
                if at - *stored >= 60 {
                    *stored = at;
                    out.handshakes
                        .push((status.user.clone(), status.device.clone(), at));
                }
            }
        }
        // Peers removed from the table (revoked, disabled, expired).
        let gone: Vec<[u8; 32]> = self
            .connected
            .keys()
            .filter(|k| !seen.contains(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(session) = self.connected.remove(&key) {
                out.events.push(disconnect(&session, "removed"));
            }
        }
        self.stored_handshake.retain(|k, _| seen.contains(k));
        self.denials(engine, now_mono, &mut out);
        out
    }

    fn session(&mut self, status: &PeerStatus, now: SystemTime, out: &mut TickOutput) {
        let fresh = status
            .last_handshake
            .and_then(|at| now.duration_since(at).ok())
            .is_some_and(|age| age < DISCONNECT_AFTER);
        let label = format!("{}/{}", status.user, status.device);
        match (self.connected.get_mut(&status.public_key), fresh) {
            (None, true) => {
                let endpoint = status.endpoint.map(|e| e.to_string()).unwrap_or_default();
                out.events.push(NewAuditEvent {
                    kind: "vpn.connect".into(),
                    actor: status.user.clone(),
                    source: endpoint.clone(),
                    target: label.clone(),
                    detail: json!({ "device": status.device, "address": status.address.to_string(), "endpoint": endpoint }),
                });
                self.connected.insert(
                    status.public_key,
                    Session {
                        label,
                        rx: status.rx_bytes,
                        tx: status.tx_bytes,
                    },
                );
            }
            (Some(session), true) => {
                session.rx = status.rx_bytes;
                session.tx = status.tx_bytes;
            }
            (Some(_), false) => {
                if let Some(session) = self.connected.remove(&status.public_key) {
                    out.events
                        .push(disconnect(&session, "no handshake for 3 minutes"));
                }
            }
            (None, false) => {}
        }
    }

    fn denials(&mut self, engine: &Engine, now: Instant, out: &mut TickOutput) {
        let table = engine.table();
        for peer in table.peers() {
            let due = self
                .last_deny
                .get(&peer.public_key)
                .is_none_or(|at| now.duration_since(*at) >= DENY_PERIOD);
            if !due {
                continue;
            }
            let denials = peer.take_denials();
            if denials.total == 0 {
                continue;
            }
            self.last_deny.insert(peer.public_key, now);
            let by_reason: serde_json::Map<String, serde_json::Value> = denials
                .by_reason
                .iter()
                .map(|(reason, n)| ((*reason).to_string(), json!(n)))
                .collect();
            out.events.push(NewAuditEvent {
                kind: "vpn.acl.deny".into(),
                actor: peer.user.clone(),
                source: peer.address.to_string(),
                target: peer.label(),
                detail: json!({ "packets": denials.total, "reasons": by_reason, "samples": denials.samples }),
            });
        }
        self.last_deny
            .retain(|_, at| now.duration_since(*at) < DENY_PERIOD);
    }
}

/// Runs the monitor once a second until shutdown, then records the end of
/// every open session.
pub fn spawn_monitor(
    gateway: Gateway,
    engine: Arc<Engine>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let mut monitor = Monitor::default();
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let out = monitor.tick(&engine, SystemTime::now(), Instant::now());
            commit(&gateway, out).await;
        }
        let closing = TickOutput {
            events: monitor
                .connected
                .values()
                .map(|s| disconnect(s, "gateway stopping"))
                .collect(),
            handshakes: Vec::new(),
        };
        commit(&gateway, closing).await;
    });
}

async fn commit(gateway: &Gateway, out: TickOutput) {
    if out.events.is_empty() && out.handshakes.is_empty() {
        return;
    }
    let written = gateway
        .store()
        .write(move |w| {
            for (user, device, at) in &out.handshakes {
                // The device may have been revoked meanwhile: nothing to update.
                match w.set_device_handshake(user, device, *at) {
                    Ok(()) | Err(crate::store::StoreError::NotFound { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            for event in out.events {
                w.audit(event)?;
            }
            Ok(())
        })
        .await;
    if let Err(err) = written {
        tracing::error!(error = %err, "cannot record data plane events");
    }
}

fn disconnect(session: &Session, reason: &str) -> NewAuditEvent {
    let user = session
        .label
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    NewAuditEvent {
        kind: "vpn.disconnect".into(),
        actor: user,
        source: String::new(),
        target: session.label.clone(),
        detail: json!({ "rx_bytes": session.rx, "tx_bytes": session.tx, "reason": reason }),
    }
}

fn unix(at: SystemTime) -> Option<i64> {
    i64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}
