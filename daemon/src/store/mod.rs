//! The store: users, their SSH keys, devices with their VPN addresses,
//! enrollment tokens, portal sessions, and the audit log's records. It is the
//! source of truth for all of them and survives restarts (security invariant
//! 7).
//!
//! Two databases behind one API ([`db`] is the SQL both run): the embedded
//! SQLite file by default (`state_dir/gatehouse.db`, mode 0600, WAL,
//! `synchronous=FULL`), or with `[store] url` a PostgreSQL server that the
//! two gateways of an HA pair share ([`postgres`]: TLS, a bounded pool,
//! timeouts; [`changes`]: the other node's writes, seen at once). The store
//! owns the schema migrations ([`schema`]), and the
//! transaction discipline: every mutation runs through [`Store::write`] in ONE
//! transaction, and audit events appended with [`Writer::audit`] are part of
//! that transaction, so an action and its audit record commit together or not
//! at all. After the commit the new records are copied to the audit mirror and
//! the head file (see [`crate::audit`]); a failure there is logged and repaired
//! on the next write or start, never lost, because the database has it.
//!
//! TOTP secrets are kept sealed with the secrets key the options carry
//! ([`crate::keys::secrets`], never in the database) and opened as they are
//! read; opening refuses a database whose secrets that key does not open,
//! and seals any left in plaintext by an older accessd.
//!
//! Does not own validation of names, keys or policy (the callers check those
//! with `gatehouse_config`), nor the clock: callers pass unix times in, except
//! for audit records, which are stamped when written.
//!
//! Layout: [`error`] (the one error enum), [`schema`] (migrations), [`users`]
//! (users and SSH keys), [`devices`] (devices and address allocation),
//! [`tokens`] (enrollment tokens), [`audit_log`] (audit rows, queries),
//! [`audit_verify`] (the chain checked a page at a time), `audit_repair`
//! (keeping the mirror and head file in step with the table, after each
//! commit and on start-up), [`audit_cursors`] (how far
//! each exporter of the audit log got), [`unwritten`] (records of what
//! already happened that the store refused, kept and written later).
//!
//! Concurrency: on PostgreSQL, writers take one advisory lock, so writes
//! on both nodes run one at a time as they do on SQLite (the audit chain has
//! one writer at a time), and reads are snapshots; after a commit this
//! node's mirror and head file catch up from the database, the other node's
//! records included. On SQLite: one connection behind a mutex; async callers go through a
//! small semaphore so at most a few blocking threads wait on it. A cancelled
//! `write` future may still commit: the blocking work is not interrupted.

pub mod audit_cursors;
pub mod audit_facets;
pub mod audit_filter;
pub mod audit_log;
mod audit_repair;
pub mod audit_verify;
pub mod backup;
pub mod changes;
pub mod db;
pub mod devices;
pub mod error;
pub mod ha_nodes;
pub mod portal;
pub mod postgres;
pub mod schema;
pub mod ssh_certs;
pub mod ssh_host_certs;
pub mod sso;
pub mod tokens;
pub mod unwritten;
pub mod users;

use std::cell::RefCell;
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
pub use portal::{LoginMethod, PortalSession};
pub use postgres::PgOptions;
pub use tokens::hash_token;
pub use users::{NewUser, SshKey, User};

use crate::audit::checkpoint::Signer;
use crate::audit::mirror;
use crate::keys::audit::AuditKeys;
use crate::keys::private_file::PrivateFile;
use crate::keys::secrets::SecretsKey;
use db::Conn;

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "gatehouse.db";

/// Where the store keeps its files.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Holds `gatehouse.db` (the embedded database) and `audit.head`;
    /// created with mode 0700.
    pub state_dir: PathBuf,
    /// The JSON-lines audit mirror; parent directories are created.
    pub audit_mirror: PathBuf,
    /// When the mirror is rotated.
    pub mirror_rotation: mirror::Rotation,
    /// The shared PostgreSQL database instead of `state_dir/gatehouse.db`.
    pub postgres: Option<PgOptions>,
    /// Seals the TOTP secrets at rest; never stored in the database. The
    /// audit chain and checkpoint keys are derived from it.
    pub secrets: Arc<SecretsKey>,
    /// Who signs the audit checkpoints this store writes.
    pub signer: Signer,
}

