//! Prometheus metrics on `metrics.listen` (default 127.0.0.1:9586):
//! `GET /metrics` in the text exposition format 0.0.4, `GET /healthz`.
//!
//! Owns that listener and the exposition. It reads the data plane's
//! counters ([`Engine::peer_status`], [`EngineCounters`]) at scrape time and
//! keeps no state of its own.
//!
//! The exposition is written by hand rather than with a metrics crate: every
//! value already lives in an atomic of the engine or in boringtun's session
//! stats, and the per-peer label sets come and go with the peer table. A
//! registry would mean copying each value into a second set of counters (and
//! pruning departed peers from it) only to print them; the format itself is
//! a few lines per family plus label escaping, which the tests check.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use gatehouse_config::api::CONNECTED_WITHIN_SECS;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::vpn::engine::{Engine, EngineCounters, PeerStatus};

/// Scrapers served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;
/// A connection that sends nothing for this long is closed (slow or stuck
/// clients cannot hold a slot).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The content type of the text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Serves `/metrics` and `/healthz` on `listen` until `shutdown` is cancelled.
/// Binds `listen` for [`serve_metrics`].
pub async fn bind(listen: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(listen)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: listen,
            source,
        })
}

/// Serves the metrics routes on a listener the caller bound (tests bind
/// `127.0.0.1:0`), until `shutdown` is cancelled.
pub fn serve_metrics(
    listener: TcpListener,
    engine: Arc<Engine>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    match listener.local_addr() {
        Ok(local) => tracing::info!(listen = %local, "metrics listening"),
        Err(err) => tracing::warn!(error = %err, "metrics listening on an unknown address"),
    }
    let listener = CappedListener {
        inner: listener,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    let app = router(engine);
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "metrics server stopped");
        }
    });
}

/// The metrics routes, for tests and for `spawn_metrics`.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(engine)
}

/// The exposition for one snapshot of the data plane.
pub fn render(peers: &[PeerStatus], counters: &EngineCounters, now: SystemTime) -> String {
    let mut out = String::with_capacity(1024 + peers.len() * 1024);
    let labels: Vec<String> = peers.iter().map(peer_labels).collect();
    let rows = || peers.iter().zip(&labels);

    family(
        &mut out,
        "gatehouse_peer_rx_bytes_total",
        "counter",
        "Bytes received from the peer (WireGuard session payload).",
    );
    for (peer, labels) in rows() {
        sample(
            &mut out,
            "gatehouse_peer_rx_bytes_total",
            labels,
            peer.rx_bytes,
        );
    }
    family(
        &mut out,
        "gatehouse_peer_tx_bytes_total",
        "counter",
        "Bytes sent to the peer (WireGuard session payload).",
    );
    for (peer, labels) in rows() {
        sample(
            &mut out,
            "gatehouse_peer_tx_bytes_total",
            labels,
            peer.tx_bytes,
        );
    }
    family(
        &mut out,
        "gatehouse_peer_last_handshake_seconds",
        "gauge",
        "Unix time of the peer's last completed handshake; 0 when it has had none.",
    );
    for (peer, labels) in rows() {
        let secs = peer
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        sample(
            &mut out,
            "gatehouse_peer_last_handshake_seconds",
            labels,
            secs,
        );
    }
    family(
        &mut out,
        "gatehouse_peer_packets_total",
        "counter",
        "Packets forwarded: rx = from the peer to the TUN device, tx = to the peer.",
    );
    for (peer, labels) in rows() {
        for (direction, value) in [("rx", peer.rx_packets), ("tx", peer.tx_packets)] {
            let labels = format!("{labels},direction=\"{direction}\"");
            sample(&mut out, "gatehouse_peer_packets_total", &labels, value);
        }
    }
    family(
        &mut out,
        "gatehouse_peer_dropped_packets_total",
        "counter",
        "Decrypted packets from the peer that were dropped, by reason.",
    );
    for (peer, labels) in rows() {
        for (reason, value) in [
            ("spoofed", peer.dropped_spoofed),
            ("policy", peer.dropped_policy),
            ("malformed", peer.dropped_malformed),
        ] {
            let labels = format!("{labels},reason=\"{reason}\"");
            sample(
                &mut out,
                "gatehouse_peer_dropped_packets_total",
                &labels,
                value,
            );
        }
    }

    family(
        &mut out,
        "gatehouse_vpn_peers",
        "gauge",
        "Devices configured as peers in the data plane.",
    );
    sample(&mut out, "gatehouse_vpn_peers", "", peers.len() as u64);
    family(
        &mut out,
        "gatehouse_vpn_connected_peers",
        "gauge",
        "Peers with a handshake in the last 180 seconds.",
    );
    let connected = peers.iter().filter(|p| is_connected(p, now)).count() as u64;
    sample(&mut out, "gatehouse_vpn_connected_peers", "", connected);
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    family(
        &mut out,
        "gatehouse_vpn_cookie_replies_total",
        "counter",
        "Cookie replies sent to handshake initiations while under load.",
    );
    sample(
        &mut out,
        "gatehouse_vpn_cookie_replies_total",
        "",
        load(&counters.cookie_replies),
    );
    family(
        &mut out,
        "gatehouse_vpn_dropped_datagrams_total",
        "counter",
        "UDP datagrams dropped before reaching a peer's session, by reason.",
    );
    for (reason, counter) in [
        ("malformed", &counters.malformed_datagrams),
        ("unknown_peer", &counters.unknown_peer),
        ("handshake_error", &counters.handshake_errors),
        ("decrypt_error", &counters.decrypt_errors),
    ] {
        let labels = format!("reason=\"{reason}\"");
        sample(
            &mut out,
            "gatehouse_vpn_dropped_datagrams_total",
            &labels,
            load(counter),
        );
    }
    family(
        &mut out,
        "gatehouse_vpn_dropped_tun_packets_total",
        "counter",
        "Packets from the TUN device that could not be sent to a peer, by reason.",
    );
    for (reason, counter) in [
        ("malformed", &counters.tun_malformed),
        ("no_peer", &counters.tun_no_peer),
        ("no_endpoint", &counters.tun_no_endpoint),
    ] {
        let labels = format!("reason=\"{reason}\"");
        sample(
            &mut out,
            "gatehouse_vpn_dropped_tun_packets_total",
            &labels,
            load(counter),
        );
    }
    out
}

