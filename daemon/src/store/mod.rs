//! The SQLite store: users, their SSH keys, devices with their VPN addresses,
//! enrollment tokens, and the audit log's records. It is the source of truth
//! for all of them and survives restarts (security invariant 7).
//!
//! Owns the database file (`state_dir/gatehouse.db`, mode 0600, WAL,
//! `synchronous=FULL`), its schema migrations ([`schema`]), and the
//! transaction discipline: every mutation runs through [`Store::write`] in ONE
//! transaction, and audit events appended with [`Writer::audit`] are part of
//! that transaction, so an action and its audit record commit together or not
//! at all. After the commit the new records are copied to the audit mirror and
//! the head file (see [`crate::audit`]); a failure there is logged and repaired
//! on the next write or start, never lost, because the database has it.
//!
//! Does not own validation of names, keys or policy (the callers check those
//! with `gatehouse_config`), nor the clock: callers pass unix times in, except
//! for audit records, which are stamped when written.
//!
//! Layout: [`error`] (the one error enum), [`schema`] (migrations), [`users`]
//! (users and SSH keys), [`devices`] (devices and address allocation),
//! [`tokens`] (enrollment tokens), [`audit_log`] (audit rows, queries,
//! verify), `audit_repair` (keeping the mirror and head file in step with the
//! table, after each commit and on start-up).
//!
//! Concurrency: one connection behind a mutex; async callers go through a
//! small semaphore so at most a few blocking threads wait on it. A cancelled
//! `write` future may still commit: the blocking work is not interrupted.

pub mod audit_log;
mod audit_repair;
pub mod backup;
pub mod devices;
pub mod error;
pub mod portal;
pub mod schema;
pub mod tokens;
pub mod users;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use gatehouse_config::api::AuditRecord;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::Semaphore;

pub use audit_log::{AuditFilter, NewAuditEvent};
pub use devices::{Device, NewDevice};
pub use error::StoreError;
pub use portal::PortalSession;
pub use tokens::hash_token;
pub use users::{NewUser, SshKey, User};

use crate::audit::mirror;

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "gatehouse.db";

/// Where the store keeps its files.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Holds `gatehouse.db` and `audit.head`; created with mode 0700.
    pub state_dir: PathBuf,
    /// The JSON-lines audit mirror; parent directories are created.
    pub audit_mirror: PathBuf,
    /// When the mirror is rotated.
    pub mirror_rotation: mirror::Rotation,
}

impl StoreOptions {
    /// The options the config file sets.
    pub fn from_config(config: &gatehouse_config::Config) -> Self {
        Self {
            state_dir: config.gateway.state_dir.clone(),
            audit_mirror: config.audit.mirror.clone(),
            mirror_rotation: mirror::Rotation {
                max_bytes: config.audit.mirror_max_bytes,
                keep: config.audit.mirror_keep,
            },
        }
    }
}

/// A handle to the store; clones share one connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Read access inside one transaction (a consistent snapshot).
pub struct Reader<'a> {
    conn: &'a Connection,
    paths: &'a Paths,
}

/// Read and write access inside one transaction. Derefs to [`Reader`].
pub struct Writer<'a> {
    reader: Reader<'a>,
    /// Audit records inserted by this transaction, for the mirror and head
    /// once it commits.
    appended: Vec<AuditRecord>,
}

impl Store {
    /// Opens (creating when missing) the store and brings its schema up to
    /// date, then reconciles the audit head file and mirror with the database.
    /// A missing head file next to a non-empty log is refused. Blocking.
    pub fn open(opts: &StoreOptions) -> Result<Store, StoreError> {
        Self::open_with(opts, audit_repair::MissingAnchor::Refuse)
    }

    /// As [`Store::open`], but a missing head file is recreated at the last
    /// record when the whole chain verifies (`accessd audit-anchor`).
    pub fn open_anchoring_anew(opts: &StoreOptions) -> Result<Store, StoreError> {
        Self::open_with(opts, audit_repair::MissingAnchor::Recreate)
    }

    fn open_with(
        opts: &StoreOptions,
        missing: audit_repair::MissingAnchor,
    ) -> Result<Store, StoreError> {
        create_state_dir(&opts.state_dir)?;
        let db_path = opts.state_dir.join(DB_FILE);
        let mut conn = open_connection(&db_path)?;
        schema::migrate(&mut conn, &db_path)?;
        let paths = Paths {
            db: db_path,
            head: opts.state_dir.join(mirror::HEAD_FILE),
            mirror: opts.audit_mirror.clone(),
            rotation: opts.mirror_rotation,
        };
        let reconciled = audit_repair::reconcile(&conn, &paths, missing)?;
        Ok(Store {
            inner: Arc::new(Inner {
                locked: Mutex::new(Locked {
                    conn,
                    mirror_in_sync: reconciled.mirror_in_sync,
                    head_frozen: reconciled.head_frozen,
                }),
                paths,
                gate: Semaphore::new(MAX_WAITING_THREADS),
                changes: tokio::sync::watch::Sender::new(0),
            }),
        })
    }

