//! Coalesces the encrypted datagrams of one TUN read into as few UDP sends
//! as the kernel allows: a run of same-sized datagrams to one peer leaves in
//! one send with UDP GSO (`UDP_SEGMENT`), where it used to take a `sendto`
//! each. A TCP download arrives from the VPC side as one large read that is
//! split into MTU-sized packets, so its datagrams are such runs.
//!
//! Small datagrams (a ping, an ACK, a DNS answer) of a flow with nothing in
//! the bulk run gather in a run of their own that is sent before the bulk
//! one: they neither end a bulk run nor wait behind it. Datagrams of one
//! flow keep their order: a small one of a flow already in the bulk run
//! joins the bulk run, behind its flow's datagrams.
//!
//! The rules are the kernel's for GSO: every datagram of a run has the
//! run's size except the last, which may be shorter; a run has at most
//! [`Transmitter::max_segments`] datagrams and [`MAX_RUN_BYTES`] bytes. The
//! batch holds no socket: the packet thread's [`Transmitter`] does the I/O,
//! and sends a refused run again one datagram at a time (a kernel or device
//! without GSO loses nothing).

use std::io;
use std::net::SocketAddr;

use super::flows::FlowKey;

/// Most payload bytes one GSO send may carry (a UDP datagram's limit, less
/// room for the IPv6 header).
pub const MAX_RUN_BYTES: usize = 65_535 - 40 - 8;

/// Datagrams this size or smaller are small: a keepalive, a TCP ACK, a
/// ping or a DNS query (inner packets up to 128 bytes, plus WireGuard's 32).
pub const SMALL_DATAGRAM: usize = 160;

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

/// The runs being built. The small run leaves first: behind a bulk run, a
/// ping would be the last of a burst into the device's socket buffer,
/// which is where a full buffer drops (measured: 16 % of the pings under a
/// download, with Debian's wireguard-go and its 208 KiB buffer).
pub struct UdpBatch {
    small: Run,
    bulk: Run,
    /// The flows with a datagram in the bulk run (at most one entry per
    /// datagram, so a short linear search).
    bulk_flows: Vec<FlowKey>,
    counts: BatchCounts,
}

/// Datagrams for one destination, back to back.
struct Run {
    bytes: Vec<u8>,
    destination: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// The last datagram was shorter than the run's size: nothing may follow it.
    closed: bool,
}

impl Default for UdpBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl UdpBatch {
    pub fn new() -> Self {
        Self {
            small: Run::new(SMALL_DATAGRAM * 64),
            bulk: Run::new(MAX_RUN_BYTES),
            bulk_flows: Vec::with_capacity(64),
            counts: BatchCounts::default(),
        }
    }

    /// Adds one datagram of `flow` (`None`: not known, so it keeps its
    /// place behind everything pushed before it), first sending the run it
    /// cannot join.
    pub fn push(
        &mut self,
        datagram: &[u8],
        to: SocketAddr,
        flow: Option<FlowKey>,
        out: &mut impl Transmitter,
    ) {
        if datagram.is_empty() {
            return;
        }
        let small = datagram.len() <= SMALL_DATAGRAM
            && flow.is_some_and(|flow| !self.bulk_flows.contains(&flow));
        let max_segments = out.max_segments();
        let run = if small { &self.small } else { &self.bulk };
        if run.count > 0 && !run.joins(datagram.len(), to, max_segments) {
            self.send(small, out);
        }
        let run = if small {
            &mut self.small
        } else {
            if let Some(flow) = flow
                && self.bulk_flows.last() != Some(&flow)
            {
                self.bulk_flows.push(flow);
            }
            &mut self.bulk
        };
        run.append(datagram, to);
        if run.count >= max_segments {
            self.send(small, out);
        }
    }

    /// Sends the runs, small first; call when the TUN read's packets are
    /// all pushed.
    pub fn flush(&mut self, out: &mut impl Transmitter) {
        self.send(false, out);
    }

