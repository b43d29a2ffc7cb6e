//! A TCP listener that holds at most N connections at once: it waits for a
//! free slot before accepting (more clients wait in the kernel's backlog),
//! and each connection gives its slot back when dropped. Optionally, a
//! connection that sends nothing for a while is closed, so slow or stuck
//! clients cannot hold a slot. Shared by the metrics server and the portal.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
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
}

impl CappedListener {
    /// At most `max` connections; with `idle`, each is closed after that
    /// long without a byte from the client.
    pub fn new(inner: TcpListener, max: usize, idle: Option<Duration>) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            idle,
        }
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
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let stream = CappedStream {
            stream,
            _slot: slot,
            idle: self
                .idle
                .map(|after| (after, Box::pin(tokio::time::sleep(after)))),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection holding a slot, closed when idle (if the listener says so).
pub struct CappedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
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
