//! The S3 export's rules without I/O: which records make the next object,
//! its name, its bytes, and how long it stays locked.
//!
//! An object ends at a signed checkpoint: it holds the records after the
//! cursor up to and including the first `audit.checkpoint` record (or
//! [`MAX_OBJECT_RECORDS`] records when no checkpoint comes sooner). The log
//! never changes, so the same cursor always gives the same object, byte for
//! byte, under the same name: an export retried after a crash (or by the
//! other node of a pair) writes what was written before, and S3 refuses it
//! as existing (`If-None-Match: *`), which counts as done. Nothing is sent
//! twice under another name, and every object but a rare oversized one
//! carries the signature that vouches for its last record.
//!
//! Names: `<prefix>/<gateway>/dt=YYYY-MM-DD/<first seq>-<last seq>.jsonl.gz`,
//! seqs zero-padded to 20 digits so names sort, `dt` the UTC day of the
//! object's first record. Bytes: gzip of one record per line, exactly as
//! the mirror writes it (the fields of `AuditRecord`), with no time or name
//! in the gzip header, so the bytes depend on the records alone.

use std::io::Write;
use std::time::{Duration, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use gatehouse_config::api::AuditRecord;

use crate::audit::event::Kind;

/// An object holds at most this many records, checkpoint or not.
pub const MAX_OBJECT_RECORDS: usize = 20_000;

/// The next object to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub first: u64,
    pub last: u64,
    /// How many records it holds.
    pub records: usize,
    /// The gzip JSON lines.
    pub body: Vec<u8>,
}

/// Why an object could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("cannot encode audit record {seq}: {source}")]
    Encode { seq: u64, source: serde_json::Error },
    #[error("cannot compress the audit export: {0}")]
    Compress(#[source] std::io::Error),
}

/// How many of `after_cursor` (the records after the cursor, oldest first,
/// at most [`MAX_OBJECT_RECORDS`]) make the next object: up to and
/// including the first checkpoint; all of them when there are
/// [`MAX_OBJECT_RECORDS`] without one; `None` while the next checkpoint is
/// still to come.
pub fn next_object_len(after_cursor: &[AuditRecord]) -> Option<usize> {
    let checkpoint = Kind::AuditCheckpoint.as_str();
    match after_cursor.iter().position(|r| r.kind == checkpoint) {
        Some(at) => Some(at + 1),
        None if after_cursor.len() >= MAX_OBJECT_RECORDS => Some(MAX_OBJECT_RECORDS),
        None => None,
    }
}

/// `<prefix>/<gateway>/dt=YYYY-MM-DD/<first>-<last>.jsonl.gz` for a
/// non-empty run of records; an empty `prefix` adds no leading slash.
pub fn object_key(prefix: &str, gateway: &str, records: &[AuditRecord]) -> Option<String> {
    let (first, last) = (records.first()?, records.last()?);
    let day = first.time.get(..10).unwrap_or("0000-00-00");
    let prefix = prefix.trim_matches('/');
    let lead = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Some(format!(
        "{lead}{gateway}/dt={day}/{:020}-{:020}.jsonl.gz",
        first.seq, last.seq
    ))
}

/// The object for `records` (non-empty, consecutive).
pub fn object(
    prefix: &str,
    gateway: &str,
    records: &[AuditRecord],
) -> Result<Option<Object>, ObjectError> {
    let (Some(key), Some(first), Some(last)) = (
        object_key(prefix, gateway, records),
        records.first(),
        records.last(),
    ) else {
        return Ok(None);
    };
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for record in records {
        serde_json::to_writer(&mut gz, record).map_err(|source| ObjectError::Encode {
            seq: record.seq,
            source,
        })?;
        gz.write_all(b"\n").map_err(ObjectError::Compress)?;
    }
    let body = gz.finish().map_err(ObjectError::Compress)?;
    Ok(Some(Object {
        key,
        first: first.seq,
        last: last.seq,
        records: records.len(),
        body,
    }))
}

