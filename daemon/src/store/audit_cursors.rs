//! Exporters' cursors over the audit log (`audit_cursors`): for each
//! exporter by name (`syslog`, `s3`), the seq of the last record its
//! receiver is known to have. The exporter reads the records after it in
//! order, and moves it forward once they are delivered.
//! On the shared store both nodes of a pair read and move the same row, so
//! the node that takes over goes on where the other stopped.
//!
//! A cursor only ever moves forward: a node that lost the lease and saves
//! its last position late cannot take the cursor back behind what the
//! other node already delivered.
//!
//! Does not own what "delivered" means; each exporter decides (see
//! `crate::export`).

use gatehouse_config::api::AuditRecord;

use super::audit_log::{RECORD_COLUMNS, query_records, to_i64};
use super::db::values;
use super::{Reader, StoreError, Writer};

impl Reader<'_> {
    /// Exporter `name`'s cursor: the seq of the last record its receiver is
    /// known to have; 0 (before the first record) when it has none yet.
    pub fn audit_cursor(&self, name: &str) -> Result<u64, StoreError> {
        self.conn
            .query_opt(
                "SELECT seq FROM audit_cursors WHERE name = ?1",
                values![name],
            )
            .and_then(|row| row.map(|row| row.get::<u64>(0)).transpose())
            .map(Option::unwrap_or_default)
            .map_err(StoreError::db("read an audit cursor"))
    }

    /// Every exporter's cursor: name, seq and when it last moved (unix
    /// seconds), by name.
    pub fn audit_cursors(&self) -> Result<Vec<(String, u64, i64)>, StoreError> {
        self.conn
            .query(
                "SELECT name, seq, updated_unix FROM audit_cursors ORDER BY name",
                &[],
            )
            .and_then(|rows| {
                rows.iter()
                    .map(|row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .collect()
            })
            .map_err(StoreError::db("read the audit cursors"))
    }

    /// At most `limit` records after seq `after`, oldest first: an
    /// exporter's next batch.
    pub fn audit_records_after(
        &self,
        after: u64,
        limit: u64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        query_records(
            &self.conn,
            &format!("SELECT {RECORD_COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            values![to_i64(after), to_i64(limit)],
        )
    }
}

impl Writer<'_> {
    /// Moves exporter `name`'s cursor forward to `seq` (stamped `now_unix`);
    /// a cursor already at or past `seq` stays. Returns the cursor after.
    pub fn advance_audit_cursor(
        &mut self,
        name: &str,
        seq: u64,
        now_unix: i64,
    ) -> Result<u64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO audit_cursors (name, seq, updated_unix) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, \
                 updated_unix = excluded.updated_unix WHERE excluded.seq > audit_cursors.seq",
                values![name, to_i64(seq), now_unix],
            )
            .map_err(StoreError::db("move an audit cursor"))?;
        self.audit_cursor(name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn cursors_start_at_zero_move_only_forward_and_are_kept_by_name() {
        on_each_test_db(|db| {
            {
                let store = db.open();
                let read =
                    |name: &'static str| store.read_blocking(|r| r.audit_cursor(name)).unwrap();
                assert_eq!(read("syslog"), 0, "{}", db.backend());
                let moved = store
                    .write_blocking(|w| w.advance_audit_cursor("syslog", 5, 100))
                    .unwrap();
                assert_eq!(moved, 5);
                let back = store
                    .write_blocking(|w| w.advance_audit_cursor("syslog", 3, 101))
                    .unwrap();
                assert_eq!(back, 5, "a cursor never moves back");
                store
                    .write_blocking(|w| w.advance_audit_cursor("s3", 2, 102))
                    .unwrap();
                assert_eq!((read("syslog"), read("s3")), (5, 2));
                let all = store.read_blocking(|r| r.audit_cursors()).unwrap();
                assert_eq!(
                    all,
                    [("s3".to_string(), 2, 102), ("syslog".to_string(), 5, 100)]
                );
            }
            // A restart (or the other node of a pair) reads where it was.
            let store = db.open();
            let after = store.read_blocking(|r| r.audit_cursor("syslog")).unwrap();
            assert_eq!(after, 5, "{}", db.backend());
            let stamped: Vec<i64> =
                db.raw_column("SELECT updated_unix FROM audit_cursors WHERE name = 'syslog'");
            assert_eq!(stamped, [100]);
        });
    }

    #[test]
    fn records_after_a_seq_come_in_order_a_batch_at_a_time() {
        on_each_backend(|db, store| {
            for n in 0..7 {
                store
                    .write_blocking(|w| {
                        w.audit(test_event("user.add", "uid:0", "local", &format!("u{n}")))
                            .map(drop)
                    })
                    .unwrap();
            }
            let seqs = |after, limit| {
                store
                    .read_blocking(|r| r.audit_records_after(after, limit))
                    .unwrap()
                    .iter()
                    .map(|r| r.seq)
                    .collect::<Vec<_>>()
            };
            assert_eq!(seqs(0, 3), [1, 2, 3], "{}", db.backend());
            assert_eq!(seqs(3, 3), [4, 5, 6]);
            assert_eq!(seqs(6, 3), [7]);
            assert_eq!(seqs(7, 3), Vec::<u64>::new());
            let record = store
                .read_blocking(|r| r.audit_records_after(4, 1))
                .unwrap()
                .remove(0);
            assert_eq!(
                (record.kind.as_str(), record.target.as_str()),
                ("user.add", "u4")
            );
        });
    }
}
