//! Keeps the audit log's files in step with the `audit_log` table: after
//! each commit (append to the mirror, move the head file) and on start-up.
//!
//! Repair rules on open: when the database holds records past the head file
//! (a crash between commit and head update) and they chain correctly from
//! it, the head moves forward; the mirror gets every record after its last
//! line (a torn last line is cut first). When the database holds FEWER
//! records than the head file says, or the records past the head do not
//! chain, nothing is "fixed": the head file is frozen (never rewritten while
//! this store is open) so `verify` keeps reporting the damage.
//!
//! A missing head file next to a non-empty log is not recreated: without
//! it a cut tail cannot be seen, so the store refuses to open
//! ([`StoreError::AnchorMissing`]) until an admin re-anchors deliberately
//! (`accessd audit-anchor`, after comparing with a shipped mirror).
//!
//! Other file problems are logged, never returned: the database is the
//! source of truth and holds every record.

use gatehouse_config::api::AuditRecord;

use super::audit_log::{RECORD_COLUMNS, hash_at, last_head, query_records, to_i64};
use super::db::{Conn, Value};
use super::{Paths, StoreError};
use crate::audit::chain::{self, Head};
use crate::audit::mirror;

/// What [`reconcile`] found.
pub(super) struct Reconciled {
    pub(super) mirror_in_sync: bool,
    pub(super) head_frozen: bool,
}

/// What to do about a missing head file next to a non-empty log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingAnchor {
    /// Refuse to open (the default).
    Refuse,
    /// Anchor anew at the last record, if the whole chain verifies
    /// (`accessd audit-anchor`).
    Recreate,
}

/// Start-up repair of the head file and mirror; see the module doc. A
/// database error or a missing anchor fails; other file problems are logged.
pub(super) fn reconcile(
    conn: &Conn<'_>,
    paths: &Paths,
    missing: MissingAnchor,
) -> Result<Reconciled, StoreError> {
    let db_last = last_head(conn).map_err(StoreError::db("read the last audit record"))?;
    let head_frozen = reconcile_head(conn, paths, db_last.as_ref(), missing)?;
    let mirror_in_sync = catch_up_mirror(conn, paths);
    Ok(Reconciled {
        mirror_in_sync,
        head_frozen,
    })
}

/// After a commit that appended `appended`: copy them to the mirror (or catch
/// the mirror up when an earlier append failed) and move the head unless it
/// is frozen. Returns whether the mirror is in sync. Never fails: the
/// database already holds the records.
pub(super) fn after_commit(
    conn: &Conn<'_>,
    paths: &Paths,
    appended: &[AuditRecord],
    mirror_in_sync: bool,
    head_frozen: bool,
) -> bool {
    let in_sync = if mirror_in_sync {
        match mirror::append(&paths.mirror, appended, paths.rotation) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "audit mirror append failed; will catch up on the next write");
                false
            }
        }
    } else {
        catch_up_mirror(conn, paths)
    };
    if head_frozen {
        tracing::error!(
            "audit head file not moved: the audit chain did not match it at start-up; run \
             `accessctl audit verify`"
        );
        return in_sync;
    }
    let Some(last) = appended.last() else {
        return in_sync;
    };
    if let Err(error) = mirror::write_head(&paths.head, &Head::of(last)) {
        tracing::error!(%error, "audit head file update failed; repaired on next start");
    }
    in_sync
}

/// What [`catch_up`] found.
pub(super) struct CaughtUp {
    /// Whether the mirror is in sync.
    pub(super) mirror_in_sync: bool,
    /// The database's chain no longer continues from this node's head file,
    /// and why: the head stays where it was (evidence) and writes are refused.
    pub(super) chain_broken: Option<&'static str>,
}

