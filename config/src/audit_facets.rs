//! What an audit record says about "who reached which host, when, and how
//! much", read once from its kind, actor, source, target and detail: the
//! user it concerns, how they came (VPN, jump host, portal, admin socket),
//! whether it went through, the host and port reached, and the bytes each
//! way. The store indexes these facets beside each record so reviews filter
//! and summarise without parsing details; `accessctl` and the portal's CSV
//! print them as columns. One rule, used by both.
//!
//! Pure: a record in, facets out.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::api::AuditRecord;

/// How the actor came to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Through the WireGuard data plane.
    Vpn,
    /// Through the SSH jump host.
    Ssh,
    /// Through the HTTPS portal (or its identity provider).
    Portal,
    /// On the admin socket (`accessctl`).
    Admin,
    /// accessd by itself: start, stop, timers, HA, provisioning.
    Gateway,
}

/// Whether what the record is about went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// A failed login, a denied packet or channel, a refused change.
    Refused,
}

/// Which count of a day (or hour) a record adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A member signed in: portal login or enrollment, a tunnel up.
    Login,
    /// A login or a channel refused.
    Refusal,
    /// Data plane packets denied by policy.
    Denial,
    /// Something changed: users, devices, keys, certificates, config, AWS.
    Change,
    /// Traffic the data plane allowed (`vpn.flow`).
    Flow,
    /// A jump host connection to a target.
    Session,
    /// The rest (gateway start and stop, checkpoints, views, HA).
    Other,
}

/// What one record says, as columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facets {
    pub via: Option<Via>,
    pub outcome: Option<Outcome>,
    pub class: Option<Class>,
    /// The member the record is about: the actor when a user acted, else
    /// the user a change was made to.
    pub user: Option<String>,
    /// The WireGuard device, for data plane records.
    pub device: Option<String>,
    /// The client's address, when the source is one.
    pub source_ip: Option<IpAddr>,
    /// The private host reached (or refused), as an address when it is one.
    pub host: Option<String>,
    pub host_ip: Option<IpAddr>,
    pub port: Option<u16>,
    /// Device (or client) to host.
    pub bytes_up: u64,
    /// Host to device (or client).
    pub bytes_down: u64,
    /// When the traffic was first and last seen (unix seconds), where the
    /// record spans a period (`vpn.flow`); otherwise the record's time.
    pub first_unix: Option<i64>,
    pub last_unix: Option<i64>,
}

impl Facets {
    /// The facets of `record`.
    pub fn of(record: &AuditRecord) -> Facets {
        let kind = record.kind.as_str();
        let detail = &record.detail;
        let str_of = |key: &str| detail.get(key).and_then(|v| v.as_str());
        let u64_of = |key: &str| detail.get(key).and_then(serde_json::Value::as_u64);
        let mut facets = Facets {
            via: Some(via_of(kind, &record.source)),
            outcome: Some(outcome_of(kind)),
            class: Some(class_of(kind)),
            user: user_of(kind, &record.actor, &record.target),
            source_ip: ip_of(&record.source),
            ..Facets::default()
        };
        match kind {
            "vpn.flow" => {
                facets.device = str_of("device").map(str::to_string);
                if let Some(dst) = str_of("dst") {
                    facets.host = Some(dst.to_string());
                    facets.host_ip = dst.parse().ok();
                }
                facets.port = u64_of("dport").and_then(|p| u16::try_from(p).ok());
                facets.bytes_up = u64_of("bytes_up").unwrap_or(0);
                facets.bytes_down = u64_of("bytes_down").unwrap_or(0);
                facets.first_unix = str_of("first_seen").and_then(unix_of);
                facets.last_unix = str_of("last_seen").and_then(unix_of);
                // The device's tunnel address, not a client's address.
                facets.source_ip = None;
            }
            "vpn.connect" | "vpn.disconnect" | "vpn.acl.deny" => {
                facets.device = device_of(&record.target);
            }
            "ssh.session.start" | "ssh.session.end" | "ssh.forward.deny" => {
                // `resolved` is what the jump host connected to; the
                // target what the client asked for (maybe a name).
                let resolved = str_of("resolved").and_then(|r| r.parse::<SocketAddr>().ok());
                match resolved {
                    Some(addr) => {
                        facets.host = Some(addr.ip().to_string());
                        facets.host_ip = Some(addr.ip());
                        facets.port = Some(addr.port());
                    }
                    None => {
                        if let Some((host, port)) = split_host_port(&record.target) {
                            facets.host_ip = host.parse().ok();
                            facets.host = Some(host);
                            facets.port = port;
                        }
                    }
                }
                facets.bytes_up = u64_of("bytes_up").unwrap_or(0);
                facets.bytes_down = u64_of("bytes_down").unwrap_or(0);
            }
            _ => {}
        }
        facets
    }
}

