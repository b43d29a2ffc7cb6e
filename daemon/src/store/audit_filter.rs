//! Which audit records a query means: the filter the records listing
//! (`store::audit_log`) and the review index's summaries
//! (`store::audit_facets`) both take, and the kind-prefix rule.

use super::db::Value;

/// Which records [`Reader::audit_records`] returns. Every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Unix time, inclusive.
    pub since: Option<i64>,
    /// Unix time, inclusive.
    pub until: Option<i64>,
    /// Records whose actor or target is this name.
    pub user: Option<String>,
    /// A kind prefix matched on whole dotted segments: `user` matches `user`
    /// and `user.add`, not `username`.
    pub kind_prefix: Option<String>,
    /// Only records with a larger seq.
    pub after_seq: Option<u64>,
    /// Only records with this seq or a smaller one.
    pub through_seq: Option<u64>,
    /// Keep only N: the oldest after `after_seq` when it is given (a page),
    /// else the newest (still returned oldest first).
    pub limit: Option<u64>,
    /// Records whose target is exactly this.
    pub target: Option<String>,
    /// Records whose client address is in this network.
    pub source: Option<ipnet::IpNet>,
    /// Records about a private host in this network.
    pub host: Option<ipnet::IpNet>,
    pub outcome: Option<gatehouse_config::audit_facets::Outcome>,
    pub via: Option<gatehouse_config::audit_facets::Via>,
}

/// Kinds that start with `prefix`'s whole dotted segments: `user` matches
/// `user` and `user.add`, not `username`.
pub(super) fn kind_clause(prefix: &str, bind: &mut dyn FnMut(Value) -> String) -> String {
    let exact = bind(Value::Text(prefix.to_string()));
    let dotted = bind(Value::Text(format!("{prefix}.")));
    format!("(kind = {exact} OR substr(kind, 1, length(CAST({dotted} AS TEXT))) = {dotted})")
}
