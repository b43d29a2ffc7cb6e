//! `accessctl audit verify` in the store: the whole chain checked in
//! storage order against the head file, a page of records at a time
//! (keyset on `id`), so memory is bounded by the page, not the log. The
//! chain rules are [`crate::audit::chain::Verifier`]'s, which carries the
//! chain's state from one page to the next; the report is the one checking
//! every record at once would give.
//!
//! Runs inside one read transaction (a snapshot): on SQLite that holds the
//! connection for the whole check, as loading every record did before.
//! Says how far it got after each page, and stops when told to.
//!
//! Does not own the chain rules ([`crate::audit::chain`]) nor the audit
//! rows' reading and writing ([`super::audit_log`]).

use std::ops::ControlFlow;

use gatehouse_config::api::{VerifyProblem, VerifyProblemKind, VerifyProgress, VerifyReport};

use super::audit_log::{RECORD_COLUMNS, record_from_row, to_i64};
use super::db::{Value, values};
use super::{Reader, StoreError};
use crate::audit::chain::{Step, Verifier};
use crate::audit::mirror;

/// Records read and checked per query: about 10 MB of rows at a time
/// (records of ~1 KB), and a progress report per page.
pub const VERIFY_PAGE: usize = 10_000;

/// How a paged verification ended.
#[derive(Debug)]
pub enum Verified<B> {
    /// Every record was read (or the chain broke): the report.
    Report(VerifyReport),
    /// The progress callback asked to stop (`ControlFlow::Break`).
    Stopped(B),
}

