//! Connecting to a checked target and relaying bytes between it and a
//! direct-tcpip channel: resolve, check every answer with the policy,
//! connect to the exact address that passed (no DNS rebinding: the name is
//! never looked up again), then copy both ways, one copy per direction, with
//! bounded buffers, so a slow reader pushes back on the writer instead of
//! growing memory.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::policy::{Requested, TargetDenied, TargetPolicy};
use super::registry::ChannelStats;

/// Bytes read from the target at once: two packets of the size OpenSSH's
/// client takes on a direct-tcpip channel (32 KiB).
pub const RELAY_BUFFER: usize = 64 * 1024;

/// Most bytes of client data written to the target in one vectored write:
/// four of the largest packets the jump host accepts.
const UPLOAD_BATCH: usize = 256 * 1024;

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

/// What the client sends on a direct-tcpip channel, as the SSH layer
/// decrypted it: handed on as is, never copied into a buffer of ours.
pub trait Incoming: Send {
    /// The next data, or `None` once the client sent EOF or the channel
    /// closed. Dropping the value stops the channel's delivery.
    fn recv(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
}

/// Sending to the client on a direct-tcpip channel: owned bytes go to the
/// SSH layer without a copy, split into packets within the client's window.
pub trait Outgoing: Sync {
    fn send(&self, data: Bytes) -> impl Future<Output = std::io::Result<()>> + Send;
    fn eof(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Incoming for ChannelReadHalf {
    async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.wait().await? {
                ChannelMsg::Data { data } => return Some(data),
                ChannelMsg::Eof | ChannelMsg::Close => return None,
                // stderr data, window changes: nothing to relay.
                _ => {}
            }
        }
    }
}

impl Outgoing for ChannelWriteHalf<Msg> {
    async fn send(&self, data: Bytes) -> std::io::Result<()> {
        self.data_bytes(data).await.map_err(channel_closed)
    }

    async fn eof(&self) -> std::io::Result<()> {
        ChannelWriteHalf::eof(self).await.map_err(channel_closed)
    }
}

fn channel_closed(err: russh::Error) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        format!("channel closed: {err}"),
    )
}

