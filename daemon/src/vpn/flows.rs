//! Per-device flow counters, for the `vpn.flow` audit records: a device's
//! allowed traffic counted per host, protocol and port, both ways, in a
//! table of fixed size that the monitor takes each minute. Past the table's
//! size the rest is summed in one "other" slot, so a device that sprays
//! ports costs one bounded table and one extra record.
//!
//! On the packet path a count allocates nothing (the table of an active
//! device is made by the monitor, or once by the first packet after an
//! idle minute), does no I/O and reads no clock (the engine's coarse clock
//! is passed in). The index is open-addressed at under half full, so a
//! lookup is a multiply and a probe or two, whatever the table's size.
//!
//! Does not own which packets count (the engine counts allowed ones only),
//! nor the records or when they are written ([`super::monitor`]).

use std::net::IpAddr;

/// The most slots a table has (`audit.flows_per_device`'s upper bound).
pub const MAX_FLOWS: usize = gatehouse_config::file::MAX_FLOWS_PER_DEVICE as usize;

/// One flow, as the device sees it: the host on the other side, the IP
/// protocol, and the host's port (the destination port of what the device
/// sends, the source port of what comes back): `None` for a protocol
/// without ports, or a later fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub host: IpAddr,
    pub protocol: u8,
    pub port: Option<u16>,
}

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the device to the host.
    Up,
    /// From the host to the device.
    Down,
}

/// What one flow (or the rollup) carried. Bytes are payload, above the
/// transport header (see [`super::packet::Flow::payload_len`]): what the
/// applications sent, as iperf3, curl or `ssh.session.end` count it; a
/// retransmission counts again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub packets_up: u64,
    pub packets_down: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Unix seconds of the first and the last packet.
    pub first_seen: u64,
    pub last_seen: u64,
}

/// One device's flows since the monitor last took them.
pub struct FlowTable {
    /// In the order they were first seen; never more than `limit`.
    flows: Vec<(FlowKey, FlowCounts)>,
    limit: usize,
    /// Open addressing over `flows`: a position, or [`EMPTY`]. At least
    /// twice `limit` long (a power of two), so a probe always ends.
    index: Box<[u16]>,
    /// `64 - log2(index.len())`: the hash's top bits pick the position.
    shift: u32,
    /// The flows that found the table full.
    other: FlowCounts,
}

const EMPTY: u16 = u16::MAX;

impl FlowCounts {
    /// Packets both ways.
    pub fn packets(&self) -> u64 {
        self.packets_up + self.packets_down
    }

    fn add(&mut self, direction: Direction, bytes: u64, now: u64) {
        if self.packets() == 0 {
            self.first_seen = now;
        }
        // The clock may step back; a flow's times do not.
        self.last_seen = self.last_seen.max(now);
        match direction {
            Direction::Up => {
                self.packets_up += 1;
                self.bytes_up += bytes;
            }
            Direction::Down => {
                self.packets_down += 1;
                self.bytes_down += bytes;
            }
        }
    }
}