impl StoreOptions {
    /// The options the config file sets (reading `[store]`'s password),
    /// with the secrets key the caller loaded.
    pub fn from_config(
        config: &gatehouse_config::Config,
        secrets: Arc<SecretsKey>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            secrets,
            state_dir: config.gateway.state_dir.clone(),
            audit_mirror: config.audit.mirror.clone(),
            mirror_rotation: mirror::Rotation {
                max_bytes: config.audit.mirror_max_bytes,
                keep: config.audit.mirror_keep,
            },
            postgres: config
                .store
                .as_ref()
                .map(PgOptions::from_config)
                .transpose()?,
            signer: Signer::of(config),
        })
    }
}

/// A handle to the store; clones share one connection (SQLite) or one pool
/// (PostgreSQL).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// Read access inside one transaction (a consistent snapshot).
pub struct Reader<'a> {
    conn: Conn<'a>,
    paths: &'a Paths,
    secrets: &'a SecretsKey,
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
    /// A missing head file next to a non-empty log is refused. Every TOTP
    /// secret must open with the options' secrets key; plaintext ones (from
    /// before sealing) are sealed now, in one transaction. Blocking.
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
        let (backend, db_name, db_file) = match &opts.postgres {
            None => {
                let db_path = opts.state_dir.join(DB_FILE);
                let mut conn = open_connection(&db_path)?;
                schema::migrate(&mut conn, &db_path)?;
                let name = db_path.display().to_string();
                (Backend::Sqlite(Mutex::new(conn)), name, Some(db_path))
            }
            Some(pg) => {
                let target = postgres::Target::parse(pg)?;
                let described = target.describe();
                let pool = target.pool().map_err(|error| match error {
                    postgres::PgConfigOrConnect::Config(e) => StoreError::from(e),
                    postgres::PgConfigOrConnect::Connect(source) => StoreError::Connect {
                        target: described.clone(),
                        source,
                    },
                })?;
                let mut client = pool.get().map_err(|source| StoreError::Connect {
                    target: described.clone(),
                    source,
                })?;
                let name = format!("postgresql://{described}");
                schema::migrate_postgres(&mut client, &name)?;
                drop(client);
                (Backend::Postgres(pool), name, None)
            }
        };
        let paths = Paths {
            db_name,
            db_file,
            head: opts.state_dir.join(mirror::HEAD_FILE),
            mirror: opts.audit_mirror.clone(),
            rotation: opts.mirror_rotation,
            audit_keys: AuditKeys::derive(&opts.secrets),
            signer: opts.signer.clone(),
        };
        let inner = Inner {
            backend,
            files: Mutex::new(AuditFiles {
                mirror_in_sync: false,
                head_frozen: false,
                chain_broken: None,
            }),
            paths,
            secrets: Arc::clone(&opts.secrets),
            gate: Semaphore::new(MAX_WAITING_THREADS),
            changes: tokio::sync::watch::Sender::new(0),
        };
        // A node that joins a shared store has no anchor of its own yet: it
        // anchors at the last record once the whole chain verifies (the
        // other node's anchor keeps guarding what came before).
        let missing = match &inner.backend {
            Backend::Postgres(_) => audit_repair::MissingAnchor::Recreate,
            Backend::Sqlite(_) => missing,
        };
        let reconciled =
            inner.with_conn(|conn| audit_repair::reconcile(conn, &inner.paths, missing))?;
        *inner.files() = AuditFiles {
            mirror_in_sync: reconciled.mirror_in_sync,
            head_frozen: reconciled.head_frozen,
            chain_broken: None,
        };
        let store = Store {
            inner: Arc::new(inner),
        };
        // Only a chain that reached the head file gets signed: a frozen head
        // means records were cut or rewritten, and a checkpoint would vouch
        // for them.
        if !reconciled.head_frozen
            && store.write_blocking(|w| w.begin_keyed_chain(std::time::SystemTime::now()))?
        {
            tracing::info!(
                "the audit log's older records keep their plain hashes; a signed checkpoint now marks where the keyed chain begins"
            );
        }
        let indexed = store.write_blocking(|w| w.index_audit_records())?;
        if indexed > 0 {
            tracing::info!(records = indexed, "indexed the audit log for review");
        }
        let sealed = store.write_blocking(|w| w.seal_plaintext_totp_secrets())?;
        if sealed > 0 {
            tracing::info!(
                users = sealed,
                "sealed the TOTP secrets stored in plaintext with the secrets key"
            );
        }
        Ok(store)
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
        let paths = &self.inner.paths;
        let secrets = &*self.inner.secrets;
        match &self.inner.backend {
            Backend::Sqlite(conn) => {
                let mut conn = lock(conn);
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Deferred)
                    .map_err(StoreError::db("begin a read transaction"))?;
                f(&Reader {
                    conn: Conn::Sqlite(&tx),
                    paths,
                    secrets,
                })
                // Dropping `tx` rolls the (read-only) transaction back.
            }
            Backend::Postgres(pool) => {
                let mut client = pool.get().map_err(StoreError::db("connect for a read"))?;
                let tx = begin_postgres_read(&mut client)?;
                f(&Reader {
                    conn: Conn::Postgres(RefCell::new(tx)),
                    paths,
                    secrets,
                })
            }
        }
    }

    /// Runs `f` in ONE transaction on this thread; commits when `f` returns
    /// `Ok`, rolls back when it returns `Err`. Then copies the audit records
    /// to the mirror and moves the head file; a failure there is logged, not
    /// returned (the database is the source of truth). Blocking. `f` must
    /// not call the store itself (it would deadlock).
    ///
    /// On PostgreSQL the transaction first takes a database-wide advisory
    /// lock, so writers on every node run one at a time, as they do on
    /// SQLite: the audit chain is appended by one writer at a time, and an
    /// address or token is never handed out twice.
    pub fn write_blocking<T>(
        &self,
        f: impl FnOnce(&mut Writer<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let paths = &self.inner.paths;
        let secrets = &*self.inner.secrets;
        let value = match &self.inner.backend {
            Backend::Sqlite(conn) => {
                let mut conn = lock(conn);
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(StoreError::db("begin a write transaction"))?;
                let mut writer = Writer::new(Conn::Sqlite(&tx), paths, secrets);
                let value = f(&mut writer)?;
                let appended = std::mem::take(&mut writer.appended);
                drop(writer);
                tx.commit()
                    .map_err(StoreError::db("commit a write transaction"))?;
                if !appended.is_empty() {
                    let mut files = self.inner.files();
                    files.mirror_in_sync = audit_repair::after_commit(
                        &Conn::Sqlite(&conn),
                        paths,
                        &appended,
                        files.mirror_in_sync,
                        files.head_frozen,
                    );
                }
                value
            }
            Backend::Postgres(pool) => {
                if self.inner.files().chain_broken.is_some() {
                    return Err(StoreError::AuditChainBroken {
                        head: paths.head.clone(),
                    });
                }
                let mut client = pool.get().map_err(StoreError::db("connect for a write"))?;
                let (value, appended) = write_postgres(&mut client, paths, secrets, f)?;
                // Another node's records may sit between ours: the files
                // catch up from the database.
                if appended {
                    let mut files = self.inner.files();
                    match begin_postgres_read(&mut client) {
                        Ok(tx) => {
                            let caught = audit_repair::catch_up(
                                &Conn::Postgres(RefCell::new(tx)),
                                paths,
                                files.head_frozen,
                            );
                            files.mirror_in_sync = caught.mirror_in_sync;
                            files.chain_broken = files.chain_broken.or(caught.chain_broken);
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot read the audit log back for the mirror; will catch up on the next write");
                            files.mirror_in_sync = false;
                        }
                    }
                }
                value
            }
        };
        self.inner
            .changes
            .send_modify(|generation| *generation += 1);
        Ok(value)
    }

    /// Ticks after every committed write (this node's, and on the shared
    /// store the other node's too, see [`changes`]), so subsystems that
    /// mirror the store (the WireGuard peer table) can catch up at once.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Something changed the database (the other node wrote).
    pub(crate) fn note_change(&self) {
        self.inner
            .changes
            .send_modify(|generation| *generation += 1);
    }

    /// The SQLite database file; `None` for the shared store.
    pub fn db_path(&self) -> Option<&Path> {
        self.inner.paths.db_file.as_deref()
    }

    /// What is wrong with this node's audit chain, in a sentence that says
    /// what to do (`accessctl status` shows it); `None` while nothing is
    /// known to be.
    pub fn audit_break(&self) -> Option<String> {
        let files = self.inner.files();
        let head = self.inner.paths.head.display();
        if let Some(why) = files.chain_broken {
            return Some(format!(
                "the audit chain in the database no longer continues from this node's audit \
                 head ({head}): {why}. Records were removed or rewritten behind the gateway's \
                 back, so nothing more is written here. Run `accessctl audit verify` to see \
                 where, restore the log, then restart accessd"
            ));
        }
        files.head_frozen.then(|| {
            format!(
                "the audit log disagreed with this node's audit head ({head}) at start-up: the \
                 head is kept as evidence and not moved. Run `accessctl audit verify` to see \
                 where (accessd's log says what it found)"
            )
        })
    }

    /// The database for messages: the SQLite file, or
    /// `postgresql://host:port/db`.
    pub fn db_name(&self) -> &str {
        &self.inner.paths.db_name
    }

    /// True when the store is the shared PostgreSQL database.
    pub fn is_shared(&self) -> bool {
        matches!(self.inner.backend, Backend::Postgres(_))
    }

    /// Where the shared database is, for connections of their own (the HA
    /// lease, change notifications); `None` on SQLite.
    pub(crate) fn postgres_target(&self) -> Option<&postgres::Target> {
        match &self.inner.backend {
            Backend::Postgres(pool) => Some(&pool.target),
            Backend::Sqlite(_) => None,
        }
    }

    /// The audit head file.
    pub fn head_path(&self) -> &Path {
        &self.inner.paths.head
    }

    /// The JSON-lines audit mirror.
    pub fn mirror_path(&self) -> &Path {
        &self.inner.paths.mirror
    }

    /// The audit chain's keys (never in the database).
    pub fn audit_keys(&self) -> &AuditKeys {
        &self.inner.paths.audit_keys
    }
}