impl Reader<'_> {
    /// Checks the whole chain in storage order against the head file.
    pub fn verify_audit(&self) -> Result<VerifyReport, StoreError> {
        let verified = self.verify_audit_paged(VERIFY_PAGE, |_| {
            ControlFlow::<std::convert::Infallible>::Continue(())
        })?;
        match verified {
            Verified::Report(report) => Ok(report),
            Verified::Stopped(never) => match never {},
        }
    }

    /// [`Reader::verify_audit`], `page` records at a time, telling
    /// `progress` how far it got before the first page and after each one;
    /// a `Break` from it stops the check there.
    pub fn verify_audit_paged<B>(
        &self,
        page: usize,
        mut progress: impl FnMut(VerifyProgress) -> ControlFlow<B>,
    ) -> Result<Verified<B>, StoreError> {
        let page = page.max(1);
        let head = mirror::read_head(&self.paths.head)?;
        let total = self.audit_count()?;
        let mut verifier = Verifier::new(None, head.as_ref(), &self.paths.audit_keys);
        let mut after_id = i64::MIN;
        let mut last_seq = None;
        loop {
            if let ControlFlow::Break(stop) = progress(VerifyProgress {
                checked: verifier.checked(),
                total,
            }) {
                return Ok(Verified::Stopped(stop));
            }
            let rows = self
                .conn
                .query(
                    &format!(
                        "SELECT {RECORD_COLUMNS}, id FROM audit_log WHERE id > ?1 \
                         ORDER BY id LIMIT ?2"
                    ),
                    values![after_id, to_i64(page as u64)],
                )
                .map_err(StoreError::db("read audit records to verify"))?;
            for row in &rows {
                let record =
                    record_from_row(row).map_err(StoreError::db("read an audit record"))?;
                after_id = row.get(9).map_err(StoreError::db("read an audit record"))?;
                last_seq = Some(record.seq);
                match verifier.check(&record) {
                    Step::Sound => {}
                    Step::Problem(problem) => return Ok(Verified::Report(verifier.stop(problem))),
                    Step::BrokenLink(link) => {
                        let links_forward = self.stored_after(&link.prev_hash, after_id)?;
                        return Ok(Verified::Report(verifier.stop(link.judge(links_forward))));
                    }
                }
            }
            if rows.len() < page {
                break;
            }
        }
        let report = verifier.finish();
        if let (None, Some(seq), true) = (&head, last_seq, report.intact) {
            // Without the anchor a cut tail is invisible: never "intact".
            return Ok(Verified::Report(VerifyReport {
                intact: false,
                records: report.records,
                checkpoints: report.checkpoints,
                keyed_from: report.keyed_from,
                problem: Some(VerifyProblem {
                    seq,
                    kind: VerifyProblemKind::AnchorMissing,
                    message: format!(
                        "the audit anchor {} is missing: records cut from the end of the log cannot be detected; restore it from a backup, or re-anchor with `accessd audit-anchor` after comparing the log with its shipped mirror",
                        self.paths.head.display()
                    ),
                }),
            }));
        }
        Ok(Verified::Report(report))
    }

    /// Whether a record with `hash` is stored after the row `id` (a link
    /// that points forward: a reorder, not a removal). Asked once, where
    /// the chain breaks.
    fn stored_after(&self, hash: &str, id: i64) -> Result<bool, StoreError> {
        self.conn
            .query_opt(
                "SELECT id FROM audit_log WHERE hash = ?1 AND id > ?2 LIMIT 1",
                &[Value::Text(hash.to_string()), Value::Integer(id)],
            )
            .map(|row| row.is_some())
            .map_err(StoreError::db("look for an audit record by hash"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::audit::chain::{self, Head};
    use crate::store::Store;
    use crate::store::audit_log::query_records;
    use crate::store::fixtures::*;

    /// The loader this module replaced, kept as the oracle: every record
    /// at once, then [`chain::verify`].
    fn all_at_once(r: &Reader<'_>) -> VerifyReport {
        let head = mirror::read_head(&r.paths.head).unwrap();
        let records = query_records(
            &r.conn,
            &format!("SELECT {RECORD_COLUMNS} FROM audit_log ORDER BY id"),
            &[],
        )
        .unwrap();
        let report = chain::verify(&records, head.as_ref(), &r.paths.audit_keys);
        match (&head, records.last(), report.intact) {
            (None, Some(last), true) => VerifyReport {
                intact: false,
                records: records.len() as u64,
                checkpoints: report.checkpoints,
                keyed_from: report.keyed_from,
                problem: Some(VerifyProblem {
                    seq: last.seq,
                    kind: VerifyProblemKind::AnchorMissing,
                    message: format!(
                        "the audit anchor {} is missing: records cut from the end of the log cannot be detected; restore it from a backup, or re-anchor with `accessd audit-anchor` after comparing the log with its shipped mirror",
                        r.paths.head.display()
                    ),
                }),
            },
            _ => report,
        }
    }

    /// Twelve records with a signed checkpoint after the 4th and the 9th.
    fn twelve(store: &Store) {
        store
            .write_blocking(|w| {
                for i in 0..12u64 {
                    let at = UNIX_EPOCH + Duration::from_secs(100 + i);
                    if i == 4 || i == 9 {
                        w.audit_checkpoint(at)?;
                    } else {
                        let e = test_event("user.add", "uid:0", "local", "bob")
                            .detail(json!({ "i": i }));
                        w.audit_at(e, at)?;
                    }
                }
                Ok(())
            })
            .unwrap();
    }

    /// Swaps every column but `id` of the rows `a` and `b`.
    fn swap_rows(a: i64, b: i64) -> String {
        let cols = "seq, time, time_unix, kind, actor, source, target, detail, prev_hash, hash";
        let set = |other: i64| {
            cols.split(", ")
                .map(|c| format!("{c} = (SELECT {c} FROM saved WHERE saved.id = {other})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "CREATE TEMP TABLE saved AS SELECT id, {cols} FROM audit_log WHERE id IN ({a}, {b});
             UPDATE audit_log SET seq = -seq WHERE id IN ({a}, {b});
             UPDATE audit_log SET {} WHERE id = {a};
             UPDATE audit_log SET {} WHERE id = {b};",
            set(b),
            set(a),
        )
    }

    /// The first problem's kind and record (`None`: intact).
    type Verdict = Option<(VerifyProblemKind, u64)>;

    /// What each tampering does to the log, and the verdict it must get.
    fn cases() -> Vec<(&'static str, String, Verdict)> {
        use VerifyProblemKind::*;
        vec![
            ("intact", String::new(), None),
            (
                "edited",
                "UPDATE audit_log SET actor = 'mallory' WHERE seq = 7;".into(),
                Some((Altered, 7)),
            ),
            (
                "detail not JSON",
                "UPDATE audit_log SET detail = '{broken' WHERE seq = 3;".into(),
                Some((Altered, 3)),
            ),
            (
                "checkpoint edited",
                "UPDATE audit_log SET detail = '{}' WHERE seq = 10;".into(),
                Some((Altered, 10)),
            ),
            (
                "middle removed",
                "DELETE FROM audit_log WHERE seq = 6;".into(),
                Some((Removed, 6)),
            ),
            (
                "first removed",
                "DELETE FROM audit_log WHERE seq = 1;".into(),
                Some((Removed, 1)),
            ),
            (
                "several removed",
                "DELETE FROM audit_log WHERE seq BETWEEN 4 AND 8;".into(),
                Some((Removed, 4)),
            ),
            ("neighbours swapped", swap_rows(4, 5), Some((Reordered, 5))),
            ("far rows swapped", swap_rows(2, 11), Some((Reordered, 11))),
            (
                "tail cut",
                "DELETE FROM audit_log WHERE seq > 8;".into(),
                Some((Truncated, 9)),
            ),
        ]
    }

    fn verdict(report: &VerifyReport) -> Verdict {
        report.problem.as_ref().map(|p| (p.kind, p.seq))
    }

    /// Asserts that every page size gives the oracle's report, and that
    /// this is `expected`.
    fn same_as_all_at_once(db: &TestStore, store: &Store, name: &str, expected: Verdict) {
        let oracle = store.read_blocking(|r| Ok(all_at_once(r))).unwrap();
        assert_eq!(verdict(&oracle), expected, "{name} on {}", db.backend());
        for page in [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, VERIFY_PAGE] {
            let paged = store
                .read_blocking(|r| r.verify_audit_paged(page, |_| ControlFlow::<()>::Continue(())))
                .unwrap();
            let Verified::Report(paged) = paged else {
                panic!("stopped unasked");
            };
            assert_eq!(
                serde_json::to_value(&paged).unwrap(),
                serde_json::to_value(&oracle).unwrap(),
                "{name}, pages of {page}, on {}",
                db.backend()
            );
        }
        let default = store.read_blocking(|r| r.verify_audit()).unwrap();
        assert_eq!(verdict(&default), expected, "{name} on {}", db.backend());
    }

    #[test]
    fn any_page_size_gives_the_report_of_checking_everything_at_once() {
        for (name, sql, expected) in cases() {
            on_each_backend(|db, store| {
                twelve(&store);
                if !sql.is_empty() {
                    db.raw_batch(&format!("DISABLE_AUDIT_TRIGGERS; {sql}"));
                }
                same_as_all_at_once(db, &store, name, expected);
            });
        }
    }

    #[test]
    fn the_head_file_is_checked_across_pages() {
        on_each_backend(|db, store| {
            twelve(&store);
            let other = Head {
                seq: 6,
                hash: "f".repeat(64),
            };
            mirror::write_head(store.head_path(), &other).unwrap();
            let expected = Some((VerifyProblemKind::Altered, 6));
            same_as_all_at_once(db, &store, "the head names another record 6", expected);
            std::fs::remove_file(store.head_path()).unwrap();
            let expected = Some((VerifyProblemKind::AnchorMissing, 12));
            same_as_all_at_once(db, &store, "no head file", expected);
        });
    }

    #[test]
    fn progress_is_told_per_page_and_a_break_stops_the_check() {
        on_each_backend(|db, store| {
            twelve(&store);
            let mut told = Vec::new();
            let verified = store
                .read_blocking(|r| {
                    r.verify_audit_paged(5, |p| {
                        told.push((p.checked, p.total));
                        ControlFlow::<()>::Continue(())
                    })
                })
                .unwrap();
            assert!(
                matches!(verified, Verified::Report(ref r) if r.intact),
                "{verified:?}"
            );
            assert_eq!(told, [(0, 12), (5, 12), (10, 12)], "{}", db.backend());

            let mut pages = 0;
            let verified = store
                .read_blocking(|r| {
                    r.verify_audit_paged(5, |p| {
                        pages += 1;
                        if p.checked >= 5 {
                            ControlFlow::Break(p.checked)
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                })
                .unwrap();
            assert!(matches!(verified, Verified::Stopped(5)), "{verified:?}");
            assert_eq!(pages, 2);
        });
    }

    #[test]
    fn an_empty_log_is_intact() {
        let (_dir, store) = temp_store();
        let report = store.read_blocking(|r| r.verify_audit()).unwrap();
        let oracle = store.read_blocking(|r| Ok(all_at_once(r))).unwrap();
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::to_value(&oracle).unwrap()
        );
    }
}
