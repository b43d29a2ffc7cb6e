//! `accessctl audit verify --anchored DIR`: the gateway's log compared,
//! record by record, with the objects its S3 export anchored under Object
//! Lock, downloaded to DIR (`aws s3 sync s3://BUCKET/PREFIX/GATEWAY/ DIR`).
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
    Ok(anchored)
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

/// Compares one page of the gateway's records (consecutive, oldest first)
/// with the anchored ones: the first record that differs, or an anchored
/// seq the page skips.
pub fn compare(anchored: &Anchored, page: &[AuditRecord], after: u64) -> Option<Difference> {
    let through = page.last().map_or(after, |r| r.seq);
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
        let anchored: Vec<_> = (1..=6).map(|n| record(n, &format!("h{n}"))).collect();
        object(dir.path(), "gw/dt=2026-12-05/1-3.jsonl.gz", &anchored[..3]);
        object(dir.path(), "gw/dt=2026-12-05/4-6.jsonl.gz", &anchored[3..]);
        let read = read_dir(dir.path()).unwrap();
        assert_eq!((read.objects, read.records.len()), (2, 6));

        let mut local = anchored.clone();
        local.push(record(7, "h7"));
        assert_eq!(compare(&read, &local, 0), None);
        assert_eq!(compare(&read, &local[3..], 3), None, "a page");

        let mut rewritten = local.clone();
        rewritten[4] = record(5, "forged");
        let found = compare(&read, &rewritten, 0).unwrap();
        assert_eq!(found.seq, 5);
        assert!(found.reason.contains("rewritten"), "{found:?}");

        let mut cut = local.clone();
        cut.remove(2);
        assert_eq!(compare(&read, &cut, 0).unwrap().seq, 3);
    }

    #[test]
    fn two_versions_of_a_record_and_an_empty_dir_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_dir(dir.path()), Err(AnchoredError::Empty(_))));
        object(
            dir.path(),
            "a/1-2.jsonl.gz",
            &[record(1, "h1"), record(2, "h2")],
        );
        object(dir.path(), "b/2-2.jsonl.gz", &[record(2, "other")]);
        let err = read_dir(dir.path()).unwrap_err();
        assert!(
            matches!(err, AnchoredError::Conflict { seq: 2, .. }),
            "{err}"
        );
    }
}