/// After a commit on the shared store, where the other node's records may
/// sit between this node's: copy to the mirror every record it lacks, and
/// move the head to the database's last record, but only when the head
/// file's record is still in the database and the chain from it verifies
/// (else someone with the database cut or rewrote records: the head stays
/// as evidence and `chain_broken` says why). Never fails: the database holds
/// the records.
pub(super) fn catch_up(conn: &Conn<'_>, paths: &Paths, head_frozen: bool) -> CaughtUp {
    let mirror_in_sync = catch_up_mirror(conn, paths);
    if head_frozen {
        tracing::error!(
            "audit head file not moved: the audit chain did not match it; run \
             `accessctl audit verify`"
        );
        return CaughtUp {
            mirror_in_sync,
            chain_broken: None,
        };
    }
    let chain_broken = match continuity(conn, paths) {
        Ok(Continuity::Reaches(Some(last))) => {
            if let Err(error) = mirror::write_head(&paths.head, &last) {
                tracing::error!(%error, "audit head file update failed; repaired on next start");
            }
            None
        }
        Ok(Continuity::Reaches(None)) => None,
        Ok(Continuity::Broken(why)) => {
            tracing::error!(
                why,
                "the audit chain in the database no longer continues from this node's audit head: \
                 records were removed or rewritten behind the gateway's back. The head file is kept \
                 as evidence and no more records are written here; run `accessctl audit verify`, \
                 restore the log, then restart accessd"
            );
            Some(why)
        }
        Err(error) => {
            // Cannot tell now: the head stays, the next write looks again.
            tracing::error!(%error, "cannot check the audit chain for the head file; left as it was");
            None
        }
    };
    CaughtUp {
        mirror_in_sync,
        chain_broken,
    }
}

