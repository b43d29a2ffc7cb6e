//! The WireGuard cross-platform UAPI socket (<https://www.wireguard.com/xplatform/>),
//! so the stock `wg show <interface>` lists accessd's peers: wireguard-tools
//! looks for a userspace implementation at `/var/run/wireguard/<interface>.sock`.
//!
//! Owns that socket and the `get` operation: listen port, and per peer its
//! public key, endpoint, last handshake, bytes each way and allowed IP, read
//! from [`Engine::peer_status`]. It never prints `private_key=`: the
//! gateway's key does not leave accessd, and `wg show` works without it.
//! It does not own configuration: peers come from the store, so `set` is
//! answered with `EPERM` and changes nothing.

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{Engine, PeerStatus};

/// Where wireguard-tools looks for userspace interfaces.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;
/// The longest line of a request we read (`wg set` lines are far shorter).
const MAX_LINE: usize = 512;
/// The most bytes of a refused `set` we read before answering.
const MAX_SET_BYTES: usize = 64 * 1024;
/// How long a client may take to send one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `EPERM`: configuration comes from the store, not from UAPI.
const EPERM: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    #[error("cannot create the UAPI socket's directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "another WireGuard implementation (or accessd) is already serving the UAPI socket {path}"
    )]
    InUse { path: PathBuf },
    #[error("cannot remove the stale UAPI socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot bind the UAPI socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot set the permissions of the UAPI socket {path}: {source}")]
    Permissions { path: PathBuf, source: io::Error },
}

/// The socket path wireguard-tools uses for `interface`.
pub fn socket_path(interface: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{interface}.sock"))
}

/// Binds the UAPI socket at `socket` (mode 0600, root's, like wireguard-go's)
/// and serves it until `shutdown` is cancelled; then removes the socket file.
/// A stale socket left by a crash is replaced; a live one is an error.
/// Must be called from within the tokio runtime.
pub fn spawn_uapi(
    engine: Arc<Engine>,
    socket: PathBuf,
    listen_port: u16,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), UapiError> {
    let listener = bind(&socket)?;
    // Remembered so shutdown removes our socket, not a successor's.
    let identity = std::fs::metadata(&socket).ok().map(|m| (m.dev(), m.ino()));
    tracing::info!(socket = %socket.display(), "WireGuard UAPI listening");
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let conn_tracker = tracker.clone();
    tracker.spawn(async move {
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let stream = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(error = %err, "UAPI accept failed");
                        // Out of descriptors, most likely: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let engine = engine.clone();
            let shutdown = shutdown.clone();
            conn_tracker.spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    served = serve_connection(stream, &engine, listen_port) => {
                        if let Err(err) = served {
                            tracing::debug!(error = %err, "UAPI connection closed");
                        }
                    }
                }
                drop(permit);
            });
        }
        drop(listener);
        remove_if_ours(&socket, identity);
        tracing::debug!(socket = %socket.display(), "WireGuard UAPI stopped");
    });
    Ok(())
}

/// The reply to `get=1`: every peer, then `errno=0` and the closing blank line.
pub fn format_get(listen_port: u16, peers: &[PeerStatus]) -> String {
    let mut out = String::with_capacity(64 + peers.len() * 256);
    let _ = writeln!(out, "listen_port={listen_port}");
    for peer in peers {
        let _ = writeln!(out, "public_key={}", hex(&peer.public_key));
        if let Some(endpoint) = peer.endpoint {
            // `SocketAddr` prints IPv6 in brackets, as UAPI wants.
            let _ = writeln!(out, "endpoint={endpoint}");
        }
        let since_epoch = peer
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", since_epoch.as_secs());
        let _ = writeln!(
            out,
            "last_handshake_time_nsec={}",
            since_epoch.subsec_nanos()
        );
        let _ = writeln!(out, "rx_bytes={}", peer.rx_bytes);
        let _ = writeln!(out, "tx_bytes={}", peer.tx_bytes);
        let _ = writeln!(out, "persistent_keepalive_interval=0");
        for ip in &peer.allowed_ips {
            let prefix = match ip {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            };
            let _ = writeln!(out, "allowed_ip={ip}/{prefix}");
        }
        let _ = writeln!(out, "protocol_version=1");
    }
    out.push_str("errno=0\n\n");
    out
}

