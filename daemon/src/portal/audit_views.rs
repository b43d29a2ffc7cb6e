//! Every look at the auditor's view is itself audited: an `audit.view`
//! record (actor the member, source their address) naming the page and the
//! filter, written before the page is shown; if it cannot be written, the
//! page is refused. A page reloaded in a loop would fill the log with one
//! record a second, so the same member's same view (page and filter) is
//! recorded once per [`VIEW_PERIOD`]; anything else seen is recorded.
//!
//! [`ViewLog`] is that rule without I/O (time comes in as `now`);
//! [`record_view`] writes the record through the store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use gatehouse_config::api::AuditQuery;
use serde::{Deserialize, Serialize};

use super::PortalState;
use super::error::Failure;
use crate::audit::detail::Detail;
use crate::audit::event::{Actor, Kind, Source, event};

/// The same view of the same member is recorded at most once this often.
pub const VIEW_PERIOD: Duration = Duration::from_secs(60);
/// Views remembered at most; past this (a flood of distinct filters) every
/// view is recorded.
const MAX_REMEMBERED: usize = 10_000;

/// A page of the auditor's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditPage {
    /// `/audit`: activity per hour, the chain's state, the newest records.
    Timeline,
    /// `/audit/users`: the hosts each user reached.
    Users,
    /// `/audit/hosts`: the users who reached each host.
    Hosts,
    /// `/audit/export.csv`: the matching records as CSV.
    Csv,
}

impl AuditPage {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditPage::Timeline => "timeline",
            AuditPage::Users => "users",
            AuditPage::Hosts => "hosts",
            AuditPage::Csv => "csv",
        }
    }
}

/// The detail of `audit.view`: which page, with which query (the filter
/// and the page of results, exactly as the review service was asked).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditViewed {
    pub page: AuditPage,
    pub filter: AuditQuery,
}

impl Detail for AuditViewed {
    const KINDS: &'static [Kind] = &[Kind::AuditView];
}

/// Which views were recorded in the last [`VIEW_PERIOD`].
#[derive(Debug, Default)]
pub struct ViewLog {
    recorded: Mutex<HashMap<String, Instant>>,
}

impl ViewLog {
    /// Claims the record of `user`'s `view` at `now`: true when it must be
    /// written (none in the last period), false when one was. A claimed
    /// view whose record then fails is [`ViewLog::release`]d.
    pub fn claim(&self, user: &str, view: &AuditViewed, now: Instant) -> bool {
        let key = view_key(user, view);
        let mut recorded = self
            .recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recorded
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < VIEW_PERIOD)
        {
            return false;
        }
        if recorded.len() >= MAX_REMEMBERED {
            recorded.retain(|_, at| now.saturating_duration_since(*at) < VIEW_PERIOD);
        }
        if recorded.len() < MAX_REMEMBERED {
            recorded.insert(key, now);
        }
        true
    }

    /// Forgets a claim whose record was not written, so the next view
    /// tries again.
    pub fn release(&self, user: &str, view: &AuditViewed) {
        self.recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&view_key(user, view));
    }
}

/// Writes `audit.view` for the session's member (unless the same view was
/// recorded within [`VIEW_PERIOD`]). An error means the page must not be
/// shown.
pub async fn record_view(
    state: &PortalState,
    user: &str,
    source: std::net::IpAddr,
    view: AuditViewed,
) -> Result<(), Failure> {
    if !state.audit_views.claim(user, &view, Instant::now()) {
        return Ok(());
    }
    let record = event(
        Kind::AuditView,
        Actor::User(user.to_string()),
        Source::Addr(source),
    )
    .with(&view);
    let written = state
        .core
        .store()
        .write(move |w| w.audit(record).map(drop))
        .await;
    if let Err(err) = written {
        state.audit_views.release(user, &view);
        tracing::error!(error = %err, "portal: cannot record an audit view");
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "The gateway cannot write its audit log right now, so it shows none of it. Try again later.",
        ));
    }
    Ok(())
}

fn view_key(user: &str, view: &AuditViewed) -> String {
    let filter = serde_json::to_string(&view.filter).unwrap_or_default();
    format!("{user}\0{}\0{filter}", view.page.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(page: AuditPage, host: Option<&str>) -> AuditViewed {
        AuditViewed {
            page,
            filter: AuditQuery {
                host: host.map(str::to_string),
                ..AuditQuery::default()
            },
        }
    }

    #[test]
    fn the_same_view_is_recorded_once_a_minute_and_others_each_time() {
        let log = ViewLog::default();
        let t0 = Instant::now();
        let hosts = view(AuditPage::Hosts, Some("10.0.3.140"));
        assert!(log.claim("carol", &hosts, t0));
        assert!(!log.claim("carol", &hosts, t0 + Duration::from_secs(59)));
        // Another member, page or filter is another view.
        assert!(log.claim("dave", &hosts, t0 + Duration::from_secs(1)));
        assert!(log.claim("carol", &view(AuditPage::Users, Some("10.0.3.140")), t0));
        assert!(log.claim("carol", &view(AuditPage::Hosts, None), t0));
        assert!(log.claim("carol", &hosts, t0 + VIEW_PERIOD));
        // A record that failed is tried again at the next view.
        let csv = view(AuditPage::Csv, None);
        assert!(log.claim("carol", &csv, t0));
        log.release("carol", &csv);
        assert!(log.claim("carol", &csv, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn a_flood_of_filters_is_bounded_and_still_recorded() {
        let log = ViewLog::default();
        let t0 = Instant::now();
        for i in 0..MAX_REMEMBERED + 10 {
            let v = view(
                AuditPage::Hosts,
                Some(&format!("10.0.{}.{}", i / 250, i % 250)),
            );
            assert!(log.claim("carol", &v, t0), "view {i}");
        }
        assert!(log.recorded.lock().unwrap().len() <= MAX_REMEMBERED);
        // Past the period the old ones make room again.
        let later = t0 + VIEW_PERIOD;
        let v = view(AuditPage::Users, None);
        assert!(log.claim("carol", &v, later));
        assert!(!log.claim("carol", &v, later));
        assert_eq!(log.recorded.lock().unwrap().len(), 1);
    }
}
