//! The WireGuard data plane: a userspace WireGuard endpoint for every
//! device, on boringtun's noise layer, with the access policy enforced on
//! every decrypted packet.
//!
//! Layout:
//! - [`engine`]: the per-packet logic without I/O (peer lookup, handshakes,
//!   anti-spoofing, policy) — what the unit tests drive;
//! - [`peers`]: the peer table, swapped atomically on every change;
//! - [`packet`]: IP header parsing for the policy (and the flow counters);
//! - [`flows`]: each device's allowed traffic per host, protocol and port;
//! - [`flow_records`]: the `vpn.flow` records made of it;
//! - [`io`]: the TUN device, the UDP socket and the packet threads;
//! - [`udp_batch`]: outbound datagrams coalesced into UDP GSO sends;
//! - [`session`]: when a user's devices may be peers (portal login, lifetime);
//! - [`sync`]: keeps the peer table equal to the store;
//! - [`nat`]: the masquerade rule for `vpn.nat = "masquerade"`;
//! - [`monitor`]: connect/disconnect, denial and flow audit records;
//! - [`uapi`]: the WireGuard UAPI socket, so `wg show` reads our peers.
//!
//! Does not own the gateway's key (see [`crate::keys::wireguard`]) or the policy
//! rules (see `gatehouse_config::policy`).

pub mod engine;
pub mod flow_records;
pub mod flows;
pub mod io;
pub mod monitor;
pub mod nat;
pub mod packet;
pub mod peers;
pub mod session;
pub mod sync;
pub mod uapi;
pub mod udp_batch;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use gatehouse_config::file::NatMode;

use crate::gateway::Core;
use engine::Engine;

#[derive(Debug, thiserror::Error)]
pub enum VpnError {
    #[error(transparent)]
    Io(#[from] io::IoError),
    #[error(transparent)]
    Nat(#[from] nat::NatError),
    #[error(transparent)]
    Uapi(#[from] uapi::UapiError),
    #[error("cannot load the peers: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Opens the TUN interface and UDP socket, loads the peers, and starts the
/// packet threads, peer sync and monitor. Returns the engine for status.
pub async fn spawn_data_plane(
    core: &Core,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Arc<Engine>, VpnError> {
    let config = core.config();
    let vpn = &config.vpn;
    let engine = Arc::new(Engine::new(core.key().secret().clone()));
    // The flow counters' clock, until the timer tick keeps it.
    engine.set_clock(std::time::SystemTime::now());
    engine.set_flows_per_device(config.audit.flows_per_device as usize);
    // One of an HA pair: tunnels resume on whichever node becomes active.
    engine.set_resume_allowed(config.ha.is_none());
    let devices = io::open(
        &vpn.interface,
        vpn.gateway_address(),
        vpn.pool,
        vpn.mtu,
        vpn.listen,
    )
    .await?;
    io::enable_forwarding(&vpn.pool)?;
    if vpn.nat == NatMode::Masquerade {
        let rule = nat::Masquerade::install(vpn.pool, &vpn.interface)?;
        let stop = shutdown.clone();
        tracker.spawn(async move {
            stop.cancelled().await;
            let _ = tokio::task::spawn_blocking(move || rule.remove()).await;
        });
    }
    let peers = sync::apply(core, &engine).await?;
    // Devices whose sessions may outlive a restart get a handshake at once.
    let resuming = engine.table().peers().filter(|p| p.lock().resume).count();
    io::spawn_packet_threads(devices, engine.clone(), tracker, shutdown.clone());
    sync::spawn_peer_sync(core.clone(), engine.clone(), tracker, shutdown.clone());
    uapi::spawn_uapi(
        engine.clone(),
        uapi::socket_path(&vpn.interface),
        vpn.listen.port(),
        tracker,
        shutdown.clone(),
    )?;
    monitor::spawn_monitor(core.clone(), engine.clone(), tracker, shutdown);
    tracing::info!(interface = %vpn.interface, listen = %vpn.listen, peers, resuming, "WireGuard data plane up");
    Ok(engine)
}
