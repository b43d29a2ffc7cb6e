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
//! - the SSO logins waiting for the member's TOTP code (`oidc.require_totp`),
//!   each under the SHA-256 of a token only the browser's cookie holds, with
//!   the TOTP secret offered for enrollment (if any) sealed.
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

/// An SSO login waiting for the member's TOTP code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondStep {
    pub user: String,
    /// The secret offered for enrollment, opened, when the member had none.
    /// Never log it.
    pub new_secret: Option<String>,
    /// The login's audit detail (JSON text), for the record that ends it.
    pub login: String,
    pub created_at: i64,
    /// Codes refused so far.
    pub failures: i64,
}

impl Reader<'_> {
    /// The SSO login waiting under `token_hash`, if any.
    pub fn second_step(&self, token_hash: &str) -> Result<Option<SecondStep>, StoreError> {
        let row = self
            .conn
            .query_opt(
                r#"SELECT "user", new_secret, login, created_at, failures
                   FROM sso_second_steps WHERE token_hash = ?1"#,
                values![token_hash],
            )
            .and_then(|row| {
                row.map(|row| {
                    Ok::<_, DbError>((
                        row.get::<String>(0)?,
                        row.get::<Option<String>>(1)?,
                        row.get::<String>(2)?,
                        row.get::<i64>(3)?,
                        row.get::<i64>(4)?,
                    ))
                })
                .transpose()
            })
            .map_err(StoreError::db("read an SSO login's TOTP step"))?;
        let Some((user, sealed, login, created_at, failures)) = row else {
            return Ok(None);
        };
        let new_secret = sealed
            .map(|sealed| {
                self.secrets
                    .open(&sealed, token_hash)
                    .map_err(|source| StoreError::SecretOpen {
                        user: user.clone(),
                        source,
                    })
            })
            .transpose()?;
        Ok(Some(SecondStep {
            user,
            new_secret,
            login,
            created_at,
            failures,
        }))
    }

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

    /// Stores an SSO login waiting for its TOTP code (the offered secret
    /// sealed), and deletes those started before `prune_before`.
    pub fn put_second_step(
        &mut self,
        token_hash: &str,
        step: &SecondStep,
        prune_before: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM sso_second_steps WHERE created_at < ?1",
                values![prune_before],
            )
            .map_err(StoreError::db("prune SSO logins' TOTP steps"))?;
        let sealed = step
            .new_secret
            .as_deref()
            .map(|secret| {
                self.secrets
                    .seal(secret, token_hash)
                    .map_err(|source| StoreError::SecretSeal {
                        user: step.user.clone(),
                        source,
                    })
            })
            .transpose()?;
        self.conn
            .execute(
                r#"INSERT INTO sso_second_steps (token_hash, "user", new_secret, login, created_at, failures)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6)"#,
                values![
                    token_hash,
                    step.user.as_str(),
                    sealed,
                    step.login.as_str(),
                    step.created_at,
                    step.failures
                ],
            )
            .map_err(StoreError::db("store an SSO login's TOTP step"))?;
        Ok(())
    }

    /// Counts a refused code; at `max` refusals the step is deleted. Whether
    /// it is still there.
    pub fn fail_second_step(&mut self, token_hash: &str, max: i64) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "UPDATE sso_second_steps SET failures = failures + 1 WHERE token_hash = ?1",
                values![token_hash],
            )
            .map_err(StoreError::db("count a refused TOTP code"))?;
        let gone = self
            .conn
            .execute(
                "DELETE FROM sso_second_steps WHERE token_hash = ?1 AND failures >= ?2",
                values![token_hash, max],
            )
            .map_err(StoreError::db("end an SSO login's TOTP step"))?;
        Ok(gone == 0)
    }

    /// Deletes the step under `token_hash`; whether it was there (used once).
    pub fn take_second_step(&mut self, token_hash: &str) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "DELETE FROM sso_second_steps WHERE token_hash = ?1",
                values![token_hash],
            )
            .map(|n| n > 0)
            .map_err(StoreError::db("end an SSO login's TOTP step"))
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

    /// A TOTP step keeps its offered secret sealed, counts refused codes
    /// up to its limit, is used once, goes with its user, and old ones are
    /// pruned by the next.
    #[test]
    fn a_second_step_is_sealed_counted_and_used_once() {
        on_each_backend(|db, store| {
            add_user(&store, "alice");
            let step = |created_at| SecondStep {
                user: "alice".into(),
                new_secret: Some("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into()),
                login: r#"{"method":"oidc"}"#.into(),
                created_at,
                failures: 0,
            };
            let token = hash_token("step-token");
            store
                .write_blocking(|w| w.put_second_step(&token, &step(100), 0))
                .unwrap();
            let stored: Vec<String> = db.raw_column("SELECT new_secret FROM sso_second_steps");
            assert!(
                !stored[0].contains("JBSWY3DPEHPK3PXP"),
                "the offered secret is sealed: {stored:?}"
            );
            let read = store.read_blocking(|r| r.second_step(&token)).unwrap();
            assert_eq!(read, Some(step(100)));
            assert!(
                store
                    .write_blocking(|w| w.fail_second_step(&token, 3))
                    .unwrap()
            );
            assert!(
                store
                    .write_blocking(|w| w.fail_second_step(&token, 3))
                    .unwrap()
            );
            let read = store.read_blocking(|r| r.second_step(&token)).unwrap();
            assert_eq!(read.map(|s| s.failures), Some(2));
            assert!(
                !store
                    .write_blocking(|w| w.fail_second_step(&token, 3))
                    .unwrap(),
                "the third refusal ends it"
            );
            assert_eq!(
                store.read_blocking(|r| r.second_step(&token)).unwrap(),
                None
            );

            store
                .write_blocking(|w| w.put_second_step(&token, &step(100), 0))
                .unwrap();
            assert!(
                store
                    .write_blocking(|w| w.take_second_step(&token))
                    .unwrap()
            );
            assert!(
                !store
                    .write_blocking(|w| w.take_second_step(&token))
                    .unwrap(),
                "used once"
            );

            store
                .write_blocking(|w| w.put_second_step(&token, &step(100), 0))
                .unwrap();
            let later = hash_token("later");
            store
                .write_blocking(|w| w.put_second_step(&later, &step(300), 200))
                .unwrap();
            assert_eq!(
                store.read_blocking(|r| r.second_step(&token)).unwrap(),
                None,
                "pruned"
            );
            store.write_blocking(|w| w.delete_user("alice")).unwrap();
            assert_eq!(
                store.read_blocking(|r| r.second_step(&later)).unwrap(),
                None
            );
        });
    }
}
