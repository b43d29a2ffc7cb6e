//! The audit log's hash chain: the canonical encoding of a record, its hash,
//! and verification of a whole chain, at once ([`verify`]) or a record at a
//! time for a log read in pages ([`Verifier`]). Pure: no I/O, no clock.
//!
//! Canonical encoding: the record serialized by `serde_json` as an object with
//! exactly these fields, in this order: `seq`, `time`, `kind`, `actor`,
//! `source`, `target`, `detail`, `prev_hash` (no `hash`). `serde_json`'s map is
//! a `BTreeMap`, so objects inside `detail` serialize with sorted keys. The
//! workspace must therefore never enable `serde_json`'s `preserve_order` or
//! `arbitrary_precision` features: either would change the bytes that are
//! hashed and make every stored record look altered.
//!
//! Two kinds of chain value, told apart by the `hash` itself:
//! - keyed (every record a gateway writes now): `hash = "hmac-sha256:" +
//!   hex(HMAC-SHA256(audit chain key, canonical))` ([`crate::keys::audit`]).
//!   Someone who can write only the database cannot make one that verifies;
//! - plain (records written before the keyed chain, kept as they were):
//!   `hash = hex(sha256(canonical))`.
//!
//! Once the chain is keyed it stays keyed: a plain record after a keyed
//! one is reported as altered, however correct its SHA-256. A log that had
//! plain records carries a signed checkpoint ([`super::checkpoint`]) as its
//! first keyed record; every keyed `audit.checkpoint` record must cover the
//! record before it and carry a signature that verifies with the audit
//! signing key. The first record's `prev_hash` is [`GENESIS_HASH`].

use gatehouse_config::api::{AuditRecord, VerifyProblem, VerifyProblemKind, VerifyReport};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checkpoint::CheckpointDetail;
use super::event::Kind;
use crate::keys::audit::AuditKeys;

/// What a keyed chain value starts with.
pub const KEYED_PREFIX: &str = "hmac-sha256:";

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

/// `hex(sha256(canonical_bytes(record)))`: a plain chain value.
pub fn record_hash(record: &AuditRecord) -> Result<String, serde_json::Error> {
    Ok(sha256_hex(&canonical_bytes(record)?))
}

/// `hmac-sha256:` and the hex HMAC of `canonical_bytes(record)`: a keyed
/// chain value.
pub fn keyed_hash(record: &AuditRecord, keys: &AuditKeys) -> Result<String, serde_json::Error> {
    let tag = keys.chain_mac(&canonical_bytes(record)?);
    Ok(format!("{KEYED_PREFIX}{}", hex(tag.as_ref())))
}

/// Whether `hash` is a keyed chain value.
pub fn is_keyed(hash: &str) -> bool {
    hash.starts_with(KEYED_PREFIX)
}

/// Sets `record.hash` to its plain chain value (records from before the
/// keyed chain; tests).
pub fn seal(mut record: AuditRecord) -> Result<AuditRecord, serde_json::Error> {
    record.hash = record_hash(&record)?;
    Ok(record)
}

/// Sets `record.hash` to its keyed chain value: how every record is
/// written.
pub fn seal_keyed(
    mut record: AuditRecord,
    keys: &AuditKeys,
) -> Result<AuditRecord, serde_json::Error> {
    record.hash = keyed_hash(&record, keys)?;
    Ok(record)
}

/// Lowercase hex of the SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Verifies a whole chain: `records` in storage order, starting at the
/// genesis record; `head` is the head file's content when there is one.
/// Reports the first problem found.
pub fn verify(records: &[AuditRecord], head: Option<&Head>, keys: &AuditKeys) -> VerifyReport {
    verify_from(records, None, head, keys)
}

/// Verifies a segment of the chain that follows `anchor` (the record just
/// before `records[0]`; `None` means the segment starts at genesis).
pub fn verify_from(
    records: &[AuditRecord],
    anchor: Option<&Head>,
    head: Option<&Head>,
    keys: &AuditKeys,
) -> VerifyReport {
    let mut verifier = Verifier::new(anchor, head, keys);
    for (i, record) in records.iter().enumerate() {
        match verifier.check(record) {
            Step::Sound => {}
            Step::Problem(problem) => return verifier.stop(problem),
            Step::BrokenLink(link) => {
                let links_forward = records[i + 1..].iter().any(|r| r.hash == link.prev_hash);
                return verifier.stop(link.judge(links_forward));
            }
        }
    }
    verifier.finish()
}

