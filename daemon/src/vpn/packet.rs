//! Just enough IPv4/IPv6 header parsing for the per-packet policy: source,
//! destination, what a port rule can judge ([`Transport`]), and whether the
//! packet asks to be source-routed; and, for the flow counters, the source
//! port and the payload's size. Never panics, never allocates; a packet it
//! cannot read is reported as such and dropped by the caller.
//!
//! Fails closed: whatever it cannot tell the port of — a later fragment, a
//! protocol it does not read ports of, a tunnel, an IPv6 extension-header
//! chain longer than it walks — is [`Transport::Unknown`], which a group
//! with `ports` refuses. Only ICMP/ICMPv6 echo passes such a group without
//! a port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use gatehouse_config::policy::Transport;

/// What the policy needs to know about one IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number of the transport (6 TCP, 17 UDP, 1 ICMP, 58
    /// ICMPv6, ...); for an IPv6 chain that was not walked to its end, the
    /// last extension header seen.
    pub protocol: u8,
    pub transport: Transport,
    /// The source port, read where [`Transport::Port`] reads the
    /// destination's (the first fragment of TCP, UDP, SCTP, UDP-Lite, DCCP).
    pub src_port: Option<u16>,
    /// Bytes above the transport header: what the applications sent (TCP
    /// and UDP data, ICMP's body; for a later fragment or a protocol it
    /// does not read, everything after the IP headers).
    pub payload_len: usize,
    /// IPv4 loose/strict source-route options, or an IPv6 routing header
    /// with segments left: always refused.
    pub source_routed: bool,
}

impl Flow {
    /// The destination port, when the packet has one.
    pub fn dst_port(&self) -> Option<u16> {
        match self.transport {
            Transport::Port(port) => Some(port),
            Transport::Echo | Transport::Unknown => None,
        }
    }
}

/// Why a packet could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Empty,
    Version(u8),
    Truncated,
}

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const DCCP: u8 = 33;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;
const UDPLITE: u8 = 136;

/// IPv6 extension headers walked to find the transport header.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTS: u8 = 60;
const MOBILITY: u8 = 135;
const HIP: u8 = 139;
const SHIM6: u8 = 140;

/// At most this many IPv6 extension headers are walked; a longer chain's
/// transport is unknown.
const MAX_EXTENSION_HEADERS: usize = 8;

/// IPv4 options: end of list, no-op, loose and strict source route.
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_LSRR: u8 = 131;
const OPT_SSRR: u8 = 137;

/// Reads the flow of an IPv4 or IPv6 packet.
pub fn parse(packet: &[u8]) -> Result<Flow, Malformed> {
    let first = *packet.first().ok_or(Malformed::Empty)?;
    match first >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        version => Err(Malformed::Version(version)),
    }
}

fn parse_v4(p: &[u8]) -> Result<Flow, Malformed> {
    if p.len() < 20 {
        return Err(Malformed::Truncated);
    }
    let header_len = usize::from(p[0] & 0x0f) * 4;
    if header_len < 20 || p.len() < header_len {
        return Err(Malformed::Truncated);
    }
    let protocol = p[9];
    let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
    let fragment_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    let header = &p[header_len..];
    let first_fragment = fragment_offset == 0;
    Ok(Flow {
        src,
        dst,
        protocol,
        transport: transport(protocol, header, first_fragment),
        src_port: src_port(protocol, header, first_fragment),
        payload_len: payload_len(protocol, header, first_fragment),
        source_routed: v4_source_routed(&p[20..header_len]),
    })
}

/// True when the IPv4 options ask for source routing. Options that cannot
/// be read count as asking (fail closed).
fn v4_source_routed(mut options: &[u8]) -> bool {
    while let Some(&kind) = options.first() {
        match kind {
            OPT_END => return false,
            OPT_NOP => options = &options[1..],
            OPT_LSRR | OPT_SSRR => return true,
            _ => {
                let len = options.get(1).map_or(0, |l| usize::from(*l));
                if len < 2 || len > options.len() {
                    return true;
                }
                options = &options[len..];
            }
        }
    }
    false
}

