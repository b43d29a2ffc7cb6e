//! The audit log's hash chain: the canonical encoding of a record, its hash,
//! and verification of a whole chain. Pure functions: no I/O, no clock.
//!
//! Canonical encoding: the record serialized by `serde_json` as an object with
//! exactly these fields, in this order: `seq`, `time`, `kind`, `actor`,
//! `source`, `target`, `detail`, `prev_hash` (no `hash`). `serde_json`'s map is
//! a `BTreeMap`, so objects inside `detail` serialize with sorted keys. The
//! workspace must therefore never enable `serde_json`'s `preserve_order` or
//! `arbitrary_precision` features: either would change the bytes that are
//! hashed and make every stored record look altered.
//!
//! `hash = hex(sha256(canonical))`; the first record's `prev_hash` is
//! [`GENESIS_HASH`].

use std::collections::HashMap;

use gatehouse_config::api::{AuditRecord, VerifyProblem, VerifyProblemKind, VerifyReport};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The newest record the gateway knows it wrote: kept in the head file so
/// that cutting records from the end of the chain is detected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    /// The head that points at `record`.
    pub fn of(record: &AuditRecord) -> Head {
        Head {
            seq: record.seq,
            hash: record.hash.clone(),
        }
    }
}

/// The canonical bytes of `record` (everything but its `hash`).
pub fn canonical_bytes(record: &AuditRecord) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Canonical {
        seq: record.seq,
        time: &record.time,
        kind: &record.kind,
        actor: &record.actor,
        source: &record.source,
        target: &record.target,
        detail: &record.detail,
        prev_hash: &record.prev_hash,
    })
}

/// `hex(sha256(canonical_bytes(record)))`.
pub fn record_hash(record: &AuditRecord) -> Result<String, serde_json::Error> {
    Ok(sha256_hex(&canonical_bytes(record)?))
}

/// Sets `record.hash` from its other fields.
pub fn seal(mut record: AuditRecord) -> Result<AuditRecord, serde_json::Error> {
    record.hash = record_hash(&record)?;
    Ok(record)
}

/// Lowercase hex of the SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Verifies a whole chain: `records` in storage order, starting at the
/// genesis record; `head` is the head file's content when there is one.
/// Reports the first problem found.
pub fn verify(records: &[AuditRecord], head: Option<&Head>) -> VerifyReport {
    verify_from(records, None, head)
}

/// Verifies a segment of the chain that follows `anchor` (the record just
/// before `records[0]`; `None` means the segment starts at genesis).
pub fn verify_from(
    records: &[AuditRecord],
    anchor: Option<&Head>,
    head: Option<&Head>,
) -> VerifyReport {
    let mut checked: u64 = 0;
    let problem = find_problem(records, anchor, head, &mut checked);
    VerifyReport {
        intact: problem.is_none(),
        records: checked,
        problem,
    }
}

/// The field order here IS the canonical order; never reorder, rename or add
/// a field without a migration that re-hashes nothing (old records must keep
/// verifying).
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: &'a str,
    kind: &'a str,
    actor: &'a str,
    source: &'a str,
    target: &'a str,
    detail: &'a serde_json::Value,
    prev_hash: &'a str,
}