/// Verification one record at a time, for a chain too long to hold in
/// memory: feed [`Verifier::check`] the records in storage order until it
/// reports a problem (then [`Verifier::stop`]) or they run out (then
/// [`Verifier::finish`]). The report is the one [`verify_from`] gives for
/// the same records.
pub struct Verifier<'k> {
    keys: &'k AuditKeys,
    head: Option<Head>,
    expected_prev: String,
    expected_seq: u64,
    tally: Tally,
    /// The hash of the record checked at the head's seq.
    at_head: Option<String>,
}

/// What [`Verifier::check`] found in one record.
#[derive(Debug)]
pub enum Step {
    /// Intact, and it follows the record before it.
    Sound,
    /// The first problem: verification ends here.
    Problem(VerifyProblem),
    /// Intact, but it does not link to the record before it: verification
    /// ends here, and what it means depends on the records stored after it
    /// ([`BrokenLink::judge`]).
    BrokenLink(BrokenLink),
}

/// A record whose `prev_hash` is not the hash of the record before it.
#[derive(Debug)]
pub struct BrokenLink {
    /// The hash it links to: is a record with this hash stored after it?
    pub prev_hash: String,
    seq: u64,
    expected_seq: u64,
    first: bool,
}

impl BrokenLink {
    /// The problem, given whether a record with [`BrokenLink::prev_hash`]
    /// is stored after this one (a reorder rather than a removal).
    pub fn judge(self, links_forward: bool) -> VerifyProblem {
        if links_forward {
            return problem(
                self.seq,
                VerifyProblemKind::Reordered,
                format!("record {} links to a record stored after it", self.seq),
            );
        }
        if self.seq > self.expected_seq {
            return removed(self.expected_seq, self.seq);
        }
        // Same seq, intact hash, broken link: the previous record was
        // rewritten (with a recomputed hash) or this one was.
        let rewritten = if self.first {
            self.seq
        } else {
            self.expected_seq - 1
        };
        problem(
            rewritten,
            VerifyProblemKind::Altered,
            format!(
                "record {} does not link to the record before it: record {rewritten} was \
                 rewritten",
                self.seq
            ),
        )
    }
}

impl<'k> Verifier<'k> {
    /// A verifier of the records that follow `anchor` (`None`: from
    /// genesis), to be checked against `head` at the end.
    pub fn new(anchor: Option<&Head>, head: Option<&Head>, keys: &'k AuditKeys) -> Self {
        Self {
            keys,
            head: head.cloned(),
            expected_prev: anchor.map_or(GENESIS_HASH.to_string(), |a| a.hash.clone()),
            expected_seq: anchor.map_or(1, |a| a.seq.saturating_add(1)),
            tally: Tally::default(),
            at_head: None,
        }
    }

    /// Records checked and found sound so far.
    pub fn checked(&self) -> u64 {
        self.tally.checked
    }

    /// Checks the next record in storage order.
    pub fn check(&mut self, record: &AuditRecord) -> Step {
        let keys = self.keys;
        let expected = if is_keyed(&record.hash) {
            keyed_hash(record, keys)
        } else {
            record_hash(record)
        };
        match expected {
            Ok(hash) if hash == record.hash => {}
            Ok(_) if is_keyed(&record.hash) => {
                return Step::Problem(problem(
                    record.seq,
                    VerifyProblemKind::Altered,
                    format!(
                        "record {} no longer matches its keyed hash: it was altered, or the log \
                         was written under another audit key (another secrets key)",
                        record.seq
                    ),
                ));
            }
            Ok(_) => {
                return Step::Problem(problem(
                    record.seq,
                    VerifyProblemKind::Altered,
                    format!("record {} no longer matches its hash", record.seq),
                ));
            }
            Err(e) => {
                return Step::Problem(problem(
                    record.seq,
                    VerifyProblemKind::Altered,
                    format!("record {} cannot be encoded: {e}", record.seq),
                ));
            }
        }
        let expected_seq = self.expected_seq;
        if record.seq < expected_seq {
            return Step::Problem(problem(
                record.seq,
                VerifyProblemKind::Reordered,
                format!(
                    "record {} is stored where record {expected_seq} belongs",
                    record.seq
                ),
            ));
        }
        if record.prev_hash != self.expected_prev {
            return Step::BrokenLink(BrokenLink {
                prev_hash: record.prev_hash.clone(),
                seq: record.seq,
                expected_seq,
                first: self.tally.checked == 0,
            });
        }
        if record.seq > expected_seq {
            return Step::Problem(removed(expected_seq, record.seq));
        }
        if is_keyed(&record.hash) {
            if record.kind == Kind::AuditCheckpoint.as_str() {
                if let Some(problem) = bad_checkpoint(record, keys) {
                    return Step::Problem(problem);
                }
                self.tally.checkpoints += 1;
            }
            self.tally.keyed_from.get_or_insert(record.seq);
        } else if is_keyed(&self.expected_prev) {
            return Step::Problem(problem(
                record.seq,
                VerifyProblemKind::Altered,
                format!(
                    "record {} has a plain SHA-256 hash after the keyed chain began: it was \
                     written without the audit key, by someone with access to the database",
                    record.seq
                ),
            ));
        }
        if self.head.as_ref().is_some_and(|h| h.seq == record.seq) {
            self.at_head = Some(record.hash.clone());
        }
        self.expected_prev.clone_from(&record.hash);
        self.expected_seq = record.seq.saturating_add(1);
        self.tally.checked += 1;
        Step::Sound
    }

