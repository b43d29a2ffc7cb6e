//! Backup and restore of the store.
//!
//! Backup is online: `VACUUM INTO` writes a consistent copy of the database
//! (one read snapshot, while writers wait on the store's lock) to a new file.
//! The copy carries everything, audit log included, so the chain head of a
//! backup is its own last audit record.
//!
//! Restore is offline (accessd stopped): the backup is checked first (SQLite
//! integrity, a schema this code can open, an unbroken audit chain), then the
//! current database, its WAL, the audit head and the mirror are moved aside
//! with a `.replaced-<unix time>` suffix (never deleted), the backup is put in
//! place (0600, fsync'd, renamed), and the head file is written from the
//! backup's last record. Opening the store then rebuilds the mirror.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::audit_log::{RECORD_COLUMNS, last_head, query_records};
use super::db::Conn;
use super::{DB_FILE, Store, StoreError, StoreOptions, schema, users};
use crate::audit::chain::{self, Head};
use crate::audit::mirror;
use crate::keys::audit::AuditKeys;

/// What a backup file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub schema_version: i64,
    pub users: u64,
    pub devices: u64,
    pub audit_records: u64,
    /// The last audit record: the chain head the backup restores.
    pub head: Option<Head>,
}

/// What a restore moved aside (each path only when there was a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub restored: BackupSummary,
    pub moved_aside: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path} is not a usable gatehouse backup: {reason}")]
    NotABackup { path: PathBuf, reason: String },
    /// The shared PostgreSQL store is backed up by the database's own tools.
    #[error(
        "the store is the shared PostgreSQL database {0}; back it up with pg_dump (or the RDS \
         snapshots), which copy every node's records at once"
    )]
    Shared(String),
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Store {
    /// Writes a consistent copy of the database to `dest`, which must not
    /// exist, and returns what it holds. Blocks writers while it copies.
    pub async fn backup_to(&self, dest: PathBuf) -> Result<BackupSummary, BackupError> {
        if self.is_shared() {
            return Err(BackupError::Shared(self.db_name().to_string()));
        }
        let copy_to = dest.clone();
        self.off_runtime(move |store| {
            let super::Backend::Sqlite(conn) = &store.inner.backend else {
                return Ok(());
            };
            super::lock(conn)
                .execute("VACUUM INTO ?1", [copy_to.to_string_lossy()])
                .map_err(StoreError::db("copy the database (VACUUM INTO)"))?;
            Ok(())
        })
        .await?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || inspect(&dest, &store.inner.paths.audit_keys))
            .await
            .map_err(|source| StoreError::Task { source })?
    }
}

/// Checks a backup file and says what it holds: SQLite's integrity check, a
/// schema version this code knows, and an audit chain without a break.
pub fn inspect(path: &Path, keys: &AuditKeys) -> Result<BackupSummary, BackupError> {
    let not_a_backup = |reason: String| BackupError::NotABackup {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(not_a_backup("no such file".into()));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| not_a_backup(e.to_string()))?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(|e| not_a_backup(format!("not an SQLite database ({e})")))?;
    if integrity != "ok" {
        return Err(not_a_backup(format!("integrity check: {integrity}")));
    }
    let schema_version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| not_a_backup(e.to_string()))?;
    if schema_version < 1 || schema_version > schema::current_version() {
        return Err(not_a_backup(format!(
            "schema version {schema_version}; this accessd reads 1 to {}",
            schema::current_version()
        )));
    }
    let count = |table: &str| -> Result<u64, BackupError> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
            row.get::<_, i64>(0)
        })
        .map(|n| u64::try_from(n).unwrap_or(0))
        .map_err(|e| not_a_backup(format!("table {table}: {e}")))
    };
    let records = query_records(
        &Conn::Sqlite(&conn),
        &format!("SELECT {RECORD_COLUMNS} FROM audit_log ORDER BY id"),
        &[],
    )?;
    let head = last_head(&Conn::Sqlite(&conn)).map_err(|e| not_a_backup(e.to_string()))?;
    let report = chain::verify(&records, head.as_ref(), keys);
    if let Some(problem) = &report.problem {
        return Err(not_a_backup(format!(
            "its audit chain is broken at seq {}: {}",
            problem.seq, problem.message
        )));
    }
    Ok(BackupSummary {
        schema_version,
        users: count("users")?,
        devices: count("devices")?,
        audit_records: records.len() as u64,
        head,
    })
}

/// Replaces the store under `opts` with the backup at `backup` (accessd must
/// be stopped); see the module doc. `now` names the moved-aside files.
pub fn restore(opts: &StoreOptions, backup: &Path, now: i64) -> Result<RestoreReport, BackupError> {
    if let Some(pg) = &opts.postgres {
        return Err(BackupError::Shared(pg.url.clone()));
    }
    let restored = inspect(backup, &AuditKeys::derive(&opts.secrets))?;
    check_secrets(opts, backup)?;
    fs::create_dir_all(&opts.state_dir).map_err(io("create", &opts.state_dir))?;
    let db = opts.state_dir.join(DB_FILE);
    let head = opts.state_dir.join(mirror::HEAD_FILE);
    let suffix = format!(".replaced-{now}");
    let mut moved_aside = Vec::new();
    for path in [
        db.clone(),
        with_suffix(&db, "-wal"),
        with_suffix(&db, "-shm"),
        head.clone(),
        opts.audit_mirror.clone(),
    ] {
        if path.exists() {
            let aside = with_suffix(&path, &suffix);
            fs::rename(&path, &aside).map_err(io("move aside", &path))?;
            moved_aside.push(aside);
        }
    }
    let tmp = with_suffix(&db, ".restoring");
    copy_private(backup, &tmp)?;
    fs::rename(&tmp, &db).map_err(io("rename into place", &db))?;
    if let Some(last) = &restored.head {
        mirror::write_head(&head, last).map_err(StoreError::from)?;
    }
    // Migrates when the backup is older and rebuilds the mirror.
    Store::open(opts)?;
    Ok(RestoreReport {
        restored,
        moved_aside,
    })
}