fn find_problem(
    records: &[AuditRecord],
    anchor: Option<&Head>,
    head: Option<&Head>,
    checked: &mut u64,
) -> Option<VerifyProblem> {
    // Where each hash sits, to tell a reorder (the link points forward) from a
    // removal (the link points at nothing).
    let positions: HashMap<&str, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.hash.as_str(), i))
        .collect();
    let mut expected_prev = anchor.map_or(GENESIS_HASH, |a| a.hash.as_str());
    let mut expected_seq = anchor.map_or(1, |a| a.seq.saturating_add(1));

    for (i, record) in records.iter().enumerate() {
        match record_hash(record) {
            Ok(hash) if hash == record.hash => {}
            Ok(_) => {
                return Some(problem(
                    record.seq,
                    VerifyProblemKind::Altered,
                    format!("record {} no longer matches its hash", record.seq),
                ));
            }
            Err(e) => {
                return Some(problem(
                    record.seq,
                    VerifyProblemKind::Altered,
                    format!("record {} cannot be encoded: {e}", record.seq),
                ));
            }
        }
        if record.seq < expected_seq {
            return Some(problem(
                record.seq,
                VerifyProblemKind::Reordered,
                format!(
                    "record {} is stored where record {expected_seq} belongs",
                    record.seq
                ),
            ));
        }
        if record.prev_hash != expected_prev {
            let links_forward = positions
                .get(record.prev_hash.as_str())
                .is_some_and(|&at| at > i);
            if links_forward {
                return Some(problem(
                    record.seq,
                    VerifyProblemKind::Reordered,
                    format!("record {} links to a record stored after it", record.seq),
                ));
            }
            if record.seq > expected_seq {
                return Some(removed(expected_seq, record.seq));
            }
            // Same seq, intact hash, broken link: the previous record was
            // rewritten (with a recomputed hash) or this one was.
            let rewritten = if i == 0 { record.seq } else { expected_seq - 1 };
            return Some(problem(
                rewritten,
                VerifyProblemKind::Altered,
                format!(
                    "record {} does not link to the record before it: record {rewritten} was \
                     rewritten",
                    record.seq
                ),
            ));
        }
        if record.seq > expected_seq {
            return Some(removed(expected_seq, record.seq));
        }
        expected_prev = &record.hash;
        expected_seq = record.seq.saturating_add(1);
        *checked += 1;
    }

    let head = head?;
    let last_seq = expected_seq - 1;
    if last_seq < head.seq {
        return Some(problem(
            last_seq + 1,
            VerifyProblemKind::Truncated,
            format!(
                "the chain ends at record {last_seq}, but the head file records {}: records \
                 were cut from the end",
                head.seq
            ),
        ));
    }
    let at_head = records.iter().find(|r| r.seq == head.seq);
    match at_head {
        Some(r) if r.hash != head.hash => Some(problem(
            head.seq,
            VerifyProblemKind::Altered,
            format!(
                "record {} differs from the one the head file records",
                head.seq
            ),
        )),
        _ => None,
    }
}

fn removed(first_missing: u64, found: u64) -> VerifyProblem {
    let message = if found == first_missing + 1 {
        format!("record {first_missing} is missing")
    } else {
        format!(
            "records {first_missing} to {} are missing",
            found.saturating_sub(1)
        )
    };
    problem(first_missing, VerifyProblemKind::Removed, message)
}

