//! The auditor's view's filter as the pages carry it: the GET form's
//! fields ([`FilterForm`]), the review query they ask for, and links that
//! carry a query from page to page. What a filter means is the review
//! service's ([`crate::access::review`]); this only moves it around.

use gatehouse_config::api::AuditQuery;
use gatehouse_config::audit_facets::{Outcome, Via};
use serde::Deserialize;

use super::audit_views::AuditPage;
use super::error::Failure;
use crate::store::AuditFilter;

/// The filter form as a browser sends it (every field, empty when not
/// used), plus the paging links add. Field names are [`AuditQuery`]'s.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct FilterForm {
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub via: String,
    /// The summaries' next page: rows to skip.
    #[serde(default)]
    pub offset: Option<u64>,
    /// The records list's older page: records up to this seq.
    #[serde(default)]
    pub through_seq: Option<u64>,
}

impl FilterForm {
    /// The review query the form asks for: empty fields are no filter;
    /// `outcome` and `via` must be one of their words.
    #[allow(
        clippy::result_large_err,
        reason = "the refusal is the handler's answer, returned once"
    )]
    pub fn query(&self) -> Result<AuditQuery, Failure> {
        fn text(value: &str) -> Option<String> {
            Some(value.trim())
                .filter(|t| !t.is_empty())
                .map(str::to_string)
        }
        fn word<T: std::str::FromStr<Err = String>>(
            name: &str,
            value: &str,
        ) -> Option<Result<T, Failure>> {
            text(value).map(|v| {
                v.parse()
                    .map_err(|reason| Failure::bad_request(format!("{name}: {reason}")))
            })
        }
        Ok(AuditQuery {
            since: text(&self.since),
            until: text(&self.until),
            user: text(&self.user),
            kind: text(&self.kind),
            target: text(&self.target),
            source: text(&self.source),
            host: text(&self.host),
            outcome: word("outcome", &self.outcome).transpose()?,
            via: word("via", &self.via).transpose()?,
            offset: self.offset,
            through_seq: self.through_seq,
            ..AuditQuery::default()
        })
    }
}

/// A page being shown: which, the query as asked (to re-show and link),
/// the review service's filter for it.
#[derive(Debug)]
pub struct Shown {
    pub page: AuditPage,
    pub query: AuditQuery,
    pub filter: AuditFilter,
}

/// The form's fields for `query` (to show it again).
pub fn form_of(query: &AuditQuery) -> FilterForm {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    FilterForm {
        since: text(&query.since),
        until: text(&query.until),
        user: text(&query.user),
        kind: text(&query.kind),
        target: text(&query.target),
        source: text(&query.source),
        host: text(&query.host),
        outcome: query
            .outcome
            .map(|o| o.as_str().to_string())
            .unwrap_or_default(),
        via: query
            .via
            .map(|v| v.as_str().to_string())
            .unwrap_or_default(),
        offset: None,
        through_seq: None,
    }
}

/// `page_of`'s path with `query` (only what is set) as its query string.
pub fn href(page_of: AuditPage, query: &AuditQuery) -> String {
    let path = path_of(page_of);
    match serde_urlencoded::to_string(query) {
        Ok(text) if !text.is_empty() => format!("{path}?{text}"),
        _ => path.to_string(),
    }
}

pub fn path_of(page_of: AuditPage) -> &'static str {
    match page_of {
        AuditPage::Timeline => "/audit",
        AuditPage::Users => "/audit/users",
        AuditPage::Hosts => "/audit/hosts",
        AuditPage::Csv => "/audit/export.csv",
    }
}

/// The filter alone, without a page of results.
pub fn filter_only(query: &AuditQuery) -> AuditQuery {
    AuditQuery {
        offset: None,
        through_seq: None,
        after_seq: None,
        limit: None,
        by: None,
        ..query.clone()
    }
}

/// `outcome` and `via` as the form offers them.
pub fn outcome_words() -> impl Iterator<Item = &'static str> {
    Outcome::ALL.iter().map(|o| o.as_str())
}

pub fn via_words() -> impl Iterator<Item = &'static str> {
    Via::ALL.iter().map(|v| v.as_str())
}