/// Refuses a backup whose TOTP secrets do not open with the secrets key
/// the store would run with, before anything is moved.
fn check_secrets(opts: &StoreOptions, backup: &Path) -> Result<(), BackupError> {
    let conn =
        Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| {
            BackupError::NotABackup {
                path: backup.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
    let name = backup.display().to_string();
    users::check_totp_secrets(&Conn::Sqlite(&conn), &opts.secrets, &name)?;
    Ok(())
}

/// Copies `from` to the new file `to` with mode 0600 and fsyncs it.
fn copy_private(from: &Path, to: &Path) -> Result<(), BackupError> {
    let bytes = fs::read(from).map_err(io("read", from))?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io("create", to))?;
    file.write_all(&bytes).map_err(io("write", to))?;
    file.sync_all().map_err(io("fsync", to))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io { op, path, source }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::fixtures::*;

    #[tokio::test]
    async fn a_backup_restores_users_and_the_chain_and_keeps_what_it_replaced() {
        let dir = tempfile::TempDir::new().unwrap();
        let opts = options(dir.path());
        let store = Store::open(&opts).unwrap();
        add_user(&store, "alice");
        store
            .write_blocking(|w| w.set_totp_secret("alice", Some("JBSWY3DPEHPK3PXP".into())))
            .unwrap();
        store
            .write(|w| w.audit(test_event("admin.backup", "uid:0", "local", "-")))
            .await
            .unwrap();
        let file = dir.path().join("backup.db");
        let summary = store.backup_to(file.clone()).await.unwrap();
        assert_eq!(summary.users, 1);
        assert_eq!(summary.audit_records, 1);
        assert_eq!(summary.head.as_ref().unwrap().seq, 1);

        add_user(&store, "bob");
        store
            .write(|w| w.audit(test_event("user.add", "uid:0", "local", "bob")))
            .await
            .unwrap();
        drop(store);

        // Without the key that sealed its TOTP secrets, nothing moves.
        let mut other = opts.clone();
        other.secrets = std::sync::Arc::new(crate::keys::secrets::SecretsKey::generate().unwrap());
        let err = restore(&other, &file, 41).unwrap_err();
        assert!(err.to_string().contains("another secrets key"), "{err}");
        assert!(!opts.state_dir.join("gatehouse.db.replaced-41").exists());

        let report = restore(&opts, &file, 42).unwrap();
        assert_eq!(report.restored, summary);
        assert!(
            report
                .moved_aside
                .iter()
                .any(|p| p.ends_with("gatehouse.db.replaced-42"))
        );
        let store = Store::open(&opts).unwrap();
        let names: Vec<String> = store
            .read_blocking(|r| r.users())
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice"]);
        let alice = store.read_blocking(|r| r.existing_user("alice")).unwrap();
        assert_eq!(alice.totp_secret.as_deref(), Some("JBSWY3DPEHPK3PXP"));
        let verified = store.read_blocking(|r| r.verify_audit()).unwrap();
        assert!(verified.intact, "{verified:?}");
        // The chain goes on from the restored head.
        let next = store
            .write_blocking(|w| w.audit(test_event("user.add", "uid:0", "local", "carol")))
            .unwrap();
        assert_eq!(next.seq, 2);
        let mirror = std::fs::read_to_string(store.mirror_path()).unwrap();
        assert_eq!(mirror.lines().count(), 2, "the mirror is rebuilt: {mirror}");
    }

    #[test]
    fn a_file_that_is_not_a_sound_backup_is_refused_before_anything_moves() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"not a database at all, just text").unwrap();
        let opts = options(dir.path());
        let err = restore(&opts, &junk, 1).unwrap_err();
        assert!(matches!(err, BackupError::NotABackup { .. }), "{err}");
        assert!(!opts.state_dir.join(DB_FILE).exists());

        // A backup whose audit chain was edited is refused too.
        let (dir2, store) = temp_store();
        store
            .write_blocking(|w| w.audit(test_event("user.add", "uid:0", "local", "a")))
            .unwrap();
        let copy = dir2.path().join("copy.db");
        raw(&store)
            .execute("VACUUM INTO ?1", [copy.to_string_lossy()])
            .unwrap();
        let raw = Connection::open(&copy).unwrap();
        raw.execute_batch(
            "DROP TRIGGER audit_log_immutable_update; UPDATE audit_log SET actor = 'mallory';",
        )
        .unwrap();
        drop(raw);
        let err = inspect(&copy, &store.inner.paths.audit_keys).unwrap_err();
        assert!(err.to_string().contains("audit chain is broken"), "{err}");
    }
}
