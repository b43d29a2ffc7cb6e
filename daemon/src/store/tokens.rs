//! One-time enrollment tokens. Only a token's SHA-256 (hex) is stored, never
//! the token itself: the raw token is shown once to the admin and then exists
//! only in the enrollment link.
//!
//! A token expires, is single use, and is superseded when a newer token is
//! issued to the same user (older unused ones are deleted).

use super::db::{DbError, values};
use super::{Reader, StoreError, Writer};
use crate::audit::chain::sha256_hex;

/// The hash under which a raw token is stored and looked up.
pub fn hash_token(raw: &str) -> String {
    sha256_hex(raw.as_bytes())
}

impl Reader<'_> {
    /// The user an enrollment token belongs to, without using it. Errors like
    /// [`Writer::consume_enrollment_token`]: unknown, used, expired.
    pub fn enrollment_token_user(&self, token_hash: &str, now: i64) -> Result<String, StoreError> {
        let row = self
            .conn
            .query_opt(
                r#"SELECT "user", expires_at, used_at FROM enrollment_tokens WHERE token_hash = ?1"#,
                values![token_hash],
            )
            .map_err(StoreError::db("look up an enrollment token"))?
            .ok_or(StoreError::TokenNotFound)?;
        let decode = || -> Result<(String, i64, Option<i64>), DbError> {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        };
        let (user, expires_at, used_at) =
            decode().map_err(StoreError::db("read an enrollment token"))?;
        if let Some(used_at) = used_at {
            return Err(StoreError::TokenUsed { used_at });
        }
        if now >= expires_at {
            return Err(StoreError::TokenExpired {
                expired_at: expires_at,
            });
        }
        Ok(user)
    }
}

impl Writer<'_> {
    /// Stores a new token for `user`, valid until `expires_at`, and deletes
    /// the user's older unused tokens. `token_hash` must be [`hash_token`]'s
    /// output, never the raw token.
    pub fn create_enrollment_token(
        &mut self,
        user: &str,
        token_hash: &str,
        created_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        check_hash(token_hash)?;
        self.require_user(user)?;
        self.conn
            .execute(
                r#"DELETE FROM enrollment_tokens WHERE "user" = ?1 AND used_at IS NULL"#,
                values![user],
            )
            .map_err(StoreError::db("supersede older enrollment tokens"))?;
        self.conn
            .execute(
                r#"INSERT INTO enrollment_tokens (token_hash, "user", created_at, expires_at)
                   VALUES (?1, ?2, ?3, ?4)"#,
                values![token_hash, user, created_at, expires_at],
            )
            .map_err(StoreError::db("insert an enrollment token"))?;
        Ok(())
    }

    /// Deletes the user's unused tokens (a machine account never enrolls).
    pub fn delete_enrollment_tokens(&mut self, user: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                r#"DELETE FROM enrollment_tokens WHERE "user" = ?1 AND used_at IS NULL"#,
                values![user],
            )
            .map_err(StoreError::db("delete unused enrollment tokens"))?;
        Ok(())
    }

    /// Uses the token once: returns its user and marks it used. Errors tell
    /// an unknown token, a used one and an expired one apart.
    pub fn consume_enrollment_token(
        &mut self,
        token_hash: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        check_hash(token_hash)?;
        let user = self.enrollment_token_user(token_hash, now)?;
        self.conn
            .execute(
                "UPDATE enrollment_tokens SET used_at = ?2 WHERE token_hash = ?1",
                values![token_hash, now],
            )
            .map_err(StoreError::db("mark an enrollment token used"))?;
        Ok(user)
    }
}

fn check_hash(token_hash: &str) -> Result<(), StoreError> {
    let is_hex = token_hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if token_hash.len() == 64 && is_hex {
        Ok(())
    } else {
        Err(StoreError::InvalidTokenHash {
            len: token_hash.len(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::fixtures::*;

    #[test]
    fn single_use_and_expiry() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            let t = hash_token("tok-1");
            store
                .write_blocking(|w| w.create_enrollment_token("alice", &t, 100, 200))
                .unwrap();
            let err = store
                .write_blocking(|w| w.consume_enrollment_token(&t, 200))
                .unwrap_err();
            assert!(matches!(err, StoreError::TokenExpired { expired_at: 200 }));
            assert_eq!(
                store
                    .write_blocking(|w| w.consume_enrollment_token(&t, 199))
                    .unwrap(),
                "alice"
            );
            let err = store
                .write_blocking(|w| w.consume_enrollment_token(&t, 150))
                .unwrap_err();
            assert!(
                matches!(err, StoreError::TokenUsed { used_at: 199 }),
                "{err}"
            );
            let err = store
                .write_blocking(|w| w.consume_enrollment_token(&hash_token("other"), 150))
                .unwrap_err();
            assert!(matches!(err, StoreError::TokenNotFound));
        });
    }

    #[test]
    fn new_token_supersedes_unused_ones() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            add_user(&store, "bob");
            let (a1, a2, b1) = (hash_token("a1"), hash_token("a2"), hash_token("b1"));
            store
                .write_blocking(|w| {
                    w.create_enrollment_token("alice", &a1, 1, 100)?;
                    w.create_enrollment_token("bob", &b1, 1, 100)?;
                    w.create_enrollment_token("alice", &a2, 2, 100)
                })
                .unwrap();
            let err = store
                .write_blocking(|w| w.consume_enrollment_token(&a1, 3))
                .unwrap_err();
            assert!(matches!(err, StoreError::TokenNotFound));
            assert_eq!(
                store
                    .write_blocking(|w| w.consume_enrollment_token(&a2, 3))
                    .unwrap(),
                "alice"
            );
            assert_eq!(
                store
                    .write_blocking(|w| w.consume_enrollment_token(&b1, 3))
                    .unwrap(),
                "bob"
            );
        });
    }

    #[test]
    fn raw_token_is_never_stored() {
        on_each_backend(|db, store| {
            add_user(&store, "alice");
            let raw_token = "SECRET-RAW-TOKEN-VALUE";
            let err = store
                .write_blocking(|w| w.create_enrollment_token("alice", raw_token, 1, 100))
                .unwrap_err();
            assert!(matches!(err, StoreError::InvalidTokenHash { len: 22 }));
            store
                .write_blocking(|w| {
                    w.create_enrollment_token("alice", &hash_token(raw_token), 1, 100)
                })
                .unwrap();
            let stored: Vec<String> = db.raw_column("SELECT token_hash FROM enrollment_tokens");
            assert_eq!(stored, [hash_token(raw_token)]);
            drop(store);
            // Not in the database file, nor its WAL.
            let state = db.dir.path().join("state");
            for entry in std::fs::read_dir(state).unwrap() {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                assert!(
                    !bytes
                        .windows(raw_token.len())
                        .any(|w| w == raw_token.as_bytes())
                );
            }
        });
    }
}