impl<'a> Writer<'a> {
    fn new(conn: Conn<'a>, paths: &'a Paths, secrets: &'a SecretsKey) -> Writer<'a> {
        Writer {
            reader: Reader {
                conn,
                paths,
                secrets,
            },
            appended: Vec::new(),
        }
    }
}

impl<'a> std::ops::Deref for Writer<'a> {
    type Target = Reader<'a>;

    fn deref(&self) -> &Reader<'a> {
        &self.reader
    }
}

/// The advisory lock every PostgreSQL write transaction takes (any fixed
/// number; "gh" in ASCII).
const WRITE_LOCK: i64 = 0x6768;

/// How many async callers may hold a blocking thread waiting on the
/// connection at once; the rest wait in async land.
const MAX_WAITING_THREADS: usize = 4;

/// How long SQLite waits for another connection's lock (e.g. `sqlite3` run by
/// an operator) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

struct Inner {
    backend: Backend,
    files: Mutex<AuditFiles>,
    paths: Paths,
    secrets: Arc<SecretsKey>,
    gate: Semaphore,
    /// Generation counter, bumped after each commit.
    changes: tokio::sync::watch::Sender<u64>,
}

enum Backend {
    /// One connection behind a mutex.
    Sqlite(Mutex<Connection>),
    /// A bounded pool.
    Postgres(postgres::Pool),
}

