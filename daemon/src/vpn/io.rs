//! The data plane's I/O: the TUN device (created with tun-rs, configured
//! through netlink), the UDP socket, and the threads that move packets
//! between them through the [`Engine`]. Packet I/O runs on two dedicated
//! threads — one per direction, so both cores work — rather than on the
//! async runtime: a packet path of plain syscalls has no wakeups and no
//! allocation per packet.
//!
//! Both directions work in batches, which is where most of the speed comes
//! from: the network side receives many datagrams per syscall (`recvmmsg`
//! with UDP GRO, through quinn-udp) and sends runs of datagrams to one peer
//! in one `sendmsg` (UDP GSO, see [`super::udp_batch`]); the TUN side uses
//! the kernel's virtio-net offloads (tun-rs): decrypted TCP segments are
//! coalesced (GRO) into one large write, and a large TCP send from the VPC
//! side arrives as one read that tun-rs splits into segments. Each thread
//! reads until its device is drained before it writes what it gathered and
//! waits, so a busy path makes no poll per packet.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use quinn_udp::{RecvMeta, UdpSocketState};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tun_rs::{
    DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, InterruptEvent, SyncDevice, VIRTIO_NET_HDR_LEN,
};

use super::engine::{Engine, Sink};
use super::flows::FlowKey;
use super::udp_batch::{Transmitter, UdpBatch};

/// Largest packet handled; buffers have room for WireGuard's overhead too.
const BUF_SIZE: usize = 65_535 + 256;
/// Headroom tun-rs needs in front of each packet for the virtio-net header.
const TUN_OFFSET: usize = VIRTIO_NET_HDR_LEN;
/// Datagram buffers per receive call (quinn-udp's own batch size on Linux).
const UDP_BATCH: usize = 32;
/// How often blocking reads wake up to check for shutdown.
const POLL: Duration = Duration::from_millis(250);
/// Timer granularity (boringtun's own device uses 250 ms).
const TIMER_TICK: Duration = Duration::from_millis(250);
/// The UDP socket's receive and send buffers, as wireguard-go sizes its
/// own (7 MiB). Measured with tests/bench/vpn-bench.sh (one 10 s upload
/// each, GW_BUF): with the kernel's default of 208 KiB the gateway's socket
/// dropped 209,000 datagrams, a fifth of what the device sent, while
/// accessd used under half a core: the packet thread was waiting for a core
/// while a burst arrived, not too slow. 1 MiB still dropped 120,000, 2 MiB
/// 29,000, 4 MiB 70 and 7 MiB none, and the upload went from 1.24 to 1.67
/// Gbit/s at 0.92× the CPU per GiB; a ping's p99 under that load went from
/// 5.1 to 10.3 ms (a datagram waits behind at most the buffer, some 25 ms
/// at 2 Gbit/s, where it would have been lost).
const UDP_BUFFER_BYTES: usize = 7 << 20;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error(
        "cannot create the TUN interface {name}: {source} (accessd needs CAP_NET_ADMIN and /dev/net/tun)"
    )]
    CreateTun { name: String, source: io::Error },
    #[error("cannot configure the TUN interface {name} through netlink: {message}")]
    Netlink { name: String, message: String },
    #[error("cannot bind the WireGuard UDP socket {addr}: {source}")]
    BindUdp { addr: SocketAddr, source: io::Error },
    #[error("cannot enable IP forwarding ({path}): {source}")]
    Forwarding {
        path: &'static str,
        source: io::Error,
    },
}

/// The opened devices, ready for [`spawn_packet_threads`].
pub struct Devices {
    pub tun: Arc<SyncDevice>,
    pub udp: Arc<UdpSocket>,
    udp_state: Arc<UdpSocketState>,
    interrupt: Arc<InterruptEvent>,
}

