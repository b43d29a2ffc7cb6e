//! Turns data plane state into audit records and store updates, once a
//! second: `vpn.connect` when a device's session starts, `vpn.disconnect`
//! after three minutes without a handshake (or when the peer is removed),
//! `vpn.acl.deny` aggregated per peer and minute, `vpn.flow` for each
//! device's flows of each minute (see [`super::flow_records`]), and the
//! devices' last handshake times and endpoints (what a restart resumes
//! tunnels from). All records of one tick commit in one transaction; a peer
//! that leaves the table has its held-back denials and flows recorded at
//! once, and at shutdown a last tick records what is pending, so a
//! restart, a revoke or a logout loses no denial, flow or session end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{Engine, PeerStatus};
use super::flow_records::flow_records;
use super::peers::Peer;
use crate::audit::event::{Actor, Kind, Source, event};
use crate::gateway::Core;
use crate::store::NewAuditEvent;

/// A session without a handshake for this long has ended (WireGuard rekeys
/// every two minutes while traffic flows).
pub const DISCONNECT_AFTER: Duration = Duration::from_secs(180);
/// At most one `vpn.acl.deny` record per peer in this period.
pub const DENY_PERIOD: Duration = Duration::from_secs(60);
/// Each device's flows are recorded (`vpn.flow`) and its counters start
/// afresh this often.
pub const FLOW_PERIOD: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_secs(1);

/// What the monitor remembers between ticks.
#[derive(Default)]
pub struct Monitor {
    connected: HashMap<[u8; 32], Session>,
    last_deny: HashMap<[u8; 32], Instant>,
    stored_handshake: HashMap<[u8; 32], StoredHandshake>,
    /// When the live peers' flows are next recorded (`None`: at the next
    /// tick).
    next_flows: Option<Instant>,
}

/// What the store was last told about a peer's handshake.
#[derive(Default)]
struct StoredHandshake {
    at: i64,
    endpoint: Option<SocketAddr>,
}

struct Session {
    label: String,
    rx: u64,
    tx: u64,
}

/// Which pending denials a tick records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Those of peers not recorded within [`DENY_PERIOD`].
    WhenDue,
    /// All of them (at shutdown).
    All,
}

/// Work for the store after one tick.
#[derive(Default, Clone)]
pub struct TickOutput {
    pub events: Vec<NewAuditEvent>,
    pub handshakes: Vec<HandshakeUpdate>,
}

/// Records kept for a retry while the store refuses them; past this, the
/// oldest are dropped (and said so in the log). At a few hundred bytes a
/// record, a few tens of MiB.
const MAX_PENDING_EVENTS: usize = 100_000;

impl TickOutput {
    /// Adds a later tick's work after this one's.
    fn append(&mut self, later: TickOutput) {
        self.events.extend(later.events);
        self.handshakes.extend(later.handshakes);
        if self.events.len() > MAX_PENDING_EVENTS {
            let over = self.events.len() - MAX_PENDING_EVENTS;
            self.events.drain(..over);
            tracing::error!(
                over,
                "data plane audit records dropped: the store refused them for too long"
            );
        }
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.handshakes.is_empty()
    }
}

/// A device's last handshake, for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeUpdate {
    pub user: String,
    pub device: String,
    /// Unix time.
    pub at: i64,
    pub endpoint: Option<SocketAddr>,
}

impl Monitor {
    /// Compares the engine's state with the last tick's.
    pub fn tick(&mut self, engine: &Engine, now: SystemTime, now_mono: Instant) -> TickOutput {
        self.observe(engine, now, now_mono, Flush::WhenDue)
    }

    /// The last tick, at shutdown: what a tick records, every denial not
    /// yet recorded (due or not), and the end of every open session.
    pub fn close(&mut self, engine: &Engine, now: SystemTime, now_mono: Instant) -> TickOutput {
        let mut out = self.observe(engine, now, now_mono, Flush::All);
        out.events.extend(
            self.connected
                .drain()
                .map(|(_, session)| disconnect(&session, "gateway stopping")),
        );
        out
    }

