//! The peer table: every live device as a WireGuard peer, indexed three ways
//! (by session index, public key and VPN address) for the packet path. A
//! table is immutable; changes build a new one and swap it in atomically,
//! keeping the sessions of peers that did not change.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use boringtun::noise::Tunn;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519::{PublicKey, StaticSecret};
use gatehouse_config::policy::{AccessSet, DenyReason};
use rustc_hash::FxHashMap;

use super::flows::{Direction, FlowKey, FlowTable};

/// What the store says a peer should be.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub public_key: [u8; 32],
    pub address: IpAddr,
    pub user: String,
    pub device: String,
    pub access: Arc<AccessSet>,
    pub keepalive: Option<u16>,
    /// Where to send a handshake initiation when the peer is created: the
    /// device's last endpoint while its session may still be live on the
    /// device (after a restart of the gateway, say). The device would
    /// otherwise keep sending on keys the gateway no longer has until its
    /// rekey timeout, about 15 s.
    pub resume_endpoint: Option<SocketAddr>,
}

/// One live peer. Its noise state survives table swaps, and is created on
/// first use: a `Tunn` costs a key exchange, so loading 10,000 peers must
/// not make 10,000 of them up front.
pub struct Peer {
    pub public_key: [u8; 32],
    pub address: IpAddr,
    pub user: String,
    pub device: String,
    /// Our side's session index base (`Tunn` index; receiver indexes >> 8).
    pub index: u32,
    keepalive: Option<u16>,
    keys: Arc<EngineKeys>,
    state: Mutex<PeerState>,
    /// Drops, counted by the network thread (they are all upward).
    pub counters: PeerCounters,
    denials: Mutex<Denials>,
    /// What the device sent that was allowed, counted by the network
    /// thread only.
    up: DirectionCounts,
    /// What was sent to the device, counted by the TUN thread only.
    down: DirectionCounts,
}

/// One direction's allowed traffic: packets since the peer was made, and
/// the flows since the monitor last took them (`None` while the device is
/// idle, so idle peers carry no table). On cache lines of its own (128
/// bytes: x86 prefetches lines in pairs) so the two packet threads never
/// write the same line: a line both write goes back and forth between the
/// cores on every packet.
#[derive(Default)]
#[repr(align(128))]
struct DirectionCounts {
    packets: AtomicU64,
    flows: Mutex<Option<Box<FlowTable>>>,
}

/// The gateway's static key and the handshake rate limiter all peers share.
pub struct EngineKeys {
    pub secret: StaticSecret,
    pub rate_limiter: Arc<RateLimiter>,
}

/// The mutable half of a peer, behind one lock.
pub struct PeerState {
    /// `None` until the peer's first packet or handshake. Boxed: a `Tunn`
    /// is a few KiB, which idle peers should not carry.
    tunn: Option<Box<Tunn>>,
    /// Where the peer was last heard from, authenticated (or, until it is
    /// heard from, its stored [`PeerSpec::resume_endpoint`]).
    pub endpoint: Option<SocketAddr>,
    /// True until the handshake towards `resume_endpoint` has been sent.
    pub resume: bool,
}

/// Drop counters, updated lock-free on the packet path.
#[derive(Default)]
pub struct PeerCounters {
    pub dropped_spoofed: AtomicU64,
    pub dropped_policy: AtomicU64,
    pub dropped_malformed: AtomicU64,
}

