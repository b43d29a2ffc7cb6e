//! The database schema as a list of versioned migrations, applied in order in
//! one transaction and tracked with `PRAGMA user_version`. A database newer
//! than [`MIGRATIONS`] knows is refused, never "downgraded".
//!
//! Rules for changing the schema: never edit a step that has shipped; append
//! a new one. Tables are `STRICT`, so a value of the wrong type is an error
//! instead of being stored silently.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Schema steps; step `i` moves the database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3_PORTAL, V4_ENDPOINTS];

/// The schema version this code writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the database at `path` up to [`current_version`].
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StoreError::sqlite("read the schema version"))?;
    let known = current_version();
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    if found == known {
        return Ok(());
    }
    let tx = conn
        .transaction()
        .map_err(StoreError::sqlite("begin the schema migration"))?;
    let start = usize::try_from(found).unwrap_or(0);
    for (index, step) in MIGRATIONS.iter().enumerate().skip(start) {
        let version = index + 1;
        tx.execute_batch(step)
            .and_then(|()| tx.pragma_update(None, "user_version", version as i64))
            .map_err(|source| StoreError::Migrate { version, source })?;
    }
    tx.commit().map_err(|source| StoreError::Migrate {
        version: MIGRATIONS.len(),
        source,
    })?;
    tracing::info!(from = found, to = known, "database schema migrated");
    Ok(())
}

/// Where each device was last heard from (`ip:port`), stored with its last
/// handshake, so that after a restart the gateway can send the device a
/// handshake initiation instead of waiting for the device to notice.
const V4_ENDPOINTS: &str = r#"
ALTER TABLE devices ADD COLUMN last_endpoint TEXT;
"#;

/// VPN session lifetime: `no_login` users (machines that cannot log in to
/// the portal) keep their devices live while enabled; everyone else's devices
/// are live for `vpn.session_lifetime` after `vpn_login_at`, their last portal
/// login. The data plane clears `vpn_login_at` when it audits the expiry.
const V2: &str = r#"
ALTER TABLE users ADD COLUMN no_login INTEGER NOT NULL DEFAULT 0 CHECK (no_login IN (0, 1));
ALTER TABLE users ADD COLUMN vpn_login_at INTEGER;
"#;

/// The first schema.
///
/// `audit_log.id` is the storage order and `seq` the chain position; they
/// are kept apart so that verification walks records in the order they were
/// stored and notices rows whose content was swapped. Triggers refuse UPDATE
/// and DELETE on audit rows.
const V1: &str = r#"
CREATE TABLE users (
    name          TEXT PRIMARY KEY NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'active', 'disabled')),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_seen     INTEGER,
    password_hash TEXT,
    totp_secret   TEXT
) STRICT;

CREATE TABLE user_groups (
    user       TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    group_name TEXT NOT NULL,
    PRIMARY KEY (user, group_name)
) STRICT;
CREATE INDEX user_groups_by_group ON user_groups (group_name);

CREATE TABLE ssh_keys (
    user        TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    algorithm   TEXT NOT NULL,
    comment     TEXT NOT NULL,
    openssh     TEXT NOT NULL,
    added_at    INTEGER NOT NULL,
    PRIMARY KEY (user, fingerprint)
) STRICT;
CREATE INDEX ssh_keys_by_fingerprint ON ssh_keys (fingerprint);

CREATE TABLE devices (
    user            TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    public_key      TEXT NOT NULL UNIQUE,
    address         TEXT NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    last_activation INTEGER,
    last_handshake  INTEGER,
    PRIMARY KEY (user, name)
) STRICT;

CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL CHECK (length(token_hash) = 64),
    user       TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;
CREATE INDEX enrollment_tokens_by_user ON enrollment_tokens (user);

CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    seq       INTEGER NOT NULL UNIQUE,
    time      TEXT NOT NULL,
    time_unix INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    source    TEXT NOT NULL,
    target    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
) STRICT;
CREATE INDEX audit_log_by_time ON audit_log (time_unix);
CREATE INDEX audit_log_by_actor ON audit_log (actor);
CREATE INDEX audit_log_by_target ON audit_log (target);

CREATE TRIGGER audit_log_immutable_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable');
END;
CREATE TRIGGER audit_log_immutable_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit records are immutable');
END;
"#;

/// The portal: sessions (only the SHA-256 of a session token is stored)
/// and, per user, the last TOTP time step accepted, so a code is never
/// accepted twice.
const V3_PORTAL: &str = r#"
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;

CREATE TABLE portal_sessions (
    token_hash TEXT PRIMARY KEY NOT NULL CHECK (length(token_hash) = 64),
    user       TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    source     TEXT NOT NULL
) STRICT;
CREATE INDEX portal_sessions_by_user ON portal_sessions (user);
"#;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_is_idempotent() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        migrate(&mut conn, &path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, current_version());
    }

    #[test]
    fn a_version_1_database_keeps_its_rows_and_gains_the_session_columns() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO users (name, state, created_at) VALUES ('alice', 'active', 7)",
            [],
        )
        .unwrap();
        migrate(&mut conn, &path).unwrap();
        let row: (String, i64, i64, Option<i64>) = conn
            .query_row(
                "SELECT state, created_at, no_login, vpn_login_at FROM users WHERE name = 'alice'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(row, ("active".into(), 7, 0, None));
    }

    #[test]
    fn a_database_of_the_previous_version_migrates_to_the_current_one() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        let previous = MIGRATIONS.len() - 1;
        for step in &MIGRATIONS[..previous] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", previous as i64)
            .unwrap();
        conn.execute(
            "INSERT INTO users (name, state, created_at, no_login) VALUES ('bob', 'active', 9, 1)",
            [],
        )
        .unwrap();
        migrate(&mut conn, &path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, current_version());
        let no_login: i64 = conn
            .query_row("SELECT no_login FROM users WHERE name = 'bob'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(no_login, 1, "rows of the previous version are kept");
        // What the newest step added is there and usable.
        conn.execute(
            "INSERT INTO devices (user, name, public_key, address, created_at, last_endpoint) \
             VALUES ('bob', 'laptop', 'k', '10.200.0.2', 1, '198.51.100.7:51820')",
            [],
        )
        .unwrap();
    }

    #[test]
    fn refuses_a_newer_database() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", current_version() + 1)
            .unwrap();
        let err = migrate(&mut conn, &path).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer accessd"), "{err}");
    }

    #[test]
    fn audit_rows_are_immutable() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn, &path).unwrap();
        conn.execute(
            "INSERT INTO audit_log (seq, time, time_unix, kind, actor, source, target, detail, \
             prev_hash, hash) VALUES (1, 't', 0, 'k', 'a', 's', 't', 'null', 'p', 'h')",
            [],
        )
        .unwrap();
        assert!(conn.execute("UPDATE audit_log SET kind = 'x'", []).is_err());
        assert!(conn.execute("DELETE FROM audit_log", []).is_err());
    }
}
