//! The `vpn.flow` audit records of one device's flow table: one per flow,
//! and one marked `rollup` for the flows that found the table full. The
//! details are typed ([`FlowDetail`], [`RollupDetail`]); their field names
//! are what readers query (`detail.dst`, `detail.dport`, `detail.proto` in
//! packaging/README.md's Athena and DuckDB examples), so they do not change.
//!
//! Owns the records' shape only: the counting is [`super::flows`], when a
//! table is taken and written is [`super::monitor`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::flows::{FlowCounts, FlowKey, FlowTable};
use super::peers::Peer;
use crate::audit::detail::Detail;
use crate::audit::event::{Actor, Kind, NewAuditEvent, Source, event};
use crate::time_fmt::rfc3339;

/// The target of the rollup record.
pub const ROLLUP_TARGET: &str = "other";

/// The detail of a `vpn.flow` record about one flow. "Up" is from the
/// device to the host. Bytes are payload, above the TCP/UDP/ICMP header
/// (retransmissions included); packets are whole IP packets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDetail {
    pub device: String,
    /// The host's address.
    pub dst: String,
    /// The host's port, for protocols that have ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the IP protocol number.
    pub proto: String,
    pub packets_up: u64,
    pub packets_down: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// RFC 3339, UTC, whole seconds (the data plane's clock is coarse).
    pub first_seen: String,
    pub last_seen: String,
}

impl Detail for FlowDetail {
    const KINDS: &'static [Kind] = &[Kind::VpnFlow];
}

/// The detail of the `vpn.flow` record (target `other`) that sums a
/// device's flows past `audit.flows_per_device` in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupDetail {
    pub device: String,
    /// Always true: what tells this record from a flow's.
    pub rollup: bool,
    /// The flows the device's table held; the rest are summed here.
    pub flows_per_device: usize,
    /// Packets of the flows beyond that, both ways.
    pub folded_packets: u64,
    pub packets_up: u64,
    pub packets_down: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub first_seen: String,
    pub last_seen: String,
}

impl Detail for RollupDetail {
    const KINDS: &'static [Kind] = &[Kind::VpnFlow];
}

/// The records of `table`, the flows `peer` had in one period: one per
/// flow in the order first seen, then the rollup if it was used.
pub fn flow_records(peer: &Peer, table: &FlowTable) -> Vec<NewAuditEvent> {
    let record = || {
        event(
            Kind::VpnFlow,
            Actor::User(peer.user.clone()),
            Source::Addr(peer.address),
        )
    };
    let mut records: Vec<NewAuditEvent> = table
        .flows()
        .iter()
        .map(|(key, counts)| {
            record().on(target(key)).with(&FlowDetail {
                device: peer.device.clone(),
                dst: key.host.to_string(),
                dport: key.port,
                proto: proto_name(key.protocol),
                packets_up: counts.packets_up,
                packets_down: counts.packets_down,
                bytes_up: counts.bytes_up,
                bytes_down: counts.bytes_down,
                first_seen: time(counts.first_seen),
                last_seen: time(counts.last_seen),
            })
        })
        .collect();
    if let Some(other) = table.other() {
        records.push(
            record()
                .on(ROLLUP_TARGET)
                .with(&rollup(peer, table.limit(), other)),
        );
    }
    records
}

fn rollup(peer: &Peer, limit: usize, other: &FlowCounts) -> RollupDetail {
    RollupDetail {
        device: peer.device.clone(),
        rollup: true,
        flows_per_device: limit,
        folded_packets: other.packets(),
        packets_up: other.packets_up,
        packets_down: other.packets_down,
        bytes_up: other.bytes_up,
        bytes_down: other.bytes_down,
        first_seen: time(other.first_seen),
        last_seen: time(other.last_seen),
    }
}

/// `host:port` (`[v6]:port`) for a flow with a port, else the host.
fn target(key: &FlowKey) -> String {
    match key.port {
        Some(port) => SocketAddr::new(key.host, port).to_string(),
        None => key.host.to_string(),
    }
}

/// The name readers filter on: `tcp`, `udp`, `icmp`, `icmpv6`, or the
/// protocol number.
pub fn proto_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        other => other.to_string(),
    }
}

fn time(unix: u64) -> String {
    rfc3339(i64::try_from(unix).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vpn::flows::Direction;

    #[test]
    fn targets_and_protocol_names() {
        let key = |host: &str, protocol, port| FlowKey {
            host: host.parse().unwrap(),
            protocol,
            port,
        };
        assert_eq!(target(&key("10.0.3.140", 6, Some(443))), "10.0.3.140:443");
        assert_eq!(
            target(&key("fd00:3::140", 17, Some(53))),
            "[fd00:3::140]:53"
        );
        assert_eq!(target(&key("10.0.3.140", 1, None)), "10.0.3.140");
        let names: Vec<String> = [1, 6, 17, 58, 47].map(proto_name).into();
        assert_eq!(names, ["icmp", "tcp", "udp", "icmpv6", "47"]);
    }

    #[test]
    fn a_portless_flow_has_no_dport_and_only_the_rollup_says_rollup() {
        let mut table = FlowTable::new(1);
        let ping = FlowKey {
            host: "10.0.3.140".parse().unwrap(),
            protocol: 1,
            port: None,
        };
        table.count(ping, Direction::Up, 84, 1_800_000_000);
        let to_443 = FlowKey {
            port: Some(443),
            protocol: 6,
            ..ping
        };
        table.count(to_443, Direction::Up, 60, 1_800_000_001);
        let engine =
            crate::vpn::engine::Engine::new(boringtun::x25519::StaticSecret::from([7; 32]));
        engine.set_peers(&[crate::vpn::peers::PeerSpec {
            public_key: [9; 32],
            address: "10.200.0.2".parse().unwrap(),
            user: "alice".into(),
            device: "laptop".into(),
            access: std::sync::Arc::new(
                gatehouse_config::policy::Policy::default().access_for::<&str>(&[]),
            ),
            keepalive: None,
            resume_endpoint: None,
        }]);
        let peer = engine.table().peers().next().unwrap().clone();
        let records = flow_records(&peer, &table);
        assert!(
            records
                .iter()
                .all(|r| r.actor == "alice" && r.source == "10.200.0.2")
        );
        assert_eq!(records.len(), 2);
        let flow = &records[0];
        assert_eq!(flow.target, "10.0.3.140");
        assert!(flow.detail.get("dport").is_none(), "{}", flow.detail);
        assert!(flow.detail.get("rollup").is_none(), "{}", flow.detail);
        assert_eq!(flow.detail["proto"], "icmp");
        assert_eq!(flow.detail["first_seen"], "2027-01-15T08:00:00Z");
        let rollup = &records[1];
        assert_eq!(rollup.target, "other");
        assert_eq!(rollup.detail["rollup"], true);
        assert_eq!(rollup.detail["folded_packets"], 1);
        assert_eq!(rollup.detail["flows_per_device"], 1);
        assert!(rollup.detail.get("dst").is_none(), "{}", rollup.detail);
    }
}
