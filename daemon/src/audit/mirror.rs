//! The audit log's two files beside the database: the JSON-lines mirror that
//! log shippers tail (one [`AuditRecord`] per line, appended, flushed and
//! fsync'd; rotated by size as `audit.jsonl.1`, `.2`, ... with the chain
//! going on across files: the first record of a file links to the last of
//! the one before) and the head file (`{ "seq": N, "hash": "..." }`, replaced
//! atomically) that lets `verify` notice records cut from the end of the
//! chain. Both are created with mode 0600.
//!
//! This module only does file I/O; deciding what to append and when (and
//! repairing the files after a crash) is the store's job.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use gatehouse_config::api::AuditRecord;

use super::chain::Head;

/// Why the mirror or the head file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit head file {path} is malformed: {source}")]
    HeadMalformed {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("last line of audit mirror {path} is not an audit record: {source}")]
    MirrorMalformed {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot encode an audit record for the mirror: {source}")]
    Encode { source: serde_json::Error },
}

impl MirrorError {
    /// A closure for `map_err` naming the operation and the path.
    fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> MirrorError + 'p {
        move |source| MirrorError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// File name of the head file inside the state directory.
pub const HEAD_FILE: &str = "audit.head";

/// Reads the head file; `None` when it does not exist.
pub fn read_head(path: &Path) -> Result<Option<Head>, MirrorError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MirrorError::io("read audit head file", path)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| MirrorError::HeadMalformed {
            path: path.to_path_buf(),
            source,
        })
}

/// Replaces the head file atomically: write a temporary file, fsync it,
/// rename it over the old one, fsync the directory.
pub fn write_head(path: &Path, head: &Head) -> Result<(), MirrorError> {
    let tmp = sibling(path, ".tmp");
    let mut text = serde_json::to_string(head).map_err(|source| MirrorError::Encode { source })?;
    text.push('\n');
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(MirrorError::io("create audit head file", &tmp))?;
        file.write_all(text.as_bytes())
            .map_err(MirrorError::io("write audit head file", &tmp))?;
        file.sync_all()
            .map_err(MirrorError::io("fsync audit head file", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(MirrorError::io("rename audit head file into", path))?;
    sync_parent(path)
}

/// When the mirror is rotated: once it has reached `max_bytes` (0: never),
/// before the next append; `keep` older files are kept, `.1` the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            keep: 10,
        }
    }
}

/// The `n`th rotated mirror file (`audit.jsonl.1` is the newest).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    sibling(path, &format!(".{n}"))
}

/// Appends `records` to the mirror, one JSON line each, then fsyncs. Creates
/// the file (mode 0600) and its parent directories when missing; rotates it
/// first when it has reached `rotation.max_bytes`.
pub fn append(path: &Path, records: &[AuditRecord], rotation: Rotation) -> Result<(), MirrorError> {
    if records.is_empty() {
        return Ok(());
    }
    let size = fs::metadata(path).map_or(0, |m| m.len());
    if rotation.max_bytes > 0 && size >= rotation.max_bytes {
        rotate(path, rotation.keep.max(1))?;
    }
    let mut buf = Vec::new();
    for record in records {
        serde_json::to_writer(&mut buf, record).map_err(|source| MirrorError::Encode { source })?;
        buf.push(b'\n');
    }
    let mut file = open_mirror(path)?;
    file.write_all(&buf)
        .map_err(MirrorError::io("append to audit mirror", path))?;
    file.flush()
        .map_err(MirrorError::io("flush audit mirror", path))?;
    file.sync_all()
        .map_err(MirrorError::io("fsync audit mirror", path))
}

/// Shifts `path.N` to `path.N+1` (dropping the oldest beyond `keep`) and
/// `path` to `path.1`, then fsyncs the directory.
fn rotate(path: &Path, keep: u32) -> Result<(), MirrorError> {
    let oldest = rotated(path, keep);
    match fs::remove_file(&oldest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(MirrorError::io("remove the oldest audit mirror", &oldest)(
                e,
            ));
        }
    }
    for n in (1..keep).rev() {
        let from = rotated(path, n);
        if from.exists() {
            let to = rotated(path, n + 1);
            fs::rename(&from, &to).map_err(MirrorError::io("rotate audit mirror", &from))?;
        }
    }
    fs::rename(path, rotated(path, 1)).map_err(MirrorError::io("rotate audit mirror", path))?;
    tracing::info!(path = %path.display(), "audit mirror rotated");
    sync_parent(path)
}

/// The `seq` of the mirror's last record: the current file's last complete
/// line or, when the current file is missing or empty (just rotated), the
/// newest rotated file's; `None` when there is none. See [`last_seq_in`].
pub fn last_seq(path: &Path) -> Result<Option<u64>, MirrorError> {
    match last_seq_in(path)? {
        Some(seq) => Ok(Some(seq)),
        None => last_seq_in(&rotated(path, 1)),
    }
}

