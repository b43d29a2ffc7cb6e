//! [`StoreError`]: every way the store (and the audit log's files) can fail,
//! each variant with the context a log line or an admin needs, keeping its
//! cause. [`StoreError::api_code`] and [`StoreError::http_status`] map it to the
//! admin API at the edge.

use std::path::PathBuf;

use gatehouse_config::api::ErrorCode;

use super::db::DbError;

/// Errors of the store (SQLite or PostgreSQL) and of the audit log's mirror
/// and head files.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created or secured.
    #[error("cannot create state directory {path}: {source}")]
    CreateStateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The database file could not be created, secured or opened.
    #[error("cannot open database {path}: {source}")]
    OpenDatabase {
        path: PathBuf,
        source: rusqlite::Error,
    },

    /// Creating the database file or fixing its permissions failed.
    #[error("cannot {op} database file {path}: {source}")]
    DatabaseFile {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The shared database's `[store]` settings are unusable.
    #[error(transparent)]
    PostgresConfig(#[from] super::postgres::PgConfigError),

    /// The shared database could not be reached at start-up.
    #[error("cannot connect to the PostgreSQL store {target}: {source}")]
    Connect { target: String, source: DbError },

    /// The database was written by a newer accessd.
    #[error(
        "database {db} has schema version {found}, but this accessd only knows versions up to \
         {known}; run a newer accessd or restore a backup"
    )]
    SchemaTooNew { db: String, found: i64, known: i64 },

    /// A schema migration failed; the database stays at its old version.
    #[error("database migration to schema version {version} failed: {source}")]
    Migrate { version: usize, source: DbError },

    /// A query failed. `context` names the operation.
    #[error("database error while trying to {context}: {source}")]
    Database {
        context: &'static str,
        source: DbError,
    },

    /// The database cannot be reached (the shared server is down or cut
    /// off, or too slow): nothing was done; the same request works once it
    /// is back.
    #[error(
        "the database cannot be reached, so nothing was done (store_unavailable; try again once it is back): could not {context}: {source}"
    )]
    Unavailable {
        context: &'static str,
        source: DbError,
    },

    /// Inserting an audit record failed, so the action it records is refused.
    #[error("cannot write the audit record, so the action was refused: {source}")]
    AuditWrite { source: DbError },

    /// An audit event's `detail` cannot be encoded so that it hashes the same
    /// after a round trip through the database.
    #[error("audit detail of event {kind:?} cannot be stored canonically: {reason}")]
    AuditDetail { kind: String, reason: String },

    /// JSON encoding or decoding of an audit record failed.
    #[error("cannot encode audit record: {source}")]
    AuditEncode { source: serde_json::Error },

    /// The audit checkpoint could not be signed.
    #[error("cannot sign the audit checkpoint: {source}")]
    AuditSign {
        source: crate::keys::audit::SignatureError,
    },

    /// No such user, device, SSH key, ...
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    /// It exists already.
    #[error("{what} {name:?} already exists")]
    Conflict { what: &'static str, name: String },

    /// Every usable address of the pool is taken.
    /// The user has as many devices as `vpn.max_devices_per_user` allows.
    #[error(
        "user {user:?} has {limit} device(s), the most vpn.max_devices_per_user allows; revoke one first"
    )]
    DeviceLimit { user: String, limit: u32 },

    /// The action needs an enabled user.
    #[error("user {name:?} is disabled; `accessctl user enable {name}` first")]
    UserDisabled { name: String },

    #[error("the VPN address pool {pool} is exhausted: no free address left")]
    PoolExhausted { pool: ipnet::IpNet },

    /// No enrollment token has this hash (never issued, superseded, or its
    /// user was deleted).
    #[error("enrollment token is not valid")]
    TokenNotFound,

    /// The enrollment token was used already.
    #[error("enrollment token was already used (at unix time {used_at})")]
    TokenUsed { used_at: i64 },

    /// The enrollment token has expired.
    #[error("enrollment token expired (at unix time {expired_at})")]
    TokenExpired { expired_at: i64 },

    /// A token hash is not 64 lowercase hex digits, so it is probably a raw
    /// token (which must never be stored).
    #[error(
        "enrollment token hash must be 64 lowercase hex digits (a SHA-256), got {len} characters"
    )]
    InvalidTokenHash { len: usize },

    /// A stored value cannot be decoded (the database was edited by hand or
    /// is corrupt).
    #[error("stored {what} {value:?} is invalid: {reason}")]
    Corrupt {
        what: &'static str,
        value: String,
        reason: String,
    },

    /// A TOTP secret could not be sealed (no randomness).
    #[error("cannot seal the TOTP secret of user {user:?}: {source}")]
    SecretSeal {
        user: String,
        source: crate::keys::secrets::SealError,
    },

    /// A stored TOTP secret does not open with this gateway's secrets key.
    #[error(
        "the stored TOTP secret of user {user:?} does not open: {source}. It was sealed with another secrets key, or changed behind the gateway's back (a sealed secret only opens in its own user's row)"
    )]
    SecretOpen {
        user: String,
        source: crate::keys::secrets::SealError,
    },

    /// No stored TOTP secret opens: the key is not the one that sealed them.
    #[error(
        "the TOTP secrets in {db} were sealed with another secrets key: none of the {sealed} stored opens with this gateway's key ({fingerprint}). Give accessd the key that sealed them (the state directory's secrets.key, gateway.secrets_key_file, or with [aws] the SSM parameter /gatehouse/<name>/secrets-key, from the node or the backup the database came from); if that key is lost, the TOTP secrets are too, and members must enroll TOTP again"
    )]
    WrongSecretsKey {
        db: String,
        sealed: usize,
        fingerprint: String,
    },

    /// A stored VPN address cannot be parsed.
    #[error("stored device address {value:?} is invalid: {source}")]
    CorruptAddress {
        value: String,
        source: std::net::AddrParseError,
    },

    /// The audit head file (the anchor) is gone while the log has records:
    /// a cut tail could not be seen, so the store does not open.
    #[error(
        "the audit anchor {path} is missing, but the audit log has {last_seq} record(s): records cut from its end could not be detected. Restore the file from a backup, or compare the log with a copy shipped elsewhere (the audit mirror) and re-anchor with `accessd audit-anchor` (accessd stopped)"
    )]
    AnchorMissing { path: PathBuf, last_seq: u64 },

    /// A node anchoring on an existing log cannot verify its first keyed
    /// record: another secrets key wrote it (or that record was altered).
    #[error(
        "the audit log in {db} was written under another audit key: its first keyed record ({seq}) does not verify with this gateway's (altered, or this gateway's secrets key differs from the one that wrote the log). Gateways that share a store must share the secrets key: give each the same gateway.secrets_key_file (or use [aws], which keeps it in SSM)"
    )]
    AuditKeyMismatch { db: String, seq: u64 },

    /// On the shared store, the database's audit chain stopped continuing
    /// from this node's head file: records were cut or rewritten behind the
    /// gateway's back. Nothing more is written until accessd restarts.
    #[error(
        "the audit chain in the database no longer continues from this node's audit head ({head}): records were removed or rewritten behind the gateway's back, so nothing more is written here (audit_chain_broken). Run `accessctl audit verify` to see where, restore the log, then restart accessd"
    )]
    AuditChainBroken { head: PathBuf },

    /// The audit mirror or head file beside the database failed.
    #[error(transparent)]
    Mirror(#[from] crate::audit::mirror::MirrorError),

    /// The blocking task that ran the store operation panicked or was
    /// cancelled.
    #[error("store task failed: {source}")]
    Task { source: tokio::task::JoinError },

    /// The store's concurrency gate was closed (the store is shutting down).
    #[error("store is shutting down: {source}")]
    Closed { source: tokio::sync::AcquireError },
}

