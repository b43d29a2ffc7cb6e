//! The jump host's audit records, and the aggregation that keeps a login
//! flood from flooding the log: each source gets a few individual
//! `ssh.auth.fail` records a minute (and all sources together a few dozen);
//! the rest are counted and written as one summary record per source when
//! the minute ends.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::audit::event::{Actor, Kind, Source, event};
use crate::store::NewAuditEvent;

/// The aggregation window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Individual failure records per window, overall ...
pub const INDIVIDUAL_PER_WINDOW: u32 = 30;
/// ... and per source.
pub const INDIVIDUAL_PER_SOURCE: u32 = 3;
/// Sources with their own summary per window; the rest share one.
const MAX_SUMMARISED_SOURCES: usize = 1024;

/// Decides which failures are written one by one and counts the rest.
pub struct FailureLog {
    inner: Mutex<Window>,
}

struct Window {
    started: Instant,
    individual: u32,
    per_source: HashMap<IpAddr, u32>,
    /// Per source (`None`: every source past the cap): reason → count.
    suppressed: HashMap<Option<IpAddr>, BTreeMap<&'static str, u64>>,
}

/// One summary record's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub source: Option<IpAddr>,
    pub reasons: BTreeMap<&'static str, u64>,
}

impl FailureLog {
    pub fn new(now: Instant) -> Self {
        Self {
            inner: Mutex::new(Window {
                started: now,
                individual: 0,
                per_source: HashMap::new(),
                suppressed: HashMap::new(),
            }),
        }
    }

    /// True: write this failure as its own record. False: it was counted
    /// for the window's summary.
    pub fn note(&self, source: IpAddr, reason: &'static str, now: Instant) -> bool {
        let mut w = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let from_source = w.per_source.get(&source).copied().unwrap_or(0);
        if now.saturating_duration_since(w.started) < WINDOW
            && (w.individual >= INDIVIDUAL_PER_WINDOW || from_source >= INDIVIDUAL_PER_SOURCE)
        {
            let key = if w.suppressed.len() < MAX_SUMMARISED_SOURCES
                || w.suppressed.contains_key(&Some(source))
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
    pub fn roll(&self, now: Instant) -> Vec<Summary> {
        let mut w = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(w.started) < WINDOW {
            return Vec::new();
        }
        w.started = now;
        w.individual = 0;
        w.per_source.clear();
        let mut out: Vec<Summary> = w
            .suppressed
            .drain()
            .map(|(source, reasons)| Summary { source, reasons })
            .collect();
        out.sort_by_key(|s| s.source);
        out
    }
}

impl Summary {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
}
