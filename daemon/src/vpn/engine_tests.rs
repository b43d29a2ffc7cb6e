//! The engine wired to an in-memory stock WireGuard client (a second `Tunn`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use gatehouse_config::policy::{GroupRule, Policy};

use super::*;
use crate::vpn::packet::tests::ipv4;
use crate::vpn::peers::PeerSpec;

#[derive(Default)]
struct Capture {
    udp: Vec<(Vec<u8>, SocketAddr)>,
    /// The flow each datagram of `udp` was sent as (`None`: `send_udp`).
    flows: Vec<Option<FlowKey>>,
    tun: Vec<Vec<u8>>,
}

impl Sink for Capture {
    fn send_udp(&mut self, datagram: &[u8], to: SocketAddr) {
        self.udp.push((datagram.to_vec(), to));
        self.flows.push(None);
    }
    fn send_flow_udp(&mut self, datagram: &[u8], to: SocketAddr, flow: FlowKey) {
        self.udp.push((datagram.to_vec(), to));
        self.flows.push(Some(flow));
    }
    fn write_tun(&mut self, packet: &[u8]) {
        self.tun.push(packet.to_vec());
    }
}

struct Client {
    tunn: Tunn,
    addr: SocketAddr,
    public: [u8; 32],
}

fn policy() -> Policy {
    Policy::new([(
        "research".to_string(),
        GroupRule {
            subnets: vec!["10.0.3.0/24".parse().unwrap()],
            ports: None,
        },
    )])
    .with_gateway_addrs(["10.200.0.1".parse().unwrap()])
}

fn spec(client: &Client, address: &str) -> PeerSpec {
    PeerSpec {
        public_key: client.public,
        address: address.parse().unwrap(),
        user: "alice".into(),
        device: "laptop".into(),
        access: Arc::new(policy().access_for(&["research"])),
        keepalive: None,
        resume_endpoint: None,
    }
}

fn client(engine_public: PublicKey, port: u16, index: u32) -> Client {
    let secret = StaticSecret::random_from_rng(rand_core::OsRng);
    let public = PublicKey::from(&secret).to_bytes();
    Client {
        tunn: Tunn::new(secret, engine_public, None, None, index, None),
        addr: format!("198.18.0.2:{port}").parse().unwrap(),
        public,
    }
}

fn setup() -> (Engine, Client) {
    let secret = StaticSecret::random_from_rng(rand_core::OsRng);
    let public = PublicKey::from(&secret);
    let engine = Engine::new(secret);
    let client = client(public, 40000, 7);
    engine.set_peers(&[spec(&client, "10.200.0.2")]);
    (engine, client)
}

/// Runs the handshake; returns what the engine sent.
fn handshake(engine: &Engine, client: &mut Client) -> Capture {
    let mut buf = vec![0u8; 2048];
    let mut ebuf = vec![0u8; 2048];
    let mut sink = Capture::default();
    let TunnResult::WriteToNetwork(init) = client.tunn.format_handshake_initiation(&mut buf, false)
    else {
        panic!("no initiation");
    };
    engine.handle_datagram(client.addr, init, &mut ebuf, &mut sink);
    if let Some((response, _)) = sink.udp.first() {
        let mut out = vec![0u8; 2048];
        if let TunnResult::WriteToNetwork(keepalive) =
            client.tunn.decapsulate(None, response, &mut out)
        {
            engine.handle_datagram(client.addr, keepalive, &mut ebuf, &mut Capture::default());
        }
    }
    sink
}

/// Encrypts `packet` on the client and feeds it to the engine.
fn send(engine: &Engine, client: &mut Client, packet: &[u8]) -> Capture {
    let mut buf = vec![0u8; 4096];
    let mut ebuf = vec![0u8; 4096];
    let mut sink = Capture::default();
    let TunnResult::WriteToNetwork(datagram) = client.tunn.encapsulate(packet, &mut buf) else {
        panic!("client has no session");
    };
    engine.handle_datagram(client.addr, datagram, &mut ebuf, &mut sink);
    sink
}