/// The state of this node's audit files.
struct AuditFiles {
    /// False after a mirror append failed: the next write catches the mirror
    /// up from the database instead of appending only its own records.
    mirror_in_sync: bool,
    /// True when the head file disagreed with the database at start-up: it
    /// is kept as evidence and never moved.
    head_frozen: bool,
    /// Set once the shared database's chain stopped continuing from the
    /// head file (records cut or rewritten behind the gateway's back), to
    /// why: writes are refused until accessd restarts.
    chain_broken: Option<&'static str>,
}

/// The store's files (and the database's name for messages), and the
/// audit chain's keys.
#[derive(Debug)]
pub(crate) struct Paths {
    pub(crate) db_name: String,
    /// The SQLite file (none for PostgreSQL).
    pub(crate) db_file: Option<PathBuf>,
    pub(crate) head: PathBuf,
    pub(crate) mirror: PathBuf,
    pub(crate) rotation: mirror::Rotation,
    /// The audit chain key and checkpoint signing key.
    pub(crate) audit_keys: AuditKeys,
    pub(crate) signer: Signer,
}

impl Inner {
    fn files(&self) -> MutexGuard<'_, AuditFiles> {
        lock(&self.files)
    }

    /// Runs `f` on a connection outside the store's transactions (start-up).
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite(conn) => f(&Conn::Sqlite(&lock(conn))),
            Backend::Postgres(pool) => {
                let mut client = pool.get().map_err(StoreError::db("connect"))?;
                let tx = begin_postgres_read(&mut client)?;
                f(&Conn::Postgres(RefCell::new(tx)))
            }
        }
    }
}

