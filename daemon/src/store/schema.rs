//! The database schema as a list of versioned migrations, applied in order in
//! one transaction. A database newer than this code knows is refused, never
//! "downgraded".
//!
//! Each step exists twice, once per database, and both lists have the same
//! length: [`MIGRATIONS`] for SQLite (tracked with `PRAGMA user_version`;
//! tables are `STRICT`, so a value of the wrong type is an error instead of
//! being stored silently) and [`POSTGRES_MIGRATIONS`] for the shared store
//! (tracked in `gatehouse_schema`; integers are `BIGINT`, and the migration
//! holds an advisory lock so two nodes starting at once migrate once).
//!
//! Rules for changing the schema: never edit a step that has shipped; append
//! a new one to both lists.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Schema steps; step `i` moves the database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    V1,
    V2,
    V3_PORTAL,
    V4_ENDPOINTS,
    V5_HA,
    V6_SSO,
    V7_SSO_TOTP,
    V8_SSH_CERTS,
    V9_HA_INSTALLATIONS,
    V10_AUDIT_CURSORS,
    V11_AUDIT_FACETS,
    V12_AUDIT_USE_TIMES,
    V13_SSH_HOST_CERTS,
];

/// The schema version this code writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Brings the database at `path` up to [`current_version`].
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StoreError::db("read the schema version"))?;
    let Some(start) = steps_to_run(found, &path.display().to_string())? else {
        return Ok(());
    };
    let tx = conn
        .transaction()
        .map_err(StoreError::db("begin the schema migration"))?;
    for (index, step) in MIGRATIONS.iter().enumerate().skip(start) {
        let version = index + 1;
        tx.execute_batch(step)
            .and_then(|()| tx.pragma_update(None, "user_version", version as i64))
            .map_err(|source| StoreError::Migrate {
                version,
                source: source.into(),
            })?;
    }
    tx.commit().map_err(|source| StoreError::Migrate {
        version: MIGRATIONS.len(),
        source: source.into(),
    })?;
    tracing::info!(
        from = found,
        to = current_version(),
        "database schema migrated"
    );
    Ok(())
}

/// Brings the shared PostgreSQL database (`db` names it in messages) up to
/// [`current_version`], under an advisory lock.
pub fn migrate_postgres(client: &mut postgres::Client, db: &str) -> Result<(), StoreError> {
    let mut tx = client
        .transaction()
        .map_err(StoreError::db("begin the schema migration"))?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(26472); \
         CREATE TABLE IF NOT EXISTS gatehouse_schema (version BIGINT NOT NULL); \
         INSERT INTO gatehouse_schema (version) \
             SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM gatehouse_schema);",
    )
    .map_err(StoreError::db("begin the schema migration"))?;
    let found: i64 = tx
        .query_one("SELECT version FROM gatehouse_schema", &[])
        .and_then(|row| row.try_get(0))
        .map_err(StoreError::db("read the schema version"))?;
    let Some(start) = steps_to_run(found, db)? else {
        return Ok(());
    };
    for (index, step) in POSTGRES_MIGRATIONS.iter().enumerate().skip(start) {
        let version = index + 1;
        tx.batch_execute(step)
            .and_then(|()| {
                tx.execute(
                    "UPDATE gatehouse_schema SET version = $1",
                    &[&(version as i64)],
                )
                .map(|_| ())
            })
            .map_err(|source| StoreError::Migrate {
                version,
                source: source.into(),
            })?;
    }
    tx.commit().map_err(|source| StoreError::Migrate {
        version: POSTGRES_MIGRATIONS.len(),
        source: source.into(),
    })?;
    tracing::info!(
        from = found,
        to = current_version(),
        db,
        "database schema migrated"
    );
    Ok(())
}

/// The index of the first step to run, `None` when the database is current;
/// a newer database is refused.
fn steps_to_run(found: i64, db: &str) -> Result<Option<usize>, StoreError> {
    let known = current_version();
    if found > known {
        return Err(StoreError::SchemaTooNew {
            db: db.to_string(),
            found,
            known,
        });
    }
    Ok((found < known).then(|| usize::try_from(found).unwrap_or(0)))
}

