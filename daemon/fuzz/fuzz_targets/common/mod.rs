//! What both fuzz targets share: an engine with one configured device (a
//! fixed key pair, so a crash reproduces) and the in-memory WireGuard client
//! of that device, able to complete a real handshake with the engine.

#![allow(dead_code)] // each target uses part of it

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use accessd::vpn::engine::{Engine, Sink};
use accessd::vpn::peers::PeerSpec;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use gatehouse_config::policy::{GroupRule, Policy};

/// As large as the data plane's own buffers.
pub const BUF_SIZE: usize = 65_535 + 256;
/// The largest IP packet (and so the largest input worth feeding).
pub const MAX_PACKET: usize = 65_535;

/// Fixtures are reused across inputs: building one (keys, engine, peer) and
/// running a handshake costs a dozen X25519 operations, which under the
/// sanitizers would cap the fuzzer near 100 inputs a second. An established
/// fixture is rebuilt before its session could expire (WireGuard rejects a
/// session after 180 s), so every input meets a live session.
const ESTABLISHED_FOR: Duration = Duration::from_secs(60);

thread_local! {
    static IDLE: RefCell<[Option<Fixture>; 2]> = const { RefCell::new([None, None]) };
    static ESTABLISHED: RefCell<[Option<(Fixture, Instant)>; 2]> =
        const { RefCell::new([None, None]) };
}

/// Runs `f` on a fixture whose device never made a handshake.
pub fn with_idle(v6: bool, f: impl FnOnce(&mut Fixture)) {
    IDLE.with(|slots| {
        let mut slots = slots.borrow_mut();
        let fx = slots[usize::from(v6)].get_or_insert_with(|| Fixture::new(v6));
        f(fx);
    });
}

/// Runs `f` on a fixture whose device has a live session with the engine.
pub fn with_established(v6: bool, f: impl FnOnce(&mut Fixture)) {
    ESTABLISHED.with(|slots| {
        let mut slots = slots.borrow_mut();
        let slot = &mut slots[usize::from(v6)];
        if slot
            .as_ref()
            .is_none_or(|(_, made)| made.elapsed() > ESTABLISHED_FOR)
        {
            let mut fx = Fixture::new(v6);
            fx.handshake();
            *slot = Some((fx, Instant::now()));
        }
        if let Some((fx, _)) = slot {
            f(fx);
        }
    });
}

/// Discards everything the engine sends.
pub struct NoopSink;

impl Sink for NoopSink {
    fn send_udp(&mut self, _datagram: &[u8], _to: SocketAddr) {}
    fn write_tun(&mut self, _packet: &[u8]) {}
}

pub struct Fixture {
    pub engine: Engine,
    pub client: Tunn,
    pub client_addr: SocketAddr,
    pub buf: Vec<u8>,
    client_buf: Vec<u8>,
}

impl Fixture {
    /// `v6` puts the client behind an IPv6 endpoint.
    pub fn new(v6: bool) -> Self {
        let gateway_secret = StaticSecret::from([0x42; 32]);
        let gateway_public = PublicKey::from(&gateway_secret);
        let engine = Engine::new(gateway_secret);
        let client_secret = StaticSecret::from([0x17; 32]);
        let client_public = PublicKey::from(&client_secret);
        let policy = Self::policy();
        engine.set_peers(&[PeerSpec {
            public_key: client_public.to_bytes(),
            address: "10.200.0.2".parse().expect("addr"),
            user: "alice".into(),
            device: "laptop".into(),
            access: Arc::new(policy.access_for(&["research", "app-admins"])),
            keepalive: Some(25),
            resume_endpoint: None,
        }]);
        let client = Tunn::new(client_secret, gateway_public, None, None, 7, None);
        let client_addr = if v6 {
            "[2001:db8::2]:40000".parse().expect("addr")
        } else {
            "198.18.0.2:40000".parse().expect("addr")
        };
        Self {
            engine,
            client,
            client_addr,
            buf: vec![0; BUF_SIZE],
            client_buf: vec![0; BUF_SIZE],
        }
    }

    /// The groups the device's user is in: one without and one with ports.
    pub fn policy() -> Policy {
        Policy::new([
            (
                "research".to_string(),
                GroupRule {
                    subnets: vec!["10.0.3.0/24".parse().expect("cidr")],
                    ports: None,
                },
            ),
            (
                "app-admins".to_string(),
                GroupRule {
                    subnets: vec![
                        "10.0.2.0/24".parse().expect("cidr"),
                        "fd00:2::/64".parse().expect("cidr"),
                    ],
                    ports: Some([22, 443].into_iter().collect()),
                },
            ),
        ])
        .with_gateway_addrs(["10.200.0.1".parse().expect("addr")])
    }

    /// Runs a real handshake between the client and the engine, so that
    /// the peer has a session, an endpoint and live session indexes.
    pub fn handshake(&mut self) {
        let TunnResult::WriteToNetwork(init) = self
            .client
            .format_handshake_initiation(&mut self.client_buf, false)
        else {
            return;
        };
        let init = init.to_vec();
        let mut capture = Capture::default();
        self.engine
            .handle_datagram(self.client_addr, &init, &mut self.buf, &mut capture);
        for reply in capture.udp {
            if let TunnResult::WriteToNetwork(keepalive) =
                self.client.decapsulate(None, &reply, &mut self.client_buf)
            {
                let keepalive = keepalive.to_vec();
                self.engine.handle_datagram(
                    self.client_addr,
                    &keepalive,
                    &mut self.buf,
                    &mut NoopSink,
                );
            }
        }
    }

    /// Feeds `datagram` to the engine as if it came from the client's address.
    pub fn datagram(&mut self, datagram: &[u8]) {
        self.engine
            .handle_datagram(self.client_addr, datagram, &mut self.buf, &mut NoopSink);
    }

    /// Encrypts `packet` with the client's session and feeds the result to
    /// the engine: `packet` reaches the policy as an authentic inner packet.
    pub fn encrypted(&mut self, packet: &[u8]) {
        if let TunnResult::WriteToNetwork(datagram) =
            self.client.encapsulate(packet, &mut self.client_buf)
        {
            let datagram = datagram.to_vec();
            self.datagram(&datagram);
        }
    }

    /// Runs the engine's timers once.
    pub fn tick(&mut self) {
        self.engine
            .tick(SystemTime::now(), true, &mut self.buf, &mut NoopSink);
    }
}

/// Keeps what the engine sends to the network (handshake responses).
#[derive(Default)]
struct Capture {
    udp: Vec<Vec<u8>>,
}

impl Sink for Capture {
    fn send_udp(&mut self, datagram: &[u8], _to: SocketAddr) {
        self.udp.push(datagram.to_vec());
    }
    fn write_tun(&mut self, _packet: &[u8]) {}
}
