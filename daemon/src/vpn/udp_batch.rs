//! Coalesces the encrypted datagrams of one TUN read into as few UDP sends
//! as the kernel allows: a run of same-sized datagrams to one peer leaves in
//! one send with UDP GSO (`UDP_SEGMENT`), where it used to take a `sendto`
//! each. A TCP download arrives from the VPC side as one large read that is
//! split into MTU-sized packets, so its datagrams are such runs.
//!
//! The rules are the kernel's for GSO: every datagram of a run has the
//! run's size except the last, which may be shorter; a run has at most
//! [`Transmitter::max_segments`] datagrams and [`MAX_RUN_BYTES`] bytes. The
//! batch holds no socket: the packet thread's [`Transmitter`] does the I/O,
//! and sends a refused run again one datagram at a time (a kernel or device
//! without GSO loses nothing).

use std::io;
use std::net::SocketAddr;

/// Most payload bytes one GSO send may carry (a UDP datagram's limit, less
/// room for the IPv6 header).
pub const MAX_RUN_BYTES: usize = 65_535 - 40 - 8;

/// Sends what the batch coalesced.
pub trait Transmitter {
    /// Sends `contents` to `destination`: one datagram when `segment` is
    /// `None`, else datagrams of `segment` bytes (the last may be shorter).
    fn transmit(
        &mut self,
        destination: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<()>;

    /// Most datagrams one send may carry; 1 when the socket has no GSO.
    fn max_segments(&self) -> usize;
}

/// What the batch sent (read by the tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    /// Send calls made.
    pub sends: u64,
    /// Datagrams they carried.
    pub datagrams: u64,
    /// Runs the socket refused and that went out one datagram at a time.
    pub fallbacks: u64,
    /// Datagrams the socket refused even alone (dropped, like a full link).
    pub dropped: u64,
}

/// The run being built: datagrams for one destination, back to back.
pub struct UdpBatch {
    bytes: Vec<u8>,
    destination: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// The last datagram was shorter than the run's size: nothing may follow it.
    closed: bool,
    counts: BatchCounts,
}

