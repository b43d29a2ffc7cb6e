//! What sign-in with the team's identity provider keeps (`[oidc]`):
//! - the link of each member to one provider identity (`iss` + `sub`): a
//!   returning member is found by it, never by a mutable claim such as their
//!   email or user name;
//! - the logins under way between the redirect to the provider and its
//!   callback. Each is stored under the SHA-256 of its `state`, bound to the
//!   SHA-256 of the pre-login cookie of the browser that started it, and
//!   taken (deleted) by the first callback that names it, whatever the
//!   outcome: a `state` is used once. Its PKCE verifier is sealed under the
//!   secrets key; the raw `state` and cookie exist only in the browser.
//!
//! Rules (who may link, how old a pending login may be) are the caller's.

use super::db::{DbError, values};
use super::{Reader, StoreError, Writer};

/// A member's provider identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoIdentity {
    pub issuer: String,
    pub subject: String,
    pub user: String,
    pub linked_at: i64,
}

/// A login under way, as its callback finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// SHA-256 (hex) of the pre-login cookie it is bound to.
    pub binding_hash: String,
    pub nonce: String,
    /// The PKCE verifier, opened. Never log it.
    pub verifier: String,
    pub created_at: i64,
}

/// What taking a pending login found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakenLogin {
    Found(PendingLogin),
    /// No login under way has this `state` (never, or already used).
    Unknown,
    /// It was started by another browser (a different pre-login cookie);
    /// it is gone now all the same.
    OtherBrowser,
    /// Started before `not_before`; gone now.
    Expired,
}

impl Reader<'_> {
    /// The member linked to `issuer` + `subject`, if any.
    pub fn user_by_sso_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        self.conn
            .query_opt(
                r#"SELECT "user" FROM sso_identities WHERE issuer = ?1 AND subject = ?2"#,
                values![issuer, subject],
            )
            .and_then(|row| row.map(|row| row.get::<String>(0)).transpose())
            .map_err(StoreError::db("look up an SSO identity"))
    }

    /// The identity `user` is linked to, if any.
    pub fn sso_identity_of(&self, user: &str) -> Result<Option<SsoIdentity>, StoreError> {
        self.conn
            .query_opt(
                r#"SELECT issuer, subject, "user", linked_at FROM sso_identities WHERE "user" = ?1"#,
                values![user],
            )
            .and_then(|row| {
                row.map(|row| {
                    Ok::<_, DbError>(SsoIdentity {
                        issuer: row.get(0)?,
                        subject: row.get(1)?,
                        user: row.get(2)?,
                        linked_at: row.get(3)?,
                    })
                })
                .transpose()
            })
            .map_err(StoreError::db("read a user's SSO identity"))
    }
}