/// Copies both ways until both sides are done, the channel is cancelled, or
/// nothing moved for `idle`. Returns why it ended.
///
/// One copy per direction in user space: the client's data is written to
/// the target straight from the decrypted message, and the target's bytes
/// are read into a buffer that the SSH layer then encrypts from.
pub async fn relay<I, O, T>(
    incoming: I,
    outgoing: &O,
    target: T,
    stats: &ChannelStats,
    idle: Duration,
    cancel: &CancellationToken,
) -> String
where
    I: Incoming,
    O: Outgoing,
    T: AsyncRead + AsyncWrite + Send,
{
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let (mut tg_read, mut tg_write) = tokio::io::split(target);
    let both = async {
        tokio::try_join!(
            upload(incoming, &mut tg_write, &stats.up, &activity, start),
            download(&mut tg_read, outgoing, &stats.down, &activity, start),
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

/// Client to target: write what has arrived, in one vectored write for
/// all the messages already queued (up to `UPLOAD_BATCH` bytes); at EOF pass
/// the half-close on. `incoming` is dropped on return, so nothing more queues.
async fn upload<I, W>(
    mut incoming: I,
    to: &mut W,
    counter: &AtomicU64,
    activity: &AtomicU64,
    start: Instant,
) -> std::io::Result<()>
where
    I: Incoming,
    W: AsyncWrite + Unpin,
{
    let mut queued = Queued::default();
    while let Some(data) = incoming.recv().await {
        queued.push(data);
        let mut ended = false;
        while queued.len < UPLOAD_BATCH {
            match incoming.recv().now_or_never() {
                Some(Some(data)) => queued.push(data),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        let n = queued.len;
        to.write_all_buf(&mut queued).await?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        activity.store(millis(start), Ordering::Relaxed);
        if ended {
            break;
        }
    }
    to.shutdown().await
}

/// Messages waiting to be written, as one buffer for a vectored write.
#[derive(Default)]
struct Queued {
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Queued {
    fn push(&mut self, data: Bytes) {
        self.len += data.len();
        if !data.is_empty() {
            self.parts.push_back(data);
        }
    }
}

impl Buf for Queued {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |part| part.chunk())
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            filled += 1;
        }
        filled
    }

    fn advance(&mut self, mut cnt: usize) {
        self.len = self.len.saturating_sub(cnt);
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }
}

/// Target to client: read what the socket has into spare room of a buffer,
/// hand that part over as owned bytes, repeat; at EOF send the client EOF.
/// The buffer's memory comes back for the next read once the SSH layer has
/// encrypted what it was handed, so a busy channel does not allocate.
async fn download<R, O>(
    from: &mut R,
    to: &O,
    counter: &AtomicU64,
    activity: &AtomicU64,
    start: Instant,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    O: Outgoing,
{
    let mut buf = BytesMut::with_capacity(RELAY_BUFFER);
    loop {
        buf.reserve(RELAY_BUFFER);
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            return to.eof().await;
        }
        to.send(buf.split().freeze()).await?;
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

    use tokio::sync::mpsc;

    /// A channel as the relay sees it, backed by two queues: the test plays
    /// the SSH client at their other ends.
    struct FakeIn(mpsc::Receiver<Bytes>);
    struct FakeOut(mpsc::Sender<Option<Bytes>>);

    impl Incoming for FakeIn {
        async fn recv(&mut self) -> Option<Bytes> {
            self.0.recv().await
        }
    }

    impl Outgoing for FakeOut {
        async fn send(&self, data: Bytes) -> std::io::Result<()> {
            self.0
                .send(Some(data))
                .await
                .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
        }
        async fn eof(&self) -> std::io::Result<()> {
            self.0
                .send(None)
                .await
                .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
        }
    }

    /// The SSH client's ends of a fake channel: what it sends, and what it
    /// gets (`None`: EOF).
    type ClientEnds = (mpsc::Sender<Bytes>, mpsc::Receiver<Option<Bytes>>);

    /// The client's side of a fake channel, and the relay's.
    fn fake_channel() -> (ClientEnds, (FakeIn, FakeOut)) {
        let (up_tx, up_rx) = mpsc::channel(4);
        let (down_tx, down_rx) = mpsc::channel(4);
        ((up_tx, down_rx), (FakeIn(up_rx), FakeOut(down_tx)))
    }

    #[tokio::test]
    async fn relays_both_ways_counts_bytes_and_half_closes() {
        let ((client_tx, mut client_rx), (incoming, outgoing)) = fake_channel();
        let (target, mut target_peer) = tokio::io::duplex(1024);
        let stats = ChannelStats::default();
        let cancel = CancellationToken::new();
        let far_end = async {
            client_tx.send(Bytes::from_static(b"hel")).await.unwrap();
            client_tx.send(Bytes::from_static(b"lo")).await.unwrap();
            drop(client_tx); // the client's EOF
            let mut got = Vec::new();
            target_peer.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello");
            // More than one read's worth comes back whole and in order.
            let big: Vec<u8> = (0..3 * RELAY_BUFFER).map(|i| (i % 251) as u8).collect();
            let write = async {
                target_peer.write_all(&big).await.unwrap();
                target_peer.shutdown().await.unwrap();
            };
            let read = async {
                let mut back = Vec::new();
                while let Some(Some(data)) = client_rx.recv().await {
                    assert!(data.len() <= RELAY_BUFFER);
                    back.extend_from_slice(&data);
                }
                back
            };
            let ((), back) = tokio::join!(write, read);
            assert_eq!(back, big, "the bytes, then the EOF");
            big.len()
        };
        let (reason, sent) = tokio::join!(
            relay(
                incoming,
                &outgoing,
                target,
                &stats,
                Duration::from_secs(5),
                &cancel
            ),
            far_end
        );
        assert_eq!(reason, "closed");
        assert_eq!(stats.up.load(Ordering::Relaxed), 5);
        assert_eq!(stats.down.load(Ordering::Relaxed), sent as u64);
    }

    #[test]
    fn queued_messages_are_one_buffer_and_advance_across_them() {
        let mut queued = Queued::default();
        for part in [&b"ab"[..], b"", b"cde", b"f"] {
            queued.push(Bytes::copy_from_slice(part));
        }
        assert_eq!(queued.remaining(), 6);
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(
            queued.chunks_vectored(&mut slices),
            2,
            "bounded by the slots"
        );
        assert_eq!((&*slices[0], &*slices[1]), (&b"ab"[..], &b"cde"[..]));
        queued.advance(3);
        assert_eq!((queued.remaining(), queued.chunk()), (3, &b"de"[..]));
        queued.advance(2);
        assert_eq!(queued.chunk(), b"f");
        queued.advance(1);
        assert_eq!((queued.remaining(), queued.chunk()), (0, &[][..]));
    }

    #[tokio::test]
    async fn a_closed_channel_ends_the_relay_with_an_error() {
        let ((client_tx, client_rx), (incoming, outgoing)) = fake_channel();
        let (target, mut target_peer) = tokio::io::duplex(1024);
        drop(client_rx); // the channel is gone: sending to it fails
        let stats = ChannelStats::default();
        let cancel = CancellationToken::new();
        target_peer.write_all(b"late").await.unwrap();
        let reason = relay(
            incoming,
            &outgoing,
            target,
            &stats,
            Duration::from_secs(5),
            &cancel,
        )
        .await;
        assert!(reason.starts_with("error:"), "{reason}");
        drop(client_tx);
    }

    #[tokio::test]
    async fn idle_and_cancel_end_the_relay() {
        let ((_client_tx, _client_rx), (incoming, outgoing)) = fake_channel();
        let (target, _target_peer) = tokio::io::duplex(64);
        let stats = ChannelStats::default();
        let cancel = CancellationToken::new();
        let reason = relay(
            incoming,
            &outgoing,
            target,
            &stats,
            Duration::from_millis(50),
            &cancel,
        )
        .await;
        assert_eq!(reason, "idle timeout");

        let ((_c_tx, _c_rx), (incoming, outgoing)) = fake_channel();
        let (target, _t) = tokio::io::duplex(64);
        stats.set_reason("killed by uid:0");
        cancel.cancel();
        let reason = relay(
            incoming,
            &outgoing,
            target,
            &stats,
            Duration::from_secs(30),
            &cancel,
        )
        .await;
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
