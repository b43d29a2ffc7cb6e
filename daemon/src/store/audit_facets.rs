//! The audit log's review index: each record's facets
//! ([`gatehouse_config::audit_facets`]: user, via, outcome, host, port,
//! bytes) in `audit_facets`, one row per record, written in the same
//! transaction as the record, so reviews filter by host or client address
//! and summarise per user, host, day or kind in SQL, without reading
//! details. The index is derived: it is not part of the chain, and `verify`
//! never reads it. Records from before the index (or written behind the
//! store) are indexed when the store opens.
//!
//! Addresses are kept as 32 hex digits of their IPv6 form (IPv4 mapped), so
//! a CIDR is one range of text on both backends.

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use gatehouse_config::api::{
    AuditRecord, AuditSummary, HostUse, KindCount, PeriodCounts, SummaryBy, SummaryRows,
};
use gatehouse_config::audit_facets::{Class, Facets, Outcome, Via};
use ipnet::IpNet;

use super::audit_filter::{AuditFilter, kind_clause};
use super::db::{Conn, Row, Value};
use super::{Reader, StoreError};

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Rows of a summary page at most.
pub const SUMMARY_PAGE_MAX: u64 = 1_000;
/// Rows per INSERT when indexing many.
const INSERT_ROWS: usize = 1_000;

/// The index's columns, in [`facet_values`]' order.
const COLUMNS: &str = "seq, time_unix, first_unix, last_unix, kind, class, via, outcome, \"user\", \
    device, source_key, host, host_key, port, bytes_up, bytes_down";
const COLUMN_COUNT: usize = 16;

/// Adds `record`'s facets to the index (inside the caller's transaction).
pub(super) fn index(
    conn: &Conn<'_>,
    record: &AuditRecord,
    time_unix: i64,
) -> Result<(), StoreError> {
    insert(conn, &[(record, time_unix)])
}

/// One multi-row INSERT of `records`' facets.
fn insert(conn: &Conn<'_>, records: &[(&AuditRecord, i64)]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut values = Vec::with_capacity(records.len() * COLUMN_COUNT);
    let mut rows = Vec::with_capacity(records.len());
    for (record, time_unix) in records {
        let first = values.len();
        values.extend(facet_values(record, *time_unix));
        let marks: Vec<String> = (first + 1..=values.len())
            .map(|n| format!("?{n}"))
            .collect();
        rows.push(format!("({})", marks.join(", ")));
    }
    conn.execute(
        &format!(
            "INSERT INTO audit_facets ({COLUMNS}) VALUES {} ON CONFLICT (seq) DO NOTHING",
            rows.join(", ")
        ),
        &values,
    )
    .map_err(|source| StoreError::AuditWrite { source })?;
    Ok(())
}

fn facet_values(record: &AuditRecord, time_unix: i64) -> [Value; COLUMN_COUNT] {
    let f = Facets::of(record);
    [
        Value::from(to_i64(record.seq)),
        Value::from(time_unix),
        Value::from(f.first_unix.unwrap_or(time_unix)),
        Value::from(f.last_unix.unwrap_or(time_unix)),
        Value::from(&record.kind),
        Value::from(f.class.map(|c| c.as_str()).unwrap_or_default()),
        Value::from(f.via.map(|v| v.as_str()).unwrap_or_default()),
        Value::from(f.outcome.map(|o| o.as_str()).unwrap_or_default()),
        Value::from(f.user),
        Value::from(f.device),
        Value::from(f.source_ip.map(key)),
        Value::from(f.host),
        Value::from(f.host_ip.map(key)),
        Value::from(f.port.map(i64::from)),
        Value::from(to_i64(f.bytes_up)),
        Value::from(to_i64(f.bytes_down)),
    ]
}

/// The seq of the last record the index holds (0: none).
pub(super) fn last_indexed(conn: &Conn<'_>) -> Result<i64, StoreError> {
    conn.query_one("SELECT coalesce(max(seq), 0) FROM audit_facets", &[])
        .and_then(|row| row.get(0))
        .map_err(StoreError::db("read the audit index"))
}