/// Denied destinations since the last `vpn.acl.deny` audit record.
#[derive(Debug, Default, Clone)]
pub struct Denials {
    pub total: u64,
    pub by_reason: Vec<(&'static str, u64)>,
    /// A few sample destinations, `addr:port` or `addr`.
    pub samples: Vec<String>,
}

const MAX_DENY_SAMPLES: usize = 5;

/// Everything the packet path looks up. The two maps every packet reads
/// use FxHash rather than SipHash: their keys are chosen by the gateway
/// (session indexes, pool addresses), so a packet can look one up but
/// cannot choose what collides; the handshake's map by public key keeps
/// the standard hasher.
#[derive(Default)]
pub struct PeerTable {
    pub by_index: FxHashMap<u32, Entry>,
    pub by_key: HashMap<[u8; 32], Entry>,
    pub by_addr: FxHashMap<IpAddr, Entry>,
}

/// A peer with the policy that applies to it in this table.
#[derive(Clone)]
pub struct Entry {
    pub peer: Arc<Peer>,
    pub access: Arc<AccessSet>,
}

impl Peer {
    pub fn new(spec: &PeerSpec, index: u32, keys: &Arc<EngineKeys>) -> Self {
        Self {
            public_key: spec.public_key,
            address: spec.address,
            user: spec.user.clone(),
            device: spec.device.clone(),
            index,
            keepalive: spec.keepalive,
            keys: keys.clone(),
            state: Mutex::new(PeerState {
                tunn: None,
                endpoint: spec.resume_endpoint,
                resume: spec.resume_endpoint.is_some(),
            }),
            counters: PeerCounters::default(),
            denials: Mutex::new(Denials::default()),
            up: DirectionCounts::default(),
            down: DirectionCounts::default(),
        }
    }

