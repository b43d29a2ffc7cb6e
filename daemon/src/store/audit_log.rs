//! Audit records in the database: appending inside a write transaction,
//! and queries (see [`crate::audit`] for the chain rules and the files;
//! `store::audit_repair` keeps the files in step with the table,
//! `store::audit_verify` checks the chain).
//!
//! Rows are only ever inserted; triggers refuse UPDATE and DELETE.

use std::time::{SystemTime, UNIX_EPOCH};

use gatehouse_config::api::AuditRecord;

pub use super::audit_filter::AuditFilter;
use super::audit_filter::kind_clause;
use super::db::{Conn, DbError, Row, Value, values};
use super::{Reader, StoreError, Writer, audit_facets};
use crate::audit::chain::{self, GENESIS_HASH, Head};
pub use crate::audit::event::NewAuditEvent;
use crate::audit::event::{Actor, Kind, Source, event};

impl Reader<'_> {
    /// Records matching `filter`, oldest first.
    pub fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let mut bind = |value: Value| {
            values.push(value);
            format!("?{}", values.len())
        };
        if let Some(since) = filter.since {
            clauses.push(format!("time_unix >= {}", bind(Value::Integer(since))));
        }
        if let Some(until) = filter.until {
            clauses.push(format!("time_unix <= {}", bind(Value::Integer(until))));
        }
        if let Some(user) = &filter.user {
            let p = bind(Value::Text(user.clone()));
            clauses.push(format!("(actor = {p} OR target = {p})"));
        }
        if let Some(prefix) = filter.kind_prefix.as_deref().filter(|p| !p.is_empty()) {
            clauses.push(kind_clause(prefix, &mut bind));
        }
        if let Some(target) = &filter.target {
            clauses.push(format!("target = {}", bind(Value::Text(target.clone()))));
        }
        if let Some(after) = filter.after_seq {
            clauses.push(format!("seq > {}", bind(Value::Integer(to_i64(after)))));
        }
        if let Some(through) = filter.through_seq {
            clauses.push(format!("seq <= {}", bind(Value::Integer(to_i64(through)))));
        }
        audit_facets::records_sql(filter, &mut clauses, &mut bind);
        let mut sql = format!("SELECT {RECORD_COLUMNS} FROM audit_log");
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        match filter.limit {
            Some(limit) if filter.after_seq.is_some() => {
                let p = bind(Value::Integer(to_i64(limit)));
                sql.push_str(&format!(" ORDER BY seq LIMIT {p}"));
                query_records(&self.conn, &sql, &values)
            }
            Some(limit) => {
                let p = bind(Value::Integer(to_i64(limit)));
                sql.push_str(&format!(" ORDER BY seq DESC LIMIT {p}"));
                let mut records = query_records(&self.conn, &sql, &values)?;
                records.reverse();
                Ok(records)
            }
            None => {
                sql.push_str(" ORDER BY seq");
                query_records(&self.conn, &sql, &values)
            }
        }
    }

    /// How many audit records the database holds.
    pub fn audit_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_one("SELECT count(*) FROM audit_log", &[])
            .and_then(|row| row.get(0))
            .map_err(StoreError::db("count audit records"))
    }

    /// The newest record's seq and hash, if any.
    pub fn audit_last(&self) -> Result<Option<Head>, StoreError> {
        last_head(&self.conn).map_err(StoreError::db("read the last audit record"))
    }

    /// The newest `audit.checkpoint` record: its seq and when it was
    /// written (unix seconds).
    pub fn audit_last_checkpoint(&self) -> Result<Option<(u64, i64)>, StoreError> {
        self.conn
            .query_opt(
                "SELECT seq, time_unix FROM audit_log WHERE kind = ?1 ORDER BY seq DESC LIMIT 1",
                values![Kind::AuditCheckpoint.as_str()],
            )
            .and_then(|row| row.map(|row| Ok((row.get(0)?, row.get(1)?))).transpose())
            .map_err(StoreError::db("read the last audit checkpoint"))
    }
}