/// Adds many records' facets, a statement per [`INSERT_ROWS`] (a
/// statement's parameters are capped: 32,766 on SQLite).
pub(super) fn index_many(
    conn: &Conn<'_>,
    records: &[(&AuditRecord, i64)],
) -> Result<(), StoreError> {
    records
        .chunks(INSERT_ROWS)
        .try_for_each(|chunk| insert(conn, chunk))
}

/// An address as the index keeps it.
fn key(ip: IpAddr) -> String {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    format!("{:032x}", u128::from(v6))
}

/// The first and last key of `net`.
fn key_range(net: &IpNet) -> (String, String) {
    let (first, last) = (net.network(), net.broadcast());
    (key(first), key(last))
}

/// The `WHERE` clauses on `audit_facets` (alias-free) that `filter`'s facet
/// fields ask for, binding values with `bind`.
pub(super) fn clauses(filter: &AuditFilter, bind: &mut dyn FnMut(Value) -> String) -> Vec<String> {
    let mut clauses = Vec::new();
    let mut range = |column: &str, net: &IpNet, clauses: &mut Vec<String>| {
        let (first, last) = key_range(net);
        let (first, last) = (bind(Value::Text(first)), bind(Value::Text(last)));
        clauses.push(format!("{column} BETWEEN {first} AND {last}"));
    };
    if let Some(net) = &filter.host {
        range("host_key", net, &mut clauses);
    }
    if let Some(net) = &filter.source {
        range("source_key", net, &mut clauses);
    }
    if let Some(outcome) = filter.outcome {
        clauses.push(format!("outcome = {}", bind(Value::from(outcome.as_str()))));
    }
    if let Some(via) = filter.via {
        clauses.push(format!("via = {}", bind(Value::from(via.as_str()))));
    }
    clauses
}

/// Whether `filter` narrows by a facet (and so needs the index).
pub(super) fn narrows(filter: &AuditFilter) -> bool {
    filter.host.is_some()
        || filter.source.is_some()
        || filter.outcome.is_some()
        || filter.via.is_some()
}

