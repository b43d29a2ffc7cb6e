//! `accessctl audit verify --anchored DIR`: the gateway's log compared,
//! record by record, with the objects its S3 export anchored under Object
//! Lock, downloaded to DIR (the first version of each key:
//! `packaging/fetch-anchored.py`).
//!
//! The anchored copy cannot have changed since it was written, so a record
//! whose hash differs from the anchored one (or that is gone) was rewritten
//! afterwards, even by someone who held the audit key and re-chained the
//! log so that it verifies on its own. Names the first such record.
//!
//! Reading the objects is pure ([`read_dir`], [`compare`]); the records of
//! the gateway come page by page from the admin API.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use gatehouse_config::api::AuditRecord;

/// The records the objects under a directory hold, by seq.
#[derive(Debug, Default)]
pub struct Anchored {
    pub records: BTreeMap<u64, AuditRecord>,
    /// How many objects were read.
    pub objects: usize,
}

/// Why the anchored copy could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnchoredError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line} is not an audit record: {source}")]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    #[error(
        "record {seq} is anchored twice with different content ({first} and {second}): someone wrote a second version; trust the first version of each object (aws s3api list-object-versions)"
    )]
    Conflict {
        seq: u64,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("no exported audit objects (*.jsonl.gz) under {0}")]
    Empty(PathBuf),
    #[error(
        "records {from} to {to} are not in the anchored copy: download every object of the export (the first version of each key)"
    )]
    Gap { from: u64, to: u64 },
    #[error(
        "anchored record {seq} does not chain to record {prev}: an object in the anchored copy is not the one the gateway wrote (a later version of its key?); download the first version of each key"
    )]
    Unchained { seq: u64, prev: u64 },
}

/// The first place the gateway's log and the anchored copy differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub seq: u64,
    pub reason: String,
}

/// Reads every `*.jsonl.gz` under `dir` (recursively).
pub fn read_dir(dir: &Path) -> Result<Anchored, AnchoredError> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    let mut anchored = Anchored::default();
    let mut from: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for path in files {
        let file = std::fs::File::open(&path).map_err(|source| AnchoredError::Read {
            path: path.clone(),
            source,
        })?;
        let reader = BufReader::new(flate2::read::GzDecoder::new(file));
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| AnchoredError::Read {
                path: path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let record: AuditRecord =
                serde_json::from_str(&line).map_err(|source| AnchoredError::Parse {
                    path: path.clone(),
                    line: n + 1,
                    source,
                })?;
            if let Some(seen) = anchored.records.get(&record.seq)
                && *seen != record
            {
                return Err(AnchoredError::Conflict {
                    seq: record.seq,
                    first: from.get(&record.seq).cloned().unwrap_or_default(),
                    second: path.clone(),
                });
            }
            from.insert(record.seq, path.clone());
            anchored.records.insert(record.seq, record);
        }
        anchored.objects += 1;
    }
    if anchored.objects == 0 {
        return Err(AnchoredError::Empty(dir.to_path_buf()));
    }
    check_contiguous(&anchored)?;
    Ok(anchored)
}

/// The anchored records run on without a gap, each linking to the one
/// before it (`prev_hash`): the copy is one piece of one chain.
fn check_contiguous(anchored: &Anchored) -> Result<(), AnchoredError> {
    let mut before: Option<&AuditRecord> = None;
    for record in anchored.records.values() {
        if let Some(prev) = before {
            if record.seq != prev.seq + 1 {
                return Err(AnchoredError::Gap {
                    from: prev.seq + 1,
                    to: record.seq - 1,
                });
            }
            if record.prev_hash != prev.hash {
                return Err(AnchoredError::Unchained {
                    seq: record.seq,
                    prev: prev.seq,
                });
            }
        }
        before = Some(record);
    }
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), AnchoredError> {
    let entries = std::fs::read_dir(dir).map_err(|source| AnchoredError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| AnchoredError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.to_string_lossy().ends_with(".jsonl.gz") {
            out.push(path);
        }
    }
    Ok(())
}