    /// Runs `f` with read access on a blocking thread.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Reader<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.off_runtime(move |store| store.read_blocking(f)).await
    }

    /// Runs `f` in one transaction on a blocking thread; see
    /// [`Store::write_blocking`].
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.off_runtime(move |store| store.write_blocking(f)).await
    }

    /// Runs blocking store work on tokio's blocking pool, at most
    /// [`MAX_WAITING_THREADS`] callers at a time.
    async fn off_runtime<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .inner
            .gate
            .acquire()
            .await
            .map_err(|source| StoreError::Closed { source })?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|source| StoreError::Task { source })?
    }

    /// Runs `f` with read access on this thread. Blocking. `f` must not call
    /// the store itself (the connection is locked: it would deadlock).
    pub fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Reader<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut locked = self.inner.lock();
        let tx = locked
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(StoreError::sqlite("begin a read transaction"))?;
        let reader = Reader {
            conn: &tx,
            paths: &self.inner.paths,
        };
        f(&reader)
        // Dropping `tx` rolls the (read-only) transaction back.
    }

    /// Runs `f` in ONE transaction on this thread; commits when `f` returns
    /// `Ok`, rolls back when it returns `Err`. Then copies the audit records
    /// `f` appended to the mirror and moves the head file; a failure there is
    /// logged, not returned (the database is the source of truth). Blocking.
    /// `f` must not call the store itself (it would deadlock).
    pub fn write_blocking<T>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.inner.lock();
        let locked = &mut *guard;
        let tx = locked
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite("begin a write transaction"))?;
        let mut writer = Writer {
            reader: Reader {
                conn: &tx,
                paths: &self.inner.paths,
            },
            appended: Vec::new(),
        };
        let value = f(&mut writer)?;
        let appended = std::mem::take(&mut writer.appended);
        tx.commit()
            .map_err(StoreError::sqlite("commit a write transaction"))?;
        self.inner
            .changes
            .send_modify(|generation| *generation += 1);
        if !appended.is_empty() {
            locked.mirror_in_sync = audit_repair::after_commit(
                &locked.conn,
                &self.inner.paths,
                &appended,
                locked.mirror_in_sync,
                locked.head_frozen,
            );
        }
        Ok(value)
    }

    /// Ticks after every committed write, so subsystems that mirror the
    /// store (the WireGuard peer table) can catch up at once.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.paths.db
    }

    /// The audit head file.
    pub fn head_path(&self) -> &Path {
        &self.inner.paths.head
    }

    /// The JSON-lines audit mirror.
    pub fn mirror_path(&self) -> &Path {
        &self.inner.paths.mirror
    }
}

impl<'a> std::ops::Deref for Writer<'a> {
    type Target = Reader<'a>;

    fn deref(&self) -> &Reader<'a> {
        &self.reader
    }
}

/// How many async callers may hold a blocking thread waiting on the
/// connection at once; the rest wait in async land.
const MAX_WAITING_THREADS: usize = 4;

/// How long SQLite waits for another connection's lock (e.g. `sqlite3` run by
/// an operator) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

struct Inner {
    locked: Mutex<Locked>,
    paths: Paths,
    gate: Semaphore,
    /// Generation counter, bumped after each commit.
    changes: tokio::sync::watch::Sender<u64>,
}

struct Locked {
    conn: Connection,
    /// False after a mirror append failed: the next write catches the mirror
    /// up from the database instead of appending only its own records.
    mirror_in_sync: bool,
    /// True when the head file disagreed with the database at start-up: it
    /// is kept as evidence and never moved.
    head_frozen: bool,
}