impl Reader<'_> {
    /// One page of `filter`'s records grouped `by`, from row `offset`, at
    /// most `limit` rows (capped at [`SUMMARY_PAGE_MAX`]). Per user and per
    /// host it counts only what went through unless the filter asks for an
    /// outcome.
    pub fn audit_summary(
        &self,
        filter: &AuditFilter,
        by: SummaryBy,
        offset: u64,
        limit: u64,
    ) -> Result<AuditSummary, StoreError> {
        let limit = limit.clamp(1, SUMMARY_PAGE_MAX);
        let mut values: Vec<Value> = Vec::new();
        let mut bind = |value: Value| {
            values.push(value);
            format!("?{}", values.len())
        };
        let mut clauses = summary_clauses(filter, &mut bind);
        let period = |by| if by == SummaryBy::Day { 86_400 } else { 3_600 };
        let (select, group) = match by {
            SummaryBy::User | SummaryBy::Host => {
                clauses.push("host IS NOT NULL AND \"user\" IS NOT NULL".into());
                if filter.outcome.is_none() {
                    clauses.push(format!(
                        "outcome = {}",
                        bind(Value::from(Outcome::Ok.as_str()))
                    ));
                }
                // In the order of a covering index, so a page reads only
                // its own groups.
                let group = match by {
                    SummaryBy::User => "\"user\", host_key, host, via, device, port",
                    _ => "host_key, host, \"user\", via, device, port",
                };
                let select = "\"user\", device, host, via, port, min(first_unix), max(last_unix), \
                     count(*), CAST(sum(bytes_up) AS BIGINT), CAST(sum(bytes_down) AS BIGINT)";
                (select.to_string(), group.to_string())
            }
            // Few rows (periods x classes): pivoted and paged below.
            SummaryBy::Day | SummaryBy::Hour => (
                format!("time_unix / {} AS period, class, count(*)", period(by)),
                "period, class".to_string(),
            ),
            SummaryBy::Kind => (
                "kind, count(*), min(time_unix), max(time_unix)".to_string(),
                "kind".to_string(),
            ),
        };
        let order = match by {
            SummaryBy::Kind => "count(*) DESC, kind".to_string(),
            _ => group.clone(),
        };
        let paged_in_sql = !matches!(by, SummaryBy::Day | SummaryBy::Hour);
        let mut sql = format!("SELECT {select} FROM audit_facets");
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(" GROUP BY {group} ORDER BY {order}"));
        if paged_in_sql {
            let p_limit = bind(Value::Integer(to_i64(limit) + 1));
            let p_offset = bind(Value::Integer(to_i64(offset)));
            sql.push_str(&format!(" LIMIT {p_limit} OFFSET {p_offset}"));
        }
        let rows = self
            .conn
            .query(&sql, &values)
            .map_err(StoreError::db("summarise the audit log"))?;
        let read = |what| StoreError::db(what);
        let page = |len: usize| {
            let skip = if paged_in_sql {
                0
            } else {
                usize::try_from(offset).unwrap_or(usize::MAX)
            };
            let take = usize::try_from(limit).unwrap_or(usize::MAX);
            (skip, take, len.saturating_sub(skip) > take)
        };
        let (rows, more) = match by {
            SummaryBy::User | SummaryBy::Host => {
                let uses = rows
                    .iter()
                    .map(host_use)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(read("read the audit summary"))?;
                let (_, take, more) = page(uses.len());
                let uses: Vec<HostUse> = uses.into_iter().take(take).collect();
                let rows = if by == SummaryBy::User {
                    SummaryRows::User(uses)
                } else {
                    SummaryRows::Host(uses)
                };
                (rows, more)
            }
            SummaryBy::Day | SummaryBy::Hour => {
                let counts =
                    pivot(&rows, by, period(by)).map_err(read("read the audit summary"))?;
                let (skip, take, more) = page(counts.len());
                let counts: Vec<PeriodCounts> = counts.into_iter().skip(skip).take(take).collect();
                let rows = if by == SummaryBy::Day {
                    SummaryRows::Day(counts)
                } else {
                    SummaryRows::Hour(counts)
                };
                (rows, more)
            }
            SummaryBy::Kind => {
                let kinds = rows
                    .iter()
                    .map(|row| {
                        Ok(KindCount {
                            kind: row.get(0)?,
                            records: row.get(1)?,
                            first: rfc3339(row.get(2)?),
                            last: rfc3339(row.get(3)?),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(read("read the audit summary"))?;
                let (_, take, more) = page(kinds.len());
                (
                    SummaryRows::Kind(kinds.into_iter().take(take).collect()),
                    more,
                )
            }
        };
        Ok(AuditSummary { rows, offset, more })
    }
}

/// A summary's clauses: the facet filters, and the record filters the index
/// can answer itself (time, user, kind), or through the log (target).
fn summary_clauses(filter: &AuditFilter, bind: &mut dyn FnMut(Value) -> String) -> Vec<String> {
    let mut clauses = clauses(filter, bind);
    if let Some(since) = filter.since {
        clauses.push(format!("time_unix >= {}", bind(Value::Integer(since))));
    }
    if let Some(until) = filter.until {
        clauses.push(format!("time_unix <= {}", bind(Value::Integer(until))));
    }
    if let Some(user) = &filter.user {
        clauses.push(format!("\"user\" = {}", bind(Value::Text(user.clone()))));
    }
    if let Some(prefix) = filter.kind_prefix.as_deref().filter(|p| !p.is_empty()) {
        clauses.push(kind_clause(prefix, bind));
    }
    if let Some(target) = &filter.target {
        let p = bind(Value::Text(target.clone()));
        clauses.push(format!(
            "seq IN (SELECT seq FROM audit_log WHERE target = {p})"
        ));
    }
    if let Some(after) = filter.after_seq {
        clauses.push(format!("seq > {}", bind(Value::Integer(to_i64(after)))));
    }
    if let Some(through) = filter.through_seq {
        clauses.push(format!("seq <= {}", bind(Value::Integer(to_i64(through)))));
    }
    clauses
}

fn host_use(row: &Row) -> Result<HostUse, super::db::DbError> {
    let via: String = row.get(3)?;
    let port: Option<i64> = row.get(4)?;
    Ok(HostUse {
        user: row.get(0)?,
        device: row.get(1)?,
        host: row.get(2)?,
        via: via.parse().unwrap_or(Via::Gateway),
        port: port.and_then(|p| u16::try_from(p).ok()),
        first: rfc3339(row.get(5)?),
        last: rfc3339(row.get(6)?),
        records: row.get(7)?,
        bytes_up: row.get(8)?,
        bytes_down: row.get(9)?,
    })
}

/// Rows of (period, class, count), in period order, as one
/// [`PeriodCounts`] per period.
fn pivot(rows: &[Row], by: SummaryBy, width: i64) -> Result<Vec<PeriodCounts>, super::db::DbError> {
    let mut counts: Vec<(i64, PeriodCounts)> = Vec::new();
    for row in rows {
        let (period, class, n): (i64, String, u64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        if counts.last().is_none_or(|(p, _)| *p != period) {
            let start = rfc3339(period * width);
            let label = match by {
                SummaryBy::Day => start[..10].to_string(),
                _ => format!("{}Z", &start[..16]),
            };
            counts.push((
                period,
                PeriodCounts {
                    period: label,
                    records: 0,
                    logins: 0,
                    refusals: 0,
                    denials: 0,
                    changes: 0,
                    flows: 0,
                    sessions: 0,
                },
            ));
        }
        if let Some((_, c)) = counts.last_mut() {
            c.records += n;
            match class.parse::<Class>() {
                Ok(Class::Login) => c.logins += n,
                Ok(Class::Refusal) => c.refusals += n,
                Ok(Class::Denial) => c.denials += n,
                Ok(Class::Change) => c.changes += n,
                Ok(Class::Flow) => c.flows += n,
                Ok(Class::Session) => c.sessions += n,
                Ok(Class::Other) | Err(_) => {}
            }
        }
    }
    Ok(counts.into_iter().map(|(_, c)| c).collect())
}

/// Unix seconds as RFC 3339 UTC, whole seconds.
fn rfc3339(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Records matching `filter` by their facets too: the records query with
/// the facet clauses as a sub-select.
pub(super) fn records_sql(
    filter: &AuditFilter,
    clauses: &mut Vec<String>,
    bind: &mut dyn FnMut(Value) -> String,
) {
    if narrows(filter) {
        let facet = self::clauses(filter, bind);
        clauses.push(format!(
            "seq IN (SELECT seq FROM audit_facets WHERE {})",
            facet.join(" AND ")
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::SystemTime;

    use gatehouse_config::api::{AuditQuery, Outcome, SummaryBy, SummaryRows, Via};
    use serde_json::json;

    use super::super::fixtures::{on_each_backend, on_each_test_db, test_event};
    use super::*;
    use crate::access::review;
    use crate::store::{NewAuditEvent, Store};

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    /// 2026-12-05T10:00:00Z.
    const T0: u64 = 1_796_464_800;

    fn flow(user: &str, dst: &str, port: u16, up: u64, down: u64) -> NewAuditEvent {
        NewAuditEvent {
            detail: json!({"device": "laptop", "dst": dst, "dport": port, "proto": "tcp",
                "packets_up": 1, "packets_down": 1, "bytes_up": up, "bytes_down": down,
                "first_seen": "2026-12-05T09:59:10Z", "last_seen": "2026-12-05T09:59:50Z"}),
            ..test_event("vpn.flow", user, "10.200.0.2", &format!("{dst}:{port}"))
        }
    }

    fn ssh_end(user: &str, client: &str, resolved: &str, up: u64, down: u64) -> NewAuditEvent {
        NewAuditEvent {
            detail: json!({"resolved": resolved, "bytes_up": up, "bytes_down": down, "reason": "closed"}),
            ..test_event("ssh.session.end", user, client, resolved)
        }
    }

    /// A small day: flows and jump host sessions of alice and bob, a
    /// refused channel, failed logins, a change.
    fn day(store: &Store) {
        let events = vec![
            (T0, flow("alice", "10.0.3.140", 5201, 1_000, 50_000)),
            (T0 + 60, flow("alice", "10.0.3.140", 5201, 2_000, 70_000)),
            (T0 + 60, flow("alice", "10.0.3.7", 443, 10, 20)),
            (
                T0 + 90,
                ssh_end("bob", "192.0.2.9:40000", "10.0.3.140:22", 300, 400),
            ),
            (
                T0 + 95,
                test_event(
                    "ssh.forward.deny",
                    "bob",
                    "192.0.2.9:40001",
                    "10.0.4.1:5432",
                ),
            ),
            (
                T0 + 100,
                test_event("portal.login.fail", "mallory", "198.51.100.4", ""),
            ),
            (
                T0 + 3_700,
                test_event("portal.login.ok", "alice", "203.0.113.5", ""),
            ),
            (
                T0 + 86_400,
                test_event("user.add", "uid:0", "admin-socket pid:7", "carol"),
            ),
        ];
        store
            .write_blocking(move |w| {
                for (time, event) in events {
                    w.audit_at(event, at(time))?;
                }
                Ok(())
            })
            .unwrap();
    }

    fn seqs(store: &Store, query: AuditQuery) -> Vec<u64> {
        let filter = review::filter(&query).unwrap();
        store
            .read_blocking(move |r| r.audit_records(&filter))
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect()
    }

    fn summary(store: &Store, query: AuditQuery, by: SummaryBy) -> SummaryRows {
        let filter = review::filter(&query).unwrap();
        store
            .read_blocking(move |r| r.audit_summary(&filter, by, 0, 100))
            .unwrap()
            .rows
    }

    #[test]
    fn records_filter_by_host_source_outcome_via_and_target() {
        on_each_backend(|db, store| {
            day(&store);
            let q = |f: fn(&mut AuditQuery)| {
                let mut query = AuditQuery::default();
                f(&mut query);
                query
            };
            let b = db.backend();
            assert_eq!(
                seqs(&store, q(|q| q.host = Some("10.0.3.140".into()))),
                [1, 2, 4],
                "{b}"
            );
            assert_eq!(
                seqs(&store, q(|q| q.host = Some("10.0.0.0/16".into()))),
                [1, 2, 3, 4, 5],
                "{b}"
            );
            assert_eq!(
                seqs(&store, q(|q| q.source = Some("192.0.2.0/24".into()))),
                [4, 5],
                "{b}"
            );
            assert_eq!(
                seqs(&store, q(|q| q.outcome = Some(Outcome::Refused))),
                [5, 6],
                "{b}"
            );
            assert_eq!(seqs(&store, q(|q| q.via = Some(Via::Admin))), [8], "{b}");
            assert_eq!(
                seqs(&store, q(|q| q.target = Some("10.0.4.1:5432".into()))),
                [5],
                "{b}"
            );
            // Facets and record filters together; a page after a seq.
            let both = q(|q| {
                q.host = Some("10.0.3.140".into());
                q.user = Some("alice".into());
                q.after_seq = Some(1);
            });
            assert_eq!(seqs(&store, both), [2], "{b}");
            // Nothing in another network, IPv6 included.
            assert!(
                seqs(&store, q(|q| q.host = Some("2001:db8::/32".into()))).is_empty(),
                "{b}"
            );
        });
    }

    #[test]
    fn summaries_answer_who_reached_which_host_when_and_how_much() {
        on_each_backend(|db, store| {
            day(&store);
            let b = db.backend();
            let SummaryRows::Host(rows) = summary(
                &store,
                AuditQuery {
                    host: Some("10.0.3.140".into()),
                    ..AuditQuery::default()
                },
                SummaryBy::Host,
            ) else {
                panic!("{b}: not by host");
            };
            assert_eq!(rows.len(), 2, "{b}: {rows:?}");
            let alice = &rows[0];
            assert_eq!(
                (
                    alice.user.as_str(),
                    alice.device.as_deref(),
                    alice.via,
                    alice.port
                ),
                ("alice", Some("laptop"), Via::Vpn, Some(5201)),
                "{b}"
            );
            assert_eq!(
                (alice.records, alice.bytes_up, alice.bytes_down),
                (2, 3_000, 120_000),
                "{b}"
            );
            assert_eq!(
                (alice.first.as_str(), alice.last.as_str()),
                ("2026-12-05T09:59:10Z", "2026-12-05T09:59:50Z"),
                "{b}"
            );
            let bob = &rows[1];
            assert_eq!(
                (bob.user.as_str(), bob.via, bob.port, bob.bytes_down),
                ("bob", Via::Ssh, Some(22), 400),
                "{b}"
            );

            // Per user: alice's two hosts, refused channels left out.
            let SummaryRows::User(rows) = summary(&store, AuditQuery::default(), SummaryBy::User)
            else {
                panic!()
            };
            let hosts: Vec<(&str, &str)> = rows
                .iter()
                .map(|r| (r.user.as_str(), r.host.as_str()))
                .collect();
            // By address, not by text: 10.0.3.7 before 10.0.3.140.
            assert_eq!(
                hosts,
                [
                    ("alice", "10.0.3.7"),
                    ("alice", "10.0.3.140"),
                    ("bob", "10.0.3.140")
                ],
                "{b}"
            );
            let SummaryRows::User(refused) = summary(
                &store,
                AuditQuery {
                    outcome: Some(Outcome::Refused),
                    ..AuditQuery::default()
                },
                SummaryBy::User,
            ) else {
                panic!()
            };
            assert_eq!(
                refused.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(),
                ["10.0.4.1"],
                "{b}"
            );

            let SummaryRows::Day(days) = summary(&store, AuditQuery::default(), SummaryBy::Day)
            else {
                panic!()
            };
            assert_eq!(days.len(), 2, "{b}");
            assert_eq!(days[0].period, "2026-12-05", "{b}");
            assert_eq!(
                (
                    days[0].records,
                    days[0].flows,
                    days[0].refusals,
                    days[0].logins,
                    days[0].changes
                ),
                (7, 3, 2, 1, 0),
                "{b}"
            );
            assert_eq!(
                (days[1].period.as_str(), days[1].changes),
                ("2026-12-06", 1),
                "{b}"
            );

            let SummaryRows::Hour(hours) = summary(
                &store,
                AuditQuery {
                    until: Some("2026-12-05T23:00:00Z".into()),
                    ..AuditQuery::default()
                },
                SummaryBy::Hour,
            ) else {
                panic!()
            };
            assert_eq!(
                hours
                    .iter()
                    .map(|h| (h.period.as_str(), h.records))
                    .collect::<Vec<_>>(),
                [("2026-12-05T10:00Z", 6), ("2026-12-05T11:00Z", 1)],
                "{b}"
            );

            let SummaryRows::Kind(kinds) = summary(&store, AuditQuery::default(), SummaryBy::Kind)
            else {
                panic!()
            };
            assert_eq!(
                (kinds[0].kind.as_str(), kinds[0].records),
                ("vpn.flow", 3),
                "{b}"
            );
        });
    }

    #[test]
    fn a_summary_pages() {
        on_each_backend(|_, store| {
            day(&store);
            let filter = AuditFilter::default();
            let (first, second) = store
                .read_blocking(move |r| {
                    Ok((
                        r.audit_summary(&filter, SummaryBy::Kind, 0, 2)?,
                        r.audit_summary(&filter, SummaryBy::Kind, 2, 100)?,
                    ))
                })
                .unwrap();
            let (SummaryRows::Kind(a), SummaryRows::Kind(b)) = (&first.rows, &second.rows) else {
                panic!()
            };
            assert_eq!((a.len(), first.more), (2, true));
            assert_eq!((b.len(), second.more, second.offset), (4, false, 2));
        });
    }

    #[test]
    fn records_from_before_the_index_are_indexed_at_open() {
        on_each_test_db(|db| {
            let store = db.open();
            day(&store);
            drop(store);
            db.raw_batch("DELETE FROM audit_facets WHERE seq > 2");
            let store = db.open();
            assert_eq!(
                seqs(
                    &store,
                    AuditQuery {
                        host: Some("10.0.3.140".into()),
                        ..AuditQuery::default()
                    }
                ),
                [1, 2, 4],
                "{}",
                db.backend()
            );
            assert_eq!(
                db.raw_column::<i64>("SELECT count(*) FROM audit_facets"),
                [db.raw_column::<i64>("SELECT count(*) FROM audit_log")[0]]
            );
        });
    }
}