/// True when the peer's session is alive: a handshake within the window
/// after which WireGuard rejects a session.
pub fn is_connected(peer: &PeerStatus, now: SystemTime) -> bool {
    peer.last_handshake.is_some_and(|t| {
        now.duration_since(t).unwrap_or_default().as_secs() < CONNECTED_WITHIN_SECS
    })
}

async fn metrics(State(engine): State<Arc<Engine>>) -> impl IntoResponse {
    let text = render(&engine.peer_status(), &engine.counters, SystemTime::now());
    ([(CONTENT_TYPE, TEXT_FORMAT)], text)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

fn peer_labels(peer: &PeerStatus) -> String {
    let key = base64::engine::general_purpose::STANDARD.encode(peer.public_key);
    format!(
        "user=\"{}\",device=\"{}\",public_key=\"{}\"",
        escape_label(&peer.user),
        escape_label(&peer.device),
        escape_label(&key)
    )
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A TCP listener that holds at most [`MAX_CONNECTIONS`] connections: it
/// waits for a free slot before accepting, and each connection gives its
/// slot back when dropped.
struct CappedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
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
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection holding a slot, closed when idle for [`IDLE_TIMEOUT`].
struct CappedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Pin<Box<Sleep>>,
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
                if buf.filled().len() > before {
                    let deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                    this.idle.as_mut().reset(deadline);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "metrics connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use boringtun::x25519::StaticSecret;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn peer(user: &str, device: &str, key: u8, handshake_ago: Option<u64>) -> PeerStatus {
        let now = SystemTime::now();
        PeerStatus {
            public_key: [key; 32],
            user: user.into(),
            device: device.into(),
            address: "10.200.0.2".parse().unwrap(),
            allowed_ips: vec!["10.200.0.2".parse().unwrap()],
            endpoint: None,
            last_handshake: handshake_ago.map(|s| now - Duration::from_secs(s)),
            rx_bytes: 100,
            tx_bytes: 200,
            rx_packets: 3,
            tx_packets: 4,
            dropped_spoofed: 5,
            dropped_policy: 6,
            dropped_malformed: 7,
        }
    }

    /// One sample line: name, labels (in order, unescaped) and value.
    #[derive(Debug, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// A strict reader of the text format: every line is a `# HELP`, a
    /// `# TYPE` or a sample of the family declared just before it.
    fn parse(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'));
        let mut samples = Vec::new();
        let mut families = HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("help text");
                current = name.to_owned();
                assert!(families.insert(current.clone()), "{name} declared twice");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                assert_eq!(name, current, "TYPE follows its HELP");
                assert!(["counter", "gauge"].contains(&kind), "{kind}");
                assert_eq!(name.ends_with("_total"), kind == "counter", "{name}");
                continue;
            }
            let name_end = line.find(['{', ' ']).expect("a name");
            let name = &line[..name_end];
            assert_eq!(name, current, "sample under its family: {line}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{name}"
            );
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if let Some(inner) = rest.strip_prefix('{') {
                rest = inner;
                loop {
                    let (label, after) = rest.split_once("=\"").expect("label=\"");
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next().expect("closing quote") {
                            (i, '"') => break i,
                            (_, '\\') => match chars.next().expect("escape").1 {
                                'n' => value.push('\n'),
                                c @ ('\\' | '"') => value.push(c),
                                c => panic!("bad escape \\{c} in {line}"),
                            },
                            (_, c) => value.push(c),
                        }
                    };
                    labels.push((label.to_owned(), value));
                    rest = &after[end + 1..];
                    if let Some(more) = rest.strip_prefix(',') {
                        rest = more;
                    } else {
                        rest = rest.strip_prefix('}').expect("closing brace");
                        break;
                    }
                }
            }
            let value = rest.strip_prefix(' ').expect("space before value");
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            });
        }
        samples
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> &'a Sample {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
    }

    #[test]
    fn a_snapshot_renders_as_valid_text_format() {
        let counters = EngineCounters::default();
        counters.cookie_replies.store(9, Ordering::Relaxed);
        counters.unknown_peer.store(11, Ordering::Relaxed);
        counters.tun_no_endpoint.store(2, Ordering::Relaxed);
        let peers = [
            peer("alice", "laptop", 1, Some(10)),
            peer("bob", "odd\"name\\with\nnewline", 2, None),
            peer("carol", "old", 3, Some(600)),
        ];
        let now = SystemTime::now();
        let text = render(&peers, &counters, now);
        let samples = parse(&text);

        let key_a = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let alice = [
            ("user", "alice"),
            ("device", "laptop"),
            ("public_key", key_a.as_str()),
        ];
        assert_eq!(
            find(&samples, "gatehouse_peer_rx_bytes_total", &alice).value,
            100.0
        );
        assert_eq!(
            find(&samples, "gatehouse_peer_tx_bytes_total", &alice).value,
            200.0
        );
        let handshake = find(&samples, "gatehouse_peer_last_handshake_seconds", &alice).value;
        let expected = (now.duration_since(UNIX_EPOCH).unwrap().as_secs() - 10) as f64;
        assert!(
            (handshake - expected).abs() <= 1.0,
            "{handshake} vs {expected}"
        );
        let mut rx = alice.to_vec();
        rx.push(("direction", "rx"));
        assert_eq!(
            find(&samples, "gatehouse_peer_packets_total", &rx).value,
            3.0
        );
        for (reason, value) in [("spoofed", 5.0), ("policy", 6.0), ("malformed", 7.0)] {
            let mut labels = alice.to_vec();
            labels.push(("reason", reason));
            let sample = find(&samples, "gatehouse_peer_dropped_packets_total", &labels);
            assert_eq!(sample.value, value);
        }

        // Escaped on the way out, read back unchanged.
        let odd = [("device", "odd\"name\\with\nnewline")];
        assert_eq!(
            find(&samples, "gatehouse_peer_tx_bytes_total", &odd).value,
            200.0
        );
        assert!(
            text.contains(r#"device="odd\"name\\with\nnewline""#),
            "{text}"
        );
        assert_eq!(
            find(&samples, "gatehouse_peer_last_handshake_seconds", &odd).value,
            0.0
        );

        assert_eq!(find(&samples, "gatehouse_vpn_peers", &[]).value, 3.0);
        assert_eq!(
            find(&samples, "gatehouse_vpn_connected_peers", &[]).value,
            1.0
        );
        assert_eq!(
            find(&samples, "gatehouse_vpn_cookie_replies_total", &[]).value,
            9.0
        );
        let unknown = [("reason", "unknown_peer")];
        assert_eq!(
            find(&samples, "gatehouse_vpn_dropped_datagrams_total", &unknown).value,
            11.0
        );
        let no_endpoint = [("reason", "no_endpoint")];
        assert_eq!(
            find(
                &samples,
                "gatehouse_vpn_dropped_tun_packets_total",
                &no_endpoint
            )
            .value,
            2.0
        );
        // Every per-peer family has one row per peer (per label value).
        let per_peer = samples
            .iter()
            .filter(|s| s.name == "gatehouse_peer_dropped_packets_total")
            .count();
        assert_eq!(per_peer, 9);
    }

    #[test]
    fn no_peers_still_reports_the_engine() {
        let text = render(&[], &EngineCounters::default(), SystemTime::now());
        let samples = parse(&text);
        assert_eq!(find(&samples, "gatehouse_vpn_peers", &[]).value, 0.0);
        assert!(
            !samples
                .iter()
                .any(|s| s.name.starts_with("gatehouse_peer_"))
        );
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test]
    async fn the_server_answers_metrics_and_health() {
        let engine = Arc::new(Engine::new(StaticSecret::random_from_rng(rand_core::OsRng)));
        engine
            .counters
            .malformed_datagrams
            .store(4, Ordering::Relaxed);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        serve_metrics(listener, engine, &tracker, shutdown.clone());

        let reply = get(addr, "/metrics").await;
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        let samples = parse(body);
        let malformed = [("reason", "malformed")];
        assert_eq!(
            find(
                &samples,
                "gatehouse_vpn_dropped_datagrams_total",
                &malformed
            )
            .value,
            4.0
        );

        let reply = get(addr, "/healthz").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nok"), "{reply}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
