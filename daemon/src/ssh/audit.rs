//! The jump host's audit records, and the aggregation that keeps a flood
//! from flooding the log, before login as after: each source (for
//! `ssh.auth.fail`) or user (for `ssh.forward.deny`) gets a few individual
//! records a minute, and all of them together a few dozen; the rest are
//! counted and written as one summary record per source or user when the
//! minute ends. Records of what already happened that the store refused are
//! kept in [`Unwritten`] (the store's, shared with the AWS provisioner) and
//! written again at the next flush.
//!
//! The details of a channel's records are typed ([`SessionStarted`],
//! [`SessionEnded`], [`ChannelRefused`]): with a certificate login they name
//! it as the private host's sshd does (`ID <key id> (serial N)`), so a
//! record here meets the host's own log line.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::conn_state::LoginKey;
use crate::audit::detail::Detail;
use crate::audit::event::{Actor, Kind, Source, event};
use crate::store::NewAuditEvent;

/// The aggregation window.
pub const WINDOW: Duration = Duration::from_secs(60);
pub use crate::store::unwritten::Unwritten;

/// Individual failure records per window, overall ...
pub const INDIVIDUAL_PER_WINDOW: u32 = 30;
/// ... and per source.
pub const INDIVIDUAL_PER_SOURCE: u32 = 3;
/// Sources with their own summary per window; the rest share one.
const MAX_SUMMARISED_SOURCES: usize = 1024;

/// Decides which refusals are written one by one and counts the rest, per
/// key: the source address of failed logins, the user of refused channels.
pub struct FailureLog<K = IpAddr> {
    inner: Mutex<Window<K>>,
    /// Individual records per window, overall and per key.
    overall: u32,
    per_key: u32,
}

/// Individual `ssh.forward.deny` records per window, overall ...
pub const REFUSALS_PER_WINDOW: u32 = 200;
/// ... and per logged-in user (accountable, so more than a stranger gets).
pub const REFUSALS_PER_USER: u32 = 20;

struct Window<K> {
    started: Instant,
    individual: u32,
    per_source: HashMap<K, u32>,
    /// Per key (`None`: every key past the cap): reason → count.
    suppressed: HashMap<Option<K>, BTreeMap<&'static str, u64>>,
}

/// One summary record's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<K = IpAddr> {
    pub source: Option<K>,
    pub reasons: BTreeMap<&'static str, u64>,
}

impl<K: Hash + Eq + Ord + Clone> FailureLog<K> {
    /// The budget of failed logins: [`INDIVIDUAL_PER_WINDOW`] and
    /// [`INDIVIDUAL_PER_SOURCE`].
    pub fn new(now: Instant) -> Self {
        Self::with_budget(now, INDIVIDUAL_PER_WINDOW, INDIVIDUAL_PER_SOURCE)
    }

    /// `overall` individual records per window, `per_key` of one key.
    pub fn with_budget(now: Instant, overall: u32, per_key: u32) -> Self {
        Self {
            inner: Mutex::new(Window {
                started: now,
                individual: 0,
                per_source: HashMap::new(),
                suppressed: HashMap::new(),
            }),
            overall,
            per_key,
        }
    }

    /// True: write this failure as its own record. False: it was counted
    /// for the window's summary.
    pub fn note(&self, source: K, reason: &'static str, now: Instant) -> bool {
        let mut w = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let from_source = w.per_source.get(&source).copied().unwrap_or(0);
        if now.saturating_duration_since(w.started) < WINDOW
            && (w.individual >= self.overall || from_source >= self.per_key)
        {
            let key = if w.suppressed.len() < MAX_SUMMARISED_SOURCES
                || w.suppressed.contains_key(&Some(source.clone()))
            {
                Some(source)
            } else {
                None
            };
            *w.suppressed
                .entry(key)
                .or_default()
                .entry(reason)
                .or_default() += 1;
            return false;
        }
        w.individual += 1;
        if w.per_source.len() < MAX_SUMMARISED_SOURCES || from_source > 0 {
            w.per_source.insert(source, from_source + 1);
        }
        true
    }

    /// When the window has ended: its summaries, and a fresh window.
    pub fn roll(&self, now: Instant) -> Vec<Summary<K>> {
        let mut w = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(w.started) < WINDOW {
            return Vec::new();
        }
        w.started = now;
        w.individual = 0;
        w.per_source.clear();
        let mut out: Vec<Summary<K>> = w
            .suppressed
            .drain()
            .map(|(source, reasons)| Summary { source, reasons })
            .collect();
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }
}

