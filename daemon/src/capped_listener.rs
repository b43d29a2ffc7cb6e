//! A TCP listener that holds at most N connections at once: it waits for a
//! free slot before accepting (more clients wait in the kernel's backlog),
//! and each connection gives its slot back when dropped. Optionally, at
//! most M of them from one source (IPv6 grouped per /64): one more is
//! closed at once, so one source cannot take every slot. Optionally, a
//! connection that sends nothing for a while is closed, so slow or stuck
//! clients cannot hold a slot. Shared by the metrics server and the portal.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// A listener with a cap on open connections.
pub struct CappedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Option<Duration>,
    per_source: Option<(usize, SourceCounts)>,
}

/// Open connections per source.
type SourceCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Sources are counted per address, IPv6 per /64 (one host usually owns one).
pub fn source_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

impl CappedListener {
    /// At most `max` connections; with `idle`, each is closed after that
    /// long without a byte from the client.
    pub fn new(inner: TcpListener, max: usize, idle: Option<Duration>) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            idle,
            per_source: None,
        }
    }

    /// And at most `max` of them from one source.
    pub fn per_source(mut self, max: usize) -> Self {
        self.per_source = Some((max, Arc::new(Mutex::new(HashMap::new()))));
        self
    }

    /// Waits for a free slot, then for a connection. Accept errors
    /// (EMFILE and friends) are retried after a short pause, never spun on.
    pub async fn accept(&mut self) -> (CappedStream, SocketAddr) {
        axum::serve::Listener::accept(self).await
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let slot = loop {
            match self.slots.clone().acquire_owned().await {
                Ok(slot) => break slot,
                // Never closed; but never spin either.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            let source = match &self.per_source {
                None => None,
                Some((max, shared)) => {
                    let key = source_key(addr.ip());
                    let mut counts = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    let held = counts.entry(key).or_insert(0);
                    if *held >= *max {
                        // Closed at once; the slot stays for other sources.
                        tracing::debug!(source = %key, held, "connection refused: too many from this source");
                        continue;
                    }
                    *held += 1;
                    Some(SourceSlot {
                        key,
                        counts: shared.clone(),
                    })
                }
            };
            let stream = CappedStream {
                stream,
                _slot: slot,
                _source: source,
                idle: self
                    .idle
                    .map(|after| (after, Box::pin(tokio::time::sleep(after)))),
            };
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection's place in its source's count, given back when dropped.
struct SourceSlot {
    key: IpAddr,
    counts: SourceCounts,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = counts.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// A connection holding a slot, closed when idle (if the listener says so).
pub struct CappedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    _source: Option<SourceSlot>,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if let Some((after, timer)) = &mut this.idle
                    && buf.filled().len() > before
                {
                    timer.as_mut().reset(tokio::time::Instant::now() + *after);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let idle_over = this
                    .idle
                    .as_mut()
                    .is_some_and(|(_, timer)| timer.as_mut().poll(cx).is_ready());
                if idle_over {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
