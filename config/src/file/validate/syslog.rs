//! `[audit.syslog]`: the receiver's address and name, the TLS files, and
//! the message header fields, each checked against what RFC 5424 allows.

use std::net::IpAddr;

use super::super::raw::RawSyslog;
use super::super::{SyslogConfig, TlsFiles};
use super::Checker;

/// RFC 5424 §6: APP-NAME is 1*48 PRINTUSASCII, HOSTNAME 1*255.
const APP_NAME_MAX: usize = 48;
const HOSTNAME_MAX: usize = 255;

impl Checker<'_> {
    /// `gateway_name` is the HOSTNAME when `hostname` is not set.
    pub(super) fn syslog(&mut self, raw: RawSyslog, gateway_name: &str) -> Option<SyslogConfig> {
        let address = self.syslog_address(raw.address.trim());
        let server_name = match raw.server_name.as_deref().map(str::trim) {
            Some(name) if is_server_name(name) => Some(name.to_string()),
            Some(name) => {
                self.problem(
                    "audit.syslog.server_name",
                    format!("{name:?} is not a DNS name or IP address the receiver's certificate could carry"),
                );
                None
            }
            None => address.as_ref().map(|(host, _)| host.clone()),
        };
        let ca_file = match &raw.ca_file {
            Some(text) => self.absolute_path("audit.syslog.ca_file", text).map(Some),
            None => Some(None),
        };
        let client_auth = match (&raw.client_cert_file, &raw.client_key_file) {
            (None, None) => Some(None),
            (Some(cert), Some(key)) => {
                let cert = self.absolute_path("audit.syslog.client_cert_file", cert);
                let key = self.absolute_path("audit.syslog.client_key_file", key);
                cert.zip(key)
                    .map(|(cert, key)| Some(TlsFiles { cert, key }))
            }
            (Some(_), None) => {
                self.problem(
                    "audit.syslog.client_cert_file",
                    "is set without audit.syslog.client_key_file: give both (the gateway's client certificate and its key), or neither",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    "audit.syslog.client_key_file",
                    "is set without audit.syslog.client_cert_file: give both (the gateway's client certificate and its key), or neither",
                );
                None
            }
        };
        let app_name = raw.app_name.trim().to_string();
        if !is_header_field(&app_name, APP_NAME_MAX) {
            self.problem(
                "audit.syslog.app_name",
                format!("{app_name:?} is not an RFC 5424 APP-NAME: 1 to {APP_NAME_MAX} printable ASCII characters, no space"),
            );
        }
        let hostname = match raw.hostname.as_deref().map(str::trim) {
            Some(name) => name.to_string(),
            None => gateway_name.to_string(),
        };
        if !is_header_field(&hostname, HOSTNAME_MAX) {
            self.problem(
                "audit.syslog.hostname",
                format!("{hostname:?} is not an RFC 5424 HOSTNAME: 1 to {HOSTNAME_MAX} printable ASCII characters, no space"),
            );
        }
        let (host, port) = address?;
        if !is_header_field(&app_name, APP_NAME_MAX) || !is_header_field(&hostname, HOSTNAME_MAX) {
            return None;
        }
        Some(SyslogConfig {
            host,
            port,
            server_name: server_name?,
            ca_file: ca_file?,
            client_auth: client_auth?,
            app_name,
            hostname,
        })
    }

    /// `host:port`, `[v6]:port`: the host (without brackets) and the port.
    fn syslog_address(&mut self, text: &str) -> Option<(String, u16)> {
        const KEY: &str = "audit.syslog.address";
        if text.is_empty() {
            self.problem(
                KEY,
                "is required in [audit.syslog]: the receiver's host:port, e.g. \"logs.example.org:6514\"",
            );
            return None;
        }
        let parsed = text.rsplit_once(':').and_then(|(host, port)| {
            let host = match host.strip_prefix('[') {
                Some(inner) => inner
                    .strip_suffix(']')
                    .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())?,
                None if host.contains(':') => return None,
                None => host,
            };
            let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
            is_server_name(host).then(|| (host.to_string(), port))
        });
        if parsed.is_none() {
            self.problem(
                KEY,
                format!("{text:?} is not host:port, like \"logs.example.org:6514\", \"10.0.2.9:6514\" or \"[2001:db8::9]:6514\""),
            );
        }
        parsed
    }
}

/// A DNS name (letters, digits, '-' and '_' in dot-separated labels) or an
/// IP address: what a TLS server name can be.
fn is_server_name(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// RFC 5424 header fields: 1 to `max` characters of PRINTUSASCII (33..=126).
fn is_header_field(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len()) && text.bytes().all(|b| (33..=126).contains(&b))
}