impl FlowCounts {
    /// Adds what `other` counted: the two directions of one flow, counted
    /// apart, become one record.
    fn merge(&mut self, other: &FlowCounts) {
        if other.packets() == 0 {
            return;
        }
        self.first_seen = match self.packets() {
            0 => other.first_seen,
            _ => self.first_seen.min(other.first_seen),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
        self.packets_up += other.packets_up;
        self.packets_down += other.packets_down;
        self.bytes_up += other.bytes_up;
        self.bytes_down += other.bytes_down;
    }
}

impl FlowTable {
    /// An empty table for `limit` flows (1 to [`MAX_FLOWS`]) and the rollup.
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, MAX_FLOWS);
        let len = (limit * 2).next_power_of_two();
        Self {
            flows: Vec::with_capacity(limit),
            limit,
            index: vec![EMPTY; len].into_boxed_slice(),
            shift: 64 - len.trailing_zeros(),
            other: FlowCounts::default(),
        }
    }

    /// Counts one packet of `bytes` on `key`'s flow at `now` (unix
    /// seconds), or in the rollup when the table is full.
    pub fn count(&mut self, key: FlowKey, direction: Direction, bytes: u64, now: u64) {
        let counts = match self.slot(key) {
            Some(at) => &mut self.flows[at].1,
            None => &mut self.other,
        };
        counts.add(direction, bytes, now);
    }

    /// Adds `other`'s flows to this table's, as if its packets had been
    /// counted here after this table's: a flow this table has no room for
    /// goes to the rollup. The packet threads count each direction in a
    /// table of its own; the monitor merges them.
    pub fn merge(&mut self, other: &FlowTable) {
        for (key, counts) in &other.flows {
            match self.slot(*key) {
                Some(at) => self.flows[at].1.merge(counts),
                None => self.other.merge(counts),
            }
        }
        self.other.merge(&other.other);
    }

    /// The flows, in the order they were first seen.
    pub fn flows(&self) -> &[(FlowKey, FlowCounts)] {
        &self.flows
    }

    /// What the flows that found the table full carried, if any did.
    pub fn other(&self) -> Option<&FlowCounts> {
        (self.other.packets() > 0).then_some(&self.other)
    }

    /// How many flows the table holds before the rollup.
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.other.packets() == 0
    }

    /// The position of `key`'s flow, added if there is room.
    fn slot(&mut self, key: FlowKey) -> Option<usize> {
        let mask = self.index.len() - 1;
        // `shift` is at least 53 (the index has at most 2,048 entries), so
        // the top bits fit a usize anywhere.
        let mut at = usize::try_from(hash(&key) >> self.shift).unwrap_or(0) & mask;
        loop {
            match self.index[at] {
                EMPTY if self.flows.len() < self.limit => {
                    let next = self.flows.len();
                    // `limit` ≤ MAX_FLOWS < EMPTY.
                    self.index[at] = u16::try_from(next).unwrap_or(EMPTY);
                    self.flows.push((key, FlowCounts::default()));
                    return Some(next);
                }
                EMPTY => return None,
                taken => {
                    let position = usize::from(taken);
                    if self.flows[position].0 == key {
                        return Some(position);
                    }
                }
            }
            at = (at + 1) & mask;
        }
    }
}