    fn observe(
        &mut self,
        engine: &Engine,
        now: SystemTime,
        now_mono: Instant,
        flush: Flush,
    ) -> TickOutput {
        let mut out = TickOutput::default();
        let peers = engine.peer_status();
        let mut seen = Vec::with_capacity(peers.len());
        for status in &peers {
            seen.push(status.public_key);
            self.session(status, now, &mut out);
            if let Some(at) = status.last_handshake.and_then(unix) {
                let stored = self.stored_handshake.entry(status.public_key).or_default();
                // Keep store writes rare: every new session, then each
                // minute, and when the device roams.
                if at - stored.at >= 60 || status.endpoint != stored.endpoint {
                    *stored = StoredHandshake {
                        at,
                        endpoint: status.endpoint,
                    };
                    out.handshakes.push(HandshakeUpdate {
                        user: status.user.clone(),
                        device: status.device.clone(),
                        at,
                        endpoint: status.endpoint,
                    });
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
        // Peers that left the table (revoked, disabled, expired, logged
        // out): their held-back denials and flows are recorded now,
        // whatever the periods say; nothing else will.
        let retired = engine.take_retired();
        self.denials(engine, &retired, now_mono, flush, &mut out);
        self.flows(engine, &retired, now_mono, flush, &mut out);
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
                let source = status.endpoint.map_or(Source::Local, Source::Peer);
                out.events.push(
                    event(Kind::VpnConnect, Actor::User(status.user.clone()), source)
                        .on(label.clone())
                        .detail(json!({ "device": status.device, "address": status.address.to_string(), "endpoint": endpoint })),
                );
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

    fn denials(
        &mut self,
        engine: &Engine,
        retired: &[Arc<Peer>],
        now: Instant,
        flush: Flush,
        out: &mut TickOutput,
    ) {
        let table = engine.table();
        let peers = table
            .peers()
            .map(|peer| (peer, flush))
            .chain(retired.iter().map(|peer| (peer, Flush::All)));
        for (peer, flush) in peers {
            let due = flush == Flush::All
                || self
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
            out.events.push(
                event(Kind::VpnAclDeny, Actor::User(peer.user.clone()), Source::Addr(peer.address))
                    .on(peer.label())
                    .detail(json!({ "packets": denials.total, "reasons": by_reason, "samples": denials.samples })),
            );
        }
        self.last_deny
            .retain(|_, at| now.duration_since(*at) < DENY_PERIOD);
    }

    /// Each [`FLOW_PERIOD`], every live peer's flows since the last time;
    /// at every tick, those of the peers that left the table.
    fn flows(
        &mut self,
        engine: &Engine,
        retired: &[Arc<Peer>],
        now: Instant,
        flush: Flush,
        out: &mut TickOutput,
    ) {
        let limit = engine.flows_per_device();
        let due = flush == Flush::All || self.next_flows.is_none_or(|at| now >= at);
        let table = engine.table();
        let live = table.peers().filter(|_| due);
        for peer in live.chain(retired) {
            if let Some(flows) = peer.take_flows(limit) {
                out.events.extend(flow_records(peer, &flows));
            }
        }
        if due {
            self.next_flows = Some(now + FLOW_PERIOD);
        }
    }
}

/// Runs the monitor once a second until shutdown, then records the end of
/// every open session.
pub fn spawn_monitor(
    core: Core,
    engine: Arc<Engine>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let mut monitor = Monitor::default();
        // Work the store refused, retried with the next tick's.
        let mut pending = TickOutput::default();
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            // audit.flows_per_device is live: tables made from now on.
            engine.set_flows_per_device(core.config().audit.flows_per_device as usize);
            pending.append(monitor.tick(&engine, SystemTime::now(), Instant::now()));
            pending = commit(&core, pending).await;
        }
        pending.append(monitor.close(&engine, SystemTime::now(), Instant::now()));
        let lost = commit(&core, pending).await;
        if !lost.events.is_empty() {
            tracing::error!(
                records = lost.events.len(),
                "data plane audit records not written at shutdown: the store refused them"
            );
        }
    });
}

/// Writes `out` in one transaction. Returns what is still to write: nothing
/// when it committed, all of it when the store refused it.
async fn commit(core: &Core, out: TickOutput) -> TickOutput {
    if out.is_empty() {
        return out;
    }
    let retry = out.clone();
    let written = core
        .store()
        .write(move |w| {
            for h in &out.handshakes {
                // The device may have been revoked meanwhile: nothing to update.
                match w.set_device_handshake(&h.user, &h.device, h.at, h.endpoint) {
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
    match written {
        Ok(()) => TickOutput::default(),
        Err(err) => {
            tracing::error!(error = %err, records = retry.events.len(), "cannot record data plane events; kept for the next tick");
            retry
        }
    }
}

fn disconnect(session: &Session, reason: &str) -> NewAuditEvent {
    let user = session
        .label
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    event(Kind::VpnDisconnect, Actor::User(user), Source::Local)
        .on(session.label.clone())
        .detail(json!({ "rx_bytes": session.rx, "tx_bytes": session.tx, "reason": reason }))
}

fn unix(at: SystemTime) -> Option<i64> {
    i64::try_from(at.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};
    use gatehouse_config::policy::Policy;

    use super::*;
    use crate::vpn::engine::Sink;
    use crate::vpn::flows::{Direction, FlowKey};
    use crate::vpn::peers::PeerSpec;

    struct Drop;
    impl Sink for Drop {
        fn send_udp(&mut self, _: &[u8], _: std::net::SocketAddr) {}
        fn write_tun(&mut self, _: &[u8]) {}
    }

    struct Reply(Vec<u8>);
    impl Sink for Reply {
        fn send_udp(&mut self, datagram: &[u8], _: std::net::SocketAddr) {
            self.0 = datagram.to_vec();
        }
        fn write_tun(&mut self, _: &[u8]) {}
    }

    /// An engine with one peer that has completed a handshake.
    fn connected_engine() -> (Engine, [u8; 32]) {
        let engine = Engine::new(StaticSecret::random_from_rng(rand_core::OsRng));
        let secret = StaticSecret::random_from_rng(rand_core::OsRng);
        let public = PublicKey::from(&secret).to_bytes();
        engine.set_peers(&[PeerSpec {
            public_key: public,
            address: "10.200.0.2".parse().unwrap(),
            user: "alice".into(),
            device: "laptop".into(),
            access: Arc::new(Policy::default().access_for::<&str>(&[])),
            keepalive: None,
            resume_endpoint: None,
        }]);
        let mut client = Tunn::new(
            secret,
            PublicKey::from(engine.public_key()),
            None,
            None,
            1,
            None,
        );
        let mut buf = vec![0u8; 2048];
        let mut ebuf = vec![0u8; 2048];
        let TunnResult::WriteToNetwork(init) = client.format_handshake_initiation(&mut buf, false)
        else {
            panic!("no initiation");
        };
        let from = "198.18.0.2:40000".parse().unwrap();
        let mut reply = Reply(Vec::new());
        engine.handle_datagram(from, init, &mut ebuf, &mut reply);
        if let TunnResult::WriteToNetwork(keepalive) = client.decapsulate(None, &reply.0, &mut buf)
        {
            engine.handle_datagram(from, keepalive, &mut ebuf, &mut Drop);
        }
        (engine, public)
    }

    /// An allowed packet of `peer` to 10.0.3.140:`port` over TCP (or back).
    fn traffic(peer: &Peer, port: u16, direction: Direction) {
        let key = FlowKey {
            host: "10.0.3.140".parse().unwrap(),
            protocol: 6,
            port: Some(port),
        };
        peer.count_flow(key, direction, 100, 1_800_000_000, 32);
    }

    fn flow_records_of(out: &TickOutput) -> Vec<&NewAuditEvent> {
        out.events
            .iter()
            .filter(|e| e.kind.as_str() == "vpn.flow")
            .collect()
    }

    /// A packet of `peer` to `dst`:80 refused as outside its groups.
    fn deny(peer: &Peer, dst: &str) {
        peer.record_denial(
            gatehouse_config::policy::DenyReason::NotInGroups,
            dst.parse().unwrap(),
            Some(80),
        );
    }

    #[test]
    fn connect_once_then_disconnect_after_three_quiet_minutes() {
        let (engine, _) = connected_engine();
        let mut monitor = Monitor::default();
        let now = SystemTime::now();
        let first = monitor.tick(&engine, now, Instant::now());
        let kinds: Vec<&str> = first.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["vpn.connect"]);
        assert_eq!(first.events[0].target, "alice/laptop");
        assert_eq!(
            first.handshakes.len(),
            1,
            "the handshake time goes to the store"
        );
        assert_eq!(
            first.handshakes[0].endpoint,
            Some("198.18.0.2:40000".parse().unwrap()),
            "with the endpoint a restart resumes the tunnel from"
        );
        let again = monitor.tick(&engine, now, Instant::now());
        assert!(again.events.is_empty(), "one connect per session");
        assert!(
            again.handshakes.is_empty(),
            "no store write for nothing new"
        );
        let later = monitor.tick(
            &engine,
            now + DISCONNECT_AFTER + Duration::from_secs(1),
            Instant::now(),
        );
        let kinds: Vec<&str> = later.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["vpn.disconnect"]);
    }

    #[test]
    fn a_roaming_device_has_its_new_endpoint_stored() {
        let (engine, public) = connected_engine();
        let mut monitor = Monitor::default();
        monitor.tick(&engine, SystemTime::now(), Instant::now());
        let roamed: SocketAddr = "198.18.0.9:50000".parse().unwrap();
        engine.table().by_key[&public].peer.lock().endpoint = Some(roamed);
        let out = monitor.tick(&engine, SystemTime::now(), Instant::now());
        let endpoints: Vec<_> = out.handshakes.iter().map(|h| h.endpoint).collect();
        assert_eq!(endpoints, [Some(roamed)]);
    }

    #[test]
    fn the_held_back_denials_of_a_removed_peer_are_recorded() {
        // Review finding 5: they were lost when the peer left the table.
        let (engine, public) = connected_engine();
        let peer = engine.table().by_key[&public].peer.clone();
        let mut monitor = Monitor::default();
        let start = Instant::now();
        deny(&peer, "10.0.4.10");
        let first = monitor.tick(&engine, SystemTime::now(), start);
        assert!(
            first
                .events
                .iter()
                .any(|e| e.kind.as_str() == "vpn.acl.deny")
        );
        // Held back: the period has not passed ...
        deny(&peer, "10.0.4.11");
        deny(&peer, "10.0.4.12");
        // ... and the peer is revoked before it does.
        engine.set_peers(&[]);
        let out = monitor.tick(&engine, SystemTime::now(), start + Duration::from_secs(1));
        let denied: Vec<&NewAuditEvent> = out
            .events
            .iter()
            .filter(|e| e.kind.as_str() == "vpn.acl.deny")
            .collect();
        assert_eq!(denied.len(), 1, "recorded at once, not held for the period");
        assert_eq!(denied[0].detail["packets"], 2);
        assert_eq!(denied[0].target, "alice/laptop");
        assert!(engine.take_retired().is_empty(), "taken once");
    }

    #[tokio::test]
    async fn records_the_store_refused_are_kept_and_written_later() {
        // Review finding 5: a failed commit lost the tick (and vpn.connect
        // was never emitted again).
        let gw = crate::testing::TestGateway::new(crate::testing::CONFIG).await;
        let (engine, _) = connected_engine();
        let mut monitor = Monitor::default();
        gw.refuse_audit_inserts(true);
        let first = monitor.tick(&engine, SystemTime::now(), Instant::now());
        assert_eq!(first.events.len(), 1, "vpn.connect");
        let kept = commit(&gw.core, first).await;
        assert_eq!(kept.events.len(), 1, "kept for a retry");
        let mut pending = kept;
        pending.append(monitor.tick(&engine, SystemTime::now(), Instant::now()));
        gw.refuse_audit_inserts(false);
        let left = commit(&gw.core, pending).await;
        assert!(left.is_empty());
        let kinds = gw.audit_kinds().await;
        assert_eq!(
            kinds.iter().filter(|k| *k == "vpn.connect").count(),
            1,
            "{kinds:?}"
        );
    }

    #[test]
    fn a_removed_peer_is_disconnected() {
        let (engine, _) = connected_engine();
        let mut monitor = Monitor::default();
        monitor.tick(&engine, SystemTime::now(), Instant::now());
        engine.set_peers(&[]);
        let out = monitor.tick(&engine, SystemTime::now(), Instant::now());
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.events[0].kind.as_str(), "vpn.disconnect");
        assert_eq!(out.events[0].detail["reason"], "removed");
    }

    #[test]
    fn denials_are_aggregated_at_most_once_per_period() {
        let (engine, public) = connected_engine();
        let peer = engine.table().by_key[&public].peer.clone();
        let mut monitor = Monitor::default();
        let start = Instant::now();
        for _ in 0..50 {
            deny(&peer, "10.0.4.10");
        }
        let denies = |out: &TickOutput| {
            out.events
                .iter()
                .filter(|e| e.kind.as_str() == "vpn.acl.deny")
                .count()
        };
        let first = monitor.tick(&engine, SystemTime::now(), start);
        assert_eq!(denies(&first), 1);
        let record = first
            .events
            .iter()
            .find(|e| e.kind.as_str() == "vpn.acl.deny")
            .unwrap();
        assert_eq!(record.detail["packets"], 50);
        deny(&peer, "10.0.4.11");
        assert_eq!(
            denies(&monitor.tick(&engine, SystemTime::now(), start + Duration::from_secs(30))),
            0,
            "within the period: held back"
        );
        let next = monitor.tick(&engine, SystemTime::now(), start + DENY_PERIOD);
        assert_eq!(
            denies(&next),
            1,
            "after the period: the held-back denial is reported"
        );
    }

    #[test]
    fn closing_records_held_back_denials_the_last_handshake_and_every_session_end() {
        let (engine, public) = connected_engine();
        let peer = engine.table().by_key[&public].peer.clone();
        let mut monitor = Monitor::default();
        let start = Instant::now();
        deny(&peer, "10.0.4.10");
        monitor.tick(&engine, SystemTime::now(), start);
        deny(&peer, "10.0.4.11");
        assert!(
            monitor
                .tick(&engine, SystemTime::now(), start + Duration::from_secs(1))
                .events
                .is_empty(),
            "held back within the period"
        );
        // The device roamed just before the stop.
        let roamed: SocketAddr = "198.18.0.9:50000".parse().unwrap();
        peer.lock().endpoint = Some(roamed);
        let closing = monitor.close(&engine, SystemTime::now(), start + Duration::from_secs(2));
        let kinds: Vec<&str> = closing.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["vpn.acl.deny", "vpn.disconnect"]);
        assert_eq!(closing.events[0].detail["samples"][0], "10.0.4.11:80");
        assert_eq!(closing.events[1].detail["reason"], "gateway stopping");
        let endpoints: Vec<_> = closing.handshakes.iter().map(|h| h.endpoint).collect();
        assert_eq!(endpoints, [Some(roamed)]);
    }

    #[test]
    fn each_minute_one_record_per_flow_then_the_counts_start_afresh() {
        let (engine, public) = connected_engine();
        let peer = engine.table().by_key[&public].peer.clone();
        let mut monitor = Monitor::default();
        let start = Instant::now();
        traffic(&peer, 443, Direction::Up);
        traffic(&peer, 443, Direction::Down);
        traffic(&peer, 443, Direction::Down);
        traffic(&peer, 22, Direction::Up);
        let first = monitor.tick(&engine, SystemTime::now(), start);
        let records = flow_records_of(&first);
        let targets: Vec<&str> = records.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["10.0.3.140:443", "10.0.3.140:22"]);
        let https = records[0];
        assert_eq!(https.actor, "alice");
        assert_eq!(https.source, "10.200.0.2", "the device's VPN address");
        for (field, value) in [
            ("device", json!("laptop")),
            ("dst", json!("10.0.3.140")),
            ("dport", json!(443)),
            ("proto", json!("tcp")),
            ("packets_up", json!(1)),
            ("packets_down", json!(2)),
            ("bytes_up", json!(100)),
            ("bytes_down", json!(200)),
            ("first_seen", json!("2027-01-15T08:00:00Z")),
            ("last_seen", json!("2027-01-15T08:00:00Z")),
        ] {
            assert_eq!(https.detail[field], value, "{field}: {}", https.detail);
        }

        traffic(&peer, 443, Direction::Up);
        let within = monitor.tick(&engine, SystemTime::now(), start + Duration::from_secs(30));
        assert!(flow_records_of(&within).is_empty(), "held for the period");
        let next = monitor.tick(&engine, SystemTime::now(), start + FLOW_PERIOD);
        let records = flow_records_of(&next);
        assert_eq!(records.len(), 1, "only what flowed since");
        assert_eq!(records[0].detail["packets_up"], 1);
        assert_eq!(records[0].detail["packets_down"], 0);
    }

