//! The syslog exporter's task: around a [`Planner`], it reads the cursor
//! and the records from the store, keeps one TLS connection to the
//! receiver, writes framed messages, watches the connection for the
//! receiver closing it, saves the cursor, and follows the HA role.
//!
//! One task, owned by start-up's tracker; it stops on the shutdown token,
//! saving the cursor of what was delivered first. Errors on the connection
//! are logged and end in a reconnection with backoff, never in the task
//! ending: the records wait in the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gatehouse_config::file::SyslogConfig;
use rustls::pki_types::ServerName;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::plan::{PlanSettings, Planner, Step};
use super::rfc5424::{self, Header};
use super::{ExportError, ExportHandle, ExportStats};
use crate::gateway::Core;
use crate::ha::Ha;
use crate::store::Store;

/// The exporter's name: its cursor's in the store, its metrics' label.
pub const NAME: &str = "syslog";

/// How long connecting (TCP, then the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one batch may take to write; a receiver that reads nothing
/// for this long is treated as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// `TCP_USER_TIMEOUT`: written bytes the receiver's TCP has not
/// acknowledged after this long close the connection. Shorter than
/// [`PlanSettings::confirm_after`]: that is what makes "still connected"
/// mean "received" (see [`super::plan`]).
const USER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the HA role is looked at while waiting (the lease can run
/// out without a message).
const ROLE_CHECK: Duration = Duration::from_secs(1);
/// The wait after the store refused a read, before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How long shutdown waits to save the cursor and close the connection.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// Starts the syslog exporter of `[audit.syslog]`: `None` without it.
/// Reads the TLS files now, so a bad one stops start-up. With `ha`, it
/// sends only while this gateway is the active one.
pub fn spawn_syslog_export(
    core: &Core,
    ha: Option<Ha>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Option<ExportHandle>, ExportError> {
    let config = core.config();
    let Some(syslog) = config.audit.syslog.clone() else {
        return Ok(None);
    };
    let (connector, server_name) = super::tls::connector(&syslog)?;
    let stats = Arc::new(ExportStats::default());
    let exporter = Exporter {
        store: core.store().clone(),
        ha,
        header: Header {
            hostname: syslog.hostname.clone(),
            app_name: syslog.app_name.clone(),
            procid: std::process::id(),
        },
        receiver: Receiver {
            config: syslog,
            connector,
            server_name,
        },
        stats: Arc::clone(&stats),
    };
    let receiver = match exporter.receiver.config.host.contains(':') {
        true => format!(
            "[{}]:{}",
            exporter.receiver.config.host, exporter.receiver.config.port
        ),
        false => format!(
            "{}:{}",
            exporter.receiver.config.host, exporter.receiver.config.port
        ),
    };
    tracing::info!(%receiver, "audit records stream to syslog");
    tracker.spawn(exporter.run(PlanSettings::default(), shutdown));
    Ok(Some(ExportHandle {
        name: NAME,
        receiver,
        stats,
    }))
}

/// Where and how to connect.
struct Receiver {
    config: SyslogConfig,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

struct Exporter {
    store: Store,
    ha: Option<Ha>,
    header: Header,
    receiver: Receiver,
    stats: Arc<ExportStats>,
}

/// One TLS connection to the receiver, split so that waiting can watch the
/// read side for the receiver closing it.
struct Connection {
    reader: ReadHalf<TlsStream<TcpStream>>,
    writer: WriteHalf<TlsStream<TcpStream>>,
    peer: SocketAddr,
}

impl Exporter {
    async fn run(self, settings: PlanSettings, shutdown: CancellationToken) {
        let mut planner = Planner::new(settings, self.is_active(), Instant::now());
        let mut changes = self.store.subscribe();
        let mut connection: Option<Connection> = None;
        let mut ever_connected = false;
        let mut failing = false;
        loop {
            let now = Instant::now();
            planner.on_role(self.is_active(), now);
            let step = planner.poll(now);
            self.stats.lag.store(planner.lag(), Ordering::Relaxed);
            self.stats
                .connected
                .store(connection.is_some(), Ordering::Relaxed);
            match step {
                Step::LoadCursor => {
                    let read = self
                        .store
                        .read(|r| Ok((r.audit_cursor(NAME)?, r.audit_last()?)))
                        .await;
                    match read {
                        Ok((cursor, newest)) => {
                            tracing::debug!(cursor, "syslog export goes on from its cursor");
                            planner.on_cursor(cursor);
                            planner.on_newest(newest.map_or(0, |h| h.seq));
                        }
                        Err(error) => {
                            tracing::warn!(%error, "syslog export cannot read its cursor; trying again");
                            if pause(&shutdown, STORE_RETRY).await {
                                break;
                            }
                        }
                    }
                }
                Step::Connect => {
                    let connected = tokio::select! {
                        () = shutdown.cancelled() => break,
                        connected = self.receiver.connect() => connected,
                    };
                    match connected {
                        Ok(conn) => {
                            tracing::info!(peer = %conn.peer, "connected to the syslog receiver");
                            if ever_connected {
                                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                            }
                            ever_connected = true;
                            failing = false;
                            connection = Some(conn);
                            planner.on_connected();
                        }
                        Err(error) => {
                            // Once per outage at WARN; the retries at DEBUG.
                            if failing {
                                tracing::debug!(%error, "syslog receiver still unreachable");
                            } else {
                                tracing::warn!(%error, lag = planner.lag(), "syslog receiver unreachable; records wait in the store");
                            }
                            failing = true;
                            planner.on_connect_failed(Instant::now());
                        }
                    }
                }
                Step::Send { after, limit } => {
                    let Some(conn) = connection.as_mut() else {
                        planner.on_broken(now);
                        continue;
                    };
                    let records = self
                        .store
                        .read(move |r| r.audit_records_after(after, limit))
                        .await;
                    let records = match records {
                        Ok(records) => records,
                        Err(error) => {
                            tracing::warn!(%error, "syslog export cannot read audit records; trying again");
                            if pause(&shutdown, STORE_RETRY).await {
                                break;
                            }
                            continue;
                        }
                    };
                    let Some(last) = records.last().map(|r| r.seq) else {
                        planner.on_nothing_after(after);
                        continue;
                    };
                    let written = tokio::select! {
                        () = shutdown.cancelled() => break,
                        written = self.write(conn, &records) => written,
                    };
                    match written {
                        Ok(()) => planner.on_sent(last, Instant::now()),
                        Err(ExportError::Encode { seq, source }) => {
                            // Cannot happen for a record read back from the
                            // store (it was encoded to be written); sending
                            // the rest would leave a gap, so wait and retry.
                            tracing::error!(seq, error = %source, "syslog export cannot encode an audit record");
                            if pause(&shutdown, STORE_RETRY).await {
                                break;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "syslog connection broke; undelivered records go again");
                            connection = None;
                            planner.on_broken(Instant::now());
                        }
                    }
                }
                Step::Save { seq } => match self.save(seq).await {
                    Ok(saved) => planner.on_saved(saved, Instant::now()),
                    Err(error) => {
                        tracing::warn!(%error, seq, "syslog export cannot save its cursor; trying again");
                        planner.on_save_failed(Instant::now());
                    }
                },
                Step::Close => {
                    if let Some(conn) = connection.take() {
                        tracing::info!("standby: closing the syslog connection");
                        close(conn).await;
                    }
                    planner.on_closed();
                }
                Step::Wait { until } => {
                    let mut until = until;
                    if self.ha.is_some() {
                        until = Some(until.map_or(now + ROLE_CHECK, |u| u.min(now + ROLE_CHECK)));
                    }
                    let sleep = async {
                        match until {
                            Some(at) => tokio::time::sleep_until(at.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        changed = changes.changed() => {
                            if changed.is_err() {
                                // The store is gone: nothing more to send.
                                break;
                            }
                            match self.store.read(|r| r.audit_last()).await {
                                Ok(last) => planner.on_newest(last.map_or(0, |h| h.seq)),
                                Err(error) => tracing::warn!(%error, "syslog export cannot read the newest audit record"),
                            }
                        }
                        error = closed(connection.as_mut()) => {
                            tracing::warn!(%error, "syslog connection lost; undelivered records go again");
                            connection = None;
                            planner.on_broken(Instant::now());
                        }
                        () = sleep => {}
                    }
                }
            }
        }
        self.stop(planner, connection).await;
    }

    /// Saves what was delivered and closes the connection, within
    /// [`SHUTDOWN_WAIT`].
    async fn stop(&self, mut planner: Planner, connection: Option<Connection>) {
        let finish = async {
            if let Some(seq) = planner.unsaved(Instant::now()) {
                match self.save(seq).await {
                    Ok(saved) => tracing::info!(cursor = saved, "syslog export stopped"),
                    Err(error) => {
                        tracing::warn!(%error, seq, "syslog export cannot save its cursor at shutdown; the records after the saved one go again")
                    }
                }
            }
            if let Some(conn) = connection {
                close(conn).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_WAIT, finish).await.is_err() {
            tracing::warn!("syslog export did not stop in time");
        }
    }

    fn is_active(&self) -> bool {
        self.ha.as_ref().is_none_or(Ha::is_active)
    }

    async fn save(&self, seq: u64) -> Result<u64, crate::store::StoreError> {
        let now = crate::time_fmt::now_unix();
        self.store
            .write(move |w| w.advance_audit_cursor(NAME, seq, now))
            .await
    }

    /// Writes `records` as framed messages, in one go.
    async fn write(
        &self,
        conn: &mut Connection,
        records: &[gatehouse_config::api::AuditRecord],
    ) -> Result<(), ExportError> {
        let mut buf = Vec::with_capacity(records.len() * 512);
        for record in records {
            let msg =
                rfc5424::message(record, &self.header).map_err(|source| ExportError::Encode {
                    seq: record.seq,
                    source,
                })?;
            rfc5424::frame(&msg, &mut buf);
        }
        let write = async {
            conn.writer.write_all(&buf).await?;
            conn.writer.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {
                self.stats
                    .bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                self.stats
                    .records
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(source)) => Err(ExportError::Write { source }),
            Err(_) => Err(ExportError::WriteTimeout {
                timeout: WRITE_TIMEOUT,
            }),
        }
    }
}

impl Receiver {
    /// Resolves the receiver, connects to its first address that answers,
    /// and completes the TLS handshake.
    async fn connect(&self) -> Result<Connection, ExportError> {
        let (host, port) = (&self.config.host, self.config.port);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|source| ExportError::Resolve {
                host: host.clone(),
                port,
                source,
            })?
            .collect();
        let mut last = ExportError::NoAddress {
            host: host.clone(),
            port,
        };
        for addr in addrs {
            match self.connect_to(addr).await {
                Ok(conn) => return Ok(conn),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    async fn connect_to(&self, addr: SocketAddr) -> Result<Connection, ExportError> {
        let timeout = CONNECT_TIMEOUT;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ExportError::ConnectTimeout { addr, timeout })?
            .map_err(|source| ExportError::Connect { addr, source })?;
        let sock = SockRef::from(&tcp);
        // What makes "still connected" mean "received" (see plan.rs); and
        // keepalives, so a receiver that vanished is noticed while idle.
        if let Err(error) = sock.set_tcp_user_timeout(Some(USER_TIMEOUT)) {
            tracing::warn!(%error, "cannot set TCP_USER_TIMEOUT on the syslog connection");
        }
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(5))
            .with_interval(Duration::from_secs(2));
        if let Err(error) = sock.set_tcp_keepalive(&keepalive) {
            tracing::debug!(%error, "cannot set TCP keepalive on the syslog connection");
        }
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            timeout,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| ExportError::ConnectTimeout { addr, timeout })?
        .map_err(|source| ExportError::Handshake {
            addr,
            server_name: self.config.server_name.clone(),
            source,
        })?;
        let (reader, writer) = tokio::io::split(tls);
        Ok(Connection {
            reader,
            writer,
            peer: addr,
        })
    }
}

/// Resolves when the receiver closes `conn` or it fails (a receiver sends
/// nothing in RFC 5425; bytes it does send are read and dropped). Never
/// resolves without a connection.
async fn closed(conn: Option<&mut Connection>) -> ExportError {
    let Some(conn) = conn else {
        return std::future::pending().await;
    };
    let mut buf = [0u8; 1024];
    loop {
        match conn.reader.read(&mut buf).await {
            Ok(0) => return ExportError::Closed,
            Ok(_) => {}
            Err(source) => return ExportError::Read { source },
        }
    }
}

/// Sends TLS close_notify and closes, briefly.
async fn close(conn: Connection) {
    let mut stream = conn.reader.unsplit(conn.writer);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// Sleeps `wait`; true when shutdown came first.
async fn pause(shutdown: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}