fn problem(seq: u64, kind: VerifyProblemKind, message: String) -> VerifyProblem {
    VerifyProblem { seq, kind, message }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn chain(events: &[(String, String, serde_json::Value)]) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for (i, (kind, actor, detail)) in events.iter().enumerate() {
            let prev_hash = out
                .last()
                .map_or(GENESIS_HASH.to_string(), |r| r.hash.clone());
            out.push(
                seal(AuditRecord {
                    seq: i as u64 + 1,
                    time: format!("2025-01-01T00:00:{:02}.000Z", i % 60),
                    kind: kind.clone(),
                    actor: actor.clone(),
                    source: "127.0.0.1".into(),
                    target: "bob".into(),
                    detail: detail.clone(),
                    prev_hash,
                    hash: String::new(),
                })
                .unwrap(),
            );
        }
        out
    }

    fn simple(n: usize) -> Vec<AuditRecord> {
        let events: Vec<_> = (0..n)
            .map(|i| {
                (
                    "user.add".to_string(),
                    "uid:0".to_string(),
                    json!({ "i": i }),
                )
            })
            .collect();
        chain(&events)
    }

    fn kind_of(report: &VerifyReport) -> Option<(VerifyProblemKind, u64)> {
        report.problem.as_ref().map(|p| (p.kind, p.seq))
    }

    #[test]
    fn canonical_encoding_is_fixed() {
        let r = AuditRecord {
            seq: 1,
            time: "2025-01-01T00:00:00.000Z".into(),
            kind: "user.add".into(),
            actor: "uid:0".into(),
            source: "local".into(),
            target: "alice".into(),
            detail: json!({ "z": 1, "a": [true, null] }),
            prev_hash: GENESIS_HASH.into(),
            hash: "ignored".into(),
        };
        let text = String::from_utf8(canonical_bytes(&r).unwrap()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"seq":1,"time":"2025-01-01T00:00:00.000Z","kind":"user.add","actor":"uid:0","source":"local","target":"alice","detail":{{"a":[true,null],"z":1}},"prev_hash":"{GENESIS_HASH}"}}"#
            )
        );
        assert_eq!(record_hash(&r).unwrap(), sha256_hex(text.as_bytes()));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn intact_chain_and_head() {
        let records = simple(5);
        let head = Head::of(&records[4]);
        let report = verify(&records, Some(&head));
        assert!(report.intact, "{report:?}");
        assert_eq!(report.records, 5);
        assert!(verify(&[], None).intact);
        // A head behind the chain (crash before the head was updated) is fine.
        assert!(verify(&records, Some(&Head::of(&records[2]))).intact);
    }

    #[test]
    fn detects_edit() {
        let mut records = simple(5);
        records[2].actor = "mallory".into();
        let report = verify(&records, None);
        assert_eq!(kind_of(&report), Some((VerifyProblemKind::Altered, 3)));
        assert_eq!(report.records, 2);
    }

    #[test]
    fn detects_rewrite_with_recomputed_hash() {
        let mut records = simple(5);
        records[2].actor = "mallory".into();
        records[2] = seal(records[2].clone()).unwrap();
        let report = verify(&records, None);
        assert_eq!(kind_of(&report), Some((VerifyProblemKind::Altered, 3)));
    }

    #[test]
    fn detects_removal() {
        let mut records = simple(5);
        records.remove(2);
        assert_eq!(
            kind_of(&verify(&records, None)),
            Some((VerifyProblemKind::Removed, 3))
        );
        let mut records = simple(5);
        records.remove(0);
        assert_eq!(
            kind_of(&verify(&records, None)),
            Some((VerifyProblemKind::Removed, 1))
        );
    }

    #[test]
    fn detects_reorder() {
        let mut records = simple(5);
        records.swap(1, 3);
        assert_eq!(
            kind_of(&verify(&records, None)),
            Some((VerifyProblemKind::Reordered, 4))
        );
        let mut records = simple(5);
        records.swap(3, 4);
        assert_eq!(
            kind_of(&verify(&records, None)),
            Some((VerifyProblemKind::Reordered, 5))
        );
    }

    #[test]
    fn detects_truncation_and_head_mismatch() {
        let records = simple(5);
        let head = Head::of(&records[4]);
        let report = verify(&records[..3], Some(&head));
        assert_eq!(kind_of(&report), Some((VerifyProblemKind::Truncated, 4)));
        assert_eq!(report.records, 3);
        let report = verify(&[], Some(&head));
        assert_eq!(kind_of(&report), Some((VerifyProblemKind::Truncated, 1)));

        let other = Head {
            seq: 5,
            hash: "f".repeat(64),
        };
        assert_eq!(
            kind_of(&verify(&records, Some(&other))),
            Some((VerifyProblemKind::Altered, 5))
        );
    }

    #[test]
    fn verifies_segment_after_anchor() {
        let records = simple(6);
        let anchor = Head::of(&records[2]);
        assert!(verify_from(&records[3..], Some(&anchor), None).intact);
        let wrong = Head::of(&records[1]);
        assert!(!verify_from(&records[3..], Some(&wrong), None).intact);
    }

    fn arb_detail() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z0-9 ]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_events() -> impl Strategy<Value = Vec<(String, String, serde_json::Value)>> {
        prop::collection::vec(
            ("[a-z]{1,6}(\\.[a-z]{1,6}){0,2}", "[a-z]{1,8}", arb_detail()),
            1..12,
        )
    }

    proptest! {
        #[test]
        fn random_chains_verify(events in arb_events()) {
            let records = chain(&events);
            let head = Head::of(records.last().unwrap());
            let report = verify(&records, Some(&head));
            prop_assert!(report.intact, "{:?}", report);
            prop_assert_eq!(report.records, records.len() as u64);
        }

        #[test]
        fn any_single_field_change_is_detected(
            events in arb_events(),
            at in any::<prop::sample::Index>(),
            field in 0usize..9,
            salt in "[A-Z]{1,4}",
        ) {
            let mut records = chain(&events);
            let head = Head::of(records.last().unwrap());
            let i = at.index(records.len());
            let r = &mut records[i];
            match field {
                0 => r.seq += 1 + salt.len() as u64,
                1 => r.time.push_str(&salt),
                2 => r.kind.push_str(&salt),
                3 => r.actor.push_str(&salt),
                4 => r.source.push_str(&salt),
                5 => r.target.push_str(&salt),
                6 => r.detail = serde_json::json!({ "was": r.detail.clone(), "salt": salt }),
                7 => r.prev_hash.push_str(&salt),
                _ => r.hash = sha256_hex(salt.as_bytes()),
            }
            let report = verify(&records, Some(&head));
            prop_assert!(!report.intact);
            prop_assert!(report.problem.is_some());
        }
    }
}