#[test]
fn handshake_then_allowed_traffic_reaches_the_tun() {
    let (engine, mut client) = setup();
    let reply = handshake(&engine, &mut client);
    assert_eq!(reply.udp.len(), 1, "one handshake response");
    assert_eq!(reply.udp[0].1, client.addr);
    let packet = ipv4([10, 200, 0, 2], [10, 0, 3, 140], 6, 22, 100);
    let out = send(&engine, &mut client, &packet);
    assert_eq!(out.tun, vec![packet]);
}

#[test]
fn a_spoofed_source_is_dropped() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    let out = send(
        &engine,
        &mut client,
        &ipv4([10, 200, 0, 9], [10, 0, 3, 140], 6, 22, 0),
    );
    assert!(out.tun.is_empty());
    let peer = engine.table().by_key[&client.public].peer.clone();
    assert_eq!(peer.counters.dropped_spoofed.load(Ordering::Relaxed), 1);
}

#[test]
fn destinations_outside_the_groups_and_always_refused_ones_are_dropped_and_counted() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    for dst in [
        [10, 0, 4, 10],
        [169, 254, 169, 254],
        [10, 200, 0, 1],
        [127, 0, 0, 1],
    ] {
        let out = send(&engine, &mut client, &ipv4([10, 200, 0, 2], dst, 6, 80, 0));
        assert!(out.tun.is_empty(), "{dst:?} must be dropped");
    }
    let peer = engine.table().by_key[&client.public].peer.clone();
    let denials = peer.take_denials();
    assert_eq!(denials.total, 4);
    assert!(
        denials.samples.contains(&"10.0.4.10:80".to_string()),
        "{denials:?}"
    );
    assert!(
        denials
            .by_reason
            .iter()
            .any(|(r, n)| *r == "not_in_groups" && *n == 1),
        "{denials:?}"
    );
    assert!(
        denials.by_reason.iter().any(|(r, _)| *r == "gateway"),
        "{denials:?}"
    );
    assert_eq!(peer.take_denials().total, 0, "taken once");
}

/// A peer whose only group opens 10.0.2.0/24 on port 22.
fn setup_port_restricted() -> (Engine, Client) {
    let (engine, client) = setup();
    let restricted = Policy::new([(
        "app-admins".to_string(),
        GroupRule {
            subnets: vec!["10.0.2.0/24".parse().unwrap()],
            ports: Some([22].into()),
        },
    )]);
    let mut peer = spec(&client, "10.200.0.2");
    peer.access = Arc::new(restricted.access_for(&["app-admins"]));
    engine.set_peers(&[peer]);
    (engine, client)
}

#[test]
fn a_port_rule_refuses_every_packet_whose_port_it_cannot_tell() {
    let (engine, mut client) = setup_port_restricted();
    handshake(&engine, &mut client);
    let to = |protocol, port| ipv4([10, 200, 0, 2], [10, 0, 2, 5], protocol, port, 8);
    let with_icmp_type = |icmp_type| {
        let mut p = to(1, 0);
        p[20] = icmp_type;
        p
    };
    let later_fragment = {
        let mut p = to(17, 22);
        p[6..8].copy_from_slice(&100u16.to_be_bytes());
        p
    };
    let source_routed = {
        let mut p = to(6, 22);
        p.splice(20..20, [1, 131, 7, 4, 10, 0, 2, 9]);
        p[0] = 0x47;
        p
    };
    let passes = [
        ("tcp 22", to(6, 22)),
        ("dccp 22", to(33, 22)),
        ("ping", with_icmp_type(8)),
    ];
    for (what, packet) in passes {
        let out = send(&engine, &mut client, &packet);
        assert_eq!(out.tun, vec![packet], "{what} must pass");
    }
    let dropped = [
        ("tcp 80", to(6, 80), "port"),
        ("dccp 80", to(33, 80), "port"),
        ("icmp timestamp", with_icmp_type(13), "port_unknown"),
        ("udp later fragment", later_fragment, "port_unknown"),
        ("ipip", to(4, 22), "port_unknown"),
        ("6in4", to(41, 22), "port_unknown"),
        ("gre", to(47, 22), "port_unknown"),
        ("lsrr option", source_routed, "source_route"),
    ];
    for (what, packet, reason) in dropped {
        let out = send(&engine, &mut client, &packet);
        assert!(out.tun.is_empty(), "{what} must be dropped");
        let denials = engine.table().by_key[&client.public].peer.take_denials();
        assert_eq!(denials.by_reason, vec![(reason, 1)], "{what}");
    }
}