impl Summary<IpAddr> {
    /// The `ssh.auth.fail` summary of one source.
    pub fn event(&self, gateway: &str) -> NewAuditEvent {
        let count: u64 = self.reasons.values().sum();
        let source = self.source.map_or(Source::ManyAddrs, Source::Addr);
        event(Kind::SshAuthFail, Actor::Anonymous, source)
            .on(gateway)
            .detail(json!({
                "aggregated": count,
                "window_secs": WINDOW.as_secs(),
                "reasons": self.reasons,
            }))
    }
}

impl Summary<String> {
    /// The `ssh.forward.deny` summary of one user's refused channels and
    /// requests.
    pub fn deny_event(&self, gateway: &str) -> NewAuditEvent {
        let count: u64 = self.reasons.values().sum();
        let actor = self.source.clone().map_or(Actor::Anonymous, Actor::User);
        event(Kind::SshForwardDeny, actor, Source::Local)
            .on(gateway)
            .detail(json!({
                "aggregated": count,
                "window_secs": WINDOW.as_secs(),
                "reasons": self.reasons,
            }))
    }
}

/// The detail of `ssh.session.start`: the channel is open to `resolved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionStarted {
    /// The channel's id (`accessctl ssh channels`).
    pub channel: u64,
    pub key_fingerprint: String,
    /// The certificate the login key was shown in: its serial in decimal
    /// (as sshd logs it; a JSON number would lose digits in readers that
    /// use doubles) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_serial: Option<String>,
    /// ... and its key id. Both absent for a plain key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_key_id: Option<String>,
    /// `host:port` as the client asked.
    pub requested: String,
    /// The address connected to.
    pub resolved: String,
}

impl SessionStarted {
    pub(super) fn new(
        channel: u64,
        key: &LoginKey,
        requested: String,
        resolved: SocketAddr,
    ) -> Self {
        let (cert_serial, cert_key_id) = cert_fields(key);
        Self {
            channel,
            key_fingerprint: key.fingerprint.clone(),
            cert_serial,
            cert_key_id,
            requested,
            resolved: resolved.to_string(),
        }
    }
}

impl Detail for SessionStarted {
    const KINDS: &'static [Kind] = &[Kind::SshSessionStart];
}

/// The detail of `ssh.session.end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionEnded {
    pub channel: u64,
    pub key_fingerprint: String,
    /// As in [`SessionStarted`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_key_id: Option<String>,
    pub resolved: String,
    /// Client to target.
    pub bytes_up: u64,
    /// Target to client.
    pub bytes_down: u64,
    pub duration_ms: u64,
    /// Why it ended, in a sentence.
    pub reason: String,
}

impl Detail for SessionEnded {
    const KINDS: &'static [Kind] = &[Kind::SshSessionEnd];
}

/// The detail of `ssh.forward.deny` for a refused direct-tcpip channel of
/// a logged-in user (other refusals and the summaries have their own
/// shapes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRefused {
    pub asked: AskedChannel,
    pub key_fingerprint: String,
    /// As in [`SessionStarted`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_key_id: Option<String>,
    /// The refusal's code (`not_in_groups`, `connect_timeout`, ...).
    pub reason: String,
    /// What the client was told.
    pub message: String,
}

/// The channel a [`ChannelRefused`] was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskedChannel {
    pub channel: String,
    pub target: String,
}

impl Detail for ChannelRefused {
    const KINDS: &'static [Kind] = &[Kind::SshForwardDeny];
}