impl Writer<'_> {
    /// Links `user` to `issuer` + `subject`. `Conflict` when that identity
    /// is another member's, or `user` is linked to another identity.
    pub fn link_sso_identity(
        &mut self,
        user: &str,
        issuer: &str,
        subject: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.require_user(user)?;
        if let Some(owner) = self.user_by_sso_identity(issuer, subject)? {
            if owner == user {
                return Ok(());
            }
            return Err(StoreError::Conflict {
                what: "SSO identity (linked to another user)",
                name: subject.to_string(),
            });
        }
        if self.sso_identity_of(user)?.is_some() {
            return Err(StoreError::Conflict {
                what: "user (linked to another SSO identity)",
                name: user.to_string(),
            });
        }
        self.conn
            .execute(
                r#"INSERT INTO sso_identities (issuer, subject, "user", linked_at)
                   VALUES (?1, ?2, ?3, ?4)"#,
                values![issuer, subject, user, now],
            )
            .map_err(StoreError::db("link an SSO identity"))?;
        Ok(())
    }

    /// Removes `user`'s link; whether there was one.
    pub fn unlink_sso_identity(&mut self, user: &str) -> Result<bool, StoreError> {
        self.conn
            .execute(
                r#"DELETE FROM sso_identities WHERE "user" = ?1"#,
                values![user],
            )
            .map(|n| n > 0)
            .map_err(StoreError::db("unlink an SSO identity"))
    }

    /// Stores a login under way (its verifier sealed).
    pub fn put_pending_login(
        &mut self,
        state_hash: &str,
        login: &PendingLogin,
    ) -> Result<(), StoreError> {
        let sealed = self
            .secrets
            .seal(&login.verifier, state_hash)
            .map_err(|source| StoreError::SecretSeal {
                user: "(a pending SSO login)".into(),
                source,
            })?;
        self.conn
            .execute(
                "INSERT INTO sso_pending (state_hash, binding_hash, nonce, verifier, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                values![
                    state_hash,
                    login.binding_hash.as_str(),
                    login.nonce.as_str(),
                    sealed,
                    login.created_at
                ],
            )
            .map_err(StoreError::db("store a pending SSO login"))?;
        Ok(())
    }

    /// Takes (deletes) the login under way stored under `state_hash`, for
    /// the browser whose pre-login cookie hashes to `binding_hash`, if it
    /// started at `not_before` or later.
    pub fn take_pending_login(
        &mut self,
        state_hash: &str,
        binding_hash: &str,
        not_before: i64,
    ) -> Result<TakenLogin, StoreError> {
        let row = self
            .conn
            .query_opt(
                "DELETE FROM sso_pending WHERE state_hash = ?1
                 RETURNING binding_hash, nonce, verifier, created_at",
                values![state_hash],
            )
            .and_then(|row| {
                row.map(|row| {
                    Ok::<_, DbError>((
                        row.get::<String>(0)?,
                        row.get::<String>(1)?,
                        row.get::<String>(2)?,
                        row.get::<i64>(3)?,
                    ))
                })
                .transpose()
            })
            .map_err(StoreError::db("take a pending SSO login"))?;
        let Some((bound_to, nonce, sealed, created_at)) = row else {
            return Ok(TakenLogin::Unknown);
        };
        if bound_to != binding_hash {
            return Ok(TakenLogin::OtherBrowser);
        }
        if created_at < not_before {
            return Ok(TakenLogin::Expired);
        }
        let verifier =
            self.secrets
                .open(&sealed, state_hash)
                .map_err(|source| StoreError::SecretOpen {
                    user: "(a pending SSO login)".into(),
                    source,
                })?;
        Ok(TakenLogin::Found(PendingLogin {
            binding_hash: bound_to,
            nonce,
            verifier,
            created_at,
        }))
    }

    /// Deletes the logins under way started before `before`; how many.
    pub fn prune_pending_logins(&mut self, before: i64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM sso_pending WHERE created_at < ?1",
                values![before],
            )
            .map_err(StoreError::db("prune pending SSO logins"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::fixtures::*;
    use crate::store::hash_token;

    const ISSUER: &str = "https://idp.example.org";

    /// A member is found by issuer and subject only; one identity per
    /// member and one member per identity; the link goes with the user.
    #[test]
    fn identities_link_once_each_way_and_go_with_the_user() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            add_user(&store, "bob");
            store
                .write_blocking(|w| w.link_sso_identity("alice", ISSUER, "sub-a", 10))
                .unwrap();
            // Linking again is a no-op.
            store
                .write_blocking(|w| w.link_sso_identity("alice", ISSUER, "sub-a", 11))
                .unwrap();
            let found = store
                .read_blocking(|r| r.user_by_sso_identity(ISSUER, "sub-a"))
                .unwrap();
            assert_eq!(found.as_deref(), Some("alice"));
            let other_issuer = store
                .read_blocking(|r| r.user_by_sso_identity("https://rogue.example", "sub-a"))
                .unwrap();
            assert_eq!(other_issuer, None, "the subject alone finds nobody");
            for (user, subject) in [("bob", "sub-a"), ("alice", "sub-b")] {
                let err = store
                    .write_blocking(|w| w.link_sso_identity(user, ISSUER, subject, 12))
                    .unwrap_err();
                assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
            }
            let identity = store
                .read_blocking(|r| r.sso_identity_of("alice"))
                .unwrap()
                .unwrap();
            assert_eq!(
                (identity.subject.as_str(), identity.linked_at),
                ("sub-a", 10)
            );
            store.write_blocking(|w| w.delete_user("alice")).unwrap();
            assert_eq!(
                store
                    .read_blocking(|r| r.user_by_sso_identity(ISSUER, "sub-a"))
                    .unwrap(),
                None
            );
            store
                .write_blocking(|w| w.link_sso_identity("bob", ISSUER, "sub-a", 13))
                .unwrap();
            assert!(
                store
                    .write_blocking(|w| w.unlink_sso_identity("bob"))
                    .unwrap()
            );
            assert!(
                !store
                    .write_blocking(|w| w.unlink_sso_identity("bob"))
                    .unwrap()
            );
        });
    }

    /// A pending login is taken once, only by the browser that started it
    /// and only while fresh; its verifier is stored sealed.
    #[test]
    fn a_pending_login_is_used_once_by_its_own_browser_while_fresh() {
        on_each_backend(|db, store| {
            let login = |created_at| PendingLogin {
                binding_hash: hash_token("pre-login-cookie"),
                nonce: "nonce-1".into(),
                verifier: "verifier-secret-1".into(),
                created_at,
            };
            let state = hash_token("state-1");
            store
                .write_blocking(|w| w.put_pending_login(&state, &login(100)))
                .unwrap();
            let stored: Vec<String> = db.raw_column("SELECT verifier FROM sso_pending");
            assert!(
                !stored[0].contains("verifier-secret-1"),
                "the verifier is sealed: {stored:?}"
            );
            let cookie = hash_token("pre-login-cookie");
            let taken = store
                .write_blocking(|w| w.take_pending_login(&state, &cookie, 50))
                .unwrap();
            assert_eq!(taken, TakenLogin::Found(login(100)));
            let again = store
                .write_blocking(|w| w.take_pending_login(&state, &cookie, 50))
                .unwrap();
            assert_eq!(again, TakenLogin::Unknown, "a state is used once");

            store
                .write_blocking(|w| w.put_pending_login(&state, &login(100)))
                .unwrap();
            let stranger = store
                .write_blocking(|w| w.take_pending_login(&state, &hash_token("other"), 50))
                .unwrap();
            assert_eq!(stranger, TakenLogin::OtherBrowser);
            assert_eq!(
                store
                    .write_blocking(|w| w.take_pending_login(&state, &cookie, 50))
                    .unwrap(),
                TakenLogin::Unknown,
                "another browser's attempt used it up"
            );

            store
                .write_blocking(|w| w.put_pending_login(&state, &login(100)))
                .unwrap();
            assert_eq!(
                store
                    .write_blocking(|w| w.take_pending_login(&state, &cookie, 101))
                    .unwrap(),
                TakenLogin::Expired
            );
            store
                .write_blocking(|w| w.put_pending_login(&hash_token("s2"), &login(100)))
                .unwrap();
            store
                .write_blocking(|w| w.put_pending_login(&hash_token("s3"), &login(200)))
                .unwrap();
            assert_eq!(
                store
                    .write_blocking(|w| w.prune_pending_logins(150))
                    .unwrap(),
                1
            );
        });
    }
}