impl Writer<'_> {
    /// Appends an event stamped now, inside this transaction. If this fails
    /// the caller must fail too (`?`), so the action is refused.
    pub fn audit(&mut self, event: NewAuditEvent) -> Result<AuditRecord, StoreError> {
        self.audit_at(event, SystemTime::now())
    }

    /// Appends a signed checkpoint of the newest record, stamped `at`;
    /// `None` when the log is empty (there is nothing to sign).
    pub fn audit_checkpoint(&mut self, at: SystemTime) -> Result<Option<AuditRecord>, StoreError> {
        if self.audit_last()?.is_none() {
            return Ok(None);
        }
        let event = event(Kind::AuditCheckpoint, Actor::Gateway, Source::Local).on(self
            .paths
            .signer
            .gateway
            .clone());
        self.audit_at(event, at).map(Some)
    }

    /// When the log's last record has a plain hash (written before the
    /// keyed chain), appends the signed checkpoint where the keyed chain
    /// begins. Returns whether it did.
    pub fn begin_keyed_chain(&mut self, at: SystemTime) -> Result<bool, StoreError> {
        match self.audit_last()? {
            Some(last) if !chain::is_keyed(&last.hash) => {
                self.audit_checkpoint(at)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Appends an event stamped `at` (for replay and tests).
    pub fn audit_at(
        &mut self,
        event: NewAuditEvent,
        at: SystemTime,
    ) -> Result<AuditRecord, StoreError> {
        let kind = event.kind.as_str().to_string();
        let last = last_head(&self.conn).map_err(|source| StoreError::AuditWrite { source })?;
        let (prev_seq, prev_hash) = last.map_or((0, GENESIS_HASH.to_string()), |h| (h.seq, h.hash));
        let time_unix = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let time = humantime::format_rfc3339_millis(at).to_string();
        let detail = match event.kind {
            // A checkpoint signs the record before it, at its own time.
            Kind::AuditCheckpoint => {
                let signed = self
                    .paths
                    .signer
                    .checkpoint(prev_seq, &prev_hash, &time)
                    .sign(&self.paths.audit_keys)
                    .map_err(|source| StoreError::AuditSign { source })?;
                serde_json::to_value(signed).map_err(|source| StoreError::AuditEncode { source })?
            }
            _ => stable_detail(&kind, event.detail)?,
        };
        let record = chain::seal_keyed(
            AuditRecord {
                seq: prev_seq + 1,
                time,
                kind,
                actor: event.actor,
                source: event.source,
                target: event.target,
                detail,
                prev_hash,
                hash: String::new(),
            },
            &self.paths.audit_keys,
        )
        .map_err(|source| StoreError::AuditEncode { source })?;
        let detail_text = serde_json::to_string(&record.detail)
            .map_err(|source| StoreError::AuditEncode { source })?;
        self.conn
            .execute(
                "INSERT INTO audit_log (seq, time, time_unix, kind, actor, source, target, \
                 detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                values![
                    to_i64(record.seq),
                    &record.time,
                    time_unix,
                    &record.kind,
                    &record.actor,
                    &record.source,
                    &record.target,
                    detail_text,
                    &record.prev_hash,
                    &record.hash
                ],
            )
            .map_err(|source| StoreError::AuditWrite { source })?;
        audit_facets::index(&self.conn, &record, time_unix)?;
        self.appended.push(record.clone());
        Ok(record)
    }
}

impl Writer<'_> {
    /// Indexes the records the review index lacks (from before it, or
    /// written behind the store): those after its last one, in batches.
    /// Returns how many.
    pub fn index_audit_records(&mut self) -> Result<u64, StoreError> {
        const BATCH: i64 = 5_000;
        let mut indexed = 0;
        loop {
            let after = audit_facets::last_indexed(&self.conn)?;
            let rows = self
                .conn
                .query(
                    &format!(
                        "SELECT {RECORD_COLUMNS}, time_unix FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                    ),
                    values![after, BATCH],
                )
                .map_err(StoreError::db("read audit records to index"))?;
            if rows.is_empty() {
                return Ok(indexed);
            }
            let records = records_from_rows(&rows)?;
            let times = rows
                .iter()
                .map(|row| row.get::<i64>(9))
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::db("read audit records to index"))?;
            let batch: Vec<(&AuditRecord, i64)> = records.iter().zip(times).collect();
            audit_facets::index_many(&self.conn, &batch)?;
            indexed += rows.len() as u64;
        }
    }
}

