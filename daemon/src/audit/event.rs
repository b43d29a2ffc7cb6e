//! The audit vocabulary: every kind (named once, in
//! `gatehouse_config::audit_kind`, so `accessctl` completes them), every
//! actor and every source form, and the one way to build an event:
//!
//! ```ignore
//! event(Kind::DeviceCreate, Actor::User(name), Source::Addr(ip)).on(target).detail(json!({..}))
//! ```
//!
//! No other code spells an actor or source string.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

pub use gatehouse_config::audit_kind::AuditKind as Kind;

/// An event to append, built by [`event`]. Never put a
/// secret in any field.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub kind: Kind,
    /// Rendered from [`Actor`].
    pub actor: String,
    /// Rendered from [`Source`].
    pub source: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An authenticated user (portal session, jump host login, their device).
    User(String),
    /// A user name someone tried before proving it (a failed login), so
    /// `accessctl audit --user NAME` finds attempts on that account.
    Claimed(String),
    /// Someone who gave no usable user name.
    Anonymous,
    /// An admin on the admin socket, by the uid of its peer credentials.
    Admin { uid: Option<u32> },
    /// accessd itself: start, stop, expiry, provisioning at start.
    Gateway,
    /// A signal to accessd (SIGHUP: reload).
    Signal(&'static str),
}

/// Where the actor came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A network address (portal requests).
    Addr(IpAddr),
    /// A network address and port (jump host connections).
    Peer(SocketAddr),
    /// An aggregate of many addresses (failure summaries past their cap).
    ManyAddrs,
    /// The admin socket, with the caller's pid when known.
    AdminSocket { pid: Option<i32> },
    /// The gateway's own host: signals, timers, start-up.
    Local,
    /// A config setting that made accessd act by itself (`apply_on_start`).
    Setting(&'static str),
}

/// An event of `kind` by `actor` from `source`, with no target and a
/// `null` detail until [`NewAuditEvent::on`] and [`NewAuditEvent::detail`].
pub fn event(kind: Kind, actor: Actor, source: Source) -> NewAuditEvent {
    NewAuditEvent {
        kind,
        actor: actor.to_string(),
        source: source.to_string(),
        target: String::new(),
        detail: serde_json::Value::Null,
    }
}

impl NewAuditEvent {
    /// The same event about `target`.
    pub fn on(self, target: impl Into<String>) -> NewAuditEvent {
        NewAuditEvent {
            target: target.into(),
            ..self
        }
    }

    /// The same event with `detail`.
    pub fn detail(self, detail: serde_json::Value) -> NewAuditEvent {
        NewAuditEvent { detail, ..self }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(name) | Self::Claimed(name) => f.write_str(name),
            Self::Anonymous => f.write_str("anonymous"),
            Self::Admin { uid: Some(uid) } => write!(f, "uid:{uid}"),
            Self::Admin { uid: None } => f.write_str("uid:unknown"),
            Self::Gateway => f.write_str("accessd"),
            Self::Signal(name) => write!(f, "signal:{name}"),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(ip) => write!(f, "{ip}"),
            Self::Peer(addr) => write!(f, "{addr}"),
            Self::ManyAddrs => f.write_str("many"),
            Self::AdminSocket { pid: Some(pid) } => write!(f, "admin-socket pid:{pid}"),
            Self::AdminSocket { pid: None } => f.write_str("admin-socket"),
            Self::Local => f.write_str("local"),
            Self::Setting(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_and_sources_render_as_the_log_has_always_shown_them() {
        let cases = [
            (Actor::User("alice".into()).to_string(), "alice"),
            (Actor::Claimed("bob".into()).to_string(), "bob"),
            (Actor::Anonymous.to_string(), "anonymous"),
            (Actor::Admin { uid: Some(0) }.to_string(), "uid:0"),
            (Actor::Admin { uid: None }.to_string(), "uid:unknown"),
            (Actor::Gateway.to_string(), "accessd"),
            (Actor::Signal("SIGHUP").to_string(), "signal:SIGHUP"),
            (Source::Addr([192, 0, 2, 1].into()).to_string(), "192.0.2.1"),
            (
                Source::Peer("[2001:db8::1]:4000".parse().unwrap()).to_string(),
                "[2001:db8::1]:4000",
            ),
            (Source::ManyAddrs.to_string(), "many"),
            (
                Source::AdminSocket { pid: Some(7) }.to_string(),
                "admin-socket pid:7",
            ),
            (
                Source::AdminSocket { pid: None }.to_string(),
                "admin-socket",
            ),
            (Source::Local.to_string(), "local"),
            (
                Source::Setting("apply_on_start").to_string(),
                "apply_on_start",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn an_event_is_built_in_one_expression() {
        let e = event(Kind::UserAdd, Actor::Admin { uid: Some(0) }, Source::Local)
            .on("alice")
            .detail(serde_json::json!({ "groups": ["research"] }));
        assert_eq!(e.kind, Kind::UserAdd);
        assert_eq!(
            (e.actor.as_str(), e.source.as_str(), e.target.as_str()),
            ("uid:0", "local", "alice")
        );
        assert_eq!(e.detail["groups"][0], "research");
    }
}