#[test]
fn source_routed_packets_are_dropped_for_every_group() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    let mut packet = ipv4([10, 200, 0, 2], [10, 0, 3, 140], 6, 22, 8);
    packet.splice(20..20, [1, 137, 7, 4, 10, 0, 3, 9]);
    packet[0] = 0x47;
    assert!(send(&engine, &mut client, &packet).tun.is_empty());
    let denials = engine.table().by_key[&client.public].peer.take_denials();
    assert_eq!(denials.by_reason, vec![("source_route", 1)]);
}

#[test]
fn outbound_goes_only_to_the_peer_that_owns_the_address() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    let mut buf = vec![0u8; 4096];
    let mut sink = Capture::default();
    let reply = ipv4([10, 0, 3, 140], [10, 200, 0, 2], 6, 40000, 50);
    engine.handle_tun_packet(&reply, &mut buf, &mut sink);
    assert_eq!(sink.udp.len(), 1);
    assert_eq!(sink.udp[0].1, client.addr);
    let mut out = vec![0u8; 4096];
    match client.tunn.decapsulate(None, &sink.udp[0].0, &mut out) {
        TunnResult::WriteToTunnelV4(inner, _) => assert_eq!(inner, &reply[..]),
        other => panic!("client could not decrypt: {other:?}"),
    }
    // Nobody owns 10.200.0.3: nothing is sent.
    let mut sink = Capture::default();
    engine.handle_tun_packet(
        &ipv4([10, 0, 3, 140], [10, 200, 0, 3], 6, 1, 0),
        &mut buf,
        &mut sink,
    );
    assert!(sink.udp.is_empty());
    assert_eq!(engine.counters.tun_no_peer.load(Ordering::Relaxed), 1);
}

#[test]
fn an_unknown_key_gets_no_answer() {
    let (engine, _) = setup();
    let mut stranger = client(
        PublicKey::from(&StaticSecret::random_from_rng(rand_core::OsRng)),
        40001,
        9,
    );
    // The stranger does not even know the gateway's key: the MAC fails.
    assert!(handshake(&engine, &mut stranger).udp.is_empty());
    // One that knows the gateway's key but is not a registered device.
    let gateway_public = PublicKey::from(engine.public_key());
    let mut unregistered = client(gateway_public, 40002, 10);
    assert!(handshake(&engine, &mut unregistered).udp.is_empty());
    assert_eq!(engine.counters.unknown_peer.load(Ordering::Relaxed), 1);
}

#[test]
fn removing_a_peer_cuts_it_off_and_unchanged_peers_keep_their_session() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    let packet = ipv4([10, 200, 0, 2], [10, 0, 3, 140], 17, 53, 10);
    // Re-applying the same set keeps the session: no new handshake needed.
    engine.set_peers(&[spec(&client, "10.200.0.2")]);
    assert_eq!(send(&engine, &mut client, &packet).tun.len(), 1);
    engine.set_peers(&[]);
    assert!(send(&engine, &mut client, &packet).tun.is_empty());
    assert_eq!(engine.table().len(), 0);
}

#[test]
fn a_policy_change_applies_to_the_live_session() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    let mut narrowed = spec(&client, "10.200.0.2");
    narrowed.access = Arc::new(policy().access_for::<&str>(&[]));
    engine.set_peers(&[narrowed]);
    let out = send(
        &engine,
        &mut client,
        &ipv4([10, 200, 0, 2], [10, 0, 3, 140], 6, 22, 0),
    );
    assert!(out.tun.is_empty());
}

#[test]
fn timers_run_without_a_known_endpoint() {
    let (engine, _) = setup();
    let mut buf = vec![0u8; 2048];
    let mut sink = Capture::default();
    engine.tick(SystemTime::now(), true, &mut buf, &mut sink);
    assert!(sink.udp.is_empty());
}