/// The PostgreSQL steps, one per SQLite step (the same tables and columns).
pub const POSTGRES_MIGRATIONS: &[&str] = &[
    PG_V1,
    PG_V2,
    PG_V3_PORTAL,
    PG_V4_ENDPOINTS,
    PG_V5_HA,
    PG_V6_SSO,
    PG_V7_SSO_TOTP,
    PG_V8_SSH_CERTS,
    PG_V9_HA_INSTALLATIONS,
    PG_V10_AUDIT_CURSORS,
    PG_V11_AUDIT_FACETS,
    PG_V12_AUDIT_USE_TIMES,
    PG_V13_SSH_HOST_CERTS,
];

/// [`V1`] on PostgreSQL. Audit rows are append-only for every role that does
/// not own the table: row triggers refuse UPDATE and DELETE, a statement
/// trigger refuses TRUNCATE (which row triggers do not see), and the table's
/// privileges are revoked from PUBLIC.
const PG_V1: &str = r#"
CREATE TABLE users (
    name          TEXT PRIMARY KEY NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'active', 'disabled')),
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_seen     BIGINT,
    password_hash TEXT,
    totp_secret   TEXT
);

CREATE TABLE user_groups (
    "user"     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    group_name TEXT NOT NULL,
    PRIMARY KEY ("user", group_name)
);
CREATE INDEX user_groups_by_group ON user_groups (group_name);

CREATE TABLE ssh_keys (
    "user"      TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    algorithm   TEXT NOT NULL,
    comment     TEXT NOT NULL,
    openssh     TEXT NOT NULL,
    added_at    BIGINT NOT NULL,
    PRIMARY KEY ("user", fingerprint)
);
CREATE INDEX ssh_keys_by_fingerprint ON ssh_keys (fingerprint);

CREATE TABLE devices (
    "user"          TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    public_key      TEXT NOT NULL UNIQUE,
    address         TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    last_activation BIGINT,
    last_handshake  BIGINT,
    PRIMARY KEY ("user", name)
);

CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL CHECK (length(token_hash) = 64),
    "user"     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX enrollment_tokens_by_user ON enrollment_tokens ("user");

