//! Connecting to a checked target and relaying bytes between it and a
//! direct-tcpip channel: resolve, check every answer with the policy,
//! connect to the exact address that passed (no DNS rebinding: the name is
//! never looked up again), then copy both ways with fixed-size buffers, so a
//! slow reader pushes back on the writer instead of growing memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::policy::{Requested, TargetDenied, TargetPolicy};
use super::registry::ChannelStats;

/// Bytes read at once in each direction (the per-direction buffer): one
/// whole SSH packet of the size the jump host offers (`maximum_packet_size`),
/// so each packet is one read and one write.
pub const RELAY_BUFFER: usize = 64 * 1024;

/// Why a channel's target could not be connected.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Denied(TargetDenied),
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("cannot connect to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Resolves `requested` (an address is taken as is), picks the first
/// answer the policy allows, and connects to it within `timeout`.
pub async fn connect(
    requested: &Requested,
    policy: &TargetPolicy<'_>,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let resolved = resolve(requested, timeout).await?;
    let addr = policy
        .pick(&resolved, requested.port)
        .map_err(ConnectError::Denied)?;
    let stream = connect_to(addr, timeout).await?;
    Ok((stream, addr))
}

/// Connects to exactly `addr`, with TCP keepalive on.
pub async fn connect_to(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let io = |source| ConnectError::Io { addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(io)?;
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout { addr, timeout })?
        .map_err(io)?;
    tune(&stream);
    Ok(stream)
}

/// TCP keepalive (a dead peer is noticed in about two minutes) and no Nagle
/// delay: the bytes are an interactive SSH session.
pub fn tune(stream: &TcpStream) {
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15))
        .with_retries(4);
    if let Err(err) = SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %err, "cannot set TCP keepalive");
    }
    let _ = stream.set_nodelay(true);
}

async fn resolve(requested: &Requested, timeout: Duration) -> Result<Vec<IpAddr>, ConnectError> {
    if let Ok(addr) = requested.host.parse::<IpAddr>() {
        return Ok(vec![addr]);
    }
    let unresolved = |error: String| ConnectError::Denied(TargetDenied::Unresolved { error });
    let lookup = tokio::net::lookup_host((requested.host.as_str(), requested.port));
    let addrs = tokio::time::timeout(timeout, lookup)
        .await
        .map_err(|_| unresolved(format!("timed out after {timeout:?}")))?
        .map_err(|err| unresolved(err.to_string()))?;
    Ok(addrs.map(|a| a.ip()).collect())
}

/// Copies both ways until both sides are done, the channel is cancelled, or
/// nothing moved for `idle`. Returns why it ended.
pub async fn relay<C, T>(
    channel: C,
    target: T,
    stats: &ChannelStats,
    idle: Duration,
    cancel: &CancellationToken,
) -> String
where
    C: AsyncRead + AsyncWrite + Send,
    T: AsyncRead + AsyncWrite + Send,
{
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let (mut ch_read, mut ch_write) = tokio::io::split(channel);
    let (mut tg_read, mut tg_write) = tokio::io::split(target);
    let both = async {
        tokio::try_join!(
            pump(&mut ch_read, &mut tg_write, &stats.up, &activity, start),
            pump(&mut tg_read, &mut ch_write, &stats.down, &activity, start),
        )
    };
    tokio::select! {
        done = both => match done {
            Ok(_) => "closed".to_string(),
            Err(err) => format!("error: {err}"),
        },
        () = cancel.cancelled() => stats.reason().unwrap_or_else(|| "closed by the gateway".into()),
        () = idle_watch(&activity, start, idle) => "idle timeout".to_string(),
    }
}

/// One direction: read into a fixed buffer, write it all, repeat; at EOF
/// pass the half-close on.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    counter: &AtomicU64,
    activity: &AtomicU64,
    start: Instant,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        activity.store(millis(start), Ordering::Relaxed);
    }
}

async fn idle_watch(activity: &AtomicU64, start: Instant, idle: Duration) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let quiet = start.elapsed().saturating_sub(last);
        if quiet >= idle {
            return;
        }
        tokio::time::sleep(idle - quiet).await;
    }
}

fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_both_ways_counts_bytes_and_half_closes() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (target, mut target_peer) = tokio::io::duplex(1024);
        let stats = ChannelStats::default();
        let cancel = CancellationToken::new();
        let far_end = async {
            client_peer.write_all(b"hello").await.unwrap();
            client_peer.shutdown().await.unwrap();
            let mut got = Vec::new();
            target_peer.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello");
            target_peer.write_all(b"world!").await.unwrap();
            target_peer.shutdown().await.unwrap();
            let mut back = Vec::new();
            client_peer.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"world!");
        };
        let (reason, ()) = tokio::join!(
            relay(client, target, &stats, Duration::from_secs(5), &cancel),
            far_end
        );
        assert_eq!(reason, "closed");
        assert_eq!(stats.up.load(Ordering::Relaxed), 5);
        assert_eq!(stats.down.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn idle_and_cancel_end_the_relay() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (target, _target_peer) = tokio::io::duplex(64);
        let stats = ChannelStats::default();
        let cancel = CancellationToken::new();
        let reason = relay(client, target, &stats, Duration::from_millis(50), &cancel).await;
        assert_eq!(reason, "idle timeout");

        let (client, _c) = tokio::io::duplex(64);
        let (target, _t) = tokio::io::duplex(64);
        stats.set_reason("killed by uid:0");
        cancel.cancel();
        let reason = relay(client, target, &stats, Duration::from_secs(30), &cancel).await;
        assert_eq!(reason, "killed by uid:0");
    }

    #[tokio::test]
    async fn connect_refuses_before_connecting_and_times_out() {
        let policy = gatehouse_config::policy::Policy::default();
        let target = TargetPolicy {
            policy: &policy,
            user_groups: &[],
            allowed_ports: &[22],
            local_addrs: &[],
        };
        let requested = Requested {
            host: "127.0.0.1".into(),
            port: 22,
        };
        let err = connect(&requested, &target, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Denied(_)), "{err}");
        // A listener that is closed refuses at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = connect_to(addr, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(err, ConnectError::Io { .. }), "{err}");
    }
}