/// Creates the TUN interface with the gateway's tunnel address (the pool's
/// first host, so the pool route comes with it), and binds the UDP socket.
pub async fn open(
    interface: &str,
    address: IpAddr,
    pool: IpNet,
    mtu: u16,
    listen: SocketAddr,
) -> Result<Devices, IoError> {
    let tun_error = |source| IoError::CreateTun {
        name: interface.to_string(),
        source,
    };
    let tun = DeviceBuilder::new()
        .name(interface)
        .mtu(mtu)
        .offload(true)
        .build_sync()
        .map_err(tun_error)?;
    // The TUN's transmit queue keeps the kernel's 500 packets: with the
    // offloads each can be a 64 KB run of segments, and vpn-bench counted
    // no drop there in either direction (where boringtun-cli's TUN, which
    // reads one packet per call, dropped 29,612 in a 10 s download).
    let index = tun.if_index().map_err(tun_error)?;
    configure_link(interface, index, address, pool.prefix_len(), mtu).await?;
    let udp_error = |source| IoError::BindUdp {
        addr: listen,
        source,
    };
    let udp = UdpSocket::bind(listen).map_err(udp_error)?;
    udp.set_nonblocking(true).map_err(udp_error)?;
    size_buffers(&udp, UDP_BUFFER_BYTES);
    let udp_state = UdpSocketState::new((&udp).into()).map_err(udp_error)?;
    // Read until drained, then wait (see `tun_to_network`). A TUN write
    // is not made to wait either: the kernel takes the packet or drops it.
    tun.set_nonblocking(true).map_err(tun_error)?;
    let interrupt = InterruptEvent::new().map_err(tun_error)?;
    tracing::debug!(
        tcp_gso = tun.tcp_gso(),
        udp_gro_segments = udp_state.gro_segments(),
        udp_gso_segments = udp_state.max_gso_segments(),
        "packet offloads"
    );
    Ok(Devices {
        tun: Arc::new(tun),
        udp: Arc::new(udp),
        udp_state: Arc::new(udp_state),
        interrupt: Arc::new(interrupt),
    })
}

/// Asks for `bytes` of receive and send buffer: past `net.core.rmem_max`
/// and `wmem_max` with CAP_NET_ADMIN (which accessd has for the TUN
/// device), else up to them. A smaller buffer than asked for is said once:
/// the gateway works, and drops more under bursts.
fn size_buffers(udp: &UdpSocket, bytes: usize) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(udp, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(udp, sockopt::RcvBuf, &bytes);
    }
    if setsockopt(udp, sockopt::SndBufForce, &bytes).is_err() {
        let _ = setsockopt(udp, sockopt::SndBuf, &bytes);
    }
    // The kernel reports twice what was set (its bookkeeping overhead).
    let receive = getsockopt(udp, sockopt::RcvBuf).unwrap_or(0) / 2;
    let send = getsockopt(udp, sockopt::SndBuf).unwrap_or(0) / 2;
    if receive < bytes || send < bytes {
        tracing::info!(
            asked = bytes,
            receive,
            send,
            "the WireGuard socket's buffers are smaller than asked for (no CAP_NET_ADMIN, and \
             net.core.rmem_max or wmem_max is lower): bursts may drop datagrams"
        );
    } else {
        tracing::debug!(receive, send, "WireGuard socket buffers");
    }
}

/// Turns on forwarding for the pool's address family when it is off, and
/// says so: the gateway routes between the tunnel and the VPC.
pub fn enable_forwarding(pool: &IpNet) -> Result<(), IoError> {
    let path = match pool {
        IpNet::V4(_) => "/proc/sys/net/ipv4/ip_forward",
        IpNet::V6(_) => "/proc/sys/net/ipv6/conf/all/forwarding",
    };
    let current =
        std::fs::read_to_string(path).map_err(|source| IoError::Forwarding { path, source })?;
    if current.trim() != "1" {
        std::fs::write(path, "1\n").map_err(|source| IoError::Forwarding { path, source })?;
        tracing::info!(path, "turned on IP forwarding for the VPN pool");
    }
    Ok(())
}