    /// The report of a chain that broke at `problem`.
    pub fn stop(self, problem: VerifyProblem) -> VerifyReport {
        self.report(Some(problem))
    }

    /// The report once every record was checked sound: the chain must
    /// reach the head, and the record at the head's seq be the head's.
    pub fn finish(self) -> VerifyReport {
        let problem = self.end_problem();
        self.report(problem)
    }

    fn end_problem(&self) -> Option<VerifyProblem> {
        let head = self.head.as_ref()?;
        let last_seq = self.expected_seq - 1;
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
        match &self.at_head {
            Some(hash) if *hash != head.hash => Some(problem(
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

    fn report(self, problem: Option<VerifyProblem>) -> VerifyReport {
        VerifyReport {
            intact: problem.is_none(),
            records: self.tally.checked,
            problem,
            checkpoints: self.tally.checkpoints,
            keyed_from: self.tally.keyed_from,
        }
    }
}

/// What verification counted on its way.
#[derive(Default)]
struct Tally {
    checked: u64,
    checkpoints: u64,
    keyed_from: Option<u64>,
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

/// Why a keyed `audit.checkpoint` record is not a checkpoint of the record
/// before it, signed with the audit signing key.
fn bad_checkpoint(record: &AuditRecord, keys: &AuditKeys) -> Option<VerifyProblem> {
    let altered = |why: String| {
        Some(problem(
            record.seq,
            VerifyProblemKind::Altered,
            format!("checkpoint {}: {why}", record.seq),
        ))
    };
    let detail: CheckpointDetail = match serde_json::from_value(record.detail.clone()) {
        Ok(detail) => detail,
        Err(err) => return altered(format!("its detail is not a checkpoint ({err})")),
    };
    if detail.time != record.time {
        return altered(format!(
            "it was signed at {}, not at its own time {}",
            detail.time, record.time
        ));
    }
    if detail.seq.saturating_add(1) != record.seq || detail.chain != record.prev_hash {
        return altered(format!(
            "it signs record {} as {}, not the record before it",
            detail.seq, detail.chain
        ));
    }
    match detail.check(keys.public_key()) {
        Ok(()) => None,
        Err(err) => altered(err.to_string()),
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

    use crate::audit::checkpoint::Checkpoint;
    use crate::keys::secrets::SecretsKey;

    use crate::keys::audit::test_keys as keys;

    fn verify(records: &[AuditRecord], head: Option<&Head>) -> VerifyReport {
        super::verify(records, head, &keys())
    }

    fn verify_from(
        records: &[AuditRecord],
        anchor: Option<&Head>,
        head: Option<&Head>,
    ) -> VerifyReport {
        super::verify_from(records, anchor, head, &keys())
    }

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

    /// Appends to `records` a record sealed the way the store seals it:
    /// keyed, and for `audit.checkpoint` with a signed detail of the record
    /// before it (signed by `signer`).
    fn append(records: &mut Vec<AuditRecord>, kind: &str, signer: &AuditKeys) {
        let (seq, prev_hash) = records
            .last()
            .map_or((0, GENESIS_HASH.to_string()), |r| (r.seq, r.hash.clone()));
        let time = format!("2026-12-05T00:00:{:02}.000Z", seq % 60);
        let detail = if kind == "audit.checkpoint" {
            let checkpoint = Checkpoint {
                gateway: "gw".into(),
                node: "gw".into(),
                seq,
                chain: prev_hash.clone(),
                time: time.clone(),
            };
            serde_json::to_value(checkpoint.sign(signer).unwrap()).unwrap()
        } else {
            json!({ "n": seq })
        };
        let record = AuditRecord {
            seq: seq + 1,
            time,
            kind: kind.into(),
            actor: "alice".into(),
            source: "10.0.0.1".into(),
            target: "bob".into(),
            detail,
            prev_hash,
            hash: String::new(),
        };
        records.push(seal_keyed(record, &keys()).unwrap());
    }

    /// `plain` records of the old chain, then the checkpoint where the
    /// keyed chain begins, then `keyed` keyed records.
    fn migrated(plain: usize, keyed: usize) -> Vec<AuditRecord> {
        let mut records = simple(plain);
        append(&mut records, "audit.checkpoint", &keys());
        for _ in 0..keyed {
            append(&mut records, "user.add", &keys());
        }
        records
    }

    #[test]
    fn a_migrated_chain_verifies_with_its_checkpoints_counted() {
        let mut records = migrated(3, 4);
        append(&mut records, "audit.checkpoint", &keys());
        append(&mut records, "vpn.connect", &keys());
        let report = verify(&records, Some(&Head::of(records.last().unwrap())));
        assert!(report.intact, "{report:?}");
        assert_eq!((report.records, report.checkpoints), (10, 2));
        assert_eq!(report.keyed_from, Some(4));
        assert!(is_keyed(&records[3].hash) && !is_keyed(&records[2].hash));
        // A new log is keyed from its first record.
        let mut fresh = Vec::new();
        append(&mut fresh, "gateway.start", &keys());
        append(&mut fresh, "user.add", &keys());
        let report = verify(&fresh, None);
        assert!(report.intact, "{report:?}");
        assert_eq!(report.keyed_from, Some(1));
    }

    /// The hole: with only the database, a record chained with a correct
    /// plain SHA-256 after the keyed chain began passed verification.
    #[test]
    fn a_record_with_a_correct_plain_hash_after_the_keyed_chain_began_is_caught() {
        let mut records = migrated(2, 3);
        let last = records.last().unwrap().clone();
        records.push(
            seal(AuditRecord {
                seq: last.seq + 1,
                prev_hash: last.hash.clone(),
                actor: "mallory".into(),
                ..last.clone()
            })
            .unwrap(),
        );
        let report = verify(&records, None);
        assert_eq!(kind_of(&report), Some((VerifyProblemKind::Altered, 7)));
        assert!(
            report
                .problem
                .unwrap()
                .message
                .contains("without the audit key"),
        );

        // In the middle, with the rest re-chained by plain SHA-256 too.
        let mut records = migrated(2, 3);
        let mut forged = records[..4].to_vec();
        for r in &records[4..] {
            let prev = forged.last().unwrap().hash.clone();
            forged.push(
                seal(AuditRecord {
                    prev_hash: prev,
                    actor: "mallory".into(),
                    ..r.clone()
                })
                .unwrap(),
            );
        }
        assert_eq!(
            kind_of(&verify(&forged, None)),
            Some((VerifyProblemKind::Altered, 5))
        );

        // A keyed-looking hash made without the key fails as altered.
        records[4].hash = format!("{KEYED_PREFIX}{}", record_hash(&records[4]).unwrap());
        assert_eq!(
            kind_of(&verify(&records, None)),
            Some((VerifyProblemKind::Altered, 5))
        );
    }

    #[test]
    fn an_edited_keyed_record_is_caught() {
        let mut records = migrated(2, 3);
        records[4].detail = json!({ "n": 999 });
        assert_eq!(
            kind_of(&verify(&records, None)),
            Some((VerifyProblemKind::Altered, 5))
        );
    }

    /// A checkpoint signed with another key, or covering another record,
    /// is caught, even when its chain value is keyed correctly.
    #[test]
    fn a_forged_or_misplaced_checkpoint_is_caught() {
        let other = AuditKeys::derive(
            &SecretsKey::from_base64("HwAeHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=").unwrap(),
        );
        let mut records = migrated(2, 2);
        append(&mut records, "audit.checkpoint", &other);
        let report = verify(&records, None);
        assert_eq!(kind_of(&report), Some((VerifyProblemKind::Altered, 6)));
        assert!(report.problem.unwrap().message.contains("does not verify"));

        let mut records = migrated(2, 2);
        let mut detail: CheckpointDetail =
            serde_json::from_value(records[2].detail.clone()).unwrap();
        detail.seq = 1;
        records[2].detail = serde_json::to_value(&detail).unwrap();
        records[2] = seal_keyed(records[2].clone(), &keys()).unwrap();
        // The re-chained rest stays keyed correctly; only the checkpoint lies.
        for i in 3..records.len() {
            records[i].prev_hash = records[i - 1].hash.clone();
            records[i] = seal_keyed(records[i].clone(), &keys()).unwrap();
        }
        let report = verify(&records, None);
        assert_eq!(kind_of(&report), Some((VerifyProblemKind::Altered, 3)));
        assert!(
            report
                .problem
                .unwrap()
                .message
                .contains("not the record before it")
        );
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
            for _ in 0..(salt.len() % 3) {
                append(&mut records, if salt.len() % 2 == 0 { "audit.checkpoint" } else { "user.add" }, &keys());
            }
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
