//! The audit vocabulary: every kind (named once, in
//! `gatehouse_config::audit_kind`, so `accessctl` completes them), every
//! actor and every source form, and the one way to build an event:
//!
//! ```ignore
//! event(Kind::DeviceCreate, Actor::User(name), Source::Addr(ip)).on(target).detail(json!({..}))
//! ```
//!
//! or, where the detail is typed, `.with(&Detail { .. })` ([`super::detail`]).
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
    /// A login through the team's identity provider (`[oidc]`): members it
    /// created, groups it re-evaluated.
    Sso,
    /// An EC2 instance joining by its identity document (`ssh.host_join`),
    /// once the document's signature holds.
    Instance(String),
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

/// The longest actor, source or target a record keeps; longer ones (what
/// the other side sent: a tried user name, a `host:port`) are cut and
/// marked. A record stays small whatever a client sends.
pub const MAX_FIELD_BYTES: usize = 256;
/// The longest string inside a detail.
pub const MAX_DETAIL_STRING_BYTES: usize = 512;
/// The most items of one array inside a detail.
pub const MAX_DETAIL_ITEMS: usize = 64;

/// An event of `kind` by `actor` from `source`, with no target and a
/// `null` detail until [`NewAuditEvent::on`] and [`NewAuditEvent::detail`].
pub fn event(kind: Kind, actor: Actor, source: Source) -> NewAuditEvent {
    NewAuditEvent {
        kind,
        actor: capped(actor.to_string(), MAX_FIELD_BYTES),
        source: capped(source.to_string(), MAX_FIELD_BYTES),
        target: String::new(),
        detail: serde_json::Value::Null,
    }
}

impl NewAuditEvent {
    /// The same event about `target` (capped, see [`MAX_FIELD_BYTES`]).
    pub fn on(self, target: impl Into<String>) -> NewAuditEvent {
        NewAuditEvent {
            target: capped(target.into(), MAX_FIELD_BYTES),
            ..self
        }
    }

    /// The same event with `detail`, its strings and arrays capped.
    pub fn detail(self, mut detail: serde_json::Value) -> NewAuditEvent {
        cap_value(&mut detail);
        NewAuditEvent { detail, ..self }
    }
}

/// `text` cut to at most `max` bytes (at a character boundary) and marked
/// with how much was cut.
pub fn capped(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!("…[truncated {dropped} bytes]"));
    text
}

fn cap_value(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) if text.len() > MAX_DETAIL_STRING_BYTES => {
            *text = capped(std::mem::take(text), MAX_DETAIL_STRING_BYTES);
        }
        serde_json::Value::Array(items) => {
            if items.len() > MAX_DETAIL_ITEMS {
                let dropped = items.len() - MAX_DETAIL_ITEMS;
                items.truncate(MAX_DETAIL_ITEMS);
                items.push(serde_json::Value::String(format!(
                    "…[truncated {dropped} items]"
                )));
            }
            items.iter_mut().for_each(cap_value);
        }
        serde_json::Value::Object(fields) => fields.values_mut().for_each(cap_value),
        _ => {}
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
            Self::Sso => f.write_str("oidc"),
            Self::Instance(id) => write!(f, "instance:{id}"),
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
    fn what_the_other_side_sends_is_capped_and_marked() {
        // Review finding 6: a 256 KiB `host:port` went into the record whole.
        let huge = "h".repeat(256 * 1024);
        let e = event(
            Kind::SshForwardDeny,
            Actor::Claimed("é".repeat(300)),
            Source::Local,
        )
        .on(format!("{huge}:22"))
        .detail(serde_json::json!({
            "asked": { "target": format!("{huge}:22") },
            "names": vec!["x"; 1000],
        }));
        assert!(e.target.len() < MAX_FIELD_BYTES + 40, "{}", e.target.len());
        assert!(e.target.ends_with(&format!(
            "…[truncated {} bytes]",
            huge.len() + 3 - MAX_FIELD_BYTES
        )));
        assert!(e.actor.len() < MAX_FIELD_BYTES + 40 && e.actor.contains("truncated"));
        let asked = e.detail["asked"]["target"].as_str().unwrap();
        assert!(asked.len() < MAX_DETAIL_STRING_BYTES + 40 && asked.contains("truncated"));
        let names = e.detail["names"].as_array().unwrap();
        assert_eq!(names.len(), MAX_DETAIL_ITEMS + 1);
        assert_eq!(names[MAX_DETAIL_ITEMS], "…[truncated 936 items]");
        // What fits is untouched.
        let small = event(Kind::UserAdd, Actor::Gateway, Source::Local).on("alice");
        assert_eq!(small.target, "alice");
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