    #[test]
    fn an_idle_peer_has_no_flow_records_and_no_table() {
        let (engine, public) = connected_engine();
        let peer = engine.table().by_key[&public].peer.clone();
        let mut monitor = Monitor::default();
        let start = Instant::now();
        for minute in 0..3 {
            let out = monitor.tick(&engine, SystemTime::now(), start + FLOW_PERIOD * minute);
            assert!(flow_records_of(&out).is_empty());
        }
        assert!(flow_records_of(&monitor.close(&engine, SystemTime::now(), start)).is_empty());
        // A device active one minute, idle the next, gives its table up.
        traffic(&peer, 443, Direction::Up);
        let later = start + FLOW_PERIOD * 3;
        assert_eq!(
            flow_records_of(&monitor.tick(&engine, SystemTime::now(), later)).len(),
            1
        );
        let idle = monitor.tick(&engine, SystemTime::now(), later + FLOW_PERIOD);
        assert!(flow_records_of(&idle).is_empty());
        assert!(peer.take_flows(32).is_none());
    }

    #[test]
    fn ten_thousand_ports_in_a_minute_make_at_most_n_records_and_one_marked_rollup() {
        let (engine, public) = connected_engine();
        let peer = engine.table().by_key[&public].peer.clone();
        let mut monitor = Monitor::default();
        for port in 0..10_000 {
            traffic(&peer, port, Direction::Up);
        }
        let out = monitor.tick(&engine, SystemTime::now(), Instant::now());
        let records = flow_records_of(&out);
        assert_eq!(records.len(), 32 + 1);
        let rollups: Vec<&&NewAuditEvent> = records
            .iter()
            .filter(|r| r.detail.get("rollup").is_some())
            .collect();
        assert_eq!(rollups.len(), 1);
        let rollup = rollups[0];
        assert_eq!(rollup.target, "other");
        assert_eq!(rollup.detail["rollup"], true);
        assert_eq!(rollup.detail["folded_packets"], 10_000 - 32);
        assert_eq!(rollup.detail["bytes_up"], (10_000 - 32) * 100);
        assert_eq!(rollup.detail["flows_per_device"], 32);
        assert_eq!(records.last().unwrap().target, "other", "last");
    }

