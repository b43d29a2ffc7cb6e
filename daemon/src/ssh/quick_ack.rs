//! A client socket that acknowledges at once during the handshake.
//!
//! The server's key exchange init goes out right after the banners, so it
//! rarely carries the ACK of the client's KEXINIT. Linux then delays that ACK
//! (up to 40 ms), and a client with Nagle on (OpenSSH's, for the `-J` hop)
//! holds its next small packet until it comes: 40 ms lost on every login.
//! Setting `TCP_QUICKACK` after a read sends a pending ACK now; the kernel
//! clears the flag again by itself, so it is re-armed after each of the first
//! [`HANDSHAKE_READS`] reads (banner, key exchange, authentication, first
//! channel) and left alone for bulk transfer, where delayed ACKs are right.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Reads after which ACKs are left to the kernel again.
const HANDSHAKE_READS: u32 = 32;

/// A [`TcpStream`] that sends ACKs without delay for its first reads.
pub struct QuickAck {
    stream: TcpStream,
    reads_left: u32,
}

impl QuickAck {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            reads_left: HANDSHAKE_READS,
        }
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if this.reads_left > 0
            && matches!(polled, Poll::Ready(Ok(())))
            && buf.filled().len() > before
        {
            this.reads_left -= 1;
            // Best effort: a failure only costs the delay this avoids.
            let _ = SockRef::from(&this.stream).set_tcp_quickack(true);
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn passes_bytes_both_ways_and_stops_re_arming_after_the_handshake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut server = QuickAck::new(server);
        for i in 0..HANDSHAKE_READS + 3 {
            client.write_all(&[i as u8]).await.unwrap();
            let mut byte = [0u8; 1];
            server.read_exact(&mut byte).await.unwrap();
            assert_eq!(byte[0], i as u8);
        }
        assert_eq!(server.reads_left, 0);
        server.write_all(b"pong").await.unwrap();
        let mut reply = [0u8; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"pong");
    }
}