fn bind(path: &Path) -> Result<UnixListener, UapiError> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| UapiError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    if path.symlink_metadata().is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(UapiError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(|source| UapiError::RemoveStale {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| UapiError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        UapiError::Permissions {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

fn remove_if_ours(path: &Path, identity: Option<(u64, u64)>) {
    let current = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    if current.is_some()
        && current == identity
        && let Err(err) = std::fs::remove_file(path)
    {
        tracing::warn!(socket = %path.display(), error = %err, "cannot remove the UAPI socket");
    }
}

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Get,
    Set,
}

/// Why a connection was closed without an answer.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("read or write failed: {0}")]
    Io(#[from] io::Error),
    #[error("no request within {REQUEST_TIMEOUT:?}")]
    Timeout,
    #[error("a request line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("a set request is longer than {MAX_SET_BYTES} bytes")]
    SetTooLong,
    #[error("malformed request: {0:?}")]
    Malformed(String),
}

/// Answers requests on one connection until the client closes it (UAPI
/// allows several operations per connection) or sends something malformed.
async fn serve_connection(
    stream: UnixStream,
    engine: &Engine,
    listen_port: u16,
) -> Result<(), ConnectionError> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut reader)).await {
            Err(_) => return Err(ConnectionError::Timeout),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(request))) => request,
            Ok(Err(err)) => return Err(err),
        };
        let reply = match request {
            Request::Get => format_get(listen_port, &engine.peer_status()),
            Request::Set => format!("errno={EPERM}\n\n"),
        };
        write.write_all(reply.as_bytes()).await?;
        write.flush().await?;
    }
}

/// Reads one request: its operation line and the lines up to the blank
/// line that ends it. `None` when the client closed the connection between
/// requests.
async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Request>, ConnectionError> {
    let mut line = Vec::with_capacity(64);
    if !read_line(reader, &mut line).await? {
        return Ok(None);
    }
    match line.as_slice() {
        b"get=1" => {
            // `get` has no arguments: the blank line must follow at once.
            line.clear();
            if !read_line(reader, &mut line).await? || !line.is_empty() {
                return Err(ConnectionError::Malformed(lossy(&line)));
            }
            Ok(Some(Request::Get))
        }
        b"set=1" => {
            let mut total = 0;
            loop {
                line.clear();
                if !read_line(reader, &mut line).await? {
                    return Err(ConnectionError::Malformed("set without its end".into()));
                }
                if line.is_empty() {
                    return Ok(Some(Request::Set));
                }
                total += line.len() + 1;
                if total > MAX_SET_BYTES {
                    return Err(ConnectionError::SetTooLong);
                }
                if !line.contains(&b'=') {
                    return Err(ConnectionError::Malformed(lossy(&line)));
                }
            }
        }
        other => Err(ConnectionError::Malformed(lossy(other))),
    }
}

/// Reads one `\n`-terminated line into `line` (without the `\n`). False at
/// a clean end of stream; a line cut short by the end is malformed.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> Result<bool, ConnectionError> {
    let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
    let read = (&mut *reader).take(limit).read_until(b'\n', line).await?;
    if read == 0 {
        return Ok(false);
    }
    if line.last() != Some(&b'\n') {
        return Err(if read > MAX_LINE {
            ConnectionError::LineTooLong
        } else {
            ConnectionError::Malformed(lossy(line))
        });
    }
    line.pop();
    Ok(true)
}