#[test]
fn a_resumed_peer_is_sent_one_handshake_and_its_answer_makes_a_session() {
    let secret = StaticSecret::random_from_rng(rand_core::OsRng);
    let engine = Engine::new(secret);
    let mut client = client(PublicKey::from(engine.public_key()), 40000, 7);
    engine.set_peers(&[PeerSpec {
        resume_endpoint: Some(client.addr),
        ..spec(&client, "10.200.0.2")
    }]);
    let mut buf = vec![0u8; 2048];
    let mut sink = Capture::default();
    engine.tick(SystemTime::now(), false, &mut buf, &mut sink);
    assert_eq!(sink.udp.len(), 1, "one handshake initiation");
    assert_eq!(sink.udp[0].1, client.addr);
    let mut again = Capture::default();
    engine.tick(SystemTime::now(), false, &mut buf, &mut again);
    assert!(again.udp.is_empty(), "sent once, not on every tick");

    // The device answers; the gateway confirms the session with a keepalive.
    let mut out = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(response) =
        client.tunn.decapsulate(None, &sink.udp[0].0, &mut out)
    else {
        panic!("the client did not answer the gateway's initiation");
    };
    let mut confirm = Capture::default();
    engine.handle_datagram(client.addr, response, &mut buf, &mut confirm);
    assert_eq!(confirm.udp.len(), 1, "a keepalive confirms the session");
    assert!(matches!(
        client.tunn.decapsulate(None, &confirm.udp[0].0, &mut out),
        TunnResult::Done
    ));
    // Both ways work on the new session, under the same policy.
    let packet = ipv4([10, 200, 0, 2], [10, 0, 3, 140], 6, 22, 100);
    assert_eq!(send(&engine, &mut client, &packet).tun, vec![packet]);
    let denied = ipv4([10, 200, 0, 2], [10, 0, 4, 10], 6, 22, 100);
    assert!(send(&engine, &mut client, &denied).tun.is_empty());
}

#[test]
fn a_device_that_handshakes_first_is_not_sent_a_resume_handshake() {
    let engine = Engine::new(StaticSecret::random_from_rng(rand_core::OsRng));
    let mut client = client(PublicKey::from(engine.public_key()), 40000, 7);
    engine.set_peers(&[PeerSpec {
        resume_endpoint: Some(client.addr),
        ..spec(&client, "10.200.0.2")
    }]);
    assert_eq!(handshake(&engine, &mut client).udp.len(), 1, "answered");
    let mut buf = vec![0u8; 2048];
    let mut sink = Capture::default();
    engine.tick(SystemTime::now(), false, &mut buf, &mut sink);
    assert!(sink.udp.is_empty(), "a second handshake was sent");
    let packet = ipv4([10, 200, 0, 2], [10, 0, 3, 140], 6, 22, 100);
    assert_eq!(send(&engine, &mut client, &packet).tun, vec![packet]);
}

#[test]
fn resumes_are_spread_over_ticks() {
    let engine = Engine::new(StaticSecret::random_from_rng(rand_core::OsRng));
    let gateway_public = PublicKey::from(engine.public_key());
    let count = RESUMES_PER_TICK + 3;
    let specs: Vec<PeerSpec> = (0..count)
        .map(|i| {
            let n = u16::try_from(i).unwrap();
            let device = client(gateway_public, 20000 + n, u32::from(n) + 1);
            PeerSpec {
                resume_endpoint: Some(device.addr),
                ..spec(&device, &format!("10.200.{}.{}", 1 + n / 250, 2 + n % 250))
            }
        })
        .collect();
    engine.set_peers(&specs);
    let mut buf = vec![0u8; 2048];
    let sent = |engine: &Engine, buf: &mut [u8]| {
        let mut sink = Capture::default();
        engine.tick(SystemTime::now(), false, buf, &mut sink);
        sink.udp.len()
    };
    assert_eq!(sent(&engine, &mut buf), RESUMES_PER_TICK);
    assert_eq!(sent(&engine, &mut buf), 3, "the rest on the next tick");
    assert_eq!(sent(&engine, &mut buf), 0, "each peer once");
}

proptest::proptest! {
    #[test]
    fn garbage_datagrams_and_tun_packets_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), kind in 0u8..5) {
        let (engine, _) = setup();
        let mut bytes = bytes;
        if let Some(first) = bytes.first_mut() {
            *first = kind; // steer into each message type's parser
        }
        let mut buf = vec![0u8; 4096];
        let mut sink = Capture::default();
        engine.handle_datagram("198.18.0.9:1".parse().unwrap(), &bytes, &mut buf, &mut sink);
        engine.handle_tun_packet(&bytes, &mut buf, &mut sink);
    }
}