pub(super) const RECORD_COLUMNS: &str =
    "seq, time, kind, actor, source, target, detail, prev_hash, hash";

pub(super) fn query_records(
    conn: &Conn<'_>,
    sql: &str,
    values: &[Value],
) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = conn
        .query(sql, values)
        .map_err(StoreError::db("query audit records"))?;
    records_from_rows(&rows)
}

/// Rows of [`RECORD_COLUMNS`] (first) as records.
pub(super) fn records_from_rows(rows: &[Row]) -> Result<Vec<AuditRecord>, StoreError> {
    rows.iter()
        .map(record_from_row)
        .collect::<Result<_, _>>()
        .map_err(StoreError::db("query audit records"))
}

pub(super) fn record_from_row(row: &Row) -> Result<AuditRecord, DbError> {
    let seq: u64 = row.get(0)?;
    let detail_text: String = row.get(6)?;
    // A detail that is not JSON was edited outside the store: keep its text
    // so the listing still works and `verify` reports the record as altered.
    let detail = serde_json::from_str(&detail_text).unwrap_or_else(|error| {
        tracing::warn!(seq, %error, "audit record detail is not JSON");
        serde_json::Value::String(detail_text)
    });
    Ok(AuditRecord {
        seq,
        time: row.get(1)?,
        kind: row.get(2)?,
        actor: row.get(3)?,
        source: row.get(4)?,
        target: row.get(5)?,
        detail,
        prev_hash: row.get(7)?,
        hash: row.get(8)?,
    })
}

pub(super) fn last_head(conn: &Conn<'_>) -> Result<Option<Head>, DbError> {
    conn.query_opt(
        "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
        &[],
    )?
    .map(|row| {
        Ok(Head {
            seq: row.get(0)?,
            hash: row.get(1)?,
        })
    })
    .transpose()
}

pub(super) fn hash_at(conn: &Conn<'_>, seq: u64) -> Result<Option<String>, StoreError> {
    conn.query_opt(
        "SELECT hash FROM audit_log WHERE seq = ?1",
        values![to_i64(seq)],
    )
    .and_then(|row| row.map(|row| row.get(0)).transpose())
    .map_err(StoreError::db("read an audit record"))
}

/// The detail as it will read back from the database. `serde_json` parses
/// floats on a best-effort basis, so a value is normalized through one round
/// trip and must then be stable, or its hash could differ after reading it
/// back.
fn stable_detail(kind: &str, detail: serde_json::Value) -> Result<serde_json::Value, StoreError> {
    let unstable = |reason: String| StoreError::AuditDetail {
        kind: kind.to_string(),
        reason,
    };
    let text = serde_json::to_string(&detail).map_err(|e| unstable(e.to_string()))?;
    let normalized: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| unstable(e.to_string()))?;
    let text = serde_json::to_string(&normalized).map_err(|e| unstable(e.to_string()))?;
    let again: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| unstable(e.to_string()))?;
    if again != normalized {
        return Err(unstable(
            "a number does not survive a JSON round trip; use an integer or a string".into(),
        ));
    }
    Ok(normalized)
}

pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use gatehouse_config::api::VerifyProblemKind;
    use serde_json::json;

    use super::*;
    use crate::audit::mirror;
    use crate::store::Store;
    use crate::store::fixtures::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + 123)
    }

    fn event(kind: &str, actor: &str, target: &str) -> NewAuditEvent {
        test_event(kind, actor, "127.0.0.1", target)
    }

    /// Five records at unix times 100..=104.
    fn five(store: &Store) {
        store
            .write_blocking(|w| {
                for (i, kind) in [
                    "user.add",
                    "portal.login.ok",
                    "portal.logout",
                    "user.key.add",
                    "device.create",
                ]
                .into_iter()
                .enumerate()
                {
                    let actor = if i % 2 == 0 { "uid:0" } else { "alice" };
                    let e = event(kind, actor, "bob").detail(json!({ "i": i }));
                    w.audit_at(e, at(100 + i as u64))?;
                }
                Ok(())
            })
            .unwrap();
    }

    fn query(store: &Store, filter: AuditFilter) -> Vec<u64> {
        store
            .read_blocking(|r| r.audit_records(&filter))
            .unwrap()
            .into_iter()
            .map(|r| r.seq)
            .collect()
    }

    fn verdict(store: &Store) -> Option<(VerifyProblemKind, u64)> {
        let report = store.read_blocking(|r| r.verify_audit()).unwrap();
        assert_eq!(report.intact, report.problem.is_none());
        report.problem.map(|p| (p.kind, p.seq))
    }

    /// The table with its immutability triggers switched off, as an
    /// attacker with write access to the file (or a database superuser)
    /// could do.
    fn tamper(db: &TestStore, sql: &str) {
        db.raw_batch(&format!("DISABLE_AUDIT_TRIGGERS; {sql}"));
    }

    #[test]
    fn records_chain_and_mirror() {
        on_each_backend(|_db, store| {
            five(&store);
            let records = store
                .read_blocking(|r| r.audit_records(&AuditFilter::default()))
                .unwrap();
            assert_eq!(records.len(), 5);
            assert_eq!(records[0].prev_hash, GENESIS_HASH);
            assert_eq!(records[0].time, "1970-01-01T00:01:40.123Z");
            assert_eq!(records[1].prev_hash, records[0].hash);
            assert_eq!(records[2].detail, json!({ "i": 2 }));
            assert_eq!(mirror::read_all(store.mirror_path()).unwrap(), records);
            let head = mirror::read_head(store.head_path()).unwrap().unwrap();
            assert_eq!(head, Head::of(&records[4]));
            assert_eq!(store.read_blocking(|r| r.audit_count()).unwrap(), 5);
            assert_eq!(store.read_blocking(|r| r.audit_last()).unwrap(), Some(head));
            assert_eq!(verdict(&store), None);
        });
    }

    #[test]
    fn filters() {
        on_each_backend(|_db, store| {
            five(&store);
            let kind = |k: &str| AuditFilter {
                kind_prefix: Some(k.into()),
                ..AuditFilter::default()
            };
            assert_eq!(query(&store, kind("user")), [1, 4]);
            assert_eq!(query(&store, kind("user.key")), [4]);
            assert_eq!(query(&store, kind("use")), Vec::<u64>::new());
            // Whole segments: `portal.log` is no prefix of `portal.logout`.
            assert_eq!(query(&store, kind("portal")), [2, 3]);
            assert_eq!(query(&store, kind("portal.login")), [2]);
            assert_eq!(query(&store, kind("portal.log")), Vec::<u64>::new());
            assert_eq!(query(&store, kind("")), [1, 2, 3, 4, 5]);
            let user = AuditFilter {
                user: Some("alice".into()),
                ..AuditFilter::default()
            };
            assert_eq!(query(&store, user), [2, 4]);
            let target = AuditFilter {
                user: Some("bob".into()),
                ..AuditFilter::default()
            };
            assert_eq!(query(&store, target).len(), 5);
            let range = AuditFilter {
                since: Some(101),
                until: Some(103),
                ..AuditFilter::default()
            };
            assert_eq!(query(&store, range), [2, 3, 4]);
            let page = AuditFilter {
                after_seq: Some(1),
                limit: Some(2),
                ..AuditFilter::default()
            };
            // A page: the oldest two after seq 1 (the next page starts at 3).
            assert_eq!(query(&store, page), [2, 3]);
            let combined = AuditFilter {
                kind_prefix: Some("user".into()),
                user: Some("uid:0".into()),
                since: Some(100),
                ..AuditFilter::default()
            };
            assert_eq!(query(&store, combined), [1]);
        });
    }

    #[test]
    fn failed_audit_insert_refuses_the_action() {
        on_each_backend(|db, store| {
            db.raw_batch(match db.backend() {
                "sqlite" => {
                    "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log \
                     BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;"
                }
                _ => {
                    "CREATE FUNCTION no_audit() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$; \
                     CREATE TRIGGER no_audit BEFORE INSERT ON audit_log \
                     FOR EACH ROW EXECUTE FUNCTION no_audit();"
                }
            });
            let err = store
                .write_blocking(|w| {
                    w.create_user(new_user("alice"))?;
                    w.audit(event("user.add", "uid:0", "alice"))
                })
                .unwrap_err();
            assert!(matches!(err, StoreError::AuditWrite { .. }), "{err}");
            assert_eq!(
                err.api_code(),
                gatehouse_config::api::ErrorCode::AuditUnavailable
            );
            assert!(store.read_blocking(|r| r.user("alice")).unwrap().is_none());
        });
    }

    #[test]
    fn detects_edited_row() {
        on_each_backend(|db, store| {
            five(&store);
            tamper(db, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2;");
            assert_eq!(verdict(&store), Some((VerifyProblemKind::Altered, 2)));
        });
    }

    #[test]
    fn detects_edited_detail_even_when_not_json() {
        on_each_backend(|db, store| {
            five(&store);
            tamper(db, "UPDATE audit_log SET detail = '{broken' WHERE seq = 3;");
            assert_eq!(verdict(&store), Some((VerifyProblemKind::Altered, 3)));
            // Listing still works.
            assert_eq!(query(&store, AuditFilter::default()).len(), 5);
        });
    }

    #[test]
    fn detects_deleted_middle_row() {
        on_each_backend(|db, store| {
            five(&store);
            tamper(db, "DELETE FROM audit_log WHERE seq = 3;");
            assert_eq!(verdict(&store), Some((VerifyProblemKind::Removed, 3)));
        });
    }

    #[test]
    fn detects_swapped_rows() {
        on_each_backend(|db, store| {
            five(&store);
            let cols = "seq, time, time_unix, kind, actor, source, target, detail, prev_hash, hash";
            let set = cols
                .split(", ")
                .map(|c| format!("{c} = (SELECT {c} FROM saved WHERE saved.id = {{other}})"))
                .collect::<Vec<_>>()
                .join(", ");
            tamper(
                db,
                &format!(
                    "CREATE TEMP TABLE saved AS SELECT id, {cols} FROM audit_log WHERE id IN (2, 3);
                     UPDATE audit_log SET seq = -seq WHERE id IN (2, 3);
                     UPDATE audit_log SET {} WHERE id = 2;
                     UPDATE audit_log SET {} WHERE id = 3;",
                    set.replace("{other}", "3"),
                    set.replace("{other}", "2"),
                ),
            );
            let seqs: Vec<i64> = db.raw_column("SELECT seq FROM audit_log ORDER BY id");
            assert_eq!(seqs, [1, 3, 2, 4, 5]);
            assert_eq!(verdict(&store), Some((VerifyProblemKind::Reordered, 3)));
        });
    }

    #[test]
    fn detects_truncated_tail() {
        on_each_backend(|db, store| {
            five(&store);
            tamper(db, "DELETE FROM audit_log WHERE seq > 3;");
            assert_eq!(verdict(&store), Some((VerifyProblemKind::Truncated, 4)));
        });
    }

    #[test]
    fn float_details_survive_the_round_trip() {
        on_each_backend(|_db, store| {
            store
                .write_blocking(|w| {
                    let e = event("ssh.session.end", "alice", "10.0.3.4:22").detail(
                        json!({ "secs": 0.1 + 0.2, "ratio": 1e-7, "big": 1.7976931348623157e308 }),
                    );
                    w.audit(e)
                })
                .unwrap();
            assert_eq!(verdict(&store), None);
        });
    }
}