fn lossy(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(64)];
    String::from_utf8_lossy(cut).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::SystemTime;

    use base64::Engine as _;
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};
    use gatehouse_config::policy::{GroupRule, Policy};
    use tokio::io::AsyncReadExt as _;

    use super::*;
    use crate::vpn::engine::Sink;
    use crate::vpn::peers::PeerSpec;

    struct Discard;

    impl Sink for Discard {
        fn send_udp(&mut self, _: &[u8], _: SocketAddr) {}
        fn write_tun(&mut self, _: &[u8]) {}
    }

    /// Keeps what the engine sends to the network.
    #[derive(Default)]
    struct Sent(Vec<Vec<u8>>);

    impl Sink for Sent {
        fn send_udp(&mut self, datagram: &[u8], _: SocketAddr) {
            self.0.push(datagram.to_vec());
        }
        fn write_tun(&mut self, _: &[u8]) {}
    }

    fn status(key: u8, endpoint: Option<&str>, handshake: Option<Duration>) -> PeerStatus {
        PeerStatus {
            public_key: [key; 32],
            user: "alice".into(),
            device: "laptop".into(),
            address: "10.200.0.2".parse().unwrap(),
            allowed_ips: vec!["10.200.0.2".parse().unwrap()],
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            last_handshake: handshake.map(|d| UNIX_EPOCH + d),
            rx_bytes: 1234,
            tx_bytes: 5678,
            rx_packets: 0,
            tx_packets: 0,
            dropped_spoofed: 0,
            dropped_policy: 0,
            dropped_malformed: 0,
        }
    }

    /// An engine with one device whose client has completed a handshake
    /// from `client_addr`; returns the client's public key.
    fn engine_with_peer(client_addr: SocketAddr) -> (Arc<Engine>, [u8; 32]) {
        let secret = StaticSecret::random_from_rng(rand_core::OsRng);
        let gateway_public = PublicKey::from(&secret);
        let engine = Arc::new(Engine::new(secret));
        let client_secret = StaticSecret::random_from_rng(rand_core::OsRng);
        let client_public = PublicKey::from(&client_secret).to_bytes();
        let policy = Policy::new([(
            "research".to_string(),
            GroupRule {
                subnets: vec!["10.0.3.0/24".parse().unwrap()],
                ports: None,
            },
        )]);
        engine.set_peers(&[PeerSpec {
            public_key: client_public,
            address: "10.200.0.2".parse().unwrap(),
            user: "alice".into(),
            device: "laptop".into(),
            access: Arc::new(policy.access_for(&["research"])),
            keepalive: None,
            resume_endpoint: None,
        }]);
        let mut client = Tunn::new(client_secret, gateway_public, None, None, 7, None);
        let (mut buf, mut ebuf, mut out) = (vec![0u8; 2048], vec![0u8; 2048], vec![0u8; 2048]);
        let TunnResult::WriteToNetwork(init) = client.format_handshake_initiation(&mut buf, false)
        else {
            panic!("no initiation");
        };
        let mut sent = Sent::default();
        engine.handle_datagram(client_addr, init, &mut ebuf, &mut sent);
        let response = sent.0.first().expect("a handshake response");
        if let TunnResult::WriteToNetwork(keepalive) = client.decapsulate(None, response, &mut out)
        {
            engine.handle_datagram(client_addr, keepalive, &mut ebuf, &mut Discard);
        }
        (engine, client_public)
    }

    /// Sends `request`, reads one reply (up to its closing blank line).
    async fn ask(stream: &mut UnixStream, request: &str) -> String {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\n\n") {
            let n = stream.read(&mut byte).await.unwrap();
            assert_eq!(
                n,
                1,
                "closed early after {:?}",
                String::from_utf8_lossy(&reply)
            );
            reply.push(byte[0]);
        }
        String::from_utf8(reply).unwrap()
    }

    fn pairs(reply: &str) -> Vec<(&str, &str)> {
        reply
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split_once('=').expect("key=value"))
            .collect()
    }

    #[test]
    fn get_lists_every_peer_in_uapi_format() {
        let peers = [
            status(
                0xab,
                Some("198.18.0.2:40000"),
                Some(Duration::new(1_795_600_800, 250)),
            ),
            status(0x01, Some("[2001:db8::2]:51820"), None),
        ];
        let text = format_get(51820, &peers);
        let key_a = "ab".repeat(32);
        let key_b = "01".repeat(32);
        assert_eq!(
            text,
            format!(
                "listen_port=51820\n\
                 public_key={key_a}\n\
                 endpoint=198.18.0.2:40000\n\
                 last_handshake_time_sec=1795600800\n\
                 last_handshake_time_nsec=250\n\
                 rx_bytes=1234\n\
                 tx_bytes=5678\n\
                 persistent_keepalive_interval=0\n\
                 allowed_ip=10.200.0.2/32\n\
                 protocol_version=1\n\
                 public_key={key_b}\n\
                 endpoint=[2001:db8::2]:51820\n\
                 last_handshake_time_sec=0\n\
                 last_handshake_time_nsec=0\n\
                 rx_bytes=1234\n\
                 tx_bytes=5678\n\
                 persistent_keepalive_interval=0\n\
                 allowed_ip=10.200.0.2/32\n\
                 protocol_version=1\n\
                 errno=0\n\n"
            )
        );
        assert!(!text.contains("private_key"));
    }

    #[test]
    fn v6_addresses_get_a_128_prefix_and_no_endpoint_means_no_line() {
        let mut peer = status(2, None, None);
        peer.allowed_ips = vec!["fd00:200::2".parse().unwrap()];
        let text = format_get(1, &[peer]);
        assert!(text.contains("\nallowed_ip=fd00:200::2/128\n"), "{text}");
        assert!(!text.contains("endpoint="), "{text}");
        assert_eq!(format_get(7, &[]), "listen_port=7\nerrno=0\n\n");
    }

    #[tokio::test]
    async fn serves_get_refuses_set_and_closes_on_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/wireguard/gh0.sock");
        let client_addr: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let (engine, client_public) = engine_with_peer(client_addr);
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        spawn_uapi(engine, socket.clone(), 51820, &tracker, shutdown.clone()).unwrap();
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let parent = std::fs::metadata(socket.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o755);

        let mut stream = UnixStream::connect(&socket).await.unwrap();
        let reply = ask(&mut stream, "get=1\n\n").await;
        let fields: HashMap<&str, &str> = pairs(&reply).into_iter().collect();
        assert_eq!(fields["listen_port"], "51820");
        assert_eq!(fields["public_key"], hex(&client_public));
        assert_eq!(fields["endpoint"], "198.18.0.2:40000");
        assert_eq!(fields["allowed_ip"], "10.200.0.2/32");
        assert_eq!(fields["errno"], "0");
        let handshake: u64 = fields["last_handshake_time_sec"].parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(handshake) < 60, "{handshake} vs {now}");

        // Same connection, next operation: configuration is not ours to take.
        let reply = ask(&mut stream, "set=1\nlisten_port=1\n\n").await;
        assert_eq!(reply, "errno=1\n\n");

        // Garbage: the connection is closed without an answer.
        stream.write_all(b"hello\n\n").await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");

        // An overlong line, and `get` with trailing data, are refused too.
        for request in [vec![b'x'; 4096], b"get=1\nfoo=bar\n\n".to_vec()] {
            let mut stream = UnixStream::connect(&socket).await.unwrap();
            stream.write_all(&request).await.unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
        }

        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .unwrap();
        assert!(!socket.exists(), "the socket is removed on shutdown");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("gh1.sock");
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let (engine, _) = engine_with_peer("198.18.0.2:1".parse().unwrap());
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        spawn_uapi(
            engine.clone(),
            socket.clone(),
            1,
            &tracker,
            shutdown.clone(),
        )
        .unwrap();
        let second = spawn_uapi(engine, socket.clone(), 1, &tracker, shutdown.clone());
        assert!(matches!(second, Err(UapiError::InUse { .. })), "{second:?}");
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    /// The stock `wg show` reads our peers. Needs wireguard-tools and root
    /// (the socket lives in /var/run/wireguard); skips otherwise.
    #[tokio::test]
    #[expect(clippy::print_stderr, reason = "a skipped test says why")]
    async fn stock_wg_show_lists_the_peer() {
        let wg_found = std::process::Command::new("wg").arg("--version").output();
        if wg_found.is_err() {
            eprintln!("skipped: `wg` (wireguard-tools) is not installed");
            return;
        }
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: `wg show` reads {SOCKET_DIR}, which needs root");
            return;
        }
        let interface = format!("ghu{}", std::process::id() % 1_000_000);
        let socket = socket_path(&interface);
        let client_addr: SocketAddr = "198.18.0.2:40123".parse().unwrap();
        let (engine, client_public) = engine_with_peer(client_addr);
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        spawn_uapi(engine, socket.clone(), 51820, &tracker, shutdown.clone()).unwrap();

        let run = |args: Vec<String>| {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new("wg").args(&args).output()
            })
        };
        let show = run(vec!["show".into(), interface.clone()]).await.unwrap();
        let dump = run(vec!["show".into(), interface.clone(), "dump".into()])
            .await
            .unwrap();
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        assert!(!socket.exists());

        let show = show.unwrap();
        let text = String::from_utf8_lossy(&show.stdout);
        assert!(
            show.status.success(),
            "{text} {}",
            String::from_utf8_lossy(&show.stderr)
        );
        let key = base64::engine::general_purpose::STANDARD.encode(client_public);
        assert!(text.contains(&format!("peer: {key}")), "{text}");
        assert!(text.contains("endpoint: 198.18.0.2:40123"), "{text}");
        assert!(text.contains("allowed ips: 10.200.0.2/32"), "{text}");
        assert!(text.contains("listening port: 51820"), "{text}");
        assert!(text.contains("latest handshake: "), "{text}");

        // `dump`: the peer line is tab-separated, key first.
        let dump = dump.unwrap();
        let text = String::from_utf8_lossy(&dump.stdout);
        let peer_line = text
            .lines()
            .find(|l| l.starts_with(&key))
            .unwrap_or_else(|| panic!("no peer line in {text}"));
        let columns: Vec<&str> = peer_line.split('\t').collect();
        assert_eq!(columns[2], "198.18.0.2:40123", "{peer_line}");
        assert_eq!(columns[3], "10.200.0.2/32", "{peer_line}");
        assert_ne!(columns[4], "0", "a handshake time: {peer_line}");
    }
}