/// One write transaction on PostgreSQL, under the store's write lock;
/// returns `f`'s value and whether it appended audit records.
fn write_postgres<T>(
    client: &mut ::postgres::Client,
    paths: &Paths,
    secrets: &SecretsKey,
    f: impl FnOnce(&mut Writer<'_>) -> Result<T, StoreError>,
) -> Result<(T, bool), StoreError> {
    let mut tx = client
        .transaction()
        .map_err(StoreError::db("begin a write transaction"))?;
    // The notice reaches the other node's listener if and when this commits.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1), pg_notify($2, '')",
        &[&WRITE_LOCK, &changes::CHANNEL],
    )
    .map_err(StoreError::db("take the store's write lock"))?;
    let mut writer = Writer::new(Conn::Postgres(RefCell::new(tx)), paths, secrets);
    let value = f(&mut writer)?;
    let Writer { reader, appended } = writer;
    if let Conn::Postgres(tx) = reader.conn {
        tx.into_inner()
            .commit()
            .map_err(StoreError::db("commit a write transaction"))?;
    }
    Ok((value, !appended.is_empty()))
}

/// A read-only snapshot: every query of one read sees the same database.
fn begin_postgres_read(
    client: &mut ::postgres::Client,
) -> Result<::postgres::Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(::postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(StoreError::db("begin a read transaction"))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside `f` unwinds through the transaction's Drop, which
    // rolls it back, so the connection is consistent even when poisoned.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creates the state directory (0700) when missing: [`Store::open`] does,
/// and start-up does first, since the keys live there too.
pub fn create_state_dir(dir: &Path) -> Result<(), StoreError> {
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
    if !PrivateFile::mode_is_private(mode) {
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

    /// Options for a store under `dir`, with a fresh secrets key.
    pub(crate) fn options(dir: &Path) -> StoreOptions {
        StoreOptions {
            state_dir: dir.join("state"),
            audit_mirror: dir.join("log/audit.jsonl"),
            mirror_rotation: mirror::Rotation::default(),
            postgres: None,
            secrets: Arc::new(SecretsKey::generate().unwrap()),
            signer: Signer {
                gateway: "test-gw".into(),
                node: "test-gw".into(),
            },
        }
    }

    /// A store test's database: the embedded SQLite file, or a fresh
    /// database of its own on the PostgreSQL server that `tests/run.sh`
    /// starts (`GATEHOUSE_TEST_POSTGRES`, the admin URL, and
    /// `GATEHOUSE_TEST_POSTGRES_PASSWORD`). Dropped with the test.
    pub(crate) struct TestStore {
        pub(crate) dir: tempfile::TempDir,
        pub(crate) opts: StoreOptions,
        pg: Option<PgTestDb>,
    }

    impl TestStore {
        pub(crate) fn sqlite() -> TestStore {
            let dir = tempfile::TempDir::new().unwrap();
            let opts = options(dir.path());
            TestStore {
                dir,
                opts,
                pg: None,
            }
        }

        /// `None` (printing why) when no test server is configured; with
        /// `GATEHOUSE_E2E=1` that fails.
        pub(crate) fn postgres() -> Option<TestStore> {
            let pg = PgTestDb::create()?;
            let dir = tempfile::TempDir::new().unwrap();
            let mut opts = options(dir.path());
            opts.postgres = Some(pg.options());
            Some(TestStore {
                dir,
                opts,
                pg: Some(pg),
            })
        }

        pub(crate) fn backend(&self) -> &'static str {
            if self.pg.is_some() {
                "postgres"
            } else {
                "sqlite"
            }
        }

        pub(crate) fn open(&self) -> Store {
            Store::open(&self.opts).unwrap()
        }

        /// Runs statements on the database behind the store's back, as an
        /// attacker with the file or a database superuser would.
        /// `DISABLE_AUDIT_TRIGGERS` in `sql` becomes the backend's way of
        /// switching the audit table's guards off.
        pub(crate) fn raw_batch(&self, sql: &str) {
            if let Err(error) = self.raw_try_batch(sql) {
                panic!("{sql}: {error}");
            }
        }

        /// As [`TestStore::raw_batch`], returning what the database said.
        pub(crate) fn raw_try_batch(&self, sql: &str) -> Result<(), String> {
            match &self.pg {
                None => {
                    let sql = sql.replace(
                        "DISABLE_AUDIT_TRIGGERS;",
                        "DROP TRIGGER audit_log_immutable_update; \
                         DROP TRIGGER audit_log_immutable_delete;",
                    );
                    raw_sqlite(&self.opts)
                        .execute_batch(&sql)
                        .map_err(|e| e.to_string())
                }
                Some(pg) => {
                    let sql = sql.replace(
                        "DISABLE_AUDIT_TRIGGERS;",
                        "ALTER TABLE audit_log DISABLE TRIGGER USER;",
                    );
                    pg.client()
                        .batch_execute(&sql)
                        .map_err(|e| db::DbError::from(e).to_string())
                }
            }
        }

        /// The first column of every row of `sql`, run behind the store's
        /// back.
        pub(crate) fn raw_column<T: db::FromValue>(&self, sql: &str) -> Vec<T> {
            let rows = match &self.pg {
                None => {
                    let conn = raw_sqlite(&self.opts);
                    Conn::Sqlite(&conn).query(sql, &[]).unwrap()
                }
                Some(pg) => {
                    let mut client = pg.client();
                    let tx = client.transaction().unwrap();
                    Conn::Postgres(RefCell::new(tx)).query(sql, &[]).unwrap()
                }
            };
            rows.iter().map(|row| row.get(0).unwrap()).collect()
        }
    }

    fn raw_sqlite(opts: &StoreOptions) -> Connection {
        Connection::open(opts.state_dir.join(DB_FILE)).unwrap()
    }

    /// Runs `test` on a fresh store of each backend: SQLite, then
    /// PostgreSQL (skipped with a printed reason when no test server is
    /// configured, a failure with `GATEHOUSE_E2E=1`).
    pub(crate) fn on_each_backend(test: impl Fn(&TestStore, Store)) {
        on_each_test_db(|db| test(db, db.open()));
    }

    /// As [`on_each_backend`], for tests that open (and reopen) the store
    /// themselves.
    pub(crate) fn on_each_test_db(test: impl Fn(&TestStore)) {
        test(&TestStore::sqlite());
        if let Some(pg) = TestStore::postgres() {
            test(&pg);
        }
    }

    /// A runtime for the async half of a store test (the PostgreSQL test
    /// database is made and dropped outside it).
    pub(crate) fn multi_thread_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[expect(clippy::print_stdout, reason = "a skipped test says why")]
    fn skipped(why: &str) {
        println!("{why}");
    }

    /// With `GATEHOUSE_TEST_GATEWAY_STORE=postgres` (tests/run.sh's second
    /// run of the daemon's unit tests): a database of its own on the test
    /// server for an in-process test gateway, and the store options for
    /// it; `None` otherwise (the embedded SQLite). Set without a test
    /// server, it fails: a run that asked for PostgreSQL never falls back.
    pub(crate) fn gateway_postgres() -> Option<(PgTestDb, PgOptions)> {
        let wanted = std::env::var("GATEHOUSE_TEST_GATEWAY_STORE").ok()?;
        assert_eq!(
            wanted, "postgres",
            "GATEHOUSE_TEST_GATEWAY_STORE is postgres or unset"
        );
        assert!(
            std::env::var("GATEHOUSE_TEST_POSTGRES").is_ok(),
            "GATEHOUSE_TEST_GATEWAY_STORE=postgres needs GATEHOUSE_TEST_POSTGRES (tests/run.sh sets both)"
        );
        // The synchronous client must not run on the test's runtime.
        let db = off_runtime(PgTestDb::create)?;
        let options = db.options();
        Some((db, options))
    }

    /// Runs `work` on a thread of its own: the synchronous PostgreSQL
    /// client panics when called on a tokio runtime's thread.
    pub(crate) fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| scope.spawn(work).join().unwrap())
    }

    /// A database of its own on the test server, dropped afterwards.
    pub(crate) struct PgTestDb {
        admin_url: String,
        password: String,
        name: String,
    }

    static NEXT_DB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    impl PgTestDb {
        fn create() -> Option<PgTestDb> {
            let Ok(admin_url) = std::env::var("GATEHOUSE_TEST_POSTGRES") else {
                let e2e = std::env::var("GATEHOUSE_E2E").is_ok_and(|v| v == "1");
                assert!(
                    !e2e,
                    "GATEHOUSE_E2E=1 but GATEHOUSE_TEST_POSTGRES is not set: tests/run.sh starts \
                     the PostgreSQL server the store tests run against"
                );
                skipped(
                    "SKIPPED the PostgreSQL half: GATEHOUSE_TEST_POSTGRES is not set (tests/run.sh sets it)",
                );
                return None;
            };
            let password = std::env::var("GATEHOUSE_TEST_POSTGRES_PASSWORD").unwrap_or_default();
            let n = NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("gh_unit_{}_{n}", std::process::id());
            let db = PgTestDb {
                admin_url,
                password,
                name,
            };
            db.admin()
                .batch_execute(&format!("CREATE DATABASE {}", db.name))
                .unwrap();
            Some(db)
        }

        fn config(&self, dbname: Option<&str>) -> ::postgres::Config {
            let mut config: ::postgres::Config = self.admin_url.parse().unwrap();
            config.password(&self.password);
            if let Some(dbname) = dbname {
                config.dbname(dbname);
            }
            config
        }

        fn admin(&self) -> ::postgres::Client {
            self.config(None).connect(::postgres::NoTls).unwrap()
        }

        pub(crate) fn client(&self) -> ::postgres::Client {
            self.config(Some(&self.name))
                .connect(::postgres::NoTls)
                .unwrap()
        }

        fn options(&self) -> PgOptions {
            let (base, _) = self.admin_url.rsplit_once('/').unwrap();
            PgOptions {
                url: format!("{base}/{}", self.name),
                password: Some(self.password.clone()),
                ca_file: None,
            }
        }
    }

    impl Drop for PgTestDb {
        fn drop(&mut self) {
            let config = self.config(None);
            let drop_it = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            off_runtime(move || {
                if let Ok(mut admin) = config.connect(::postgres::NoTls) {
                    let _ = admin.batch_execute(&drop_it);
                }
            });
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

    /// A raw connection to the store's SQLite database, as an attacker with
    /// file access would have (bypassing the store).
    pub(crate) fn raw(store: &Store) -> Connection {
        Connection::open(store.db_path().unwrap()).unwrap()
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
        on_each_test_db(|db| {
            let opts = &db.opts;
            let pool: ipnet::IpNet = "10.200.0.0/24".parse().unwrap();
            let gw: IpAddr = "10.200.0.1".parse().unwrap();
            let mut key =
                crate::ssh_keys::parse_public_key(crate::ssh_keys::tests::ED25519_PUB).unwrap();
            key.added_at = 5;
            let token = hash_token("raw-token");
            let device = {
                let store = Store::open(opts).unwrap();
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
            let store = Store::open(opts).unwrap();
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
        });
    }

    #[test]
    fn failed_write_rolls_back_everything() {
        on_each_backend(|_db, store| {
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
        });
    }

    #[test]
    fn async_read_and_write() {
        on_each_backend(|_db, store| {
            multi_thread_runtime().block_on(async move {
                store
                    .write(|w| w.create_user(new_user("bob")))
                    .await
                    .unwrap();
                let users = store.read(|r| r.users()).await.unwrap();
                assert_eq!(users.len(), 1);
                assert_eq!(users[0].name, "bob");
            });
        });
    }

    /// Two gateways on one PostgreSQL database: their writers take turns, so
    /// the audit chain they append together has no fork and no gap, every
    /// device gets its own address, and each node's mirror and head file
    /// follow the whole chain, the other node's records included.
    #[test]
    fn two_nodes_on_one_database_append_one_chain() {
        let Some(a) = TestStore::postgres() else {
            return;
        };
        let node_b_dir = tempfile::TempDir::new().unwrap();
        let mut b_opts = options(node_b_dir.path());
        b_opts.postgres = a.opts.postgres.clone();
        b_opts.secrets = Arc::clone(&a.opts.secrets);
        let node_a = a.open();
        let node_b = Store::open(&b_opts).unwrap();
        add_user(&node_a, "alice");
        let pool: ipnet::IpNet = "10.9.0.0/24".parse().unwrap();
        let threads: Vec<_> = [("a", node_a.clone()), ("b", node_b.clone())]
            .into_iter()
            .flat_map(|(node, store)| {
                (0..2).map(move |t| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        for i in 0..15 {
                            let name = format!("{node}{t}-{i}");
                            store
                                .write_blocking(|w| {
                                    w.audit(test_event("device.create", "uid:0", node, &name))?;
                                    w.create_device(
                                        NewDevice {
                                            user: "alice".into(),
                                            name: name.clone(),
                                            public_key: format!("pk-{name}"),
                                            created_at: 1,
                                        },
                                        pool,
                                        &[],
                                    )
                                })
                                .unwrap();
                        }
                    })
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        for node in [&node_a, &node_b] {
            let report = node.read_blocking(|r| r.verify_audit()).unwrap();
            assert!(report.intact, "{report:?}");
            assert_eq!(report.records, 60);
            let devices = node.read_blocking(|r| r.devices(None)).unwrap();
            let addresses: std::collections::HashSet<IpAddr> =
                devices.iter().map(|d| d.address).collect();
            assert_eq!(addresses.len(), 60);
        }
        // Each node's mirror holds the whole chain: its own records and the
        // other node's, in order; each head file is at the end of it.
        let records = node_a
            .read_blocking(|r| r.audit_records(&AuditFilter::default()))
            .unwrap();
        node_a
            .write_blocking(|w| w.audit(test_event("user.add", "uid:0", "a", "x")).map(drop))
            .unwrap();
        node_b
            .write_blocking(|w| w.audit(test_event("user.add", "uid:0", "b", "y")).map(drop))
            .unwrap();
        let all = node_b
            .read_blocking(|r| r.audit_records(&AuditFilter::default()))
            .unwrap();
        assert_eq!(&all[..60], &records[..]);
        assert_eq!(mirror::read_all(node_b.mirror_path()).unwrap(), all);
        assert_eq!(mirror::read_all(node_a.mirror_path()).unwrap(), all[..61]);
        assert_eq!(
            mirror::read_head(node_b.head_path()).unwrap(),
            Some(crate::audit::chain::Head::of(&all[61]))
        );
    }
}
