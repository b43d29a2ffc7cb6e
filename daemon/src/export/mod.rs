//! Streaming the audit log out of the gateway, to the team's log system
//! and to S3. Two exporters: [`syslog`], every record as an RFC 5424
//! message over TLS (RFC 5425) to `[audit.syslog]`; and [`s3`], the records
//! and their signed checkpoints as objects locked in compliance mode
//! (`[audit.s3]`), where nobody can change them before their retention
//! ends.
//!
//! - [`plan`]: the rules without I/O: what to send next from the cursor,
//!   when a record counts as delivered, when to save the cursor, how long
//!   to wait before reconnecting. Its module doc states the delivery rule.
//! - [`rfc5424`]: a record as one framed syslog message (pure).
//! - [`tls`]: the client's TLS settings from `[audit.syslog]`'s files.
//! - [`syslog`]: the task: the connection, the store's records and cursor,
//!   the HA role, around a [`plan::Planner`].
//! - [`s3_plan`]: which records make the next S3 object, its name and bytes
//!   (pure); [`s3`]: the task that writes them.
//! - [`status`]: how far the log and each exporter have come (for
//!   `accessctl audit status` and the portal's auditor's view).
//!
//! Delivery is at least once and in order, from a cursor in the store
//! (`store::audit_cursors`, one per exporter by name): while the receiver
//! is down records wait in the store (the audit log holds them all) and
//! flow when it is back. On an HA pair only the active gateway sends, from
//! the cursor both share.
//!
//! Does not own the records (the store does) nor their format beyond the
//! syslog envelope: each message carries the record's JSON exactly as the
//! mirror writes it. Metrics read [`ExportStats`].

pub mod plan;
pub mod rfc5424;
pub mod s3;
pub mod s3_plan;
pub mod status;
pub mod syslog;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub use s3::spawn_s3_export;
pub use syslog::spawn_syslog_export;

/// Why an exporter could not start, or what broke its connection (the
/// task logs these and tries again).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    TlsFileEmpty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "no root certificate of this system could be loaded; set audit.syslog.ca_file ({reason})"
    )]
    NoRoots { reason: String },
    #[error("audit.syslog.server_name {name:?} is not a name TLS can check: {source}")]
    ServerName {
        name: String,
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("the TLS settings of [audit.syslog] are refused: {source}")]
    Tls { source: rustls::Error },
    #[error("cannot resolve the syslog receiver {host}:{port}: {source}")]
    Resolve {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("the syslog receiver {host}:{port} resolves to no address")]
    NoAddress { host: String, port: u16 },
    #[error("cannot connect to the syslog receiver at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to the syslog receiver at {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("TLS handshake with the syslog receiver at {addr} ({server_name}) failed: {source}")]
    Handshake {
        addr: SocketAddr,
        server_name: String,
        source: std::io::Error,
    },
    #[error("writing to the syslog receiver failed: {source}")]
    Write { source: std::io::Error },
    #[error("writing to the syslog receiver timed out after {timeout:?}")]
    WriteTimeout { timeout: Duration },
    #[error("the syslog receiver closed the connection")]
    Closed,
    #[error("reading from the syslog receiver failed: {source}")]
    Read { source: std::io::Error },
    #[error("cannot encode audit record {seq}: {source}")]
    Encode { seq: u64, source: serde_json::Error },
}

/// What an exporter reports to the metrics; updated by its task, read at
/// each scrape.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Records in the store the receiver is not yet known to have.
    pub lag: AtomicU64,
    /// Bytes written to the receiver (framed messages, before TLS).
    pub bytes: AtomicU64,
    /// Records written (resent ones counted again).
    pub records: AtomicU64,
    /// Connections made after the first one.
    pub reconnects: AtomicU64,
    /// True while a connection is up.
    pub connected: AtomicBool,
}

/// A running exporter, for the metrics and `accessctl status`.
#[derive(Debug, Clone)]
pub struct ExportHandle {
    /// The exporter's name: its cursor's in the store, its metrics' label.
    pub name: &'static str,
    /// Where it sends (`host:port`).
    pub receiver: String,
    pub stats: Arc<ExportStats>,
}

/// One snapshot of an exporter's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportFigures {
    pub lag: u64,
    pub bytes: u64,
    pub records: u64,
    pub reconnects: u64,
    pub connected: bool,
}

impl ExportStats {
    pub fn figures(&self) -> ExportFigures {
        ExportFigures {
            lag: self.lag.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
        }
    }
}