    /// Sends the small run, and unless `small_only` the bulk run after it
    /// (a small datagram never leaves behind a bulk one pushed after it).
    fn send(&mut self, small_only: bool, out: &mut impl Transmitter) {
        self.small.transmit(out, &mut self.counts);
        if !small_only {
            self.bulk.transmit(out, &mut self.counts);
            self.bulk_flows.clear();
        }
    }

    pub fn counts(&self) -> BatchCounts {
        self.counts
    }
}

impl Run {
    fn new(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            destination: None,
            segment: 0,
            count: 0,
            closed: false,
        }
    }

    fn joins(&self, len: usize, to: SocketAddr, max_segments: usize) -> bool {
        self.destination == Some(to)
            && !self.closed
            && len <= self.segment
            && self.count < max_segments
            && self.bytes.len() + len <= MAX_RUN_BYTES
    }

    fn append(&mut self, datagram: &[u8], to: SocketAddr) {
        if self.count == 0 {
            self.destination = Some(to);
            self.segment = datagram.len();
            self.closed = false;
        } else if datagram.len() < self.segment {
            self.closed = true;
        }
        self.bytes.extend_from_slice(datagram);
        self.count += 1;
    }

    fn transmit(&mut self, out: &mut impl Transmitter, counts: &mut BatchCounts) {
        let Some(destination) = self.destination.take() else {
            return;
        };
        let (count, segment) = (self.count, self.segment);
        self.count = 0;
        let segment_size = (count > 1).then_some(segment);
        counts.sends += 1;
        match out.transmit(destination, &self.bytes, segment_size) {
            Ok(()) => counts.datagrams += count as u64,
            Err(err) if count > 1 => {
                tracing::debug!(error = %err, count, "UDP GSO send refused; sending one at a time");
                counts.fallbacks += 1;
                for datagram in self.bytes.chunks(segment) {
                    counts.sends += 1;
                    match out.transmit(destination, datagram, None) {
                        Ok(()) => counts.datagrams += 1,
                        Err(err) => {
                            tracing::trace!(error = %err, "UDP send failed");
                            counts.dropped += 1;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::trace!(error = %err, "UDP send failed");
                counts.dropped += 1;
            }
        }
        self.bytes.clear();
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

    /// A flow from 10.20.0.5: TCP to `port`, or ICMP when `port` is 0.
    fn flow(port: u16) -> Option<FlowKey> {
        Some(FlowKey {
            host: std::net::IpAddr::from([10, 20, 0, 5]),
            protocol: if port == 0 { 1 } else { 6 },
            port: (port != 0).then_some(port),
        })
    }

    #[test]
    fn same_sized_datagrams_to_one_peer_leave_in_one_send() {
        let mut out = Recorder::new(64);
        let mut batch = UdpBatch::new();
        for i in 0..10 {
            batch.push(&datagram(1452, i), peer(1), None, &mut out);
        }
        batch.push(&datagram(300, 99), peer(1), None, &mut out); // the short tail joins
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
        batch.push(&datagram(1452, 0), peer(1), None, &mut out);
        batch.push(&datagram(1452, 0), peer(2), None, &mut out); // other peer
        batch.push(&datagram(100, 0), peer(2), None, &mut out); // short: closes the run
        batch.push(&datagram(100, 0), peer(2), None, &mut out); // cannot follow a short one
        batch.push(&datagram(1452, 0), peer(2), None, &mut out); // longer than the run's size
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
            batch.push(&datagram(1452, 0), peer(1), None, &mut out);
        }
        batch.flush(&mut out);
        assert_eq!(
            out.shape(),
            vec![(1, 4, Some(1452)), (1, 4, Some(1452)), (1, 2, Some(1452))]
        );

        let mut out = Recorder::new(64);
        for _ in 0..64 {
            batch.push(&datagram(8000, 0), peer(1), None, &mut out);
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
            batch.push(&datagram(1452, 0), peer(1), None, &mut out);
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
            batch.push(&datagram(1452, i), peer(1), None, &mut out);
        }
        batch.push(&datagram(10, 7), peer(1), None, &mut out);
        batch.flush(&mut out);
        assert_eq!(out.shape(), vec![(1, 1, None); 6]);
        assert_eq!(out.sends[5].1, datagram(10, 7));
        let counts = batch.counts();
        assert_eq!(
            (counts.fallbacks, counts.datagrams, counts.dropped),
            (1, 6, 0)
        );
    }

    #[test]
    fn small_datagrams_of_other_flows_leave_first_and_do_not_end_the_bulk_run() {
        let mut out = Recorder::new(64);
        let mut batch = UdpBatch::new();
        for i in 0..20 {
            batch.push(&datagram(1452, 0), peer(1), flow(5201), &mut out);
            if i % 5 == 4 {
                // ACKs of an upload on another connection, amid the download.
                batch.push(&datagram(96, 1), peer(1), flow(22), &mut out);
            }
        }
        batch.push(&datagram(128, 2), peer(1), flow(0), &mut out); // a ping's reply
        batch.flush(&mut out);
        assert_eq!(
            out.shape(),
            vec![(1, 4, Some(96)), (1, 1, None), (1, 20, Some(1452))],
            "the ACKs in one run, then the ping, then the download in one run"
        );
        assert_eq!(out.sends[1].1, datagram(128, 2));

        // A full bulk run takes the small datagrams pushed before it along,
        // ahead of it: none leaves behind a bulk datagram pushed after it.
        let mut out = Recorder::new(4);
        let mut batch = UdpBatch::new();
        batch.push(&datagram(1452, 0), peer(1), flow(5201), &mut out);
        batch.push(&datagram(96, 1), peer(1), flow(0), &mut out);
        for _ in 0..3 {
            batch.push(&datagram(1452, 0), peer(1), flow(5201), &mut out);
        }
        assert_eq!(out.shape(), vec![(1, 1, None), (1, 4, Some(1452))]);
        batch.push(&datagram(96, 1), peer(2), flow(0), &mut out);
        batch.flush(&mut out);
        assert_eq!(out.shape()[2], (2, 1, None));
        assert_eq!(batch.counts().datagrams, 6);
    }

    /// What CI's vpn_flows caught when every small datagram went first: an
    /// HTTP response's last, short segment overtook the full-sized ones of
    /// its own connection, and the server sent them all again.
    #[test]
    fn a_small_datagram_never_overtakes_its_own_flow() {
        let mut out = Recorder::new(64);
        let mut batch = UdpBatch::new();
        batch.push(&datagram(1452, 0), peer(1), flow(80), &mut out);
        batch.push(&datagram(1452, 1), peer(1), flow(80), &mut out);
        batch.push(&datagram(120, 2), peer(1), flow(80), &mut out); // its tail
        batch.push(&datagram(100, 3), peer(1), flow(0), &mut out); // a ping
        batch.push(&datagram(100, 4), peer(1), None, &mut out); // flow unknown
        batch.flush(&mut out);
        let order: Vec<u8> = out
            .sends
            .iter()
            .flat_map(|(_, bytes, seg)| bytes.chunks(seg.unwrap_or(bytes.len())).map(|d| d[0]))
            .collect();
        assert_eq!(order, vec![3, 0, 1, 2, 4], "only the ping went ahead");

        // A small datagram pushed before its flow's bulk ones stays ahead.
        let mut out = Recorder::new(64);
        let mut batch = UdpBatch::new();
        batch.push(&datagram(100, 0), peer(1), flow(80), &mut out);
        batch.push(&datagram(1452, 1), peer(1), flow(80), &mut out);
        batch.push(&datagram(1452, 2), peer(1), flow(80), &mut out);
        batch.flush(&mut out);
        assert_eq!(out.shape(), vec![(1, 1, None), (1, 2, Some(1452))]);
        assert_eq!(out.sends[0].1, datagram(100, 0));
    }
}
