//! Just enough IPv4/IPv6 header parsing for the per-packet policy: source,
//! destination, and the transport ports. Never panics, never allocates; a
//! packet it cannot read is reported as such and dropped by the caller.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the policy needs to know about one IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub protocol: u8,
    /// The destination port for TCP/UDP/SCTP first fragments; `None` for
    /// packets without ports (ICMP) and later fragments.
    pub dst_port: Option<u16>,
    /// True for a protocol that has ports whose port could not be read
    /// (a non-first fragment): the policy must not treat it like ICMP.
    pub port_unknown: bool,
}

/// Why a packet could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Empty,
    Version(u8),
    Truncated,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const UDPLITE: u8 = 136;

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
    let (dst_port, port_unknown) = ports(protocol, &p[header_len..], fragment_offset == 0);
    Ok(Flow {
        src,
        dst,
        protocol,
        dst_port,
        port_unknown,
    })
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
    // Walk the common extension headers to find the transport header.
    let mut next = p[6];
    let mut at = 40;
    let mut first_fragment = true;
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let len = usize::from(*p.get(at + 1).ok_or(Malformed::Truncated)?) * 8 + 8;
                next = p[at];
                at += len;
            }
            44 => {
                let header = p.get(at..at + 8).ok_or(Malformed::Truncated)?;
                first_fragment = u16::from_be_bytes([header[2], header[3]]) >> 3 == 0;
                next = header[0];
                at += 8;
            }
            _ => break,
        }
    }
    let rest = p.get(at..).unwrap_or_default();
    let (dst_port, port_unknown) = ports(next, rest, first_fragment);
    Ok(Flow {
        src,
        dst,
        protocol: next,
        dst_port,
        port_unknown,
    })
}

/// The destination port of a transport header, and whether a port-bearing
/// protocol's port could not be read.
fn ports(protocol: u8, transport: &[u8], first_fragment: bool) -> (Option<u16>, bool) {
    if !matches!(protocol, TCP | UDP | SCTP | UDPLITE) {
        return (None, false);
    }
    match (first_fragment, transport.get(2..4)) {
        (true, Some(port)) => (Some(u16::from_be_bytes([port[0], port[1]])), false),
        _ => (None, true),
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
        assert_eq!(
            (flow.protocol, flow.dst_port, flow.port_unknown),
            (TCP, Some(22), false)
        );
    }

    #[test]
    fn icmp_has_no_port_and_later_fragments_have_an_unknown_one() {
        let icmp = parse(&ipv4([10, 200, 0, 2], [10, 0, 3, 1], 1, 0, 0)).unwrap();
        assert_eq!((icmp.dst_port, icmp.port_unknown), (None, false));
        let mut fragment = ipv4([10, 200, 0, 2], [10, 0, 3, 1], UDP, 53, 0);
        fragment[6..8].copy_from_slice(&100u16.to_be_bytes());
        let flow = parse(&fragment).unwrap();
        assert_eq!((flow.dst_port, flow.port_unknown), (None, true));
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
        let flow = parse(&p).unwrap();
        assert_eq!((flow.protocol, flow.dst_port), (UDP, Some(443)));
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