/// Compares one page of the gateway's records, the ones with a seq in
/// `after + 1 ..= through` (oldest first), with the anchored ones in that
/// range: the first record that differs, or an anchored seq the page lacks
/// (a cut tail comes back as a short or empty page).
pub fn compare(
    anchored: &Anchored,
    page: &[AuditRecord],
    after: u64,
    through: u64,
) -> Option<Difference> {
    let mut local = page.iter().peekable();
    for (&seq, record) in anchored.records.range(after + 1..=through) {
        while local.peek().is_some_and(|r| r.seq < seq) {
            local.next();
        }
        match local.peek() {
            Some(mine) if mine.seq == seq && mine.hash == record.hash && *mine == record => {}
            Some(mine) if mine.seq == seq => {
                let what = if mine.hash == record.hash {
                    "its fields differ from the anchored copy"
                } else {
                    "its hash differs from the anchored copy: it was rewritten after it was anchored"
                };
                return Some(Difference {
                    seq,
                    reason: what.to_string(),
                });
            }
            _ => {
                return Some(Difference {
                    seq,
                    reason: "it is anchored but no longer in the gateway's log".to_string(),
                });
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Records 1..=n, each linking to the one before.
    fn chained(n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let mut r = record(seq, &format!("h{seq}"));
            r.prev_hash = out.last().map_or("p".into(), |p| p.hash.clone());
            out.push(r);
        }
        out
    }

    fn record(seq: u64, hash: &str) -> AuditRecord {
        AuditRecord {
            seq,
            time: "2026-12-05T01:00:00.000Z".into(),
            kind: "user.add".into(),
            actor: "uid:0".into(),
            source: "local".into(),
            target: format!("u{seq}"),
            detail: serde_json::json!({}),
            prev_hash: "p".into(),
            hash: hash.into(),
        }
    }

    fn object(dir: &Path, name: &str, records: &[AuditRecord]) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(path).unwrap(),
            flate2::Compression::default(),
        );
        for r in records {
            writeln!(gz, "{}", serde_json::to_string(r).unwrap()).unwrap();
        }
        gz.finish().unwrap();
    }

    #[test]
    fn the_first_rewritten_or_missing_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let anchored = chained(6);
        object(dir.path(), "gw/dt=2026-12-05/1-3.jsonl.gz", &anchored[..3]);
        object(dir.path(), "gw/dt=2026-12-05/4-6.jsonl.gz", &anchored[3..]);
        let read = read_dir(dir.path()).unwrap();
        assert_eq!((read.objects, read.records.len()), (2, 6));

        let local = chained(7);
        assert_eq!(compare(&read, &local, 0, 7), None);
        assert_eq!(compare(&read, &local[3..], 3, 7), None, "a page");

        let mut rewritten = local.clone();
        rewritten[4] = record(5, "forged");
        let found = compare(&read, &rewritten, 0, 7).unwrap();
        assert_eq!(found.seq, 5);
        assert!(found.reason.contains("rewritten"), "{found:?}");

        let mut cut = local.clone();
        cut.remove(2);
        assert_eq!(compare(&read, &cut, 0, 7).unwrap().seq, 3);
    }

    /// A tail cut after it was anchored: the pages past the gateway's last
    /// record come back short or empty, and the first anchored record they
    /// lack is named.
    #[test]
    fn a_cut_tail_is_named_even_when_the_page_comes_back_empty() {
        let dir = tempfile::tempdir().unwrap();
        let anchored = chained(6);
        object(dir.path(), "gw/dt=2026-12-05/1-6.jsonl.gz", &anchored);
        let read = read_dir(dir.path()).unwrap();
        let found = compare(&read, &anchored[..4], 0, 6).unwrap();
        assert_eq!(found.seq, 5);
        assert!(found.reason.contains("no longer"), "{found:?}");
        assert_eq!(compare(&read, &[], 4, 6).unwrap().seq, 5);
    }

    #[test]
    fn two_versions_of_a_record_and_an_empty_dir_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_dir(dir.path()), Err(AnchoredError::Empty(_))));
        object(dir.path(), "a/1-2.jsonl.gz", &chained(2));
        object(dir.path(), "b/2-2.jsonl.gz", &[record(2, "other")]);
        let err = read_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, AnchoredError::Conflict { seq: 2, .. }),
            "{err}"
        );
    }

    /// A missing object, or one replaced by content that does not chain
    /// (a later version of its key), is refused rather than compared.
    #[test]
    fn a_gap_or_a_replaced_object_in_the_copy_is_refused() {
        let records = chained(6);
        let dir = tempfile::tempdir().unwrap();
        object(dir.path(), "1-2.jsonl.gz", &records[..2]);
        object(dir.path(), "5-6.jsonl.gz", &records[4..]);
        let err = read_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, AnchoredError::Gap { from: 3, to: 4 }),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let mut replaced = records[3..].to_vec();
        replaced[0].hash = "forged".into();
        replaced[0].target = "mallory".into();
        replaced[1].prev_hash = "forged".into();
        replaced[0].prev_hash = "not h3".into();
        object(dir.path(), "1-3.jsonl.gz", &records[..3]);
        object(dir.path(), "4-6.jsonl.gz", &replaced);
        let err = read_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, AnchoredError::Unchained { seq: 4, prev: 3 }),
            "{err}"
        );
    }
}