/// `cert_serial` and `cert_key_id` of a login key: both, or neither.
pub(super) fn cert_fields(key: &LoginKey) -> (Option<String>, Option<String>) {
    match &key.cert {
        Some(cert) => (Some(cert.serial.to_string()), Some(cert.key_id.clone())),
        None => (None, None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn session_records_name_a_certificate_as_sshd_does_and_nothing_without() {
        use crate::audit::detail::parse_back;
        use crate::ssh::conn_state::CertId;

        let resolved: SocketAddr = "10.0.3.140:22".parse().unwrap();
        let start = |key: &LoginKey| {
            let alice = Actor::User("alice".into());
            let detail = SessionStarted::new(7, key, "research:22".into(), resolved);
            event(Kind::SshSessionStart, alice, Source::Local).with(&detail)
        };
        let cert = LoginKey {
            fingerprint: "SHA256:k".into(),
            // Past 2^53: a double would print another serial.
            cert: Some(CertId {
                serial: 9_007_199_254_740_993,
                key_id: "alice@gw".into(),
            }),
        };
        let e = start(&cert);
        assert_eq!(e.detail["cert_serial"], "9007199254740993");
        assert_eq!(e.detail["cert_key_id"], "alice@gw");
        let back: SessionStarted = parse_back("ssh.session.start", &e.detail).unwrap();
        assert_eq!(back.resolved, "10.0.3.140:22");

        let plain = LoginKey {
            fingerprint: "SHA256:k".into(),
            cert: None,
        };
        let e = start(&plain);
        let fields = e.detail.as_object().unwrap();
        assert!(
            !fields.contains_key("cert_serial") && !fields.contains_key("cert_key_id"),
            "absent, not null: {}",
            e.detail
        );
        parse_back::<SessionStarted>("ssh.session.start", &e.detail).unwrap();
        assert_eq!(cert_fields(&plain), (None, None));
    }

    #[test]
    fn a_flood_is_summarised_and_other_sources_still_recorded() {
        let now = Instant::now();
        let log = FailureLog::new(now);
        let attacker: IpAddr = "198.51.100.7".parse().unwrap();
        let written = (0..100)
            .filter(|_| log.note(attacker, "unknown_key", now))
            .count();
        assert_eq!(written, INDIVIDUAL_PER_SOURCE as usize);
        // Another source is still written individually.
        assert!(log.note("192.0.2.1".parse().unwrap(), "unknown_user", now));
        assert!(log.roll(now + Duration::from_secs(1)).is_empty());
        let summaries = log.roll(now + WINDOW);
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].source, Some(attacker));
        assert_eq!(summaries[0].reasons["unknown_key"], 97);
        let event = summaries[0].event("gw");
        assert_eq!(event.detail["aggregated"], 97);
        // The new window starts with a fresh budget.
        assert!(log.note(attacker, "unknown_key", now + WINDOW));
    }

    #[test]
    fn refusals_after_login_are_summarised_per_user() {
        // Review finding 6: each refused channel of a logged-in user was its
        // own record, without limit.
        let now = Instant::now();
        let log: FailureLog<String> =
            FailureLog::with_budget(now, REFUSALS_PER_WINDOW, REFUSALS_PER_USER);
        let written = (0..1000)
            .filter(|_| log.note("mallory".to_string(), "not_in_groups", now))
            .count();
        assert_eq!(written, REFUSALS_PER_USER as usize);
        assert!(log.note("alice".to_string(), "not_in_groups", now));
        let summaries = log.roll(now + WINDOW);
        assert_eq!(summaries.len(), 1);
        let record = summaries[0].deny_event("gw");
        assert_eq!(record.actor, "mallory");
        assert_eq!(record.detail["aggregated"], 980);
    }

    #[test]
    fn the_overall_budget_caps_many_sources() {
        let now = Instant::now();
        let log = FailureLog::new(now);
        let written = (0..200u32)
            .filter(|i| log.note(IpAddr::from(i.to_be_bytes()), "unknown_key", now))
            .count();
        assert_eq!(written, INDIVIDUAL_PER_WINDOW as usize);
        let total: u64 = log
            .roll(now + WINDOW)
            .iter()
            .map(|s| s.reasons.values().sum::<u64>())
            .sum();
        assert_eq!(total, 170);
    }

    #[tokio::test]
    async fn records_the_store_refused_are_kept_and_written_at_the_next_flush() {
        // The rule of review finding 5, applied to the jump host: a failed
        // login (or summary, refusal, session end) the store refused was
        // only logged, and lost.
        let gw = crate::testing::TestGateway::new(crate::testing::CONFIG).await;
        let shared = super::super::Shared::new(
            &gw.core,
            "127.0.0.1:2222".parse().unwrap(),
            &tokio_util::task::TaskTracker::new(),
            tokio_util::sync::CancellationToken::new(),
        );
        gw.refuse_audit_inserts(true);
        let peer = "192.0.2.7:40000".parse().unwrap();
        shared
            .note_failure(peer, Some("alice"), "unknown_key", &[])
            .await;
        assert_eq!(shared.unwritten.kept(), 1, "kept for a retry");
        shared.retry_unwritten().await;
        assert_eq!(shared.unwritten.kept(), 1, "still refused: still kept");
        gw.refuse_audit_inserts(false);
        shared.retry_unwritten().await;
        assert_eq!(shared.unwritten.kept(), 0);
        let records = gw.audit_records().await;
        let failed: Vec<_> = records
            .iter()
            .filter(|r| r.kind == "ssh.auth.fail")
            .collect();
        assert_eq!(failed.len(), 1, "written once: {records:#?}");
        assert_eq!(failed[0].detail["reason"], "unknown_key");
    }
}
