//! The data plane's I/O: the TUN device (created with tun-rs, configured
//! through netlink), the UDP socket, and the threads that move packets
//! between them through the [`Engine`]. Packet I/O runs on two dedicated
//! threads with blocking calls — one per direction, so both cores work —
//! rather than on the async runtime: a packet path of plain syscalls has
//! no wakeups and no allocation per packet.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tun_rs::{DeviceBuilder, InterruptEvent, SyncDevice};

use super::engine::{Engine, Sink};

/// Largest packet handled; buffers have room for WireGuard's overhead too.
const BUF_SIZE: usize = 65_535 + 256;
/// How often blocking reads wake up to check for shutdown.
const POLL: Duration = Duration::from_millis(250);
/// Timer granularity (boringtun's own device uses 250 ms).
const TIMER_TICK: Duration = Duration::from_millis(250);

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
        .build_sync()
        .map_err(tun_error)?;
    let index = tun.if_index().map_err(tun_error)?;
    configure_link(interface, index, address, pool.prefix_len(), mtu).await?;
    let udp = UdpSocket::bind(listen).map_err(|source| IoError::BindUdp {
        addr: listen,
        source,
    })?;
    udp.set_read_timeout(Some(POLL))
        .map_err(|source| IoError::BindUdp {
            addr: listen,
            source,
        })?;
    let interrupt = InterruptEvent::new().map_err(tun_error)?;
    Ok(Devices {
        tun: Arc::new(tun),
        udp: Arc::new(udp),
        interrupt: Arc::new(interrupt),
    })
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
        interrupt,
    } = devices;

    // network → engine → TUN
    {
        let (tun, udp, engine, shutdown) =
            (tun.clone(), udp.clone(), engine.clone(), shutdown.clone());
        tracker.spawn_blocking(move || {
            let mut datagram = vec![0u8; BUF_SIZE];
            let mut buf = vec![0u8; BUF_SIZE];
            let mut sink = DeviceSink {
                tun: &tun,
                udp: &udp,
            };
            while !shutdown.is_cancelled() {
                match udp.recv_from(&mut datagram) {
                    Ok((len, from)) => {
                        engine.handle_datagram(from, &datagram[..len], &mut buf, &mut sink)
                    }
                    Err(err) if is_timeout(&err) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "UDP receive failed");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        });
    }

    // TUN → engine → network
    {
        let (tun, udp, engine, shutdown, interrupt) = (
            tun.clone(),
            udp.clone(),
            engine.clone(),
            shutdown.clone(),
            interrupt.clone(),
        );
        tracker.spawn_blocking(move || {
            let mut packet = vec![0u8; BUF_SIZE];
            let mut buf = vec![0u8; BUF_SIZE];
            let mut sink = DeviceSink {
                tun: &tun,
                udp: &udp,
            };
            while !shutdown.is_cancelled() {
                match tun.recv_intr_timeout(&mut packet, &interrupt, Some(POLL)) {
                    Ok(len) => engine.handle_tun_packet(&packet[..len], &mut buf, &mut sink),
                    Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "TUN read failed");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
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
            let mut sink = DeviceSink {
                tun: &tun,
                udp: &udp,
            };
            engine.tick(reset, &mut buf, &mut sink);
        }
        // Wake the TUN reader so it sees the shutdown at once.
        let _ = interrupt.trigger();
    });
}

/// Writes the engine's output to the real devices. Send errors are counted
/// by the kernel and the peers' retransmissions; a packet path never blocks
/// on logging them.
struct DeviceSink<'a> {
    tun: &'a SyncDevice,
    udp: &'a UdpSocket,
}

impl Sink for DeviceSink<'_> {
    fn send_udp(&mut self, datagram: &[u8], to: SocketAddr) {
        if let Err(err) = self.udp.send_to(datagram, to) {
            tracing::trace!(error = %err, "UDP send failed");
        }
    }

    fn write_tun(&mut self, packet: &[u8]) {
        if let Err(err) = self.tun.send(packet) {
            tracing::trace!(error = %err, "TUN write failed");
        }
    }
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