/// The records of an object's bytes (for `audit verify --anchored` and the
/// tests).
pub fn read_object(body: &[u8]) -> Result<Vec<AuditRecord>, std::io::Error> {
    use std::io::BufRead;
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(body));
    let mut records = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(serde_json::from_str(&line).map_err(std::io::Error::other)?);
    }
    Ok(records)
}

/// When an object written at `now` may be deleted, at the earliest.
pub fn retain_until(now: SystemTime, retention: Duration) -> SystemTime {
    now.checked_add(retention).unwrap_or(now)
}

/// How long to wait after `failures` failed writes in a row: 1 s doubling
/// to 60 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(seq: u64, kind: &str, time: &str) -> AuditRecord {
        AuditRecord {
            seq,
            time: time.into(),
            kind: kind.into(),
            actor: "alice".into(),
            source: "10.0.0.1".into(),
            target: "bob".into(),
            detail: serde_json::json!({ "resolved": "10.0.3.140:22" }),
            prev_hash: "p".into(),
            hash: format!("h{seq}"),
        }
    }

    fn run(kinds: &[&str]) -> Vec<AuditRecord> {
        kinds
            .iter()
            .enumerate()
            .map(|(i, k)| record(i as u64 + 8, k, "2026-12-05T23:59:59.000Z"))
            .collect()
    }

    #[test]
    fn an_object_ends_at_the_first_checkpoint_or_at_the_cap() {
        assert_eq!(next_object_len(&[]), None);
        assert_eq!(next_object_len(&run(&["user.add", "vpn.connect"])), None);
        assert_eq!(
            next_object_len(&run(&[
                "user.add",
                "audit.checkpoint",
                "x",
                "audit.checkpoint"
            ])),
            Some(2)
        );
        assert_eq!(next_object_len(&run(&["audit.checkpoint"])), Some(1));
        let many: Vec<_> = (0..MAX_OBJECT_RECORDS)
            .map(|i| record(i as u64 + 1, "user.add", "2026-12-05T00:00:00.000Z"))
            .collect();
        assert_eq!(next_object_len(&many), Some(MAX_OBJECT_RECORDS));
    }

    #[test]
    fn names_sort_and_carry_the_day_of_the_first_record() {
        let records = vec![
            record(9, "user.add", "2026-12-05T23:59:59.900Z"),
            record(10, "audit.checkpoint", "2026-12-06T00:00:00.400Z"),
        ];
        assert_eq!(
            object_key("audit/", "gw", &records).unwrap(),
            "audit/gw/dt=2026-12-05/00000000000000000009-00000000000000000010.jsonl.gz"
        );
        assert_eq!(
            object_key("", "gw", &records[1..]).unwrap(),
            "gw/dt=2026-12-06/00000000000000000010-00000000000000000010.jsonl.gz"
        );
        assert_eq!(object_key("p", "gw", &[]), None);
    }

    /// The same records give the same bytes (a retry writes what was
    /// written), which read back as the records.
    #[test]
    fn the_bytes_depend_on_the_records_alone_and_read_back() {
        let records = run(&["user.add", "ssh.session.start", "audit.checkpoint"]);
        let a = object("p", "gw", &records).unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let b = object("p", "gw", &records).unwrap().unwrap();
        assert_eq!(a, b);
        assert_eq!((a.first, a.last, a.records), (8, 10, 3));
        assert_eq!(read_object(&a.body).unwrap(), records);
        // Each line is the mirror's line for the record.
        let text = {
            use std::io::Read;
            let mut s = String::new();
            flate2::read::GzDecoder::new(&a.body[..])
                .read_to_string(&mut s)
                .unwrap();
            s
        };
        assert_eq!(text.lines().count(), 3);
        assert_eq!(
            text.lines().next().unwrap(),
            serde_json::to_string(&records[0]).unwrap()
        );
    }

    #[test]
    fn retention_and_backoff() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            retain_until(now, Duration::from_secs(400 * 86400)),
            now + Duration::from_secs(400 * 86400)
        );
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }
}