impl StoreError {
    /// The admin API error code for this error.
    pub fn api_code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } | Self::TokenNotFound => ErrorCode::NotFound,
            Self::Conflict { .. }
            | Self::UserDisabled { .. }
            | Self::DeviceLimit { .. }
            | Self::PoolExhausted { .. } => ErrorCode::Conflict,
            Self::TokenUsed { .. } | Self::TokenExpired { .. } => ErrorCode::InvalidValue,
            Self::InvalidTokenHash { .. } | Self::AuditDetail { .. } => ErrorCode::InvalidValue,
            Self::Connect { .. } | Self::Unavailable { .. } => ErrorCode::StoreUnavailable,
            Self::Database { source, .. } | Self::AuditWrite { source }
                if source.is_unavailable() =>
            {
                ErrorCode::StoreUnavailable
            }
            Self::AuditWrite { .. } | Self::AuditChainBroken { .. } => ErrorCode::AuditUnavailable,
            Self::CreateStateDir { .. }
            | Self::PostgresConfig(_)
            | Self::OpenDatabase { .. }
            | Self::DatabaseFile { .. }
            | Self::SchemaTooNew { .. }
            | Self::Migrate { .. }
            | Self::Database { .. }
            | Self::AuditEncode { .. }
            | Self::AuditSign { .. }
            | Self::Corrupt { .. }
            | Self::CorruptAddress { .. }
            | Self::SecretSeal { .. }
            | Self::SecretOpen { .. }
            | Self::WrongSecretsKey { .. }
            | Self::Mirror(_)
            | Self::AnchorMissing { .. }
            | Self::AuditKeyMismatch { .. }
            | Self::Task { .. }
            | Self::Closed { .. } => ErrorCode::Internal,
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        // Derived from the code (whose match is total, so a new variant is
        // classified there), with the two statuses a code does not decide.
        match (self, self.api_code()) {
            (Self::TokenUsed { .. } | Self::TokenExpired { .. }, _) => 410,
            (Self::Closed { .. }, _)
            | (_, ErrorCode::AuditUnavailable | ErrorCode::StoreUnavailable) => 503,
            (_, ErrorCode::NotFound) => 404,
            (_, ErrorCode::Conflict) => 409,
            (_, ErrorCode::InvalidValue | ErrorCode::BadRequest | ErrorCode::InvalidName) => 400,
            (_, ErrorCode::ConfigInvalid | ErrorCode::Internal) => 500,
            // Never a store error; a status all the same.
            (_, ErrorCode::AwsNotConfigured) => 409,
            (_, ErrorCode::AwsFailed) => 502,
        }
    }

    /// A closure for `map_err` that wraps a database error with `context`.
    pub(crate) fn db<E: Into<DbError>>(context: &'static str) -> impl FnOnce(E) -> StoreError {
        move |source| {
            let source = source.into();
            if source.is_unavailable() {
                StoreError::Unavailable { context, source }
            } else {
                StoreError::Database { context, source }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_api_codes_and_statuses() {
        let not_found = StoreError::NotFound {
            what: "user",
            name: "alice".into(),
        };
        assert_eq!(not_found.api_code(), ErrorCode::NotFound);
        assert_eq!(not_found.http_status(), 404);
        assert_eq!(not_found.to_string(), "user \"alice\" not found");

        let full = StoreError::PoolExhausted {
            pool: "10.0.0.0/30".parse().unwrap(),
        };
        assert_eq!(full.api_code(), ErrorCode::Conflict);
        assert!(full.to_string().contains("10.0.0.0/30"));
    }

    #[test]
    fn http_statuses() {
        let name = || "x".to_string();
        let cases = [
            (
                StoreError::NotFound {
                    what: "user",
                    name: name(),
                },
                404,
            ),
            (StoreError::TokenNotFound, 404),
            (
                StoreError::Conflict {
                    what: "user",
                    name: name(),
                },
                409,
            ),
            (
                StoreError::PoolExhausted {
                    pool: "10.0.0.0/30".parse().unwrap(),
                },
                409,
            ),
            (StoreError::TokenUsed { used_at: 1 }, 410),
            (StoreError::TokenExpired { expired_at: 1 }, 410),
            (StoreError::InvalidTokenHash { len: 3 }, 400),
            (
                StoreError::AuditDetail {
                    kind: name(),
                    reason: name(),
                },
                400,
            ),
            (
                StoreError::AuditWrite {
                    source: DbError::NoRow,
                },
                503,
            ),
            (
                StoreError::Corrupt {
                    what: "user",
                    value: name(),
                    reason: name(),
                },
                500,
            ),
            (
                StoreError::db("write")(DbError::NoConnection {
                    reason: "connection refused".into(),
                }),
                503,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(err.http_status(), status, "{err}");
            if status == 503 && !matches!(err, StoreError::AuditWrite { .. }) {
                assert_eq!(err.api_code(), ErrorCode::StoreUnavailable, "{err}");
                assert!(err.to_string().contains("store_unavailable"), "{err}");
            }
        }
    }
}
