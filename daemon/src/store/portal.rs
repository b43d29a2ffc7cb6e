//! What the portal keeps: login sessions and the last TOTP time step accepted
//! per user. A session is stored under the SHA-256 of its token (the raw
//! token exists only in the user's cookie), so a copy of the database does not
//! let anyone log in. Timeouts are the caller's policy: this module stores
//! times and answers queries.

use super::db::{DbError, values};
use super::{Reader, StoreError, Writer};

/// A portal session row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    pub user: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub source: String,
    pub method: LoginMethod,
}

/// How a portal session's login proved who it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMethod {
    /// Password (and TOTP), or enrollment.
    Password,
    /// The team's identity provider (`[oidc]`).
    Oidc,
}

impl LoginMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginMethod::Password => "password",
            LoginMethod::Oidc => "oidc",
        }
    }

    fn parse(text: &str) -> Result<LoginMethod, DbError> {
        match text {
            "password" => Ok(LoginMethod::Password),
            "oidc" => Ok(LoginMethod::Oidc),
            // The column's CHECK allows no other value.
            _ => Err(DbError::Type {
                column: 4,
                expected: "a login method",
                found: "another text",
            }),
        }
    }
}

impl Reader<'_> {
    /// The session stored under `token_hash`, if any.
    pub fn portal_session(&self, token_hash: &str) -> Result<Option<PortalSession>, StoreError> {
        self.conn
            .query_opt(
                r#"SELECT "user", created_at, last_seen, source, method FROM portal_sessions
                   WHERE token_hash = ?1"#,
                values![token_hash],
            )
            .and_then(|row| {
                row.map(|row| {
                    Ok::<_, DbError>(PortalSession {
                        user: row.get(0)?,
                        created_at: row.get(1)?,
                        last_seen: row.get(2)?,
                        source: row.get(3)?,
                        method: LoginMethod::parse(&row.get::<String>(4)?)?,
                    })
                })
                .transpose()
            })
            .map_err(StoreError::db("look up a portal session"))
    }

    /// The last TOTP time step accepted for `user` (`None`: never).
    pub fn totp_last_step(&self, user: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_opt(
                "SELECT totp_last_step FROM users WHERE name = ?1",
                values![user],
            )
            .and_then(|row| row.map(|row| row.get::<Option<i64>>(0)).transpose())
            .map(Option::flatten)
            .map_err(StoreError::db("read a user's last TOTP step"))
    }
}

impl Writer<'_> {
    /// Stores a new session. `token_hash` is the SHA-256 (hex) of the token.
    pub fn create_portal_session(
        &mut self,
        token_hash: &str,
        user: &str,
        now: i64,
        source: &str,
        method: LoginMethod,
    ) -> Result<(), StoreError> {
        self.require_user(user)?;
        self.conn
            .execute(
                r#"INSERT INTO portal_sessions (token_hash, "user", created_at, last_seen, source, method)
                   VALUES (?1, ?2, ?3, ?3, ?4, ?5)"#,
                values![token_hash, user, now, source, method.as_str()],
            )
            .map_err(StoreError::db("insert a portal session"))?;
        Ok(())
    }

    /// Moves a session's idle clock.
    pub fn touch_portal_session(&mut self, token_hash: &str, now: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE portal_sessions SET last_seen = ?2 WHERE token_hash = ?1",
                values![token_hash, now],
            )
            .map_err(StoreError::db("touch a portal session"))?;
        Ok(())
    }

    /// Ends a session; returns whether it existed.
    pub fn delete_portal_session(&mut self, token_hash: &str) -> Result<bool, StoreError> {
        let removed = self
            .conn
            .execute(
                "DELETE FROM portal_sessions WHERE token_hash = ?1",
                values![token_hash],
            )
            .map_err(StoreError::db("delete a portal session"))?;
        Ok(removed > 0)
    }

    /// Ends every session of `user` (a new enrollment resets the account);
    /// returns how many.
    pub fn delete_user_portal_sessions(&mut self, user: &str) -> Result<usize, StoreError> {
        self.conn
            .execute(
                r#"DELETE FROM portal_sessions WHERE "user" = ?1"#,
                values![user],
            )
            .map_err(StoreError::db("delete a user's portal sessions"))
    }

    /// Deletes sessions idle since before `idle_before` or created before
    /// `created_before`; returns how many.
    pub fn prune_portal_sessions(
        &mut self,
        idle_before: i64,
        created_before: i64,
    ) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM portal_sessions WHERE last_seen < ?1 OR created_at < ?2",
                values![idle_before, created_before],
            )
            .map_err(StoreError::db("prune portal sessions"))
    }

    /// Records the TOTP time step just accepted for `user`.
    pub fn set_totp_last_step(&mut self, user: &str, step: i64) -> Result<(), StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE users SET totp_last_step = ?2 WHERE name = ?1",
                values![user, step],
            )
            .map_err(StoreError::db("record a user's last TOTP step"))?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                what: "user",
                name: user.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::LoginMethod;
    use crate::store::fixtures::*;
    use crate::store::hash_token;

    #[test]
    fn sessions_round_trip_and_cascade_with_the_user() {
        on_each_backend(|db, store| {
            add_user(&store, "alice");
            let h = hash_token("session-1");
            store
                .write_blocking(|w| {
                    w.create_portal_session(&h, "alice", 100, "127.0.0.1", LoginMethod::Oidc)
                })
                .unwrap();
            store
                .write_blocking(|w| w.touch_portal_session(&h, 150))
                .unwrap();
            let s = store
                .read_blocking(|r| r.portal_session(&h))
                .unwrap()
                .unwrap();
            assert_eq!(
                (s.user.as_str(), s.created_at, s.last_seen, s.method),
                ("alice", 100, 150, LoginMethod::Oidc)
            );
            // Only the hash is stored.
            let raw: Vec<String> = db.raw_column("SELECT token_hash FROM portal_sessions");
            assert_eq!(raw, std::slice::from_ref(&h));
            assert_eq!(
                store
                    .write_blocking(|w| w.prune_portal_sessions(140, 0))
                    .unwrap(),
                0
            );
            assert_eq!(
                store
                    .write_blocking(|w| w.delete_user_portal_sessions("alice"))
                    .unwrap(),
                1
            );
            store
                .write_blocking(|w| {
                    w.create_portal_session(&h, "alice", 100, "127.0.0.1", LoginMethod::Oidc)
                })
                .unwrap();
            store.write_blocking(|w| w.delete_user("alice")).unwrap();
            assert!(
                store
                    .read_blocking(|r| r.portal_session(&h))
                    .unwrap()
                    .is_none()
            );
        });
    }

    #[test]
    fn totp_last_step_is_kept_per_user() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            assert_eq!(
                store.read_blocking(|r| r.totp_last_step("alice")).unwrap(),
                None
            );
            store
                .write_blocking(|w| w.set_totp_last_step("alice", 42))
                .unwrap();
            assert_eq!(
                store.read_blocking(|r| r.totp_last_step("alice")).unwrap(),
                Some(42)
            );
            assert!(
                store
                    .write_blocking(|w| w.set_totp_last_step("bob", 1))
                    .is_err()
            );
        });
    }
}