fn parse_v6(p: &[u8]) -> Result<Flow, Malformed> {
    if p.len() < 40 {
        return Err(Malformed::Truncated);
    }
    let addr = |at: usize| -> Result<IpAddr, Malformed> {
        let bytes: [u8; 16] = p
            .get(at..at + 16)
            .and_then(|s| s.try_into().ok())
            .ok_or(Malformed::Truncated)?;
        Ok(IpAddr::V6(Ipv6Addr::from(bytes)))
    };
    let (src, dst) = (addr(8)?, addr(24)?);
    let mut next = p[6];
    let mut at = 40;
    let mut first_fragment = true;
    let mut source_routed = false;
    let mut walked_to_the_end = false;
    for _ in 0..=MAX_EXTENSION_HEADERS {
        match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS | MOBILITY | HIP | SHIM6 => {
                let header = p.get(at..at + 8).ok_or(Malformed::Truncated)?;
                if next == ROUTING && header[3] > 0 {
                    source_routed = true;
                }
                next = header[0];
                at += usize::from(header[1]) * 8 + 8;
            }
            AUTH => {
                let header = p.get(at..at + 8).ok_or(Malformed::Truncated)?;
                next = header[0];
                at += (usize::from(header[1]) + 2) * 4;
            }
            FRAGMENT => {
                let header = p.get(at..at + 8).ok_or(Malformed::Truncated)?;
                first_fragment &= u16::from_be_bytes([header[2], header[3]]) >> 3 == 0;
                next = header[0];
                at += 8;
            }
            _ => {
                walked_to_the_end = true;
                break;
            }
        }
    }
    let rest = p.get(at..).unwrap_or_default();
    let (transport, src_port, payload_len) = match walked_to_the_end {
        true => (
            transport(next, rest, first_fragment),
            src_port(next, rest, first_fragment),
            payload_len(next, rest, first_fragment),
        ),
        false => (Transport::Unknown, None, rest.len()),
    };
    Ok(Flow {
        src,
        dst,
        protocol: next,
        transport,
        src_port,
        payload_len,
        source_routed,
    })
}

/// The source port of a transport header that has ports.
fn src_port(protocol: u8, header: &[u8], first_fragment: bool) -> Option<u16> {
    match (protocol, first_fragment) {
        (TCP | UDP | SCTP | UDPLITE | DCCP, true) => header
            .get(0..2)
            .map(|port| u16::from_be_bytes([port[0], port[1]])),
        _ => None,
    }
}

/// The bytes of `header` (all after the IP headers) past the transport
/// header: TCP's by its data offset (at least 20), DCCP's by its own, 8 for
/// UDP, UDP-Lite and ICMP, 12 for SCTP's common header.
fn payload_len(protocol: u8, header: &[u8], first_fragment: bool) -> usize {
    let transport_header = match (protocol, first_fragment) {
        (_, false) => 0,
        (TCP, true) => header
            .get(12)
            .map_or(20, |b| usize::from(b >> 4) * 4)
            .max(20),
        (DCCP, true) => header.get(4).map_or(12, |b| usize::from(*b) * 4).max(12),
        (UDP | UDPLITE | ICMP | ICMPV6, true) => 8,
        (SCTP, true) => 12,
        _ => 0,
    };
    header.len().saturating_sub(transport_header)
}