#[test]
fn a_handshake_flood_is_answered_with_cookies_not_key_exchanges() {
    let (engine, _) = setup();
    let gateway_public = PublicKey::from(engine.public_key());
    let mut buf = vec![0u8; 2048];
    let mut ebuf = vec![0u8; 2048];
    let mut sink = Capture::default();
    // Far more initiations in one second than the rate limit allows.
    for i in 0..300u16 {
        let mut attacker = client(gateway_public, 20000 + i, u32::from(i) + 100);
        let TunnResult::WriteToNetwork(init) =
            attacker.tunn.format_handshake_initiation(&mut buf, false)
        else {
            panic!("no initiation");
        };
        engine.handle_datagram(attacker.addr, init, &mut ebuf, &mut sink);
    }
    let cookies = engine.counters.cookie_replies.load(Ordering::Relaxed);
    assert!(
        cookies >= 100,
        "under load the gateway must answer with cookies: {cookies}"
    );
    assert!(
        sink.udp.iter().all(|(d, _)| d.len() == COOKIE_REPLY_LEN),
        "only cookie replies, no handshake responses"
    );
    // Unregistered keys never cost a response, with or without load.
    assert_eq!(engine.table().len(), 1);
}

/// A packet from research's `src_port` back to the device's port 40000.
fn from_research(protocol: u8, src_port: u16, payload: usize) -> Vec<u8> {
    let mut p = ipv4([10, 0, 3, 140], [10, 200, 0, 2], protocol, 40000, payload);
    p[20..22].copy_from_slice(&src_port.to_be_bytes());
    p
}

/// The flows `client`'s peer has counted since the last take.
fn take_flows(engine: &Engine, client: &Client) -> Option<Box<crate::vpn::flows::FlowTable>> {
    engine.table().by_key[&client.public]
        .peer
        .take_flows(engine.flows_per_device())
}

#[test]
fn a_flow_is_counted_both_ways_in_one_slot_at_the_ticks_clock() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    assert!(
        take_flows(&engine, &client).is_none(),
        "a handshake is no flow"
    );
    let mut buf = vec![0u8; 2048];
    let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    engine.tick(at, false, &mut buf, &mut Capture::default());

    let request = ipv4([10, 200, 0, 2], [10, 0, 3, 140], 17, 443, 100);
    assert_eq!(send(&engine, &mut client, &request).tun.len(), 1);
    engine.tick(
        at + Duration::from_secs(2),
        false,
        &mut buf,
        &mut Capture::default(),
    );
    let mut sink = Capture::default();
    let answer = from_research(17, 443, 1000);
    engine.handle_tun_packet(&answer, &mut buf, &mut sink);
    assert_eq!(sink.udp.len(), 1, "the answer went to the device");

    let table = take_flows(&engine, &client).expect("flows were counted");
    let (key, counts) = table.flows()[0];
    assert_eq!(table.flows().len(), 1, "{:?}", table.flows());
    assert_eq!(
        key,
        crate::vpn::flows::FlowKey {
            host: "10.0.3.140".parse().unwrap(),
            protocol: 17,
            port: Some(443),
        }
    );
    // The payloads: what the applications sent, above the UDP header.
    assert_eq!((counts.packets_up, counts.bytes_up), (1, 100));
    assert_eq!((counts.packets_down, counts.bytes_down), (1, 1000));
    assert_eq!(
        (counts.first_seen, counts.last_seen),
        (1_800_000_000, 1_800_000_002)
    );
    assert!(table.other().is_none());
    assert!(take_flows(&engine, &client).is_none(), "taken once");
}