/// Whether the database's chain continues from the head file.
enum Continuity {
    /// It does, to this last record (`None`: the log is empty).
    Reaches(Option<Head>),
    /// It does not, and why.
    Broken(&'static str),
}

fn continuity(conn: &Conn<'_>, paths: &Paths) -> Result<Continuity, StoreError> {
    let last = last_head(conn).map_err(StoreError::db("read the last audit record"))?;
    let Some(head) = mirror::read_head(&paths.head)? else {
        // A node that has just joined the shared store anchors here.
        return Ok(Continuity::Reaches(last));
    };
    if hash_at(conn, head.seq)?.as_deref() != Some(head.hash.as_str()) {
        return Ok(Continuity::Broken(
            "the record at the head file's position is gone or differs",
        ));
    }
    let segment = query_records(
        conn,
        &format!(
            "SELECT {RECORD_COLUMNS} FROM audit_log WHERE seq > {} ORDER BY id",
            head.seq
        ),
        &[],
    )?;
    if !chain::verify_from(&segment, Some(&head), None, &paths.audit_keys).intact {
        return Ok(Continuity::Broken(
            "the records past the head file's do not chain from it",
        ));
    }
    Ok(Continuity::Reaches(last))
}

/// Returns whether the head file must stay frozen.
fn reconcile_head(
    conn: &Conn<'_>,
    paths: &Paths,
    db_last: Option<&Head>,
    missing: MissingAnchor,
) -> Result<bool, StoreError> {
    let head = match mirror::read_head(&paths.head) {
        Ok(head) => head,
        Err(error) => {
            tracing::error!(%error, "audit head file unreadable; leaving it as evidence");
            return Ok(true);
        }
    };
    let Some(db_last) = db_last else {
        if let Some(head) = head {
            tracing::error!(
                head = head.seq,
                "audit log is empty but the head file records more; records were removed"
            );
            return Ok(true);
        }
        return Ok(false);
    };
    let (anchor, segment_sql) = match &head {
        None if missing == MissingAnchor::Refuse => {
            return Err(StoreError::AnchorMissing {
                path: paths.head.clone(),
                last_seq: db_last.seq,
            });
        }
        None => (
            None,
            format!("SELECT {RECORD_COLUMNS} FROM audit_log ORDER BY id"),
        ),
        Some(head) if head.seq > db_last.seq => {
            tracing::error!(
                head = head.seq,
                last = db_last.seq,
                "audit log ends before the head file's record; records were cut from the end"
            );
            return Ok(true);
        }
        Some(head) if head.seq == db_last.seq && head.hash == db_last.hash => return Ok(false),
        Some(head) if head.seq == db_last.seq => {
            tracing::error!(
                seq = head.seq,
                "the last audit record differs from the head file's; it was rewritten"
            );
            return Ok(true);
        }
        Some(head) => (
            Some(head),
            format!(
                "SELECT {RECORD_COLUMNS} FROM audit_log WHERE seq > {} ORDER BY id",
                head.seq
            ),
        ),
    };
    if let Some(anchor) = anchor {
        let at_anchor = hash_at(conn, anchor.seq)?;
        if at_anchor.as_deref() != Some(anchor.hash.as_str()) {
            tracing::error!(
                seq = anchor.seq,
                "audit record at the head file's position differs from it"
            );
            return Ok(true);
        }
    }
    let segment = query_records(conn, &segment_sql, &[])?;
    let report = chain::verify_from(&segment, anchor, None, &paths.audit_keys);
    if !report.intact {
        // A node anchoring anew on a log whose first keyed record does not
        // verify under its key: most likely it has another secrets key than
        // the gateway that wrote the log. Writing on would break the chain.
        if anchor.is_none()
            && let Some(first) = segment.iter().find(|r| chain::is_keyed(&r.hash))
            && chain::keyed_hash(first, &paths.audit_keys).ok().as_deref()
                != Some(first.hash.as_str())
        {
            return Err(StoreError::AuditKeyMismatch {
                db: paths.db_name.clone(),
                seq: first.seq,
            });
        }
        tracing::error!(problem = ?report.problem, "audit chain past the head file is broken; head not moved");
        return Ok(anchor.is_some());
    }
    if let Err(error) = mirror::write_head(&paths.head, db_last) {
        tracing::error!(%error, "cannot move the audit head file forward");
    } else if head.is_none() {
        tracing::warn!(
            seq = db_last.seq,
            "audit head file was missing; recreated from the database"
        );
    } else {
        tracing::info!(
            seq = db_last.seq,
            "audit head file moved forward after an interrupted write"
        );
    }
    Ok(false)
}

/// Appends to the mirror every record after its last line. Returns whether
/// the mirror is in sync.
fn catch_up_mirror(conn: &Conn<'_>, paths: &Paths) -> bool {
    const BATCH: i64 = 1000;
    let mut after = match mirror::last_seq(&paths.mirror) {
        Ok(seq) => seq.map_or(0, to_i64),
        Err(error) => {
            tracing::error!(%error, "cannot read the audit mirror's last record; not appending");
            return false;
        }
    };
    let mut copied = 0usize;
    loop {
        let batch = match query_records(
            conn,
            &format!("SELECT {RECORD_COLUMNS} FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            &[Value::Integer(after), Value::Integer(BATCH)],
        ) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%error, "cannot read audit records for the mirror");
                return false;
            }
        };
        let Some(last) = batch.last() else { break };
        after = to_i64(last.seq);
        if let Err(error) = mirror::append(&paths.mirror, &batch, paths.rotation) {
            tracing::error!(%error, "audit mirror catch-up failed");
            return false;
        }
        copied += batch.len();
    }
    if copied > 0 {
        tracing::info!(copied, "audit mirror caught up with the database");
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs;
    use std::io::Write;

    use gatehouse_config::api::VerifyProblemKind;

    use super::*;
    use crate::store::fixtures::*;
    use crate::store::{AuditFilter, Store};

    fn write_events(store: &Store, n: usize) {
        for i in 0..n {
            store
                .write_blocking(|w| {
                    w.audit(test_event("user.add", "uid:0", "local", &format!("t{i}")))
                })
                .unwrap();
        }
    }

    fn db_records(store: &Store) -> Vec<AuditRecord> {
        store
            .read_blocking(|r| r.audit_records(&AuditFilter::default()))
            .unwrap()
    }

    fn verdict(store: &Store) -> Option<(VerifyProblemKind, u64)> {
        let report = store.read_blocking(|r| r.verify_audit()).unwrap();
        report.problem.map(|p| (p.kind, p.seq))
    }

    fn keep_lines(path: &std::path::Path, n: usize, torn: &str) {
        let text = fs::read_to_string(path).unwrap();
        let mut kept: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
        kept.push_str(torn);
        fs::write(path, kept).unwrap();
    }

    #[test]
    fn a_rotated_mirror_holds_the_whole_chain_across_its_files() {
        on_each_test_db(|db| {
            let mut opts = db.opts.clone();
            opts.mirror_rotation = mirror::Rotation {
                max_bytes: 1_000,
                keep: 50,
            };
            let store = Store::open(&opts).unwrap();
            write_events(&store, 30);
            let mut files: Vec<_> = (1..=50)
                .rev()
                .map(|n| mirror::rotated(&opts.audit_mirror, n))
                .filter(|p| p.exists())
                .collect();
            assert!(files.len() >= 3, "rotated {} times", files.len());
            files.push(opts.audit_mirror.clone());
            let records: Vec<AuditRecord> = files
                .iter()
                .flat_map(|f| mirror::read_all(f).unwrap())
                .collect();
            assert_eq!(records, db_records(&store), "every record once, in order");
            let report = chain::verify(&records, None, &store.inner.paths.audit_keys);
            assert!(report.intact, "{report:?}");

            // Reopening (the start-up catch-up) appends nothing twice.
            drop(store);
            let store = Store::open(&opts).unwrap();
            write_events(&store, 1);
            let last = mirror::read_all(&opts.audit_mirror).unwrap();
            assert_eq!(last.last().unwrap().seq, 31);
        });
    }

    #[test]
    fn catches_up_after_a_crash_between_commit_and_files() {
        on_each_test_db(|db| {
            let opts = db.opts.clone();
            let store = Store::open(&opts).unwrap();
            write_events(&store, 5);
            let records = db_records(&store);
            drop(store);
            // The crash: mirror has two records and half of the third, head
            // still points at record 3.
            keep_lines(&opts.audit_mirror, 2, r#"{"seq":3,"time":"#);
            mirror::write_head(
                &opts.state_dir.join(mirror::HEAD_FILE),
                &Head::of(&records[2]),
            )
            .unwrap();

            let store = Store::open(&opts).unwrap();
            assert_eq!(mirror::read_all(store.mirror_path()).unwrap(), records);
            assert_eq!(
                mirror::read_head(store.head_path()).unwrap(),
                Some(Head::of(&records[4]))
            );
            assert_eq!(verdict(&store), None);
            // And it keeps appending normally.
            write_events(&store, 1);
            assert_eq!(mirror::read_all(store.mirror_path()).unwrap().len(), 6);
        });
    }

    #[test]
    fn a_missing_head_refuses_to_open_and_is_only_recreated_on_request() {
        on_each_test_db(|db| {
            let opts = db.opts.clone();
            let store = Store::open(&opts).unwrap();
            write_events(&store, 3);
            let records = db_records(&store);
            drop(store);
            fs::remove_file(&opts.audit_mirror).unwrap();
            let head_path = opts.state_dir.join(mirror::HEAD_FILE);
            fs::remove_file(&head_path).unwrap();
            if db.backend() == "postgres" {
                // A node joining the shared store anchors itself at once (the
                // other node's anchor guards the records before).
                let store = Store::open(&opts).unwrap();
                assert_eq!(mirror::read_all(store.mirror_path()).unwrap(), records);
                assert_eq!(
                    mirror::read_head(&head_path).unwrap(),
                    Some(Head::of(&records[2]))
                );
                return;
            }
            // A cut tail would go unseen with a new anchor: refused, naming the
            // file and the repair.
            let err = Store::open(&opts).err().unwrap();
            assert!(
                matches!(err, StoreError::AnchorMissing { last_seq: 3, .. }),
                "{err}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&head_path.display().to_string())
                    && text.contains("accessd audit-anchor"),
                "{text}"
            );
            assert!(!head_path.exists(), "refusing writes nothing");
            let store = Store::open_anchoring_anew(&opts).unwrap();
            assert_eq!(mirror::read_all(store.mirror_path()).unwrap(), records);
            assert_eq!(
                mirror::read_head(store.head_path()).unwrap(),
                Some(Head::of(&records[2]))
            );
        });
    }

    #[test]
    fn truncation_is_not_repaired_and_head_stays_frozen() {
        on_each_test_db(|db| {
            let opts = db.opts.clone();
            let store = Store::open(&opts).unwrap();
            write_events(&store, 5);
            let head = mirror::read_head(store.head_path()).unwrap();
            db.raw_batch("DISABLE_AUDIT_TRIGGERS; DELETE FROM audit_log WHERE seq > 2;");
            drop(store);

            let store = Store::open(&opts).unwrap();
            assert_eq!(mirror::read_head(store.head_path()).unwrap(), head);
            assert_eq!(verdict(&store), Some((VerifyProblemKind::Truncated, 3)));
            // New writes refill seq 3..: the frozen head still exposes the cut.
            write_events(&store, 4);
            assert_eq!(mirror::read_head(store.head_path()).unwrap(), head);
            assert_eq!(verdict(&store), Some((VerifyProblemKind::Altered, 5)));
        });
    }

    /// Review finding 2: on the shared store, after each write the head
    /// file followed whatever the database's last record was, so records
    /// cut (or rewritten) by someone with the database were unseen once any
    /// write happened. The head moves only from a record still in the
    /// database, along a chain that verifies; otherwise it freezes, verify
    /// names the break, and writes that need the chain are refused.
    #[test]
    fn on_the_shared_store_a_cut_tail_freezes_the_head_and_stops_writes() {
        let Some(db) = TestStore::postgres() else {
            return;
        };
        let store = db.open();
        write_events(&store, 5);
        let head = mirror::read_head(store.head_path()).unwrap();
        db.raw_batch("DISABLE_AUDIT_TRIGGERS; DELETE FROM audit_log WHERE seq > 2;");
        // A write lands on the cut log (the database takes it) ...
        write_events(&store, 1);
        // ... but the head file stays where it was, and verify says so.
        assert_eq!(mirror::read_head(store.head_path()).unwrap(), head);
        assert!(verdict(&store).is_some(), "verify sees the cut");
        // `accessctl status` names the break (and what to do).
        let named = store.audit_break().expect("the store names the break");
        assert!(
            named.contains("gone or differs") && named.contains("accessctl audit verify"),
            "{named}"
        );
        // Writes that need the chain are refused from now on, saying why.
        let refused = store
            .write_blocking(|w| w.audit(test_event("user.add", "uid:0", "local", "after")))
            .unwrap_err();
        assert!(refused.to_string().contains("audit chain"), "{refused}");
        assert_eq!(db_records(&store).len(), 3, "nothing more was written");
    }

    /// A record inserted by someone with the database (not through the
    /// store) is caught by verify, on both backends.
    #[test]
    fn a_record_inserted_behind_the_store_is_caught() {
        on_each_test_db(|db| {
            let store = db.open();
            write_events(&store, 3);
            assert_eq!(verdict(&store), None);
            db.raw_batch(
                "DISABLE_AUDIT_TRIGGERS; \
                 INSERT INTO audit_log (seq, time, time_unix, kind, actor, source, target, detail, prev_hash, hash) \
                 SELECT seq + 1, time, time_unix, kind, actor, source, 'forged', detail, prev_hash, hash \
                 FROM audit_log WHERE seq = 3;",
            );
            let caught = verdict(&store);
            assert!(
                caught.is_some_and(|(_, seq)| seq == 4),
                "{caught:?} ({})",
                db.backend()
            );
        });
    }

    /// The record as an INSERT, as someone with only the database would
    /// write it.
    fn insert_sql(r: &AuditRecord) -> String {
        let q = |text: &str| format!("'{}'", text.replace('\'', "''"));
        format!(
            "INSERT INTO audit_log (seq, time, time_unix, kind, actor, source, target, detail, \
             prev_hash, hash) VALUES ({}, {}, 0, {}, {}, {}, {}, {}, {}, {});",
            r.seq,
            q(&r.time),
            q(&r.kind),
            q(&r.actor),
            q(&r.source),
            q(&r.target),
            q(&r.detail.to_string()),
            q(&r.prev_hash),
            q(&r.hash),
        )
    }

    /// Issue 25's hole: someone with only the database appends a record
    /// chained after the last one with a correct plain SHA-256. The plain
    /// chain verified it; the keyed chain does not, on both backends.
    #[test]
    fn a_record_appended_with_a_correct_plain_hash_is_caught() {
        on_each_test_db(|db| {
            let store = db.open();
            write_events(&store, 3);
            let last = db_records(&store).pop().unwrap();
            let forged = chain::seal(AuditRecord {
                seq: last.seq + 1,
                prev_hash: last.hash.clone(),
                kind: "user.add".into(),
                target: "forged".into(),
                ..last
            })
            .unwrap();
            db.raw_batch(&insert_sql(&forged));
            assert_eq!(
                verdict(&store),
                Some((VerifyProblemKind::Altered, 4)),
                "{}",
                db.backend()
            );
        });
    }

    /// A record whose detail was edited in the database is caught, on both
    /// backends: as it is, and with its hash recomputed (plain SHA-256, or
    /// dressed as keyed) and the next record re-linked to it, which the
    /// plain chain passed.
    #[test]
    fn a_record_whose_detail_was_edited_is_caught() {
        for dressed in [false, true] {
            on_each_test_db(|db| {
                let store = db.open();
                write_events(&store, 3);
                db.raw_batch(
                    "DISABLE_AUDIT_TRIGGERS; UPDATE audit_log SET detail = '{\"edited\":true}' WHERE seq = 2;",
                );
                assert_eq!(
                    verdict(&store),
                    Some((VerifyProblemKind::Altered, 2)),
                    "{}",
                    db.backend()
                );
                let edited = db_records(&store).remove(1);
                let mut hash = chain::record_hash(&edited).unwrap();
                if dressed {
                    hash = format!("{}{hash}", chain::KEYED_PREFIX);
                }
                db.raw_batch(&format!(
                    "UPDATE audit_log SET hash = '{hash}' WHERE seq = 2; \
                     UPDATE audit_log SET prev_hash = '{hash}' WHERE seq = 3;"
                ));
                let caught = verdict(&store);
                assert!(
                    caught == Some((VerifyProblemKind::Altered, 2)),
                    "{caught:?} ({}, dressed {dressed})",
                    db.backend()
                );
            });
        }
    }

    /// `n` records chained with plain SHA-256, as a gateway wrote them
    /// before the keyed chain.
    fn plain_log(n: u64) -> Vec<AuditRecord> {
        let mut plain: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev_hash = plain
                .last()
                .map_or(chain::GENESIS_HASH.to_string(), |r| r.hash.clone());
            plain.push(
                chain::seal(AuditRecord {
                    seq,
                    time: format!("2025-01-01T00:00:0{seq}.000Z"),
                    kind: "user.add".into(),
                    actor: "uid:0".into(),
                    source: "local".into(),
                    target: format!("u{seq}"),
                    detail: serde_json::json!({ "n": seq }),
                    prev_hash,
                    hash: String::new(),
                })
                .unwrap(),
            );
        }
        plain
    }

    /// A log of plain records (written before the keyed chain) keeps them
    /// as they are; opening it appends a signed checkpoint where the keyed
    /// chain begins, once.
    #[test]
    fn a_plain_log_migrates_once_behind_a_signed_checkpoint() {
        on_each_test_db(|db| {
            let opts = db.opts.clone();
            let store = db.open();
            drop(store);
            let plain = plain_log(3);
            let sql: String = plain.iter().map(insert_sql).collect();
            db.raw_batch(&sql);
            mirror::write_head(
                &opts.state_dir.join(mirror::HEAD_FILE),
                &Head::of(&plain[2]),
            )
            .unwrap();

            let store = Store::open(&opts).unwrap();
            let records = db_records(&store);
            assert_eq!(records[..3], plain[..], "old records keep their hashes");
            assert_eq!(records.len(), 4, "{}", db.backend());
            assert_eq!(records[3].kind, "audit.checkpoint");
            assert!(chain::is_keyed(&records[3].hash));
            let report = store.read_blocking(|r| r.verify_audit()).unwrap();
            assert!(report.intact, "{report:?}");
            assert_eq!((report.keyed_from, report.checkpoints), (Some(4), 1));
            drop(store);
            // Once: a keyed log gets no second migration checkpoint.
            let store = Store::open(&opts).unwrap();
            assert_eq!(db_records(&store).len(), 4);
            write_events(&store, 1);
            assert!(store.read_blocking(|r| r.verify_audit()).unwrap().intact);
        });
    }

    /// A plain log whose last record was rewritten (same seq, another
    /// hash) freezes the head, and no checkpoint vouches for it.
    #[test]
    fn a_rewritten_plain_tail_is_not_signed_at_migration() {
        let db = TestStore::sqlite();
        let opts = db.opts.clone();
        drop(db.open());
        let mut plain = plain_log(3);
        let head = Head::of(&plain[2]);
        plain[2].target = "mallory".into();
        plain[2] = chain::seal(plain[2].clone()).unwrap();
        db.raw_batch(&plain.iter().map(insert_sql).collect::<String>());
        mirror::write_head(&opts.state_dir.join(mirror::HEAD_FILE), &head).unwrap();
        let store = Store::open(&opts).unwrap();
        let records = db_records(&store);
        assert_eq!(records.len(), 3, "no checkpoint signed the rewritten tail");
        assert_eq!(
            verdict(&store),
            Some((VerifyProblemKind::Altered, 3)),
            "verify names it"
        );
    }

    /// A second gateway with its own secrets key on a shared store cannot
    /// verify the log there: it refuses to start, saying why, instead of
    /// writing records no one else can verify.
    #[test]
    fn a_node_with_another_secrets_key_does_not_join_the_shared_log() {
        let Some(db) = TestStore::postgres() else {
            return;
        };
        let store = db.open();
        write_events(&store, 2);
        let dir = tempfile::tempdir().unwrap();
        let mut other = options(dir.path());
        other.postgres = db.opts.postgres.clone();
        let err = Store::open(&other).err().unwrap();
        assert!(
            matches!(err, StoreError::AuditKeyMismatch { seq: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("secrets_key_file"), "{err}");
        // With the shared key it joins.
        other.secrets = std::sync::Arc::clone(&db.opts.secrets);
        Store::open(&other).unwrap();
    }

    #[test]
    fn broken_records_past_the_head_freeze_it() {
        on_each_test_db(|db| {
            let opts = db.opts.clone();
            let store = Store::open(&opts).unwrap();
            write_events(&store, 5);
            let records = db_records(&store);
            db.raw_batch(
                "DISABLE_AUDIT_TRIGGERS; UPDATE audit_log SET target = 'x' WHERE seq = 4;",
            );
            drop(store);
            let head_path = opts.state_dir.join(mirror::HEAD_FILE);
            mirror::write_head(&head_path, &Head::of(&records[2])).unwrap();
            let store = Store::open(&opts).unwrap();
            assert_eq!(
                mirror::read_head(&head_path).unwrap(),
                Some(Head::of(&records[2]))
            );
            assert_eq!(verdict(&store), Some((VerifyProblemKind::Altered, 4)));
            let named = store
                .audit_break()
                .expect("the store names the frozen head");
            assert!(named.contains("kept as evidence"), "{named}");
        });
    }

    #[test]
    fn failed_mirror_append_is_caught_up_on_the_next_write() {
        on_each_backend(|_db, store| {
            write_events(&store, 2);
            let mirror_path = store.mirror_path().to_path_buf();
            let saved = fs::read(&mirror_path).unwrap();
            // Make the mirror unwritable: a directory in its place.
            fs::remove_file(&mirror_path).unwrap();
            fs::create_dir(&mirror_path).unwrap();
            write_events(&store, 1); // Commits; the append fails and is logged.
            assert_eq!(store.read_blocking(|r| r.audit_count()).unwrap(), 3);
            fs::remove_dir(&mirror_path).unwrap();
            fs::File::create(&mirror_path)
                .unwrap()
                .write_all(&saved)
                .unwrap();
            write_events(&store, 1);
            let seqs: Vec<u64> = mirror::read_all(&mirror_path)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect();
            assert_eq!(seqs, [1, 2, 3, 4]);
        });
    }
}