CREATE TABLE audit_log (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq       BIGINT NOT NULL UNIQUE,
    time      TEXT NOT NULL,
    time_unix BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    source    TEXT NOT NULL,
    target    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (time_unix);
CREATE INDEX audit_log_by_actor ON audit_log (actor);
CREATE INDEX audit_log_by_target ON audit_log (target);

CREATE FUNCTION audit_log_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are immutable';
END
$$;
CREATE TRIGGER audit_log_immutable_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_immutable();
CREATE TRIGGER audit_log_immutable_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_immutable();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
"#;

/// [`V2`] on PostgreSQL.
const PG_V2: &str = r#"
ALTER TABLE users ADD COLUMN no_login BIGINT NOT NULL DEFAULT 0 CHECK (no_login IN (0, 1));
ALTER TABLE users ADD COLUMN vpn_login_at BIGINT;
"#;

/// [`V3_PORTAL`] on PostgreSQL.
const PG_V3_PORTAL: &str = r#"
ALTER TABLE users ADD COLUMN totp_last_step BIGINT;

CREATE TABLE portal_sessions (
    token_hash TEXT PRIMARY KEY NOT NULL CHECK (length(token_hash) = 64),
    "user"     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    source     TEXT NOT NULL
);
CREATE INDEX portal_sessions_by_user ON portal_sessions ("user");
"#;

/// [`V8_SSH_CERTS`] on PostgreSQL.
const PG_V8_SSH_CERTS: &str = r#"
CREATE TABLE ssh_certificates (
    serial          BIGINT PRIMARY KEY NOT NULL CHECK (serial > 0),
    "user"          TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    principals      TEXT NOT NULL,
    valid_after     BIGINT NOT NULL,
    valid_before    BIGINT NOT NULL,
    issued_at       BIGINT NOT NULL,
    issued_by       TEXT NOT NULL,
    removed         BIGINT NOT NULL DEFAULT 0 CHECK (removed IN (0, 1))
);
CREATE INDEX ssh_certificates_by_user ON ssh_certificates ("user");
"#;

/// [`V9_HA_INSTALLATIONS`] on PostgreSQL.
const PG_V9_HA_INSTALLATIONS: &str = r#"
ALTER TABLE ha_lease ADD COLUMN holder_installation TEXT;
ALTER TABLE ha_nodes ADD COLUMN installation TEXT;
ALTER TABLE ha_nodes ADD COLUMN addresses TEXT NOT NULL DEFAULT '[]';
"#;

/// [`V11_AUDIT_FACETS`] on PostgreSQL. Address keys compare byte by byte
/// (`COLLATE "C"`), as SQLite compares them.
const PG_V11_AUDIT_FACETS: &str = r#"
CREATE TABLE audit_facets (
    seq        BIGINT PRIMARY KEY NOT NULL,
    time_unix  BIGINT NOT NULL,
    first_unix BIGINT NOT NULL,
    last_unix  BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    class      TEXT NOT NULL,
    via        TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    "user"     TEXT,
    device     TEXT,
    source_key TEXT COLLATE "C",
    host       TEXT,
    host_key   TEXT COLLATE "C",
    port       BIGINT,
    bytes_up   BIGINT NOT NULL,
    bytes_down BIGINT NOT NULL
);
CREATE INDEX audit_facets_by_time ON audit_facets (time_unix);
CREATE INDEX audit_facets_by_host ON audit_facets (host_key, time_unix);
CREATE INDEX audit_facets_by_source ON audit_facets (source_key, time_unix);
CREATE INDEX audit_facets_by_user ON audit_facets ("user", time_unix);
CREATE INDEX audit_facets_by_kind ON audit_facets (kind, time_unix);
CREATE INDEX audit_facets_by_day ON audit_facets ((time_unix / 86400), class);
CREATE INDEX audit_facets_host_use ON audit_facets
    (host_key, host, "user", via, device, port, outcome, first_unix, last_unix, bytes_up, bytes_down);
CREATE INDEX audit_facets_user_use ON audit_facets
    ("user", host_key, host, via, device, port, outcome, first_unix, last_unix, bytes_up, bytes_down);
"#;

/// [`V10_AUDIT_CURSORS`] on PostgreSQL.
const PG_V10_AUDIT_CURSORS: &str = r#"
CREATE TABLE audit_cursors (
    name         TEXT PRIMARY KEY NOT NULL,
    seq          BIGINT NOT NULL CHECK (seq >= 0),
    updated_unix BIGINT NOT NULL
);
"#;

/// [`V7_SSO_TOTP`] on PostgreSQL.
const PG_V7_SSO_TOTP: &str = r#"
CREATE TABLE sso_second_steps (
    token_hash TEXT PRIMARY KEY NOT NULL CHECK (length(token_hash) = 64),
    "user"     TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    new_secret TEXT,
    login      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    failures   BIGINT NOT NULL DEFAULT 0
);
"#;

/// [`V6_SSO`] on PostgreSQL.
const PG_V6_SSO: &str = r#"
CREATE TABLE sso_identities (
    issuer    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    "user"    TEXT NOT NULL UNIQUE REFERENCES users (name) ON DELETE CASCADE,
    linked_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);

CREATE TABLE sso_pending (
    state_hash   TEXT PRIMARY KEY NOT NULL CHECK (length(state_hash) = 64),
    binding_hash TEXT NOT NULL CHECK (length(binding_hash) = 64),
    nonce        TEXT NOT NULL,
    verifier     TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

ALTER TABLE portal_sessions ADD COLUMN method TEXT NOT NULL DEFAULT 'password'
    CHECK (method IN ('password', 'oidc'));
"#;

/// [`V5_HA`] on PostgreSQL.
const PG_V5_HA: &str = r#"
CREATE TABLE ha_lease (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    holder      TEXT,
    generation  BIGINT NOT NULL,
    acquired_ms BIGINT,
    renewed_ms  BIGINT,
    released_ms BIGINT,
    expires_ms  BIGINT NOT NULL
);
INSERT INTO ha_lease (id, holder, generation, expires_ms) VALUES (1, NULL, 0, 0);

CREATE TABLE ha_nodes (
    node        TEXT PRIMARY KEY NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('active', 'standby', 'stopped')),
    generation  BIGINT NOT NULL,
    seen_ms     BIGINT NOT NULL,
    detail      TEXT NOT NULL
);
"#;

/// [`V4_ENDPOINTS`] on PostgreSQL.
const PG_V4_ENDPOINTS: &str = r#"
ALTER TABLE devices ADD COLUMN last_endpoint TEXT;
"#;

/// The active/standby pair (`[ha]`, which needs the shared store; the
/// tables exist in SQLite too so both schemas stay the same): one lease row
/// (who is or was last active, its fencing generation, until when, and when
/// it was released if it was, in the database's clock, as unix
/// milliseconds), and one row per node for `accessctl ha status`.
const V5_HA: &str = r#"
CREATE TABLE ha_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT,
    generation  INTEGER NOT NULL,
    acquired_ms INTEGER,
    renewed_ms  INTEGER,
    released_ms INTEGER,
    expires_ms  INTEGER NOT NULL
) STRICT;
INSERT INTO ha_lease (id, holder, generation, expires_ms) VALUES (1, NULL, 0, 0);