#[test]
fn denied_spoofed_and_undelivered_packets_are_not_flows() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    for packet in [
        ipv4([10, 200, 0, 2], [10, 0, 4, 10], 6, 80, 0),
        ipv4([10, 200, 0, 9], [10, 0, 3, 140], 6, 80, 0),
    ] {
        assert!(send(&engine, &mut client, &packet).tun.is_empty());
    }
    // To an address no peer owns: nothing sent, nothing counted.
    let mut buf = vec![0u8; 2048];
    let stray = ipv4([10, 0, 3, 140], [10, 200, 0, 3], 6, 40000, 0);
    engine.handle_tun_packet(&stray, &mut buf, &mut Capture::default());
    assert!(take_flows(&engine, &client).is_none());
}

#[test]
fn ten_thousand_ports_fill_the_table_and_the_rest_is_one_rollup() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    engine.set_flows_per_device(32);
    for port in 0..10_000u16 {
        let packet = ipv4([10, 200, 0, 2], [10, 0, 3, 140], 17, port, 1);
        assert_eq!(send(&engine, &mut client, &packet).tun.len(), 1);
    }
    let table = take_flows(&engine, &client).unwrap();
    assert_eq!(table.flows().len(), 32);
    let ports: Vec<Option<u16>> = table.flows().iter().map(|(k, _)| k.port).collect();
    assert_eq!(ports, (0..32).map(Some).collect::<Vec<_>>());
    let other = table.other().expect("the rollup was used");
    assert_eq!(other.packets_up, 10_000 - 32);
    assert_eq!(other.bytes_up, 10_000 - 32);

    // A smaller limit applies to the next table.
    engine.set_flows_per_device(2);
    take_flows(&engine, &client); // the fresh table, made at 32, unused: dropped
    for port in [1, 2, 3] {
        let packet = ipv4([10, 200, 0, 2], [10, 0, 3, 140], 17, port, 0);
        send(&engine, &mut client, &packet);
    }
    let table = take_flows(&engine, &client).unwrap();
    assert_eq!((table.limit(), table.flows().len()), (2, 2));
    assert_eq!(table.other().unwrap().packets_up, 1);
}

#[test]
fn pings_and_their_replies_are_one_portless_flow() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    let mut echo = ipv4([10, 200, 0, 2], [10, 0, 3, 140], 1, 0, 0);
    echo[20..22].copy_from_slice(&[8, 0]);
    send(&engine, &mut client, &echo);
    let mut reply = ipv4([10, 0, 3, 140], [10, 200, 0, 2], 1, 0, 0);
    reply[20..22].copy_from_slice(&[0, 0]);
    let mut buf = vec![0u8; 2048];
    engine.handle_tun_packet(&reply, &mut buf, &mut Capture::default());
    let table = take_flows(&engine, &client).unwrap();
    assert_eq!(table.flows().len(), 1);
    let (key, counts) = table.flows()[0];
    assert_eq!((key.protocol, key.port), (1, None));
    assert_eq!((counts.packets_up, counts.packets_down), (1, 1));
}

/// The outbound batch may send a small datagram ahead of larger ones only
/// if it is of another flow (`udp_batch`): the engine tells it which flow
/// each encrypted packet is, and one connection's segments are one flow.
#[test]
fn outbound_datagrams_carry_their_flow_so_one_connection_keeps_its_order() {
    let (engine, mut client) = setup();
    handshake(&engine, &mut client);
    let mut buf = vec![0u8; 4096];
    let mut sink = Capture::default();
    engine.handle_tun_packet(&from_research(6, 80, 1400), &mut buf, &mut sink);
    engine.handle_tun_packet(&from_research(6, 80, 60), &mut buf, &mut sink);
    let mut reply = ipv4([10, 0, 3, 140], [10, 200, 0, 2], 1, 0, 0);
    reply[20..22].copy_from_slice(&[0, 0]);
    engine.handle_tun_packet(&reply, &mut buf, &mut sink);
    // An IPv4 header length below 20 bytes: boringtun still routes it by
    // its destination, the flow parser refuses it.
    let mut odd = from_research(6, 80, 60);
    odd[0] = 0x44;
    engine.handle_tun_packet(&odd, &mut buf, &mut sink);
    let research: std::net::IpAddr = "10.0.3.140".parse().unwrap();
    let http = FlowKey {
        host: research,
        protocol: 6,
        port: Some(80),
    };
    let ping = FlowKey {
        host: research,
        protocol: 1,
        port: None,
    };
    assert_eq!(sink.flows, [Some(http), Some(http), Some(ping), None]);
}