fn via_of(kind: &str, source: &str) -> Via {
    match kind.split('.').next().unwrap_or_default() {
        "vpn" => Via::Vpn,
        "portal" => Via::Portal,
        "ssh" if !is_ssh_admin_change(kind) => Via::Ssh,
        "audit" if kind == "audit.view" => Via::Portal,
        _ if source.starts_with("admin-socket") => Via::Admin,
        _ if ip_of(source).is_some() => Via::Portal,
        _ => Via::Gateway,
    }
}

/// The `ssh.` kinds that are made at the admin socket or the portal
/// (certificates, a host joining, a channel killed), not jump host
/// traffic.
fn is_ssh_admin_change(kind: &str) -> bool {
    kind == "ssh.cert.issue"
        || kind == "ssh.channel.kill"
        || kind.starts_with("ssh.host_cert.")
        || kind.starts_with("ssh.host_join.")
}

fn outcome_of(kind: &str) -> Outcome {
    match kind.rsplit('.').next().unwrap_or_default() {
        "fail" | "deny" => Outcome::Refused,
        _ => Outcome::Ok,
    }
}

fn class_of(kind: &str) -> Class {
    match kind {
        "portal.login.ok" | "portal.enroll" | "vpn.connect" => Class::Login,
        "portal.login.fail" | "ssh.auth.fail" | "ssh.forward.deny" | "ssh.host_join.fail" => {
            Class::Refusal
        }
        "vpn.acl.deny" => Class::Denial,
        "vpn.flow" => Class::Flow,
        "ssh.session.start" => Class::Session,
        _ if [
            "user.",
            "device.",
            "ssh.cert.",
            "ssh.host_cert.",
            "ssh.channel.",
            "aws.",
            "config.",
            "admin.",
        ]
        .iter()
        .any(|p| kind.starts_with(p)) =>
        {
            Class::Change
        }
        _ => Class::Other,
    }
}

/// The actor when it names a user; for changes to a user (or their
/// device, `user/device`), the target's user.
fn user_of(kind: &str, actor: &str, target: &str) -> Option<String> {
    let is_name = |s: &str| crate::names::is_valid_name(s);
    if is_name(actor) && actor != "anonymous" && actor != "accessd" && actor != "oidc" {
        return Some(actor.to_string());
    }
    if kind.starts_with("user.") || kind.starts_with("device.") || kind == "ssh.cert.issue" {
        let user = target.split('/').next().unwrap_or_default();
        if is_name(user) {
            return Some(user.to_string());
        }
    }
    None
}

fn device_of(target: &str) -> Option<String> {
    target.split_once('/').map(|(_, device)| device.to_string())
}

/// An address, or the address of `addr:port` / `[v6]:port`.
pub fn ip_of(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// `host:port`, `[v6]:port` or a bare host.
fn split_host_port(target: &str) -> Option<(String, Option<u16>)> {
    if target.is_empty() {
        return None;
    }
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Some((addr.ip().to_string(), Some(addr.port())));
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_string(), port.parse().ok())),
        _ => Some((target.to_string(), None)),
    }
}

fn unix_of(time: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339_weak(time).ok()?;
    i64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs()).ok()
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in order.
            pub const ALL: &[$ty] = &[$($ty::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| {
                        let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                        format!("{text:?} is not one of {}", all.join(", "))
                    })
            }
        }
    };
}