/// What a port rule can judge of a transport header.
fn transport(protocol: u8, header: &[u8], first_fragment: bool) -> Transport {
    if !first_fragment {
        return Transport::Unknown;
    }
    match protocol {
        TCP | UDP | SCTP | UDPLITE | DCCP => match header.get(2..4) {
            Some(port) => Transport::Port(u16::from_be_bytes([port[0], port[1]])),
            None => Transport::Unknown,
        },
        // Echo request and reply.
        ICMP if matches!(header.first(), Some(8 | 0)) => Transport::Echo,
        ICMPV6 if matches!(header.first(), Some(128 | 129)) => Transport::Echo,
        _ => Transport::Unknown,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal IPv4 packet with a TCP/UDP header stub.
    pub(crate) fn ipv4(
        src: [u8; 4],
        dst: [u8; 4],
        protocol: u8,
        dst_port: u16,
        payload: usize,
    ) -> Vec<u8> {
        let total = 20 + 8 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&dst_port.to_be_bytes());
        let checksum = ipv4_checksum(&p[..20]);
        p[10..12].copy_from_slice(&checksum.to_be_bytes());
        p
    }

    fn ipv4_checksum(header: &[u8]) -> u16 {
        let mut sum: u32 = header
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !u16::try_from(sum).unwrap()
    }

    #[test]
    fn reads_ipv4_tcp() {
        let flow = parse(&ipv4([10, 200, 0, 2], [10, 0, 3, 140], TCP, 22, 0)).unwrap();
        assert_eq!(flow.src, IpAddr::from([10, 200, 0, 2]));
        assert_eq!(flow.dst, IpAddr::from([10, 0, 3, 140]));
        assert_eq!((flow.protocol, flow.transport), (TCP, Transport::Port(22)));
        assert_eq!(flow.src_port, Some(40000));
        assert!(!flow.source_routed);
    }

    #[test]
    fn the_payload_is_what_follows_the_transport_header() {
        let udp = parse(&ipv4([10, 200, 0, 2], [10, 0, 3, 140], UDP, 53, 100)).unwrap();
        assert_eq!(udp.payload_len, 100);
        // TCP with 12 bytes of options (data offset 8 words), then 1,368 bytes.
        let mut tcp = ipv4([10, 200, 0, 2], [10, 0, 3, 140], TCP, 443, 12 + 12 + 1368);
        tcp[20 + 12] = 8 << 4;
        assert_eq!(parse(&tcp).unwrap().payload_len, 1368);
        // A bare ACK carries nothing; a header too short to read, nothing.
        let mut ack = ipv4([10, 200, 0, 2], [10, 0, 3, 140], TCP, 443, 12);
        ack[20 + 12] = 5 << 4;
        assert_eq!(parse(&ack).unwrap().payload_len, 0);
        let mut short = ipv4([10, 200, 0, 2], [10, 0, 3, 140], TCP, 443, 0);
        short.truncate(24);
        assert_eq!(parse(&short).unwrap().payload_len, 0);
        // A ping's data; a later fragment's and GRE's whole IP payload.
        assert_eq!(parse(&icmp(8)).unwrap().payload_len, 0);
        let mut fragment = ipv4([10, 200, 0, 2], [10, 0, 3, 140], UDP, 53, 100);
        fragment[6..8].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(parse(&fragment).unwrap().payload_len, 108);
        let gre = parse(&ipv4([10, 200, 0, 2], [10, 0, 3, 140], 47, 0, 10)).unwrap();
        assert_eq!(gre.payload_len, 18);
    }

    /// An ICMP packet of `icmp_type` (its header stub starts at byte 20).
    pub(crate) fn icmp(icmp_type: u8) -> Vec<u8> {
        let mut p = ipv4([10, 200, 0, 2], [10, 0, 3, 1], ICMP, 0, 0);
        p[20] = icmp_type;
        p
    }

    #[test]
    fn only_icmp_echo_is_portless_and_later_fragments_have_an_unknown_port() {
        assert_eq!(parse(&icmp(8)).unwrap().transport, Transport::Echo);
        assert_eq!(parse(&icmp(0)).unwrap().transport, Transport::Echo);
        // Timestamp, redirect, unreachable: no port, and not echo.
        for other in [13, 5, 3] {
            assert_eq!(parse(&icmp(other)).unwrap().transport, Transport::Unknown);
        }
        let mut fragment = ipv4([10, 200, 0, 2], [10, 0, 3, 1], UDP, 53, 0);
        fragment[6..8].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(parse(&fragment).unwrap().transport, Transport::Unknown);
        assert_eq!(
            parse(&fragment).unwrap().src_port,
            None,
            "no port either way"
        );
        assert_eq!(parse(&icmp(8)).unwrap().src_port, None);
        // A later ICMP fragment is not echo either.
        let mut later = icmp(8);
        later[6..8].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(parse(&later).unwrap().transport, Transport::Unknown);
    }

    #[test]
    fn protocols_without_a_port_it_reads_and_tunnels_are_unknown_dccp_has_a_port() {
        // DCCP carries ports where TCP does.
        let dccp = parse(&ipv4([10, 200, 0, 2], [10, 0, 3, 1], DCCP, 5432, 0)).unwrap();
        assert_eq!(dccp.transport, Transport::Port(5432));
        // IPIP (4), 6in4 (41), GRE (47), ESP (50), OSPF (89): unknown.
        for protocol in [4, 41, 47, 50, 89] {
            let flow = parse(&ipv4([10, 200, 0, 2], [10, 0, 3, 1], protocol, 22, 0)).unwrap();
            assert_eq!(flow.transport, Transport::Unknown, "protocol {protocol}");
        }
        // A truncated TCP header has no port to read.
        let mut short = ipv4([10, 200, 0, 2], [10, 0, 3, 1], TCP, 22, 0);
        short.truncate(22);
        assert_eq!(parse(&short).unwrap().transport, Transport::Unknown);
    }

    #[test]
    fn ipv4_source_route_options_are_flagged() {
        for option in [OPT_LSRR, OPT_SSRR] {
            let mut p = ipv4([10, 200, 0, 2], [10, 0, 3, 1], TCP, 22, 8);
            // Grow the header by 8 bytes of options: NOP, then the route.
            p.splice(20..20, [OPT_NOP, option, 7, 4, 10, 0, 3, 9]);
            p[0] = 0x47;
            let flow = parse(&p).unwrap();
            assert!(flow.source_routed, "option {option}");
            assert_eq!(flow.transport, Transport::Port(22));
        }
        let mut plain = ipv4([10, 200, 0, 2], [10, 0, 3, 1], TCP, 22, 4);
        plain.splice(20..20, [OPT_NOP, OPT_NOP, OPT_NOP, OPT_END]);
        plain[0] = 0x46;
        assert!(!parse(&plain).unwrap().source_routed);
    }

    /// An IPv6 packet to fd00:3::140: `chain` extension headers (each
    /// `(kind, body)`, its next-header byte filled in), then `last` with an
    /// 8-byte transport stub whose destination port is 443.
    fn ipv6(chain: &[(u8, [u8; 8])], last: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[8..24].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00:3::140".parse::<Ipv6Addr>().unwrap().octets());
        let kinds: Vec<u8> = chain.iter().map(|(k, _)| *k).chain([last]).collect();
        p[6] = kinds[0];
        for (i, (_, body)) in chain.iter().enumerate() {
            let mut header = *body;
            header[0] = kinds[i + 1];
            p.extend_from_slice(&header);
        }
        let mut stub = [0u8; 8];
        stub[2..4].copy_from_slice(&443u16.to_be_bytes());
        p.extend_from_slice(&stub);
        p
    }

    #[test]
    fn ipv6_chains_are_walked_and_a_chain_too_long_is_unknown() {
        let opts = [0u8; 8];
        let flow = parse(&ipv6(&[(HOP_BY_HOP, opts), (DEST_OPTS, opts)], UDP)).unwrap();
        assert_eq!(flow.transport, Transport::Port(443));
        let long: Vec<(u8, [u8; 8])> = (0..=MAX_EXTENSION_HEADERS)
            .map(|_| (DEST_OPTS, opts))
            .collect();
        let flow = parse(&ipv6(&long, TCP)).unwrap();
        assert_eq!(flow.transport, Transport::Unknown, "longer than the walk");
        // AH counts its length in 4-byte units, minus 2: a 1 here is 12 bytes.
        let mut ah = ipv6(&[(AUTH, [0, 1, 0, 0, 0, 0, 0, 0])], TCP);
        ah.splice(48..48, [0u8; 4]);
        assert_eq!(parse(&ah).unwrap().transport, Transport::Port(443));
        // A later fragment, and a tunnel (IPv6 in IPv6, 41).
        let later = ipv6(&[(FRAGMENT, [0, 0, 0, 8, 0, 0, 0, 1])], UDP);
        assert_eq!(parse(&later).unwrap().transport, Transport::Unknown);
        assert_eq!(parse(&ipv6(&[], 41)).unwrap().transport, Transport::Unknown);
        // ICMPv6 echo request has no port and passes as echo.
        let mut echo = ipv6(&[], ICMPV6);
        echo[40] = 128;
        assert_eq!(parse(&echo).unwrap().transport, Transport::Echo);
    }

    #[test]
    fn ipv6_routing_headers_with_segments_left_are_flagged() {
        let left = parse(&ipv6(&[(ROUTING, [0, 0, 4, 1, 0, 0, 0, 0])], TCP)).unwrap();
        assert!(left.source_routed);
        let done = parse(&ipv6(&[(ROUTING, [0, 0, 4, 0, 0, 0, 0, 0])], TCP)).unwrap();
        assert!(!done.source_routed, "no segments left: nothing to route");
    }

    #[test]
    fn reads_ipv6_udp_through_an_extension_header() {
        let mut p = vec![0u8; 40 + 8 + 8];
        p[0] = 0x60;
        p[6] = 0; // hop-by-hop
        p[8..24].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00:3::140".parse::<Ipv6Addr>().unwrap().octets());
        p[40] = UDP; // next header after hop-by-hop
        p[41] = 0; // 8 bytes
        p[48 + 2..48 + 4].copy_from_slice(&443u16.to_be_bytes());
        p[48..48 + 2].copy_from_slice(&5353u16.to_be_bytes());
        let flow = parse(&p).unwrap();
        assert_eq!((flow.protocol, flow.transport), (UDP, Transport::Port(443)));
        assert_eq!(flow.src_port, Some(5353));
        assert_eq!(flow.payload_len, 0, "a UDP header alone");
        assert_eq!(flow.dst, "fd00:3::140".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_is_reported_not_panicked_on() {
        assert_eq!(parse(&[]), Err(Malformed::Empty));
        assert_eq!(parse(&[0x45; 10]), Err(Malformed::Truncated));
        assert_eq!(parse(&[0x4f; 40]), Err(Malformed::Truncated));
        assert_eq!(parse(&[0x20; 40]), Err(Malformed::Version(2)));
        assert!(parse(&[0x60; 39]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = parse(&bytes);
        }
    }
}
