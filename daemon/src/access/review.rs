//! Audit review, the one service behind `accessctl audit` (the admin API)
//! and the portal's auditor view: what a review query means. It turns the
//! query both receive ([`AuditQuery`]) into the store's filter, checking
//! every parameter, so a time, a network or a page size means the same on
//! the command line and on the auditor's page.

use gatehouse_config::api::AuditQuery;
use ipnet::IpNet;

use crate::store::AuditFilter;
use crate::time_fmt::parse_rfc3339;

/// The most records one page of records holds.
pub const RECORDS_PAGE_MAX: u64 = 10_000;

/// A query parameter that means nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}={value:?}: {reason}")]
pub struct ReviewError {
    pub parameter: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// The store's filter for `query`; `limit` defaults to (and is capped at)
/// [`RECORDS_PAGE_MAX`].
pub fn filter(query: &AuditQuery) -> Result<AuditFilter, ReviewError> {
    let time = |parameter, value: &Option<String>| match value {
        None => Ok(None),
        Some(text) => parse_rfc3339(text).map(Some).ok_or(ReviewError {
            parameter,
            value: text.clone(),
            reason: "not an RFC 3339 time (2026-05-01T12:00:00Z)",
        }),
    };
    let net = |parameter, value: &Option<String>| match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => network(text).map(Some).ok_or(ReviewError {
            parameter,
            value: text.to_string(),
            reason: "not an address or a network (10.0.3.140, 10.0.3.0/24, 2001:db8::/32)",
        }),
    };
    let text = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    Ok(AuditFilter {
        since: time("since", &query.since)?,
        until: time("until", &query.until)?,
        user: text(&query.user),
        kind_prefix: text(&query.kind),
        after_seq: query.after_seq,
        through_seq: query.through_seq,
        limit: Some(
            query
                .limit
                .unwrap_or(RECORDS_PAGE_MAX)
                .min(RECORDS_PAGE_MAX),
        ),
        target: text(&query.target),
        source: net("source", &query.source)?,
        host: net("host", &query.host)?,
        outcome: query.outcome,
        via: query.via,
    })
}

/// `10.0.3.0/24`, or one address as its own network.
fn network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .map(|net| net.trunc())
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use gatehouse_config::api::{Outcome, Via};

    use super::*;

    #[test]
    fn every_parameter_is_checked_and_named() {
        let query = AuditQuery {
            since: Some("2026-12-01T00:00:00Z".into()),
            host: Some("10.0.3.140".into()),
            source: Some("192.0.2.0/24".into()),
            outcome: Some(Outcome::Refused),
            via: Some(Via::Ssh),
            target: Some(" 10.0.3.140:22 ".into()),
            limit: Some(1_000_000),
            ..AuditQuery::default()
        };
        let f = filter(&query).unwrap();
        assert_eq!(f.host.unwrap().to_string(), "10.0.3.140/32");
        assert_eq!(f.source.unwrap().to_string(), "192.0.2.0/24");
        assert_eq!(f.target.as_deref(), Some("10.0.3.140:22"));
        assert_eq!(f.limit, Some(RECORDS_PAGE_MAX));
        assert_eq!((f.outcome, f.via), (Some(Outcome::Refused), Some(Via::Ssh)));
        let host_bits = filter(&AuditQuery {
            host: Some("10.0.3.7/24".into()),
            ..AuditQuery::default()
        })
        .unwrap();
        assert_eq!(host_bits.host.unwrap().to_string(), "10.0.3.0/24");
        let err = filter(&AuditQuery {
            host: Some("db.internal".into()),
            ..AuditQuery::default()
        })
        .unwrap_err();
        assert_eq!(err.parameter, "host");
        assert!(
            err.to_string()
                .starts_with("host=\"db.internal\": not an address"),
            "{err}"
        );
        let err = filter(&AuditQuery {
            until: Some("yesterday".into()),
            ..AuditQuery::default()
        })
        .unwrap_err();
        assert_eq!(err.parameter, "until");
    }
}