/// A multiplicative (Fibonacci) hash of a flow: cheap, and spreads ports
/// and addresses that differ in their low bits over the top bits.
fn hash(key: &FlowKey) -> u64 {
    let addr = match key.host {
        IpAddr::V4(v4) => u64::from(v4.to_bits()),
        IpAddr::V6(v6) => {
            let [high, low] = split_u128(v6.to_bits());
            high ^ low.rotate_left(29)
        }
    };
    let port = key.port.map_or(0, |p| u64::from(p) | 1 << 16);
    let rest = u64::from(key.protocol) << 56 | port << 32;
    (addr ^ rest).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn split_u128(value: u128) -> [u64; 2] {
    let bytes = value.to_be_bytes();
    let half = |at: usize| {
        let mut out = [0u8; 8];
        out.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(out)
    };
    [half(0), half(8)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> FlowKey {
        FlowKey {
            host: host.parse().unwrap(),
            protocol: 6,
            port: Some(port),
        }
    }

    #[test]
    fn both_directions_of_a_flow_count_in_one_slot_with_its_times() {
        let mut table = FlowTable::new(4);
        table.count(tcp("10.0.3.140", 443), Direction::Up, 60, 100);
        table.count(tcp("10.0.3.140", 443), Direction::Down, 1500, 101);
        table.count(tcp("10.0.3.140", 443), Direction::Up, 52, 103);
        // Another port, the same port over UDP, and no port: three flows.
        table.count(tcp("10.0.3.140", 80), Direction::Up, 60, 103);
        let udp = FlowKey {
            protocol: 17,
            ..tcp("10.0.3.140", 443)
        };
        table.count(udp, Direction::Up, 80, 103);
        let ping = FlowKey {
            protocol: 1,
            port: None,
            ..tcp("10.0.3.140", 0)
        };
        table.count(ping, Direction::Up, 84, 104);
        let keys: Vec<FlowKey> = table.flows().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [tcp("10.0.3.140", 443), tcp("10.0.3.140", 80), udp, ping]
        );
        assert_eq!(
            table.flows()[0].1,
            FlowCounts {
                packets_up: 2,
                packets_down: 1,
                bytes_up: 112,
                bytes_down: 1500,
                first_seen: 100,
                last_seen: 103,
            }
        );
        assert!(table.other().is_none(), "room for all four");
    }

    #[test]
    fn flows_past_the_limit_are_summed_in_the_rollup_and_known_ones_still_count() {
        let mut table = FlowTable::new(32);
        for port in 0..10_000u16 {
            table.count(tcp("10.0.3.140", port), Direction::Up, 28, 7);
        }
        assert_eq!(table.flows().len(), 32);
        let other = table.other().unwrap();
        assert_eq!(
            (other.packets_up, other.bytes_up),
            (10_000 - 32, (10_000 - 32) * 28)
        );
        // Ports 0..32 got the slots, in order; their packets still land there.
        table.count(tcp("10.0.3.140", 5), Direction::Down, 100, 9);
        assert_eq!(table.flows()[5].0, tcp("10.0.3.140", 5));
        assert_eq!(table.flows()[5].1.bytes_down, 100);
        assert_eq!(table.other().unwrap().packets(), 10_000 - 32);
    }

    #[test]
    fn every_size_up_to_the_largest_fills_exactly_and_finds_every_flow_again() {
        for limit in [1, 2, 3, 31, 32, 33, 1000, MAX_FLOWS] {
            let mut table = FlowTable::new(limit);
            assert_eq!(table.limit(), limit);
            let v6 = |i: u16| FlowKey {
                host: format!("fd00:3::{i:x}").parse().unwrap(),
                protocol: 17,
                port: Some(53),
            };
            for i in 0..2000u16 {
                table.count(v6(i), Direction::Up, 1, 1);
            }
            for i in 0..2000u16 {
                table.count(v6(i), Direction::Down, 1, 2);
            }
            assert_eq!(table.flows().len(), limit);
            for (i, (key, counts)) in table.flows().iter().enumerate() {
                assert_eq!(*key, v6(u16::try_from(i).unwrap()));
                assert_eq!((counts.packets_up, counts.packets_down), (1, 1));
            }
            let rest = 2 * (2000 - u64::try_from(limit).unwrap());
            assert_eq!(table.other().map_or(0, FlowCounts::packets), rest);
        }
        assert_eq!(FlowTable::new(0).limit(), 1);
        assert_eq!(FlowTable::new(MAX_FLOWS + 1).limit(), MAX_FLOWS);
    }

    #[test]
    fn merged_tables_make_one_record_per_flow_and_keep_the_limit() {
        let mut up = FlowTable::new(2);
        up.count(tcp("10.0.3.140", 443), Direction::Up, 60, 100);
        up.count(tcp("10.0.3.140", 22), Direction::Up, 40, 104);
        let mut down = FlowTable::new(2);
        down.count(tcp("10.0.3.140", 443), Direction::Down, 1500, 99);
        down.count(tcp("10.0.3.140", 80), Direction::Down, 700, 101);
        down.count(tcp("10.0.3.140", 443), Direction::Down, 1500, 106);
        up.merge(&down);

        let keys: Vec<FlowKey> = up.flows().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [tcp("10.0.3.140", 443), tcp("10.0.3.140", 22)]);
        assert_eq!(
            up.flows()[0].1,
            FlowCounts {
                packets_up: 1,
                packets_down: 2,
                bytes_up: 60,
                bytes_down: 3000,
                first_seen: 99,
                last_seen: 106,
            }
        );
        // Port 80 found the table full: the rollup holds it.
        let other = up.other().expect("the rollup");
        assert_eq!((other.packets_down, other.bytes_down), (1, 700));
        assert_eq!((other.first_seen, other.last_seen), (101, 101));

        // A rollup merges into the rollup; an empty table changes nothing.
        let mut full = FlowTable::new(1);
        full.count(tcp("10.0.3.9", 1), Direction::Down, 1, 200);
        full.count(tcp("10.0.3.9", 2), Direction::Down, 1, 201);
        up.merge(&full);
        up.merge(&FlowTable::new(4));
        assert_eq!(up.other().unwrap().packets_down, 3);
        assert_eq!(up.other().unwrap().last_seen, 201);
    }

    #[test]
    fn times_never_run_backwards() {
        let mut table = FlowTable::new(1);
        table.count(tcp("10.0.3.140", 22), Direction::Up, 1, 50);
        table.count(tcp("10.0.3.140", 22), Direction::Up, 1, 40);
        let counts = table.flows()[0].1;
        assert_eq!((counts.first_seen, counts.last_seen), (50, 50));
    }
}