    #[test]
    fn the_held_back_flows_of_a_removed_peer_are_recorded_at_once() {
        let (engine, public) = connected_engine();
        let peer = engine.table().by_key[&public].peer.clone();
        let mut monitor = Monitor::default();
        let start = Instant::now();
        monitor.tick(&engine, SystemTime::now(), start);
        traffic(&peer, 443, Direction::Up);
        assert!(
            flow_records_of(&monitor.tick(
                &engine,
                SystemTime::now(),
                start + Duration::from_secs(1)
            ))
            .is_empty(),
            "held back"
        );
        // Revoked (or logged out, or expired) before the minute is up.
        engine.set_peers(&[]);
        let out = monitor.tick(&engine, SystemTime::now(), start + Duration::from_secs(2));
        let records = flow_records_of(&out);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].target, "10.0.3.140:443");
        assert_eq!(records[0].detail["device"], "laptop");
        assert_eq!(out.events.last().unwrap().kind.as_str(), "vpn.flow");
    }

    #[test]
    fn closing_records_the_flows_held_back() {
        let (engine, public) = connected_engine();
        let peer = engine.table().by_key[&public].peer.clone();
        let mut monitor = Monitor::default();
        let start = Instant::now();
        monitor.tick(&engine, SystemTime::now(), start);
        traffic(&peer, 22, Direction::Down);
        let closing = monitor.close(&engine, SystemTime::now(), start + Duration::from_secs(1));
        let records = flow_records_of(&closing);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].detail["packets_down"], 1);
        let kinds: Vec<&str> = closing.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["vpn.flow", "vpn.disconnect"]);
    }

    #[tokio::test]
    async fn flow_records_are_stored_with_their_typed_details() {
        let gw = crate::testing::TestGateway::new(crate::testing::CONFIG).await;
        let (engine, public) = connected_engine();
        let peer = engine.table().by_key[&public].peer.clone();
        let mut monitor = Monitor::default();
        for port in 0..40 {
            traffic(&peer, port, Direction::Up);
        }
        let ping = FlowKey {
            host: "10.0.3.140".parse().unwrap(),
            protocol: 1,
            port: None,
        };
        let out = monitor.tick(&engine, SystemTime::now(), Instant::now());
        assert!(commit(&gw.core, out).await.is_empty());
        peer.count_flow(ping, Direction::Up, 84, 1_800_000_000, 32);
        let out = monitor.close(&engine, SystemTime::now(), Instant::now());
        assert!(commit(&gw.core, out).await.is_empty());
        let records = gw.audit_records().await;
        let checked = crate::testing::check_typed_details(&records);
        let count = |name: &str| checked.iter().filter(|c| **c == name).count();
        assert_eq!(
            (count("FlowDetail"), count("RollupDetail")),
            (33, 1),
            "{checked:?}"
        );
    }
}