/// The store's files.
#[derive(Debug)]
pub(crate) struct Paths {
    pub(crate) db: PathBuf,
    pub(crate) head: PathBuf,
    pub(crate) mirror: PathBuf,
    pub(crate) rotation: mirror::Rotation,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Locked> {
        // A panic inside `f` unwinds through the transaction's Drop, which
        // rolls it back, so the connection is consistent even when poisoned.
        self.locked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn create_state_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::CreateStateDir {
            path: dir.to_path_buf(),
            source,
        })
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    // Create the file ourselves so it is 0600 from the first byte; SQLite
    // gives the -wal and -shm files the database file's mode.
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::DatabaseFile {
            op: "create",
            path: path.to_path_buf(),
            source,
        })?;
    let file_error = |op| {
        move |source| StoreError::DatabaseFile {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let mode = fs::metadata(path)
        .map_err(file_error("stat"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "database file was readable by others; setting mode 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(file_error("set permissions of"))?;
    }
    let open_error = |source| StoreError::OpenDatabase {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    let journal: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_error)?;
    if !journal.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal, "SQLite refused WAL journal mode");
    }
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_error)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open_error)?;
    Ok(conn)
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Test fixtures shared by the store's unit tests.
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A store in a fresh temp dir; keep the `TempDir` alive.
    pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::open(&options(dir.path())).unwrap();
        (dir, store)
    }

    pub(crate) fn options(dir: &Path) -> StoreOptions {
        StoreOptions {
            state_dir: dir.join("state"),
            audit_mirror: dir.join("log/audit.jsonl"),
            mirror_rotation: mirror::Rotation::default(),
        }
    }

    /// An audit event of the dotted `kind` (one the vocabulary names).
    pub(crate) fn test_event(kind: &str, actor: &str, source: &str, target: &str) -> NewAuditEvent {
        NewAuditEvent {
            kind: crate::audit::event::Kind::parse(kind).unwrap(),
            actor: actor.into(),
            source: source.into(),
            target: target.into(),
            detail: serde_json::Value::Null,
        }
    }

    pub(crate) fn new_user(name: &str) -> NewUser {
        NewUser {
            name: name.into(),
            groups: vec!["research".into()],
            created_at: 1_700_000_000,
            expires_at: None,
            no_login: false,
        }
    }

    pub(crate) fn add_user(store: &Store, name: &str) {
        store
            .write_blocking(|w| w.create_user(new_user(name)))
            .unwrap();
    }

    /// A raw connection to the store's database, as an attacker with file
    /// access would have (bypassing the store).
    pub(crate) fn raw(store: &Store) -> Connection {
        Connection::open(store.db_path()).unwrap()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::IpAddr;

    use super::fixtures::*;
    use super::*;
    use gatehouse_config::api::UserState;

    #[test]
    fn files_are_private() {
        let (dir, store) = temp_store();
        let state = dir.path().join("state");
        let dir_mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        add_user(&store, "alice");
        store
            .write_blocking(|w| w.audit(test_event("user.add", "uid:0", "local", "alice")))
            .unwrap();
        // The database, its WAL and shared-memory files, and the head file.
        let mut files = 0;
        for entry in fs::read_dir(&state).unwrap() {
            let path = entry.unwrap().path();
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
            files += 1;
        }
        assert!(files >= 3, "{files}");
        let mirror_mode = fs::metadata(store.mirror_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mirror_mode, 0o600);
    }

    #[test]
    fn everything_survives_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        let opts = options(dir.path());
        let pool: ipnet::IpNet = "10.200.0.0/24".parse().unwrap();
        let gw: IpAddr = "10.200.0.1".parse().unwrap();
        let mut key =
            crate::ssh_keys::parse_public_key(crate::ssh_keys::tests::ED25519_PUB).unwrap();
        key.added_at = 5;
        let token = hash_token("raw-token");
        let device = {
            let store = Store::open(&opts).unwrap();
            store
                .write_blocking(|w| {
                    w.create_user(new_user("alice"))?;
                    w.set_user_state("alice", UserState::Active)?;
                    w.add_ssh_key("alice", key.clone())?;
                    w.create_enrollment_token("alice", &token, 10, 100)?;
                    w.audit(test_event("user.add", "uid:0", "local", "alice"))?;
                    w.create_device(
                        NewDevice {
                            user: "alice".into(),
                            name: "laptop".into(),
                            public_key: "pk-laptop".into(),
                            created_at: 20,
                        },
                        pool,
                        &[gw],
                    )
                })
                .unwrap()
        };
        let store = Store::open(&opts).unwrap();
        let (user, keys, devices, report) = store
            .read_blocking(|r| {
                Ok((
                    r.user("alice")?,
                    r.ssh_keys("alice")?,
                    r.devices(None)?,
                    r.verify_audit()?,
                ))
            })
            .unwrap();
        let user = user.unwrap();
        assert_eq!(user.state, UserState::Active);
        assert_eq!(user.groups, ["research"]);
        assert_eq!(keys, [key]);
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].address, device.address);
        assert_eq!(device.address, "10.200.0.2".parse::<IpAddr>().unwrap());
        assert!(report.intact);
        assert_eq!(report.records, 1);
        let used = store
            .write_blocking(|w| w.consume_enrollment_token(&token, 50))
            .unwrap();
        assert_eq!(used, "alice");
    }

    #[test]
    fn failed_write_rolls_back_everything() {
        let (_dir, store) = temp_store();
        let result: Result<(), StoreError> = store.write_blocking(|w| {
            w.create_user(new_user("alice"))?;
            w.audit(test_event("user.add", "uid:0", "local", "alice"))?;
            Err(StoreError::NotFound {
                what: "group",
                name: "nope".into(),
            })
        });
        assert!(result.is_err());
        let (user, count) = store
            .read_blocking(|r| Ok((r.user("alice")?, r.audit_count()?)))
            .unwrap();
        assert!(user.is_none());
        assert_eq!(count, 0);
        assert!(mirror::read_all(store.mirror_path()).unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_read_and_write() {
        let (_dir, store) = temp_store();
        store
            .write(|w| w.create_user(new_user("bob")))
            .await
            .unwrap();
        let users = store.read(|r| r.users()).await.unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].name, "bob");
    }
}