impl Default for UdpBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl UdpBatch {
    pub fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(MAX_RUN_BYTES),
            destination: None,
            segment: 0,
            count: 0,
            closed: false,
            counts: BatchCounts::default(),
        }
    }

    /// Adds one datagram, first sending the run it cannot join.
    pub fn push(&mut self, datagram: &[u8], to: SocketAddr, out: &mut impl Transmitter) {
        if datagram.is_empty() {
            return;
        }
        if self.count > 0 && !self.joins(datagram.len(), to, out.max_segments()) {
            self.flush(out);
        }
        if self.count == 0 {
            self.destination = Some(to);
            self.segment = datagram.len();
            self.closed = false;
        } else if datagram.len() < self.segment {
            self.closed = true;
        }
        self.bytes.extend_from_slice(datagram);
        self.count += 1;
        if self.count >= out.max_segments() {
            self.flush(out);
        }
    }

    fn joins(&self, len: usize, to: SocketAddr, max_segments: usize) -> bool {
        self.destination == Some(to)
            && !self.closed
            && len <= self.segment
            && self.count < max_segments
            && self.bytes.len() + len <= MAX_RUN_BYTES
    }

    /// Sends the run; call when the TUN read's packets are all pushed.
    pub fn flush(&mut self, out: &mut impl Transmitter) {
        let Some(destination) = self.destination.take() else {
            return;
        };
        let (count, segment) = (self.count, self.segment);
        self.count = 0;
        let segment_size = (count > 1).then_some(segment);
        self.counts.sends += 1;
        match out.transmit(destination, &self.bytes, segment_size) {
            Ok(()) => self.counts.datagrams += count as u64,
            Err(err) if count > 1 => {
                tracing::debug!(error = %err, count, "UDP GSO send refused; sending one at a time");
                self.counts.fallbacks += 1;
                for datagram in self.bytes.chunks(segment) {
                    self.counts.sends += 1;
                    match out.transmit(destination, datagram, None) {
                        Ok(()) => self.counts.datagrams += 1,
                        Err(err) => {
                            tracing::trace!(error = %err, "UDP send failed");
                            self.counts.dropped += 1;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::trace!(error = %err, "UDP send failed");
                self.counts.dropped += 1;
            }
        }
        self.bytes.clear();
    }

    pub fn counts(&self) -> BatchCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each send; refuses runs (segment given) when `refuse_runs`.
    struct Recorder {
        sends: Vec<(SocketAddr, Vec<u8>, Option<usize>)>,
        max_segments: usize,
        refuse_runs: bool,
    }

    impl Recorder {
        fn new(max_segments: usize) -> Self {
            Self {
                sends: Vec::new(),
                max_segments,
                refuse_runs: false,
            }
        }
        /// (destination port, datagrams in the send, segment)
        fn shape(&self) -> Vec<(u16, usize, Option<usize>)> {
            self.sends
                .iter()
                .map(|(to, bytes, seg)| {
                    let n = seg.map_or(1, |s| bytes.len().div_ceil(s));
                    (to.port(), n, *seg)
                })
                .collect()
        }
    }

    impl Transmitter for Recorder {
        fn transmit(
            &mut self,
            to: SocketAddr,
            contents: &[u8],
            seg: Option<usize>,
        ) -> io::Result<()> {
            if self.refuse_runs && seg.is_some() {
                return Err(io::Error::other("EIO"));
            }
            self.sends.push((to, contents.to_vec(), seg));
            Ok(())
        }
        fn max_segments(&self) -> usize {
            self.max_segments
        }
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 2], port))
    }

    fn datagram(len: usize, tag: u8) -> Vec<u8> {
        vec![tag; len]
    }

    #[test]
    fn same_sized_datagrams_to_one_peer_leave_in_one_send() {
        let mut out = Recorder::new(64);
        let mut batch = UdpBatch::new();
        for i in 0..10 {
            batch.push(&datagram(1452, i), peer(1), &mut out);
        }
        batch.push(&datagram(300, 99), peer(1), &mut out); // the short tail joins
        batch.flush(&mut out);
        assert_eq!(out.shape(), vec![(1, 11, Some(1452))]);
        let (_, bytes, _) = &out.sends[0];
        assert_eq!(bytes.len(), 10 * 1452 + 300);
        assert_eq!(bytes[1452 * 3], 3, "datagrams keep their order");
        assert_eq!(
            batch.counts(),
            BatchCounts {
                sends: 1,
                datagrams: 11,
                ..BatchCounts::default()
            }
        );
    }

    #[test]
    fn a_run_ends_at_a_new_peer_a_longer_datagram_or_after_a_short_one() {
        let mut out = Recorder::new(64);
        let mut batch = UdpBatch::new();
        batch.push(&datagram(1452, 0), peer(1), &mut out);
        batch.push(&datagram(1452, 0), peer(2), &mut out); // other peer
        batch.push(&datagram(100, 0), peer(2), &mut out); // short: closes the run
        batch.push(&datagram(100, 0), peer(2), &mut out); // cannot follow a short one
        batch.push(&datagram(1452, 0), peer(2), &mut out); // longer than the run's size
        batch.flush(&mut out);
        batch.flush(&mut out); // nothing left: no send
        assert_eq!(
            out.shape(),
            vec![(1, 1, None), (2, 2, Some(1452)), (2, 1, None), (2, 1, None)]
        );
    }

    #[test]
    fn a_run_is_bounded_by_the_socket_s_segments_and_the_gso_byte_limit() {
        let mut out = Recorder::new(4);
        let mut batch = UdpBatch::new();
        for _ in 0..10 {
            batch.push(&datagram(1452, 0), peer(1), &mut out);
        }
        batch.flush(&mut out);
        assert_eq!(
            out.shape(),
            vec![(1, 4, Some(1452)), (1, 4, Some(1452)), (1, 2, Some(1452))]
        );

        let mut out = Recorder::new(64);
        for _ in 0..64 {
            batch.push(&datagram(8000, 0), peer(1), &mut out);
        }
        batch.flush(&mut out);
        assert!(out.sends.iter().all(|(_, b, _)| b.len() <= MAX_RUN_BYTES));
        assert_eq!(
            out.sends.iter().map(|(_, b, _)| b.len()).sum::<usize>(),
            64 * 8000
        );
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_send() {
        let mut out = Recorder::new(1);
        let mut batch = UdpBatch::new();
        for _ in 0..3 {
            batch.push(&datagram(1452, 0), peer(1), &mut out);
        }
        batch.flush(&mut out);
        assert_eq!(out.shape(), vec![(1, 1, None); 3]);
    }

    #[test]
    fn a_refused_run_goes_out_one_datagram_at_a_time() {
        let mut out = Recorder::new(64);
        out.refuse_runs = true;
        let mut batch = UdpBatch::new();
        for i in 0..5 {
            batch.push(&datagram(1452, i), peer(1), &mut out);
        }
        batch.push(&datagram(10, 7), peer(1), &mut out);
        batch.flush(&mut out);
        assert_eq!(out.shape(), vec![(1, 1, None); 6]);
        assert_eq!(out.sends[5].1, datagram(10, 7));
        let counts = batch.counts();
        assert_eq!(
            (counts.fallbacks, counts.datagrams, counts.dropped),
            (1, 6, 0)
        );
    }
}