/// Starts the two packet threads and the timer task; all stop on `shutdown`.
pub fn spawn_packet_threads(
    devices: Devices,
    engine: Arc<Engine>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let Devices {
        tun,
        udp,
        udp_state,
        interrupt,
    } = devices;

    // network → engine → TUN
    {
        let (tun, udp, udp_state, engine, shutdown) = (
            tun.clone(),
            udp.clone(),
            udp_state.clone(),
            engine.clone(),
            shutdown.clone(),
        );
        tracker.spawn_blocking(move || network_to_tun(&tun, &udp, &udp_state, &engine, &shutdown));
    }

    // TUN → engine → network
    {
        let (tun, udp, udp_state, engine, shutdown, interrupt) = (
            tun.clone(),
            udp.clone(),
            udp_state.clone(),
            engine.clone(),
            shutdown.clone(),
            interrupt.clone(),
        );
        tracker.spawn_blocking(move || {
            tun_to_network(&tun, &udp, &udp_state, &engine, &shutdown, &interrupt);
        });
    }

    // Timers: keepalives, rekeying, session expiry, rate limiter reset.
    tracker.spawn(async move {
        let mut interval = tokio::time::interval(TIMER_TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_reset = Instant::now();
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let reset = last_reset.elapsed() >= Duration::from_secs(1);
            if reset {
                last_reset = Instant::now();
            }
            engine.tick(
                SystemTime::now(),
                reset,
                &mut buf,
                &mut UdpOnlySink { udp: &udp },
            );
        }
        // Wake the TUN reader so it sees the shutdown at once.
        let _ = interrupt.trigger();
    });
}

/// Receives datagrams in batches, decrypts them, and writes what passes the
/// policy to the TUN device in one coalescing batch write.
fn network_to_tun(
    tun: &SyncDevice,
    udp: &UdpSocket,
    state: &UdpSocketState,
    engine: &Engine,
    shutdown: &CancellationToken,
) {
    let mut storage: Vec<Vec<u8>> = (0..UDP_BATCH).map(|_| vec![0u8; BUF_SIZE]).collect();
    let mut slices: Vec<IoSliceMut<'_>> = storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
    let mut metas = vec![RecvMeta::default(); UDP_BATCH];
    let mut scratch = vec![0u8; BUF_SIZE];
    let mut sink = TunBatchSink::new(tun, udp);
    while !shutdown.is_cancelled() {
        // Read first and wait only when nothing is there: under load every
        // call finds a batch, and the poll syscall is saved.
        let count = match state.recv(udp.into(), &mut slices, &mut metas) {
            Ok(count) => count,
            Err(err) if is_timeout(&err) => {
                // Drained: write what was decrypted (coalesced), then wait.
                sink.flush();
                wait_readable(udp, POLL);
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "UDP receive failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        for (meta, slice) in metas.iter().zip(slices.iter()).take(count) {
            let stride = meta.stride.max(1);
            for datagram in slice[..meta.len].chunks(stride) {
                engine.handle_datagram(meta.addr, datagram, &mut scratch, &mut sink);
            }
        }
    }
    sink.flush();
}

/// Reads from the TUN device (one read may carry a large TCP send, split
/// into segments here), encrypts each packet for its peer, and sends the
/// datagrams in GSO runs. The device is non-blocking: it is read until it
/// is drained, and only then are the runs sent and the thread waits, so
/// queued packets (a download's segments, a burst of ACKs) cost neither a
/// poll nor a send each.
fn tun_to_network(
    tun: &SyncDevice,
    udp: &UdpSocket,
    state: &UdpSocketState,
    engine: &Engine,
    shutdown: &CancellationToken,
    interrupt: &InterruptEvent,
) {
    let mut original = vec![0u8; TUN_OFFSET + 65_535];
    let mut segments: Vec<Vec<u8>> = (0..IDEAL_BATCH_SIZE)
        .map(|_| vec![0u8; TUN_OFFSET + 65_535])
        .collect();
    let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
    let mut scratch = vec![0u8; BUF_SIZE];
    let mut sink = UdpBatchSink {
        batch: UdpBatch::new(),
        out: SocketTransmitter { udp, state },
    };
    while !shutdown.is_cancelled() {
        match tun.recv_multiple(&mut original, &mut segments, &mut sizes, TUN_OFFSET) {
            Ok(count) => {
                for (segment, size) in segments.iter().zip(&sizes).take(count) {
                    engine.handle_tun_packet(
                        &segment[TUN_OFFSET..TUN_OFFSET + size],
                        &mut scratch,
                        &mut sink,
                    );
                }
            }
            Err(err) if is_timeout(&err) => {
                sink.flush();
                // Readable, interrupted at shutdown, or the poll interval.
                let _ = tun.wait_readable_intr_timeout(interrupt, Some(POLL));
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                sink.flush();
                tracing::warn!(error = %err, "TUN read failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    sink.flush();
}

/// Collects decrypted packets for one batch write to the TUN device (with
/// GRO coalescing); sends handshake replies at once.
struct TunBatchSink<'a> {
    tun: &'a SyncDevice,
    udp: &'a UdpSocket,
    packets: Vec<Vec<u8>>,
    used: usize,
    gro: GROTable,
}

impl<'a> TunBatchSink<'a> {
    fn new(tun: &'a SyncDevice, udp: &'a UdpSocket) -> Self {
        Self {
            tun,
            udp,
            packets: (0..IDEAL_BATCH_SIZE)
                .map(|_| Vec::with_capacity(TUN_OFFSET + 65_535))
                .collect(),
            used: 0,
            gro: GROTable::default(),
        }
    }

    fn flush(&mut self) {
        if self.used == 0 {
            return;
        }
        if let Err(err) =
            self.tun
                .send_multiple(&mut self.gro, &mut self.packets[..self.used], TUN_OFFSET)
        {
            tracing::trace!(error = %err, "TUN write failed");
        }
        self.used = 0;
    }
}

impl Sink for TunBatchSink<'_> {
    fn send_udp(&mut self, datagram: &[u8], to: SocketAddr) {
        send_datagram(self.udp, datagram, to);
    }

    fn write_tun(&mut self, packet: &[u8]) {
        if self.used == self.packets.len() {
            self.flush();
        }
        let slot = &mut self.packets[self.used];
        slot.clear();
        slot.resize(TUN_OFFSET, 0);
        slot.extend_from_slice(packet);
        self.used += 1;
    }
}

/// For paths that only send datagrams (TUN reads, timers).
struct UdpOnlySink<'a> {
    udp: &'a UdpSocket,
}

impl Sink for UdpOnlySink<'_> {
    fn send_udp(&mut self, datagram: &[u8], to: SocketAddr) {
        send_datagram(self.udp, datagram, to);
    }

    fn write_tun(&mut self, _packet: &[u8]) {
        // Encapsulation and timers never produce packets for the tunnel.
        tracing::trace!("unexpected TUN write from the outbound path dropped");
    }
}

/// The outbound path's sink: encrypted datagrams are coalesced into GSO
/// runs, sent when the TUN read's packets are all handled.
struct UdpBatchSink<'a> {
    batch: UdpBatch,
    out: SocketTransmitter<'a>,
}