CREATE TABLE ha_nodes (
    node        TEXT PRIMARY KEY NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('active', 'standby', 'stopped')),
    generation  INTEGER NOT NULL,
    seen_ms     INTEGER NOT NULL,
    detail      TEXT NOT NULL
) STRICT;
"#;

/// Sign-in with the team's identity provider (`[oidc]`):
/// - each member is linked to at most one provider identity, found by the
///   issuer and the subject (`iss` + `sub`), never by a mutable claim;
/// - the logins under way between the redirect to the provider and its
///   callback, each under the SHA-256 of its `state` and used once: the
///   SHA-256 of the pre-login cookie it is bound to, its `nonce`, and its
///   PKCE verifier sealed under the secrets key;
/// - how each portal session was opened.
const V6_SSO: &str = r#"
CREATE TABLE sso_identities (
    issuer    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    user      TEXT NOT NULL UNIQUE REFERENCES users (name) ON DELETE CASCADE,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject)
) STRICT;

CREATE TABLE sso_pending (
    state_hash   TEXT PRIMARY KEY NOT NULL CHECK (length(state_hash) = 64),
    binding_hash TEXT NOT NULL CHECK (length(binding_hash) = 64),
    nonce        TEXT NOT NULL,
    verifier     TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;

ALTER TABLE portal_sessions ADD COLUMN method TEXT NOT NULL DEFAULT 'password'
    CHECK (method IN ('password', 'oidc'));
"#;

/// The SSH certificates the user CA issued (`ssh.certificates`), one row
/// each under its serial: whose (no foreign key: a removed member's
/// certificates stay listed, `removed`, for the KRL until they expire),
/// for which key, its principals (JSON), its window, and who asked.
const V8_SSH_CERTS: &str = r#"
CREATE TABLE ssh_certificates (
    serial          INTEGER PRIMARY KEY NOT NULL CHECK (serial > 0),
    user            TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    principals      TEXT NOT NULL,
    valid_after     INTEGER NOT NULL,
    valid_before    INTEGER NOT NULL,
    issued_at       INTEGER NOT NULL,
    issued_by       TEXT NOT NULL,
    removed         INTEGER NOT NULL DEFAULT 0 CHECK (removed IN (0, 1))
) STRICT;
CREATE INDEX ssh_certificates_by_user ON ssh_certificates (user);
"#;

/// Which installation holds the lease and reports under each node name
/// (`ha/installation.rs`: two nodes given one `ha.node` are told apart),
/// and each node's own addresses (JSON), which every node's SSH
/// certificates list in `source-address`, so they keep working after a
/// failover.
const V9_HA_INSTALLATIONS: &str = r#"
ALTER TABLE ha_lease ADD COLUMN holder_installation TEXT;
ALTER TABLE ha_nodes ADD COLUMN installation TEXT;
ALTER TABLE ha_nodes ADD COLUMN addresses TEXT NOT NULL DEFAULT '[]';
"#;

/// The audit log's review index (`store::audit_facets`): per record, the
/// user it concerns, how they came, whether it went through, the host and
/// port reached and the bytes, so reviews filter and summarise in SQL.
/// Derived from the records (not chained); filled for older records when
/// the store opens. The two covering `*_use` indexes hold the summaries'
/// groups in order, so one page of a summary by host or user reads only
/// its own groups; `by_day` does the same for counts per day.
const V11_AUDIT_FACETS: &str = r#"
CREATE TABLE audit_facets (
    seq        INTEGER PRIMARY KEY NOT NULL,
    time_unix  INTEGER NOT NULL,
    first_unix INTEGER NOT NULL,
    last_unix  INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    class      TEXT NOT NULL,
    via        TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    user       TEXT,
    device     TEXT,
    source_key TEXT,
    host       TEXT,
    host_key   TEXT,
    port       INTEGER,
    bytes_up   INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_facets_by_time ON audit_facets (time_unix);
CREATE INDEX audit_facets_by_host ON audit_facets (host_key, time_unix);
CREATE INDEX audit_facets_by_source ON audit_facets (source_key, time_unix);
CREATE INDEX audit_facets_by_user ON audit_facets (user, time_unix);
CREATE INDEX audit_facets_by_kind ON audit_facets (kind, time_unix);
CREATE INDEX audit_facets_by_day ON audit_facets ((time_unix / 86400), class);
CREATE INDEX audit_facets_host_use ON audit_facets
    (host_key, host, user, via, device, port, outcome, first_unix, last_unix, bytes_up, bytes_down);
CREATE INDEX audit_facets_user_use ON audit_facets
    (user, host_key, host, via, device, port, outcome, first_unix, last_unix, bytes_up, bytes_down);
"#;

/// The two covering `*_use` indexes of [`V11_AUDIT_FACETS`] gain the
/// record's time, last, so a summary by host or user over a period
/// (`--since 7d`) is answered from the index alone; without it each row
/// was read from the table for its time (a million lookups on a big log).
const V12_AUDIT_USE_TIMES: &str = r#"
DROP INDEX audit_facets_host_use;
DROP INDEX audit_facets_user_use;
CREATE INDEX audit_facets_host_use ON audit_facets
    (host_key, host, user, via, device, port, outcome, first_unix, last_unix, bytes_up, bytes_down,
     time_unix);
CREATE INDEX audit_facets_user_use ON audit_facets
    (user, host_key, host, via, device, port, outcome, first_unix, last_unix, bytes_up, bytes_down,
     time_unix);
"#;

/// [`V12_AUDIT_USE_TIMES`] on PostgreSQL.
const PG_V12_AUDIT_USE_TIMES: &str = r#"
DROP INDEX audit_facets_host_use;
DROP INDEX audit_facets_user_use;
CREATE INDEX audit_facets_host_use ON audit_facets
    (host_key, host, "user", via, device, port, outcome, first_unix, last_unix, bytes_up, bytes_down,
     time_unix);
CREATE INDEX audit_facets_user_use ON audit_facets
    ("user", host_key, host, via, device, port, outcome, first_unix, last_unix, bytes_up, bytes_down,
     time_unix);
"#;

/// The private hosts' certificates the host CA signed, one row each under
/// its serial: the certified key (its fingerprint and public line, for
/// `@revoked`), its principals (JSON), its window, who
/// asked, and when and by whom it was revoked (the host KRL lists the
/// revoked ones until they expire).
const V13_SSH_HOST_CERTS: &str = r#"
CREATE TABLE ssh_host_certificates (
    serial          INTEGER PRIMARY KEY NOT NULL CHECK (serial > 0),
    key_fingerprint TEXT NOT NULL,
    public_key      TEXT NOT NULL,
    principals      TEXT NOT NULL,
    valid_after     INTEGER NOT NULL,
    valid_before    INTEGER NOT NULL,
    issued_at       INTEGER NOT NULL,
    issued_by       TEXT NOT NULL,
    revoked_at      INTEGER,
    revoked_by      TEXT
) STRICT;
CREATE INDEX ssh_host_certificates_by_expiry ON ssh_host_certificates (valid_before);
"#;

/// [`V13_SSH_HOST_CERTS`] on PostgreSQL.
const PG_V13_SSH_HOST_CERTS: &str = r#"
CREATE TABLE ssh_host_certificates (
    serial          BIGINT PRIMARY KEY NOT NULL CHECK (serial > 0),
    key_fingerprint TEXT NOT NULL,
    public_key      TEXT NOT NULL,
    principals      TEXT NOT NULL,
    valid_after     BIGINT NOT NULL,
    valid_before    BIGINT NOT NULL,
    issued_at       BIGINT NOT NULL,
    issued_by       TEXT NOT NULL,
    revoked_at      BIGINT,
    revoked_by      TEXT
);
CREATE INDEX ssh_host_certificates_by_expiry ON ssh_host_certificates (valid_before);
"#;

/// How far each exporter of the audit log got (`syslog`, later `s3`): the
/// seq of the last record its receiver is known to have, so a restart, or
/// the other node of a pair taking over, goes on from there. Only ever
/// moved forward (see `store::audit_cursors`).
const V10_AUDIT_CURSORS: &str = r#"
CREATE TABLE audit_cursors (
    name         TEXT PRIMARY KEY NOT NULL,
    seq          INTEGER NOT NULL CHECK (seq >= 0),
    updated_unix INTEGER NOT NULL
) STRICT;
"#;

/// The TOTP step of SSO logins (`oidc.require_totp`): a login the provider
/// and the access service accepted waits here for the member's code, under
/// the SHA-256 of a token that only the browser's cookie holds, with the
/// login's audit detail (JSON), the TOTP secret offered when the member has
/// none yet (sealed under the secrets key), and how many codes failed.
const V7_SSO_TOTP: &str = r#"
CREATE TABLE sso_second_steps (
    token_hash TEXT PRIMARY KEY NOT NULL CHECK (length(token_hash) = 64),
    user       TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    new_secret TEXT,
    login      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    failures   INTEGER NOT NULL DEFAULT 0
) STRICT;
"#;

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
            "INSERT INTO sso_identities (issuer, subject, user, linked_at) \
             VALUES ('https://idp.example.org', 'sub-1', 'bob', 10)",
            [],
        )
        .unwrap();
        let session = |token: char, method: &str| {
            conn.execute(
                &format!(
                    "INSERT INTO portal_sessions (token_hash, user, created_at, last_seen, source{}) \
                     VALUES (?1, 'bob', 1, 1, 'x'{})",
                    if method.is_empty() { "" } else { ", method" },
                    if method.is_empty() { String::new() } else { format!(", '{method}'") }
                ),
                [token.to_string().repeat(64)],
            )
        };
        session('a', "").unwrap();
        session('b', "oidc").unwrap();
        assert!(session('c', "magic").is_err(), "only the two methods");
        let methods: Vec<String> = conn
            .prepare("SELECT method FROM portal_sessions ORDER BY token_hash")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            methods,
            ["password", "oidc"],
            "a session is a password one by default"
        );
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

    #[test]
    fn postgres_migrates_once_and_its_audit_rows_are_append_only() {
        use crate::store::fixtures::TestStore;
        let Some(db) = TestStore::postgres() else {
            return;
        };
        drop(db.open());
        drop(db.open());
        let version: Vec<i64> = db.raw_column("SELECT version FROM gatehouse_schema");
        assert_eq!(version, [current_version()]);
        db.raw_batch(
            "INSERT INTO audit_log (seq, time, time_unix, kind, actor, source, target, detail, \
             prev_hash, hash) VALUES (1, 't', 0, 'k', 'a', 's', 't', 'null', 'p', 'h')",
        );
        for sql in [
            "UPDATE audit_log SET kind = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ] {
            let err = db.raw_try_batch(sql).unwrap_err();
            assert!(err.contains("audit records are immutable"), "{sql}: {err}");
        }
        assert_eq!(db.raw_column::<i64>("SELECT count(*) FROM audit_log"), [1]);
    }

    #[test]
    fn postgres_refuses_a_newer_database() {
        use crate::store::Store;
        use crate::store::fixtures::TestStore;
        let Some(db) = TestStore::postgres() else {
            return;
        };
        drop(db.open());
        db.raw_batch(&format!(
            "UPDATE gatehouse_schema SET version = {}",
            current_version() + 1
        ));
        let err = Store::open(&db.opts).err().unwrap();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
        assert!(err.to_string().contains("postgresql://127.0.0.1:"), "{err}");
    }

    #[test]
    fn both_databases_have_every_step() {
        assert_eq!(MIGRATIONS.len(), POSTGRES_MIGRATIONS.len());
    }
}