    /// The peer's noise state, made on first use.
    pub fn tunn<'s>(&self, state: &'s mut PeerState) -> &'s mut Tunn {
        state.tunn.get_or_insert_with(|| {
            Box::new(Tunn::new(
                self.keys.secret.clone(),
                PublicKey::from(self.public_key),
                None,
                self.keepalive,
                self.index,
                Some(self.keys.rate_limiter.clone()),
            ))
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a denied packet; keeps a few samples for the audit record.
    pub fn record_denial(&self, reason: DenyReason, dst: IpAddr, port: Option<u16>) {
        self.counters.dropped_policy.fetch_add(1, Ordering::Relaxed);
        let mut denials = self.denials.lock().unwrap_or_else(PoisonError::into_inner);
        denials.total += 1;
        let label = reason.label();
        match denials.by_reason.iter_mut().find(|(r, _)| *r == label) {
            Some((_, count)) => *count += 1,
            None => denials.by_reason.push((label, 1)),
        }
        let sample = match port {
            Some(port) => SocketAddr::new(dst, port).to_string(),
            None => dst.to_string(),
        };
        if denials.samples.len() < MAX_DENY_SAMPLES && !denials.samples.contains(&sample) {
            denials.samples.push(sample);
        }
    }

    /// Takes the denials recorded since the last call.
    pub fn take_denials(&self) -> Denials {
        std::mem::take(&mut *self.denials.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Counts an allowed packet in its direction's packets.
    pub fn count_packet(&self, direction: Direction) {
        self.side(direction).packets.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an allowed packet carrying `bytes` of payload on `key`'s flow
    /// at `now` (unix seconds), in its direction's table. The first packet
    /// after an idle minute makes the table, of `limit` flows; otherwise
    /// nothing is allocated.
    pub fn count_flow(
        &self,
        key: FlowKey,
        direction: Direction,
        bytes: usize,
        now: u64,
        limit: usize,
    ) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let mut flows = self
            .side(direction)
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        flows
            .get_or_insert_with(|| Box::new(FlowTable::new(limit)))
            .count(key, direction, bytes, now);
    }

    /// Allowed packets from the device (`Up`) or to it (`Down`) since the
    /// peer was made.
    pub fn packets(&self, direction: Direction) -> u64 {
        self.side(direction).packets.load(Ordering::Relaxed)
    }

    /// Takes the flows counted since the last call, both directions in one
    /// table, if there were any. A direction that had some gets a fresh
    /// table of `limit` flows, made here rather than on its next packet; an
    /// idle one gives its table up.
    pub fn take_flows(&self, limit: usize) -> Option<Box<FlowTable>> {
        let up = Self::take_side(&self.up, limit);
        let down = Self::take_side(&self.down, limit);
        match (up, down) {
            (Some(mut up), Some(down)) => {
                up.merge(&down);
                Some(up)
            }
            (up, down) => up.or(down),
        }
    }

    fn side(&self, direction: Direction) -> &DirectionCounts {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    fn take_side(side: &DirectionCounts, limit: usize) -> Option<Box<FlowTable>> {
        let taken = side
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .filter(|table| !table.is_empty())?;
        let fresh = Box::new(FlowTable::new(limit));
        // Unless a packet made one meanwhile.
        side.flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(fresh);
        Some(taken)
    }

    /// The owning device, as `user/device`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.user, self.device)
    }
}

impl PeerState {
    /// The noise state, when the peer has been heard from or sent to.
    pub fn tunn(&self) -> Option<&Tunn> {
        self.tunn.as_deref()
    }

    pub fn tunn_mut(&mut self) -> Option<&mut Tunn> {
        self.tunn.as_deref_mut()
    }
}

impl PeerTable {
    /// Builds the table for `specs`, reusing the peers of `old` whose key and
    /// address did not change (their sessions live on). New peers get fresh
    /// indexes from `next_index`.
    pub fn rebuild(
        old: &PeerTable,
        specs: &[PeerSpec],
        mut next_index: impl FnMut(&dyn Fn(u32) -> bool) -> u32,
        keys: &Arc<EngineKeys>,
    ) -> PeerTable {
        let mut table = PeerTable::default();
        for spec in specs {
            let reused = old
                .by_key
                .get(&spec.public_key)
                .filter(|e| e.peer.address == spec.address)
                .map(|e| e.peer.clone());
            let peer = match reused {
                Some(peer) => peer,
                None => {
                    let index = next_index(&|i| {
                        old.by_index.contains_key(&i) || table.by_index.contains_key(&i)
                    });
                    Arc::new(Peer::new(spec, index, keys))
                }
            };
            let entry = Entry {
                peer,
                access: spec.access.clone(),
            };
            table.by_index.insert(entry.peer.index, entry.clone());
            table.by_addr.insert(spec.address, entry.clone());
            table.by_key.insert(spec.public_key, entry);
        }
        table
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn peers(&self) -> impl Iterator<Item = &Arc<Peer>> {
        self.by_key.values().map(|e| &e.peer)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_idle_peer_is_small() {
        // 10,000 configured peers must fit well under 150 MB: 1 KiB each
        // is 10 MB (the two directions' counts are 128-byte aligned).
        let size = std::mem::size_of::<super::Peer>();
        assert!(size <= 1024, "Peer is {size} bytes");
    }

    #[test]
    fn the_two_directions_count_on_lines_of_their_own() {
        use super::{Direction, FlowKey, Peer, PeerSpec};
        use std::sync::Arc;
        let keys = Arc::new(super::EngineKeys {
            secret: super::StaticSecret::from([7u8; 32]),
            rate_limiter: Arc::new(super::RateLimiter::new(
                &super::PublicKey::from([9u8; 32]),
                10,
            )),
        });
        let spec = PeerSpec {
            public_key: [1u8; 32],
            address: "10.200.0.2".parse().unwrap(),
            user: "ada".into(),
            device: "laptop".into(),
            access: Arc::default(),
            keepalive: None,
            resume_endpoint: None,
        };
        let peer = Peer::new(&spec, 1, &keys);
        let (up, down) = (
            &peer.up as *const _ as usize,
            &peer.down as *const _ as usize,
        );
        assert_eq!((up % 128, down % 128), (0, 0));
        assert!(up.abs_diff(down) >= 128);

        let key = FlowKey {
            host: "10.0.3.140".parse().unwrap(),
            protocol: 6,
            port: Some(22),
        };
        peer.count_packet(Direction::Up);
        peer.count_flow(key, Direction::Up, 10, 5, 8);
        peer.count_packet(Direction::Down);
        peer.count_packet(Direction::Down);
        peer.count_flow(key, Direction::Down, 20, 6, 8);
        assert_eq!(
            (peer.packets(Direction::Up), peer.packets(Direction::Down)),
            (1, 2)
        );
        let flows = peer.take_flows(8).expect("both directions' flows");
        assert_eq!(flows.flows().len(), 1, "one record for the flow");
        let counts = flows.flows()[0].1;
        assert_eq!((counts.bytes_up, counts.bytes_down), (10, 20));
        assert!(peer.take_flows(8).is_none(), "taken once");
        assert_eq!(
            peer.packets(Direction::Up),
            1,
            "packets are since the start"
        );
    }
}
