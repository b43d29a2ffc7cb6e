//! The data plane's core, without I/O: what to do with a datagram from the
//! network, a packet from the TUN device, or a timer tick. Callers hand in
//! buffers and a [`Sink`] for the results, as boringtun's `Tunn` does, so unit
//! tests wire an engine to an in-memory client.
//!
//! Per packet: find the peer (by session index, or by public key for a
//! handshake initiation after the cookie/rate-limit check), let its `Tunn`
//! decrypt, then enforce the policy on the inner packet: the source must be
//! the device's own address, the destination inside its user's groups and
//! outside the always-refused set. Drops are counted, never logged per packet
//! above TRACE. Allowed packets are counted per flow both ways (see
//! [`super::flows`]), stamped with a coarse clock the timer tick sets.
//! Nothing here allocates on the data path.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use gatehouse_config::policy::DenyReason;

use super::flows::{Direction, FlowKey};
use super::packet;
use super::peers::{EngineKeys, Entry, Peer, PeerSpec, PeerTable};

/// Handshakes per second before boringtun asks for cookies (its default).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Handshakes sent per timer tick to resume tunnels after a restart. Each
/// costs about 170 µs of the async runtime here (boringtun's `Tunn::new` and
/// the initiation, measured in release), so 256 take some 45 ms of each
/// 250 ms tick: 1,000 recently active devices resume within a second,
/// 10,000 within about ten, and the portal and SSH stay responsive.
pub const RESUMES_PER_TICK: usize = 256;

/// Where the engine's results go.
pub trait Sink {
    fn send_udp(&mut self, datagram: &[u8], to: SocketAddr);
    /// An encrypted packet of `flow`, for a sink that may reorder datagrams
    /// of different flows (never two of one flow).
    fn send_flow_udp(&mut self, datagram: &[u8], to: SocketAddr, _flow: FlowKey) {
        self.send_udp(datagram, to);
    }
    fn write_tun(&mut self, packet: &[u8]);
}

/// Engine-wide drop counters (per-peer ones live on the peer).
#[derive(Default)]
pub struct EngineCounters {
    pub malformed_datagrams: AtomicU64,
    pub unknown_peer: AtomicU64,
    pub cookie_replies: AtomicU64,
    pub handshake_errors: AtomicU64,
    pub decrypt_errors: AtomicU64,
    pub tun_no_peer: AtomicU64,
    pub tun_no_endpoint: AtomicU64,
    pub tun_malformed: AtomicU64,
}

/// The WireGuard responder for every device.
pub struct Engine {
    keys: Arc<EngineKeys>,
    public: PublicKey,
    table: ArcSwap<PeerTable>,
    next_index: AtomicU32,
    /// Peers taken out of the table since the monitor last looked: their
    /// held-back denials still go to the audit log.
    retired: Mutex<Vec<Arc<Peer>>>,
    /// False on the standby of an HA pair: it sends no resuming handshakes
    /// until it is the active one (the devices would follow them to it).
    resume_allowed: std::sync::atomic::AtomicBool,
    /// Unix seconds as of the last timer tick: the flow counters' clock,
    /// read once per packet instead of the system clock.
    clock: AtomicU64,
    /// Flows a device's table holds before the rollup
    /// (`audit.flows_per_device`), for tables made from now on.
    flows_per_device: AtomicUsize,
    pub counters: EngineCounters,
}

/// Retired peers kept at most for the monitor (it takes them every second).
const MAX_RETIRED: usize = 65_536;