impl UdpBatchSink<'_> {
    fn flush(&mut self) {
        self.batch.flush(&mut self.out);
    }
}

impl Sink for UdpBatchSink<'_> {
    fn send_udp(&mut self, datagram: &[u8], to: SocketAddr) {
        self.batch.push(datagram, to, None, &mut self.out);
    }

    fn send_flow_udp(&mut self, datagram: &[u8], to: SocketAddr, flow: FlowKey) {
        self.batch.push(datagram, to, Some(flow), &mut self.out);
    }

    fn write_tun(&mut self, _packet: &[u8]) {
        tracing::trace!("unexpected TUN write from the outbound path dropped");
    }
}

/// Sends a [`UdpBatch`] run with one `sendmsg` (quinn-udp sets
/// `UDP_SEGMENT`), waiting briefly for room when the socket buffer is full.
struct SocketTransmitter<'a> {
    udp: &'a UdpSocket,
    state: &'a UdpSocketState,
}

impl Transmitter for SocketTransmitter<'_> {
    fn transmit(
        &mut self,
        destination: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        send_when_room(self.udp, || self.state.try_send(self.udp.into(), &transmit))
    }

    fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }
}

/// Sends one datagram (handshake replies, timers); a failure is traced.
fn send_datagram(udp: &UdpSocket, datagram: &[u8], to: SocketAddr) {
    if let Err(err) = send_when_room(udp, || udp.send_to(datagram, to).map(drop)) {
        tracing::trace!(error = %err, "UDP send failed");
    }
}

/// Runs `send` on the non-blocking socket, waiting briefly for room when
/// the socket buffer is full (three tries) rather than dropping at once.
fn send_when_room(udp: &UdpSocket, mut send: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    let mut result = send();
    for _ in 0..2 {
        match &result {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                wait_writable(udp, Duration::from_millis(20));
                result = send();
            }
            _ => break,
        }
    }
    result
}