/// The `seq` of the file's last complete line; `None` when the file is
/// missing or empty. A torn last line (a crash in the middle of an append,
/// so no trailing newline) is cut off first: the database still holds that
/// record, and the caller appends it again.
fn last_seq_in(path: &Path) -> Result<Option<u64>, MirrorError> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MirrorError::io("open audit mirror", path)(e)),
    };
    let len = file
        .metadata()
        .map_err(MirrorError::io("stat audit mirror", path))?
        .len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let tail = read_from(&mut file, path, start)?;
        let complete_end = match tail.iter().rposition(|&b| b == b'\n') {
            Some(i) => i,
            None if start == 0 => {
                truncate(&file, path, 0)?;
                return Ok(None);
            }
            None => {
                window = window.saturating_mul(2);
                continue;
            }
        };
        if complete_end + 1 != tail.len() {
            tracing::warn!(path = %path.display(), "audit mirror ends in a torn line; cutting it");
            truncate(&file, path, start + complete_end as u64 + 1)?;
        }
        let body = &tail[..complete_end];
        let line_start = match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => {
                window = window.saturating_mul(2);
                continue;
            }
        };
        let line = &body[line_start..];
        let record: AuditRecord =
            serde_json::from_slice(line).map_err(|source| MirrorError::MirrorMalformed {
                path: path.to_path_buf(),
                source,
            })?;
        return Ok(Some(record.seq));
    }
}

/// Reads every record of the mirror (for tests and tools; it loads the whole
/// file).
pub fn read_all(path: &Path) -> Result<Vec<AuditRecord>, MirrorError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MirrorError::io("read audit mirror", path)(e)),
    };
    text.lines()
        .map(|line| {
            serde_json::from_str(line).map_err(|source| MirrorError::MirrorMalformed {
                path: path.to_path_buf(),
                source,
            })
        })
        .collect()
}

fn open_mirror(path: &Path) -> Result<File, MirrorError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(MirrorError::io(
            "create the directory of audit mirror",
            path,
        ))?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(MirrorError::io("open audit mirror", path))
}

fn read_from(file: &mut File, path: &Path, start: u64) -> Result<Vec<u8>, MirrorError> {
    file.seek(SeekFrom::Start(start))
        .map_err(MirrorError::io("seek in audit mirror", path))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .map_err(MirrorError::io("read audit mirror", path))?;
    Ok(buf)
}

fn truncate(file: &File, path: &Path, len: u64) -> Result<(), MirrorError> {
    file.set_len(len)
        .map_err(MirrorError::io("truncate audit mirror", path))?;
    file.sync_all()
        .map_err(MirrorError::io("fsync audit mirror", path))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn sync_parent(path: &Path) -> Result<(), MirrorError> {
    let parent = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => parent,
        None => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(MirrorError::io("fsync directory of", path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::audit::chain::{GENESIS_HASH, seal};

    fn record(seq: u64) -> AuditRecord {
        seal(AuditRecord {
            seq,
            time: "2025-01-01T00:00:00.000Z".into(),
            kind: "test".into(),
            actor: "a".into(),
            source: "s".into(),
            target: "t".into(),
            detail: serde_json::json!({ "pad": "x".repeat(seq as usize * 10) }),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        })
        .unwrap()
    }

    #[test]
    fn head_round_trip_is_private() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join(HEAD_FILE);
        assert_eq!(read_head(&path).unwrap(), None);
        let head = Head {
            seq: 7,
            hash: "ab".repeat(32),
        };
        write_head(&path, &head).unwrap();
        write_head(&path, &head).unwrap();
        assert_eq!(read_head(&path).unwrap(), Some(head));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::write(&path, "not json").unwrap();
        assert!(matches!(
            read_head(&path),
            Err(MirrorError::HeadMalformed { .. })
        ));
    }

    #[test]
    fn append_and_last_seq() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("log/sub/audit.jsonl");
        assert_eq!(last_seq(&path).unwrap(), None);
        append(&path, &[record(1), record(2)], Rotation::default()).unwrap();
        append(&path, &[record(3)], Rotation::default()).unwrap();
        assert_eq!(last_seq(&path).unwrap(), Some(3));
        let all = read_all(&path).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn torn_last_line_is_cut() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("audit.jsonl");
        append(&path, &[record(1), record(2)], Rotation::default()).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"seq":3,"ti"#).unwrap();
        assert_eq!(last_seq(&path).unwrap(), Some(2));
        assert_eq!(read_all(&path).unwrap().len(), 2);

        fs::write(&path, br#"{"seq":1"#).unwrap();
        assert_eq!(last_seq(&path).unwrap(), None);
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn last_seq_reads_past_a_small_window() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Records bigger than the first 64 KiB window.
        let big: Vec<_> = (1..=2)
            .map(|seq| {
                let mut r = record(seq);
                r.detail = serde_json::json!({ "pad": "y".repeat(100_000) });
                r
            })
            .collect();
        append(&path, &big, Rotation::default()).unwrap();
        assert_eq!(last_seq(&path).unwrap(), Some(2));
    }

    #[test]
    fn rotation_keeps_the_newest_files_with_their_records_in_order() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("audit.jsonl");
        let line = serde_json::to_vec(&record(1)).unwrap().len() as u64 + 1;
        // Two records per file, two older files kept.
        let rotation = Rotation {
            max_bytes: 2 * line,
            keep: 2,
        };
        for seq in 1..=9 {
            append(&path, &[record(seq)], rotation).unwrap();
        }
        assert!(!rotated(&path, 3).exists(), "only `keep` older files");
        let seqs = |p: &Path| {
            read_all(p)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(&rotated(&path, 2)), [5, 6]);
        assert_eq!(seqs(&rotated(&path, 1)), [7, 8]);
        assert_eq!(seqs(&path), [9]);
        let mode = fs::metadata(rotated(&path, 1))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        // A crash right after a rotation leaves an empty current file: the
        // last record is found in the newest rotated one, so catch-up does
        // not start again from the first record.
        fs::rename(&path, rotated(&path, 1)).unwrap();
        fs::write(&path, "").unwrap();
        assert_eq!(last_seq(&path).unwrap(), Some(9));
    }
}