text_enum!(Via { Vpn = "vpn", Ssh = "ssh", Portal = "portal", Admin = "admin", Gateway = "gateway" });
text_enum!(Outcome { Ok = "ok", Refused = "refused" });
text_enum!(Class {
    Login = "login",
    Refusal = "refusal",
    Denial = "denial",
    Change = "change",
    Flow = "flow",
    Session = "session",
    Other = "other",
});

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(
        kind: &str,
        actor: &str,
        source: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> AuditRecord {
        AuditRecord {
            seq: 1,
            time: "2026-12-05T10:00:00.000Z".into(),
            kind: kind.into(),
            actor: actor.into(),
            source: source.into(),
            target: target.into(),
            detail,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_flow_names_user_device_host_port_and_bytes() {
        let f = Facets::of(&record(
            "vpn.flow",
            "alice",
            "10.200.0.2",
            "10.0.3.140:5201",
            json!({"device": "laptop", "dst": "10.0.3.140", "dport": 5201, "proto": "tcp",
                   "bytes_up": 1000, "bytes_down": 20, "packets_up": 3, "packets_down": 1,
                   "first_seen": "2026-12-05T09:59:01Z", "last_seen": "2026-12-05T09:59:59Z"}),
        ));
        assert_eq!(f.via, Some(Via::Vpn));
        assert_eq!(f.outcome, Some(Outcome::Ok));
        assert_eq!(f.class, Some(Class::Flow));
        assert_eq!(f.user.as_deref(), Some("alice"));
        assert_eq!(f.device.as_deref(), Some("laptop"));
        assert_eq!(f.host_ip, Some("10.0.3.140".parse().unwrap()));
        assert_eq!(f.port, Some(5201));
        assert_eq!((f.bytes_up, f.bytes_down), (1000, 20));
        assert_eq!(f.first_unix, Some(1_796_464_741));
        assert_eq!(f.last_unix, Some(1_796_464_799));
        assert_eq!(f.source_ip, None);
    }

    #[test]
    fn a_jump_host_session_names_the_resolved_host_and_the_client() {
        let f = Facets::of(&record(
            "ssh.session.end",
            "bob",
            "192.0.2.9:40000",
            "db.internal:22",
            json!({"resolved": "10.0.3.7:22", "bytes_up": 5, "bytes_down": 9}),
        ));
        assert_eq!(f.via, Some(Via::Ssh));
        assert_eq!(f.host.as_deref(), Some("10.0.3.7"));
        assert_eq!(f.port, Some(22));
        assert_eq!(f.source_ip, Some("192.0.2.9".parse().unwrap()));
        assert_eq!((f.bytes_up, f.bytes_down), (5, 9));
        let denied = Facets::of(&record(
            "ssh.forward.deny",
            "bob",
            "local",
            "10.0.4.1:5432",
            json!({}),
        ));
        assert_eq!(denied.outcome, Some(Outcome::Refused));
        assert_eq!(denied.class, Some(Class::Refusal));
        assert_eq!(denied.host_ip, Some("10.0.4.1".parse().unwrap()));
        assert_eq!(denied.port, Some(5432));
        let named = Facets::of(&record(
            "ssh.forward.deny",
            "bob",
            "local",
            "db.internal:22",
            json!({}),
        ));
        assert_eq!(
            (named.host.as_deref(), named.host_ip, named.port),
            (Some("db.internal"), None, Some(22))
        );
    }

    #[test]
    fn logins_refusals_and_changes_are_classed_and_placed() {
        let fail = Facets::of(&record(
            "portal.login.fail",
            "mallory",
            "198.51.100.4",
            "",
            json!({}),
        ));
        assert_eq!(
            (fail.via, fail.outcome, fail.class),
            (
                Some(Via::Portal),
                Some(Outcome::Refused),
                Some(Class::Refusal)
            )
        );
        assert_eq!(fail.source_ip, Some("198.51.100.4".parse().unwrap()));
        let add = Facets::of(&record(
            "user.add",
            "uid:0",
            "admin-socket pid:7",
            "alice",
            json!({}),
        ));
        assert_eq!(
            (add.via, add.class, add.user.as_deref()),
            (Some(Via::Admin), Some(Class::Change), Some("alice"))
        );
        let revoke = Facets::of(&record(
            "device.revoke",
            "alice",
            "203.0.113.5",
            "alice/laptop",
            json!({}),
        ));
        assert_eq!(
            (revoke.via, revoke.user.as_deref()),
            (Some(Via::Portal), Some("alice"))
        );
        let start = Facets::of(&record(
            "gateway.start",
            "accessd",
            "local",
            "gw",
            json!({}),
        ));
        assert_eq!(
            (start.via, start.class, start.user),
            (Some(Via::Gateway), Some(Class::Other), None)
        );
        let deny = Facets::of(&record(
            "vpn.acl.deny",
            "alice",
            "10.200.0.2",
            "alice/laptop",
            json!({}),
        ));
        assert_eq!(
            (deny.class, deny.outcome, deny.device.as_deref()),
            (Some(Class::Denial), Some(Outcome::Refused), Some("laptop"))
        );
    }

    #[test]
    fn names_parse_back() {
        for via in Via::ALL {
            assert_eq!(via.as_str().parse::<Via>().unwrap(), *via);
        }
        assert!(
            "sideways"
                .parse::<Outcome>()
                .unwrap_err()
                .contains("ok, refused")
        );
    }
}