fn wait_readable(udp: &UdpSocket, timeout: Duration) -> bool {
    poll_one(udp, nix::poll::PollFlags::POLLIN, timeout)
}

fn wait_writable(udp: &UdpSocket, timeout: Duration) -> bool {
    poll_one(udp, nix::poll::PollFlags::POLLOUT, timeout)
}

fn poll_one(udp: &UdpSocket, events: nix::poll::PollFlags, timeout: Duration) -> bool {
    let mut fds = [nix::poll::PollFd::new(udp.as_fd(), events)];
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    matches!(nix::poll::poll(&mut fds, millis), Ok(n) if n > 0)
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Address, MTU and link up, through rtnetlink.
async fn configure_link(
    name: &str,
    index: u32,
    address: IpAddr,
    prefix: u8,
    mtu: u16,
) -> Result<(), IoError> {
    let netlink = |message: String| IoError::Netlink {
        name: name.to_string(),
        message,
    };
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| netlink(e.to_string()))?;
    let connection = tokio::spawn(connection);
    let result = async {
        handle
            .address()
            .add(index, address, prefix)
            .execute()
            .await
            .map_err(|e| netlink(format!("add address {address}/{prefix}: {e}")))?;
        let link = rtnetlink::LinkUnspec::new_with_index(index)
            .mtu(u32::from(mtu))
            .up()
            .build();
        handle
            .link()
            .set(link)
            .execute()
            .await
            .map_err(|e| netlink(format!("set mtu and up: {e}")))
    }
    .await;
    connection.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffers are what was asked for, or as large as the kernel lets
    /// a process without CAP_NET_ADMIN have (`net.core.rmem_max`).
    #[test]
    fn the_socket_buffers_are_sized() {
        use nix::sys::socket::{getsockopt, sockopt};
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
        size_buffers(&udp, UDP_BUFFER_BYTES);
        let max = |path| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .unwrap_or(0)
        };
        for (option, limit) in [
            (
                getsockopt(&udp, sockopt::RcvBuf),
                max("/proc/sys/net/core/rmem_max"),
            ),
            (
                getsockopt(&udp, sockopt::SndBuf),
                max("/proc/sys/net/core/wmem_max"),
            ),
        ] {
            // The kernel's default (208 KiB) is below both.
            let got = option.expect("buffer size") / 2;
            let expected = UDP_BUFFER_BYTES.min(limit);
            assert!(got >= expected, "got {got}, expected at least {expected}");
        }
    }

    /// The socket side of a GSO run, on loopback: what one `sendmsg` with
    /// `UDP_SEGMENT` carried arrives as the datagrams that were pushed.
    #[test]
    fn a_gso_run_arrives_as_the_datagrams_pushed() {
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        sender.set_nonblocking(true).expect("non-blocking");
        let state = UdpSocketState::new((&sender).into()).expect("socket state");
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let to = receiver.local_addr().expect("address");

        let mut out = SocketTransmitter {
            udp: &sender,
            state: &state,
        };
        let mut batch = UdpBatch::new();
        let mut sent = Vec::new();
        for i in 0..20u8 {
            let len = if i == 19 { 300 } else { 1452 };
            let datagram: Vec<u8> = (0..len).map(|j| i ^ (j as u8)).collect();
            batch.push(&datagram, to, None, &mut out);
            sent.push(datagram);
        }
        batch.flush(&mut out);

        let counts = batch.counts();
        assert_eq!(counts.datagrams, 20);
        assert_eq!(counts.dropped, 0);
        // One sendmsg for the run; a kernel without UDP GSO (before 4.18)
        // gets one send per datagram, and the same datagrams.
        let expected_sends = if state.max_gso_segments() > 1 { 1 } else { 20 };
        assert_eq!(counts.sends, expected_sends, "{counts:?}");
        let mut buf = vec![0u8; 65_536];
        for (i, expected) in sent.iter().enumerate() {
            let (len, _) = receiver.recv_from(&mut buf).expect("a datagram");
            assert_eq!(&buf[..len], &expected[..], "datagram {i}");
        }
    }
}