impl Engine {
    pub fn new(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret);
        Self {
            keys: Arc::new(EngineKeys {
                rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
                secret,
            }),
            public,
            table: ArcSwap::from_pointee(PeerTable::default()),
            next_index: AtomicU32::new(1),
            retired: Mutex::new(Vec::new()),
            resume_allowed: std::sync::atomic::AtomicBool::new(true),
            clock: AtomicU64::new(0),
            flows_per_device: AtomicUsize::new(
                gatehouse_config::file::DEFAULT_FLOWS_PER_DEVICE as usize,
            ),
            counters: EngineCounters::default(),
        }
    }

    /// Sets the flow counters' clock (the timer tick does, every 250 ms).
    pub fn set_clock(&self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.clock.store(secs, Ordering::Relaxed);
    }

    /// How many flows each device's table holds before the rest go to its
    /// rollup (`audit.flows_per_device`): for the tables made from now on,
    /// so a change applies from each device's next minute.
    pub fn set_flows_per_device(&self, limit: usize) {
        self.flows_per_device.store(limit, Ordering::Relaxed);
    }

    pub fn flows_per_device(&self) -> usize {
        self.flows_per_device.load(Ordering::Relaxed)
    }

    /// Whether the timer tick sends the handshakes that resume tunnels
    /// (true unless this is the standby of an HA pair).
    pub fn set_resume_allowed(&self, allowed: bool) {
        self.resume_allowed.store(allowed, Ordering::Relaxed);
    }

    /// Marks for a resuming handshake every peer of `specs` that has a
    /// recent endpoint and no session with this gateway yet: what a new
    /// active gateway does, with the endpoints the old one stored, so the
    /// devices' tunnels resume with no change on the devices. Called again a
    /// moment later, it sends another initiation to those still without a
    /// session (the first can be lost while the elastic IP moves). Returns
    /// how many were marked; the timer tick sends them, a budget per tick.
    pub fn resume_from(&self, specs: &[PeerSpec]) -> usize {
        let table = self.table.load();
        let mut marked = 0;
        for spec in specs {
            let (Some(endpoint), Some(entry)) =
                (spec.resume_endpoint, table.by_key.get(&spec.public_key))
            else {
                continue;
            };
            let mut state = entry.peer.lock();
            if state.tunn().is_some_and(|t| t.stats().0.is_some()) {
                continue; // a session with this gateway already
            }
            state.endpoint = Some(endpoint);
            state.resume = true;
            marked += 1;
        }
        marked
    }

    /// The live peers, as of now.
    pub fn table(&self) -> Arc<PeerTable> {
        self.table.load_full()
    }

    /// Replaces the peer set atomically. Peers whose key and address are
    /// unchanged keep their sessions; their policy is replaced.
    pub fn set_peers(&self, specs: &[PeerSpec]) {
        let old = self.table.load();
        let next = |taken: &dyn Fn(u32) -> bool| loop {
            // Indexes are 24 bits (boringtun shifts them left by 8).
            let index = self.next_index.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
            if index != 0 && !taken(index) {
                break index;
            }
        };
        let table = PeerTable::rebuild(&old, specs, next, &self.keys);
        let retired: Vec<Arc<Peer>> = old
            .peers()
            .filter(|peer| {
                table
                    .by_key
                    .get(&peer.public_key)
                    .is_none_or(|entry| !Arc::ptr_eq(&entry.peer, peer))
            })
            .cloned()
            .collect();
        self.table.store(Arc::new(table));
        if !retired.is_empty() {
            let mut kept = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
            kept.extend(retired);
            if kept.len() > MAX_RETIRED {
                let over = kept.len() - MAX_RETIRED;
                kept.drain(..over);
                tracing::warn!(
                    over,
                    "retired peers not taken by the monitor; the oldest dropped"
                );
            }
        }
    }

    /// The peers taken out of the table since the last call (revoked,
    /// disabled, expired, logged out, or re-addressed), for their last
    /// denials.
    pub fn take_retired(&self) -> Vec<Arc<Peer>> {
        std::mem::take(&mut *self.retired.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The gateway's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// A snapshot of every live peer, for status, metrics and UAPI.
    pub fn peer_status(&self) -> Vec<PeerStatus> {
        let table = self.table.load();
        let now = SystemTime::now();
        let mut peers: Vec<PeerStatus> = table
            .by_key
            .values()
            .map(|entry| {
                let peer = &entry.peer;
                let state = peer.lock();
                let (since_handshake, tx_bytes, rx_bytes) = match state.tunn() {
                    Some(tunn) => {
                        let (since, tx, rx, _, _) = tunn.stats();
                        (since, tx, rx)
                    }
                    None => (None, 0, 0),
                };
                PeerStatus {
                    public_key: peer.public_key,
                    user: peer.user.clone(),
                    device: peer.device.clone(),
                    address: peer.address,
                    allowed_ips: vec![peer.address],
                    endpoint: state.endpoint,
                    last_handshake: since_handshake.and_then(|d| now.checked_sub(d)),
                    rx_bytes: rx_bytes as u64,
                    tx_bytes: tx_bytes as u64,
                    rx_packets: peer.packets(Direction::Up),
                    tx_packets: peer.packets(Direction::Down),
                    dropped_spoofed: peer.counters.dropped_spoofed.load(Ordering::Relaxed),
                    dropped_policy: peer.counters.dropped_policy.load(Ordering::Relaxed),
                    dropped_malformed: peer.counters.dropped_malformed.load(Ordering::Relaxed),
                }
            })
            .collect();
        peers.sort_by(|a, b| (&a.user, &a.device).cmp(&(&b.user, &b.device)));
        peers
    }

    /// A datagram from the network.
    pub fn handle_datagram(
        &self,
        from: SocketAddr,
        datagram: &[u8],
        buf: &mut [u8],
        sink: &mut impl Sink,
    ) {
        let table = self.table.load();
        let (entry, kind) = match self.find_peer(&table, from, datagram, buf, sink) {
            Some(found) => found,
            None => return,
        };
        let peer = &entry.peer;
        let mut state = peer.lock();
        match peer
            .tunn(&mut state)
            .decapsulate(Some(from.ip()), datagram, buf)
        {
            TunnResult::Done => {
                if kind == Kind::Data {
                    state.endpoint = Some(from); // an authenticated keepalive
                }
            }
            TunnResult::Err(err) => {
                drop(state);
                self.count_error(&err);
                tracing::trace!(peer = %peer.label(), ?err, "datagram rejected");
            }
            TunnResult::WriteToNetwork(reply) => {
                // A handshake response (authenticated) or a cookie (not).
                if kind != Kind::Init || reply.len() != COOKIE_REPLY_LEN {
                    state.endpoint = Some(from);
                }
                sink.send_udp(reply, from);
                // Then the packets queued while the handshake was pending.
                while let TunnResult::WriteToNetwork(queued) =
                    peer.tunn(&mut state).decapsulate(None, &[], buf)
                {
                    sink.send_udp(queued, from);
                }
            }
            TunnResult::WriteToTunnelV4(inner, src) => {
                state.endpoint = Some(from);
                drop(state);
                self.deliver(&entry, inner, IpAddr::V4(src), sink);
            }
            TunnResult::WriteToTunnelV6(inner, src) => {
                state.endpoint = Some(from);
                drop(state);
                self.deliver(&entry, inner, IpAddr::V6(src), sink);
            }
        }
    }

    /// A packet the kernel routed into the TUN device: encrypt it for the
    /// one peer that owns its destination address.
    pub fn handle_tun_packet(&self, packet: &[u8], buf: &mut [u8], sink: &mut impl Sink) {
        let Some(dst) = Tunn::dst_address(packet) else {
            self.counters.tun_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let table = self.table.load();
        let Some(entry) = table.by_addr.get(&dst) else {
            self.counters.tun_no_peer.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut state = entry.peer.lock();
        let endpoint = state.endpoint;
        match entry.peer.tunn(&mut state).encapsulate(packet, buf) {
            TunnResult::WriteToNetwork(out) => match endpoint {
                Some(to) => {
                    drop(state);
                    entry.peer.count_packet(Direction::Down);
                    // The host's side of the flow the device opened: its
                    // address and port are this packet's source.
                    match packet::parse(packet) {
                        Ok(flow) => {
                            let key = FlowKey {
                                host: flow.src,
                                protocol: flow.protocol,
                                port: flow.src_port,
                            };
                            sink.send_flow_udp(out, to, key);
                            self.count_flow(&entry.peer, key, Direction::Down, flow.payload_len);
                        }
                        Err(_) => sink.send_udp(out, to),
                    }
                }
                None => {
                    self.counters
                        .tun_no_endpoint
                        .fetch_add(1, Ordering::Relaxed);
                }
            },
            TunnResult::Err(err) => {
                drop(state);
                self.count_error(&err);
            }
            TunnResult::Done
            | TunnResult::WriteToTunnelV4(..)
            | TunnResult::WriteToTunnelV6(..) => {}
        }
    }

    /// Drives every peer's timers (keepalives, rekeying, expiry) and sends
    /// the handshake that resumes a peer's tunnel after a restart. Call every
    /// ~250 ms with the time; resets the handshake rate limiter when
    /// `reset_rate_limit`.
    pub fn tick(
        &self,
        now: SystemTime,
        reset_rate_limit: bool,
        buf: &mut [u8],
        sink: &mut impl Sink,
    ) {
        self.set_clock(now);
        if reset_rate_limit {
            self.keys.rate_limiter.reset_count();
        }
        let table = self.table.load();
        let mut resume_budget = RESUMES_PER_TICK;
        for peer in table.peers() {
            let mut state = peer.lock();
            let endpoint = state.endpoint;
            // A device with a session since has resumed by itself.
            if state.resume && state.tunn().is_some_and(|t| t.stats().0.is_some()) {
                state.resume = false;
            }
            if state.resume
                && resume_budget > 0
                && self.resume_allowed.load(Ordering::Relaxed)
                && std::mem::take(&mut state.resume)
                && let Some(to) = endpoint
                // A fresh initiation even if one is under way: the resume is
                // asked for again when an answer may have been lost.
                && let TunnResult::WriteToNetwork(init) = peer
                    .tunn(&mut state)
                    .format_handshake_initiation(buf, true)
            {
                // Unanswered, boringtun's timers resend it for 90 s, then
                // give up; an answer makes a session as any handshake does.
                resume_budget -= 1;
                tracing::debug!(peer = %peer.label(), endpoint = %to, "resuming the tunnel: handshake sent");
                sink.send_udp(init, to);
                continue;
            }
            let Some(tunn) = state.tunn_mut() else {
                continue; // never heard from: no timers to run
            };
            match tunn.update_timers(buf) {
                TunnResult::WriteToNetwork(out) => {
                    if let Some(to) = endpoint {
                        sink.send_udp(out, to);
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(err) => tracing::trace!(peer = %peer.label(), ?err, "timer error"),
                _ => {}
            }
        }
    }

    /// Finds the peer a datagram belongs to. Handshake initiations pass the
    /// MAC and rate-limit check (answered with a cookie under load) before
    /// the costly key exchange identifies the sender.
    fn find_peer(
        &self,
        table: &PeerTable,
        from: SocketAddr,
        datagram: &[u8],
        buf: &mut [u8],
        sink: &mut impl Sink,
    ) -> Option<(Entry, Kind)> {
        let found = match Tunn::parse_incoming_packet(datagram) {
            Err(_) => {
                self.counters
                    .malformed_datagrams
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Ok(Packet::HandshakeInit(init)) => {
                match self
                    .keys
                    .rate_limiter
                    .verify_packet(Some(from.ip()), datagram, buf)
                {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        self.counters.cookie_replies.fetch_add(1, Ordering::Relaxed);
                        sink.send_udp(cookie, from);
                        return None;
                    }
                    Err(_) => {
                        self.counters
                            .handshake_errors
                            .fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                }
                let Ok(half) = parse_handshake_anon(&self.keys.secret, &self.public, &init) else {
                    self.counters
                        .handshake_errors
                        .fetch_add(1, Ordering::Relaxed);
                    return None;
                };
                table
                    .by_key
                    .get(&half.peer_static_public)
                    .map(|e| (e.clone(), Kind::Init))
            }
            Ok(Packet::HandshakeResponse(p)) => table
                .by_index
                .get(&(p.receiver_idx >> 8))
                .map(|e| (e.clone(), Kind::Other)),
            Ok(Packet::PacketCookieReply(p)) => table
                .by_index
                .get(&(p.receiver_idx >> 8))
                .map(|e| (e.clone(), Kind::Other)),
            Ok(Packet::PacketData(p)) => table
                .by_index
                .get(&(p.receiver_idx >> 8))
                .map(|e| (e.clone(), Kind::Data)),
        };
        if found.is_none() {
            self.counters.unknown_peer.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Enforces the policy on a decrypted packet, then hands it to the TUN.
    fn deliver(&self, entry: &Entry, inner: &[u8], src: IpAddr, sink: &mut impl Sink) {
        let peer = &entry.peer;
        if src != peer.address {
            peer.counters
                .dropped_spoofed
                .fetch_add(1, Ordering::Relaxed);
            tracing::trace!(peer = %peer.label(), %src, "spoofed source dropped");
            return;
        }
        let flow = match packet::parse(inner) {
            Ok(flow) => flow,
            Err(_) => {
                peer.counters
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        // What a port rule cannot judge is refused by it (packet.rs), and
        // source routing by everyone.
        let checked = match flow.source_routed {
            true => Err(DenyReason::SourceRouted),
            false => entry.access.check(flow.dst, flow.transport),
        };
        if let Err(reason) = checked {
            peer.record_denial(reason, flow.dst, flow.dst_port());
            tracing::trace!(peer = %peer.label(), dst = %flow.dst, %reason, "packet denied");
            return;
        }
        peer.count_packet(Direction::Up);
        sink.write_tun(inner);
        let key = FlowKey {
            host: flow.dst,
            protocol: flow.protocol,
            port: flow.dst_port(),
        };
        self.count_flow(peer, key, Direction::Up, flow.payload_len);
    }

    /// Counts an allowed packet in `peer`'s flow table, at the coarse clock.
    fn count_flow(&self, peer: &Peer, key: FlowKey, direction: Direction, bytes: usize) {
        let now = self.clock.load(Ordering::Relaxed);
        let limit = self.flows_per_device.load(Ordering::Relaxed);
        peer.count_flow(key, direction, bytes, now, limit);
    }

    fn count_error(&self, err: &WireGuardError) {
        let counter = match err {
            WireGuardError::InvalidMac
            | WireGuardError::InvalidTai64nTimestamp
            | WireGuardError::WrongTai64nTimestamp
            | WireGuardError::UnexpectedPacket
            | WireGuardError::WrongIndex
            | WireGuardError::WrongKey
            | WireGuardError::UnderLoad => &self.counters.handshake_errors,
            _ => &self.counters.decrypt_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One peer as status, metrics and `wg show` see it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub public_key: [u8; 32],
    pub user: String,
    pub device: String,
    pub address: IpAddr,
    /// What the gateway accepts from this peer: its own address only.
    pub allowed_ips: Vec<IpAddr>,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<SystemTime>,
    /// Bytes of decrypted payload received from and sent to the peer.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub dropped_spoofed: u64,
    pub dropped_policy: u64,
    pub dropped_malformed: u64,
}

/// Size of a cookie reply message.
const COOKIE_REPLY_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    Data,
    Other,
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
