//! Users and their SSH public keys: rows, queries and mutations. Deleting a
//! user cascades to their keys, devices and enrollment tokens (foreign keys
//! with `ON DELETE CASCADE`).
//!
//! A user's TOTP secret is stored sealed with the secrets key
//! ([`crate::keys::secrets`]), bound to the user's name; callers see it
//! opened. A row that does not open is an error, never a missing secret.
//!
//! Names are validated by the caller (`gatehouse_config::names`); this module
//! stores what it is given.

use std::collections::BTreeMap;

use super::db::{Conn, DbError, Row, Value, values};
use gatehouse_config::api::UserState;

use super::{Reader, StoreError, Writer};
use crate::keys::secrets::{SEALED_PREFIX, SecretsKey};

/// A user row. `Debug` never prints the password hash or TOTP secret.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub state: UserState,
    /// Sorted, no duplicates.
    pub groups: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_seen: Option<i64>,
    /// argon2id PHC string, set by the portal.
    pub password_hash: Option<String>,
    /// Base32, opened (the column holds it sealed).
    pub totp_secret: Option<String>,
    /// A machine that cannot log in to the portal: its devices stay live
    /// while the user is enabled, whatever `vpn.require_login` says.
    pub no_login: bool,
    /// The last portal login that (re)activated the user's devices; cleared
    /// when that VPN session expires.
    pub vpn_login_at: Option<i64>,
}

impl User {
    /// True when the account has an expiry and `now` has reached it.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<secret>");
        f.debug_struct("User")
            .field("name", &self.name)
            .field("state", &self.state)
            .field("groups", &self.groups)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_seen", &self.last_seen)
            .field("password_hash", &redact(&self.password_hash))
            .field("totp_secret", &redact(&self.totp_secret))
            .field("no_login", &self.no_login)
            .field("vpn_login_at", &self.vpn_login_at)
            .finish()
    }
}

/// An SSH public key registered to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKey {
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// e.g. `ssh-ed25519`.
    pub algorithm: String,
    pub comment: String,
    /// The normalized public key line: `algorithm base64 comment`.
    pub openssh: String,
    pub added_at: i64,
}

/// What [`Writer::create_user`] needs. The user starts `Pending`.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub groups: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// See [`User::no_login`].
    pub no_login: bool,
}

impl Reader<'_> {
    /// The user called `name`, if any.
    pub fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let row = self
            .conn
            .query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                values![name],
            )
            .map_err(StoreError::db("read a user"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut user = user_from_row(&row, self.secrets)?;
        user.groups = self.groups_of(name)?;
        Ok(Some(user))
    }

    /// All users, sorted by name.
    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let rows = self
            .conn
            .query(
                r#"SELECT "user", group_name FROM user_groups ORDER BY "user", group_name"#,
                &[],
            )
            .map_err(StoreError::db("list user groups"))?;
        for row in rows {
            let user: String = row.get(0).map_err(StoreError::db("list user groups"))?;
            let group: String = row.get(1).map_err(StoreError::db("list user groups"))?;
            groups.entry(user).or_default().push(group);
        }
        let rows = self
            .conn
            .query(
                &format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"),
                &[],
            )
            .map_err(StoreError::db("list users"))?;
        let mut users = Vec::with_capacity(rows.len());
        for row in rows {
            let mut user = user_from_row(&row, self.secrets)?;
            user.groups = groups.remove(&user.name).unwrap_or_default();
            users.push(user);
        }
        Ok(users)
    }

    /// The SSH keys of `user`, oldest first. `NotFound` for an unknown user.
    pub fn ssh_keys(&self, user: &str) -> Result<Vec<SshKey>, StoreError> {
        self.require_user(user)?;
        let keys = self.query_keys(
            &format!(
                r#"SELECT "user", {KEY_COLUMNS} FROM ssh_keys WHERE "user" = ?1 ORDER BY added_at, fingerprint"#
            ),
            values![user],
        )?;
        Ok(keys.into_iter().map(|(_, key)| key).collect())
    }

    /// Every registered SSH key with its user, sorted by user.
    pub fn all_ssh_keys(&self) -> Result<Vec<(String, SshKey)>, StoreError> {
        self.query_keys(
            &format!(
                r#"SELECT "user", {KEY_COLUMNS} FROM ssh_keys ORDER BY "user", added_at, fingerprint"#
            ),
            &[],
        )
    }

    fn query_keys(&self, sql: &str, params: &[Value]) -> Result<Vec<(String, SshKey)>, StoreError> {
        self.conn
            .query(sql, params)
            .and_then(|rows| rows.iter().map(key_from_row).collect())
            .map_err(StoreError::db("list SSH keys"))
    }

    /// `NotFound` unless `name` exists.
    pub(super) fn require_user(&self, name: &str) -> Result<(), StoreError> {
        let exists: bool = self
            .conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)",
                values![name],
            )
            .and_then(|row| row.get(0))
            .map_err(StoreError::db("look up a user"))?;
        if exists { Ok(()) } else { Err(not_found(name)) }
    }

    fn groups_of(&self, name: &str) -> Result<Vec<String>, StoreError> {
        self.conn
            .query(
                r#"SELECT group_name FROM user_groups WHERE "user" = ?1 ORDER BY group_name"#,
                values![name],
            )
            .and_then(|rows| rows.iter().map(|row| row.get(0)).collect())
            .map_err(StoreError::db("read a user's groups"))
    }

    /// The user called `name`; `NotFound` when there is none.
    pub fn existing_user(&self, name: &str) -> Result<User, StoreError> {
        self.user(name)?.ok_or_else(|| not_found(name))
    }
}

impl Writer<'_> {
    /// Creates a `Pending` user. `Conflict` when the name is taken.
    pub fn create_user(&mut self, new: NewUser) -> Result<User, StoreError> {
        if self.user(&new.name)?.is_some() {
            return Err(StoreError::Conflict {
                what: "user",
                name: new.name,
            });
        }
        self.conn
            .execute(
                "INSERT INTO users (name, state, created_at, expires_at, no_login) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                values![
                    &new.name,
                    UserState::Pending.as_str(),
                    new.created_at,
                    new.expires_at,
                    new.no_login
                ],
            )
            .map_err(StoreError::db("insert a user"))?;
        self.replace_groups(&new.name, new.groups)?;
        self.existing_user(&new.name)
    }

    /// Sets a user's state and returns the updated row.
    pub fn set_user_state(&mut self, name: &str, state: UserState) -> Result<User, StoreError> {
        self.update_user(
            name,
            "UPDATE users SET state = ?2 WHERE name = ?1",
            state.as_str(),
        )?;
        self.existing_user(name)
    }

    /// Replaces a user's groups (sorted, duplicates dropped).
    pub fn set_user_groups(&mut self, name: &str, groups: Vec<String>) -> Result<User, StoreError> {
        self.require_user(name)?;
        self.replace_groups(name, groups)?;
        self.existing_user(name)
    }

    /// Deletes a user with their keys, devices and tokens; returns the user as
    /// it was.
    pub fn delete_user(&mut self, name: &str) -> Result<User, StoreError> {
        let user = self.existing_user(name)?;
        self.conn
            .execute("DELETE FROM users WHERE name = ?1", values![name])
            .map_err(StoreError::db("delete a user"))?;
        // Their certificates stay listed for the KRL until they expire, and
        // never pass again, even for a new user of the same name.
        self.conn
            .execute(
                r#"UPDATE ssh_certificates SET removed = 1 WHERE "user" = ?1"#,
                values![name],
            )
            .map_err(StoreError::db("mark a removed user's certificates"))?;
        Ok(user)
    }

    /// Records that the user was seen (portal login, SSH session) at `now`.
    pub fn touch_last_seen(&mut self, name: &str, now: i64) -> Result<(), StoreError> {
        self.update_user(name, "UPDATE users SET last_seen = ?2 WHERE name = ?1", now)
    }

    /// Marks the user as a machine that cannot log in (see [`User::no_login`]).
    pub fn set_no_login(&mut self, name: &str, no_login: bool) -> Result<User, StoreError> {
        self.update_user(
            name,
            "UPDATE users SET no_login = ?2 WHERE name = ?1",
            no_login,
        )?;
        self.existing_user(name)
    }

    /// A successful portal login at `now`: the user's devices are live in the
    /// data plane for `vpn.session_lifetime` from now, and each records this
    /// as its last activation.
    pub fn activate_user_devices(&mut self, name: &str, now: i64) -> Result<(), StoreError> {
        self.update_user(
            name,
            "UPDATE users SET vpn_login_at = ?2 WHERE name = ?1",
            now,
        )?;
        self.conn
            .execute(
                r#"UPDATE devices SET last_activation = ?2 WHERE "user" = ?1"#,
                values![name, now],
            )
            .map_err(StoreError::db("activate a user's devices"))?;
        Ok(())
    }

    /// Ends the VPN session that the login at `login_at` opened (its lifetime
    /// has passed). False when the user has logged in again since, or is gone.
    pub fn end_vpn_session(&mut self, name: &str, login_at: i64) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE users SET vpn_login_at = NULL WHERE name = ?1 AND vpn_login_at = ?2",
                values![name, login_at],
            )
            .map_err(StoreError::db("end a VPN session"))?;
        Ok(changed == 1)
    }

    /// Sets or clears the argon2id PHC hash of the user's password.
    pub fn set_password_hash(
        &mut self,
        name: &str,
        hash: Option<String>,
    ) -> Result<(), StoreError> {
        self.update_user(
            name,
            "UPDATE users SET password_hash = ?2 WHERE name = ?1",
            hash,
        )
    }

    /// Sets (sealed) or clears the user's TOTP secret.
    pub fn set_totp_secret(
        &mut self,
        name: &str,
        secret: Option<String>,
    ) -> Result<(), StoreError> {
        let sealed =
            match secret {
                Some(secret) => Some(self.secrets.seal(&secret, name).map_err(|source| {
                    StoreError::SecretSeal {
                        user: name.to_string(),
                        source,
                    }
                })?),
                None => None,
            };
        self.update_user(
            name,
            "UPDATE users SET totp_secret = ?2 WHERE name = ?1",
            sealed,
        )
    }

    /// Seals every TOTP secret still stored in plaintext (from before
    /// sealing) and returns how many; first checks that the sealed ones
    /// open with this key, so nothing is sealed under a wrong one.
    pub(super) fn seal_plaintext_totp_secrets(&mut self) -> Result<usize, StoreError> {
        let plaintext = check_totp_secrets(&self.conn, self.secrets, &self.paths.db_name)?;
        for (name, secret) in &plaintext {
            let sealed =
                self.secrets
                    .seal(secret, name)
                    .map_err(|source| StoreError::SecretSeal {
                        user: name.clone(),
                        source,
                    })?;
            self.conn
                .execute(
                    "UPDATE users SET totp_secret = ?2 WHERE name = ?1 AND totp_secret = ?3",
                    values![name, sealed, secret],
                )
                .map_err(StoreError::db("seal a TOTP secret"))?;
        }
        Ok(plaintext.len())
    }

    /// Registers an SSH key to `user`. `Conflict` when that user already has a
    /// key with this fingerprint.
    pub fn add_ssh_key(&mut self, user: &str, key: SshKey) -> Result<(), StoreError> {
        self.require_user(user)?;
        let taken: bool = self
            .conn
            .query_one(
                r#"SELECT EXISTS (SELECT 1 FROM ssh_keys WHERE "user" = ?1 AND fingerprint = ?2)"#,
                values![user, &key.fingerprint],
            )
            .and_then(|row| row.get(0))
            .map_err(StoreError::db("look up an SSH key"))?;
        if taken {
            return Err(StoreError::Conflict {
                what: "SSH key",
                name: key.fingerprint,
            });
        }
        self.conn
            .execute(
                r#"INSERT INTO ssh_keys ("user", fingerprint, algorithm, comment, openssh, added_at)
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6)"#,
                values![
                    user,
                    key.fingerprint,
                    key.algorithm,
                    key.comment,
                    key.openssh,
                    key.added_at
                ],
            )
            .map_err(StoreError::db("insert an SSH key"))?;
        Ok(())
    }

    /// Removes the key with `fingerprint` from `user`; returns it.
    pub fn remove_ssh_key(&mut self, user: &str, fingerprint: &str) -> Result<SshKey, StoreError> {
        self.require_user(user)?;
        let (_, key) = self
            .query_keys(
                &format!(
                    r#"SELECT "user", {KEY_COLUMNS} FROM ssh_keys WHERE "user" = ?1 AND fingerprint = ?2"#
                ),
                values![user, fingerprint],
            )?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound {
                what: "SSH key",
                name: fingerprint.to_string(),
            })?;
        self.conn
            .execute(
                r#"DELETE FROM ssh_keys WHERE "user" = ?1 AND fingerprint = ?2"#,
                values![user, fingerprint],
            )
            .map_err(StoreError::db("delete an SSH key"))?;
        Ok(key)
    }

    fn replace_groups(&mut self, name: &str, mut groups: Vec<String>) -> Result<(), StoreError> {
        groups.sort();
        groups.dedup();
        self.conn
            .execute(
                r#"DELETE FROM user_groups WHERE "user" = ?1"#,
                values![name],
            )
            .map_err(StoreError::db("clear a user's groups"))?;
        for group in &groups {
            self.conn
                .execute(
                    r#"INSERT INTO user_groups ("user", group_name) VALUES (?1, ?2)"#,
                    values![name, group],
                )
                .map_err(StoreError::db("set a user's groups"))?;
        }
        Ok(())
    }

    fn update_user(
        &mut self,
        name: &str,
        sql: &str,
        value: impl Into<Value>,
    ) -> Result<(), StoreError> {
        let changed = self
            .conn
            .execute(sql, &[Value::from(name), value.into()])
            .map_err(StoreError::db("update a user"))?;
        if changed == 0 {
            return Err(not_found(name));
        }
        Ok(())
    }
}

const USER_COLUMNS: &str = "name, state, created_at, expires_at, last_seen, password_hash, \
                            totp_secret, no_login, vpn_login_at";

const KEY_COLUMNS: &str = "fingerprint, algorithm, comment, openssh, added_at";

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        what: "user",
        name: name.to_string(),
    }
}

/// Checks every stored TOTP secret of `db` against `key`: a sealed one must
/// open (`WrongSecretsKey` when none does, `SecretOpen` naming the first
/// user whose does not). Returns the ones still in plaintext, by user.
pub(super) fn check_totp_secrets(
    conn: &Conn<'_>,
    key: &SecretsKey,
    db: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    const CONTEXT: &str = "read the TOTP secrets";
    let rows = conn
        .query(
            "SELECT name, totp_secret FROM users WHERE totp_secret IS NOT NULL ORDER BY name",
            &[],
        )
        .map_err(StoreError::db(CONTEXT))?;
    let mut plaintext = Vec::new();
    let (mut sealed, mut refused) = (0, None);
    for row in rows {
        let name: String = row.get(0).map_err(StoreError::db(CONTEXT))?;
        let secret: String = row.get(1).map_err(StoreError::db(CONTEXT))?;
        if !secret.starts_with(SEALED_PREFIX) {
            plaintext.push((name, secret));
            continue;
        }
        sealed += 1;
        if let Err(source) = key.open(&secret, &name) {
            refused.get_or_insert((name, source, 0)).2 += 1;
        }
    }
    match refused {
        None => Ok(plaintext),
        Some((_, _, count)) if count == sealed => Err(StoreError::WrongSecretsKey {
            db: db.to_string(),
            sealed,
            fingerprint: key.fingerprint(),
        }),
        Some((user, source, _)) => Err(StoreError::SecretOpen { user, source }),
    }
}

/// Decodes a `USER_COLUMNS` row, opening its TOTP secret with `key`; a
/// state string this code does not know (the CHECK constraint makes that a
/// hand-edited database) is `Corrupt`.
fn user_from_row(row: &Row, key: &SecretsKey) -> Result<User, StoreError> {
    let decode = || -> Result<(String, User), DbError> {
        Ok((
            row.get(1)?,
            User {
                name: row.get(0)?,
                state: UserState::Pending,
                groups: Vec::new(),
                created_at: row.get(2)?,
                expires_at: row.get(3)?,
                last_seen: row.get(4)?,
                password_hash: row.get(5)?,
                totp_secret: row.get(6)?,
                no_login: row.get(7)?,
                vpn_login_at: row.get(8)?,
            },
        ))
    };
    let (state, user) = decode().map_err(StoreError::db("read a user"))?;
    let totp_secret = match &user.totp_secret {
        Some(sealed) => {
            Some(
                key.open(sealed, &user.name)
                    .map_err(|source| StoreError::SecretOpen {
                        user: user.name.clone(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    Ok(User {
        state: parse_state(&state)?,
        totp_secret,
        ..user
    })
}

fn parse_state(text: &str) -> Result<UserState, StoreError> {
    [UserState::Pending, UserState::Active, UserState::Disabled]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| StoreError::Corrupt {
            what: "user state",
            value: text.to_string(),
            reason: "not pending, active or disabled".into(),
        })
}

fn key_from_row(row: &Row) -> Result<(String, SshKey), DbError> {
    Ok((
        row.get(0)?,
        SshKey {
            fingerprint: row.get(1)?,
            algorithm: row.get(2)?,
            comment: row.get(3)?,
            openssh: row.get(4)?,
            added_at: row.get(5)?,
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys::secrets::SecretsKey;
    use crate::store::fixtures::*;
    use crate::store::{NewDevice, Store, hash_token};

    fn key(fingerprint: &str) -> SshKey {
        SshKey {
            fingerprint: fingerprint.into(),
            algorithm: "ssh-ed25519".into(),
            comment: "c".into(),
            openssh: "ssh-ed25519 AAAA c".into(),
            added_at: 1,
        }
    }

    #[test]
    fn a_login_activates_devices_and_only_that_session_can_be_ended() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            let laptop = NewDevice {
                user: "alice".into(),
                name: "laptop".into(),
                public_key: "pk".into(),
                created_at: 1,
            };
            let pool = "10.200.0.0/24".parse().unwrap();
            store
                .write_blocking(|w| w.create_device(laptop, pool, &[]))
                .unwrap();
            store
                .write_blocking(|w| w.activate_user_devices("alice", 1_000))
                .unwrap();
            let (user, devices) = store
                .read_blocking(|r| Ok((r.user("alice")?.unwrap(), r.devices(Some("alice"))?)))
                .unwrap();
            assert_eq!(user.vpn_login_at, Some(1_000));
            assert_eq!(devices[0].last_activation, Some(1_000));

            store
                .write_blocking(|w| w.activate_user_devices("alice", 2_000))
                .unwrap();
            let stale = store
                .write_blocking(|w| w.end_vpn_session("alice", 1_000))
                .unwrap();
            assert!(!stale, "a newer login keeps its session");
            let ended = store
                .write_blocking(|w| w.end_vpn_session("alice", 2_000))
                .unwrap();
            assert!(ended);
            let user = store.read_blocking(|r| r.user("alice")).unwrap().unwrap();
            assert_eq!(user.vpn_login_at, None);

            let machine = store
                .write_blocking(|w| w.set_no_login("alice", true))
                .unwrap();
            assert!(machine.no_login);
            let missing = store.write_blocking(|w| w.activate_user_devices("bob", 1));
            assert!(matches!(missing, Err(StoreError::NotFound { .. })));
        });
    }

    #[test]
    fn create_and_read_users() {
        on_each_backend(|_db, store| {
            let alice = store
                .write_blocking(|w| {
                    w.create_user(NewUser {
                        name: "alice".into(),
                        groups: vec!["b".into(), "a".into(), "b".into()],
                        created_at: 5,
                        expires_at: Some(10),
                        no_login: false,
                    })
                })
                .unwrap();
            assert_eq!(alice.state, UserState::Pending);
            assert_eq!(alice.groups, ["a", "b"]);
            assert!(!alice.is_expired(9));
            assert!(alice.is_expired(10));
            add_user(&store, "carol");
            add_user(&store, "bob");
            let names: Vec<String> = store
                .read_blocking(|r| r.users())
                .unwrap()
                .into_iter()
                .map(|u| u.name)
                .collect();
            assert_eq!(names, ["alice", "bob", "carol"]);
            let err = store
                .write_blocking(|w| w.create_user(new_user("bob")))
                .unwrap_err();
            assert!(matches!(err, StoreError::Conflict { what: "user", .. }));
            assert_eq!(err.to_string(), "user \"bob\" already exists");
        });
    }

    #[test]
    fn updates_and_not_found() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            let user = store
                .write_blocking(|w| {
                    w.set_user_state("alice", UserState::Disabled)?;
                    w.set_user_groups("alice", vec!["ops".into()])?;
                    w.touch_last_seen("alice", 77)?;
                    w.set_password_hash(
                        "alice",
                        Some("$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA".into()),
                    )?;
                    w.set_totp_secret("alice", Some("JBSWY3DPEHPK3PXP".into()))?;
                    Ok(w.user("alice")?.unwrap())
                })
                .unwrap();
            assert_eq!(user.state, UserState::Disabled);
            assert_eq!(user.groups, ["ops"]);
            assert_eq!(user.last_seen, Some(77));
            assert!(user.password_hash.is_some());
            let debug = format!("{user:?}");
            assert!(!debug.contains("JBSWY3DPEHPK3PXP"), "{debug}");
            assert!(!debug.contains("argon2id"), "{debug}");

            let err = store
                .write_blocking(|w| w.set_user_state("nobody", UserState::Active))
                .unwrap_err();
            assert!(matches!(err, StoreError::NotFound { what: "user", .. }));
            let err = store
                .write_blocking(|w| w.touch_last_seen("nobody", 1))
                .unwrap_err();
            assert!(matches!(err, StoreError::NotFound { .. }));
            assert!(store.read_blocking(|r| r.ssh_keys("nobody")).is_err());
        });
    }

    const SECRET: &str = "JBSWY3DPEHPK3PXP";

    fn stored_secrets(db: &TestStore) -> Vec<Option<String>> {
        db.raw_column("SELECT totp_secret FROM users ORDER BY name")
    }

    #[test]
    fn totp_secrets_are_sealed_at_rest_and_read_back_open() {
        on_each_backend(|db, store| {
            add_user(&store, "alice");
            store
                .write_blocking(|w| w.set_totp_secret("alice", Some(SECRET.into())))
                .unwrap();
            let stored = stored_secrets(db);
            let sealed = stored[0].as_deref().unwrap();
            assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
            assert!(!sealed.contains(SECRET), "{sealed}");
            let user = store.read_blocking(|r| r.existing_user("alice")).unwrap();
            assert_eq!(user.totp_secret.as_deref(), Some(SECRET));
            let listed = store.read_blocking(|r| r.users()).unwrap();
            assert_eq!(listed[0].totp_secret.as_deref(), Some(SECRET));
            store
                .write_blocking(|w| w.set_totp_secret("alice", None))
                .unwrap();
            assert_eq!(stored_secrets(db), [None]);
        });
    }

    #[test]
    fn plaintext_secrets_are_sealed_by_the_next_open() {
        on_each_test_db(|db| {
            let store = db.open();
            add_user(&store, "alice");
            add_user(&store, "bob");
            add_user(&store, "carol");
            store
                .write_blocking(|w| w.set_totp_secret("carol", Some("CAROLSECRET23456".into())))
                .unwrap();
            drop(store);
            // As a store from before sealing left them.
            db.raw_batch(&format!(
                "UPDATE users SET totp_secret = '{SECRET}' WHERE name = 'alice'"
            ));
            let store = db.open();
            let stored = stored_secrets(db);
            assert!(
                stored[0].as_deref().unwrap().starts_with(SEALED_PREFIX),
                "{stored:?}"
            );
            assert_eq!(stored[1], None, "bob has none");
            let (alice, carol) = store
                .read_blocking(|r| Ok((r.existing_user("alice")?, r.existing_user("carol")?)))
                .unwrap();
            assert_eq!(alice.totp_secret.as_deref(), Some(SECRET));
            assert_eq!(carol.totp_secret.as_deref(), Some("CAROLSECRET23456"));
            drop(store);
            db.open();
            assert_eq!(stored_secrets(db), stored, "sealed once");
        });
    }

    #[test]
    fn another_secrets_key_or_a_moved_secret_is_refused_clearly() {
        on_each_test_db(|db| {
            let store = db.open();
            add_user(&store, "alice");
            add_user(&store, "bob");
            store
                .write_blocking(|w| w.set_totp_secret("alice", Some(SECRET.into())))
                .unwrap();
            drop(store);
            db.raw_batch(&format!(
                "UPDATE users SET totp_secret = '{SECRET}' WHERE name = 'bob'"
            ));
            let before = stored_secrets(db);

            let mut other = db.opts.clone();
            other.secrets = std::sync::Arc::new(SecretsKey::generate().unwrap());
            let err = match Store::open(&other) {
                Err(err) => err,
                Ok(_) => panic!("opened with another key"),
            };
            assert!(
                matches!(err, StoreError::WrongSecretsKey { sealed: 1, .. }),
                "{err}"
            );
            let said = err.to_string();
            assert!(said.contains("sealed with another secrets key"), "{said}");
            assert!(!said.contains(SECRET), "{said}");
            assert_eq!(
                stored_secrets(db),
                before,
                "nothing sealed with the wrong key"
            );

            // Alice's sealed secret copied into bob's row opens for no one.
            let alice_sealed = before[0].clone().unwrap();
            db.raw_batch(&format!(
                "UPDATE users SET totp_secret = '{alice_sealed}' WHERE name = 'bob'"
            ));
            let err = match Store::open(&db.opts) {
                Err(err) => err,
                Ok(_) => panic!("opened with a moved secret"),
            };
            assert!(
                matches!(&err, StoreError::SecretOpen { user, .. } if user == "bob"),
                "{err}"
            );
        });
    }

    #[test]
    fn ssh_keys_add_conflict_remove() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            add_user(&store, "bob");
            store
                .write_blocking(|w| {
                    w.add_ssh_key("alice", key("SHA256:one"))?;
                    w.add_ssh_key("alice", key("SHA256:two"))?;
                    w.add_ssh_key("bob", key("SHA256:one"))
                })
                .unwrap();
            let err = store
                .write_blocking(|w| w.add_ssh_key("alice", key("SHA256:one")))
                .unwrap_err();
            assert!(matches!(
                err,
                StoreError::Conflict {
                    what: "SSH key",
                    ..
                }
            ));
            assert_eq!(
                store.read_blocking(|r| r.ssh_keys("alice")).unwrap().len(),
                2
            );
            assert_eq!(store.read_blocking(|r| r.all_ssh_keys()).unwrap().len(), 3);
            let removed = store
                .write_blocking(|w| w.remove_ssh_key("alice", "SHA256:one"))
                .unwrap();
            assert_eq!(removed.fingerprint, "SHA256:one");
            let err = store
                .write_blocking(|w| w.remove_ssh_key("alice", "SHA256:one"))
                .unwrap_err();
            assert!(matches!(
                err,
                StoreError::NotFound {
                    what: "SSH key",
                    ..
                }
            ));
        });
    }

    #[test]
    fn delete_cascades() {
        on_each_backend(|db, store| {
            add_user(&store, "alice");
            add_user(&store, "bob");
            let pool = "10.9.0.0/24".parse().unwrap();
            store
                .write_blocking(|w| {
                    for user in ["alice", "bob"] {
                        w.add_ssh_key(user, key("SHA256:k"))?;
                        w.create_device(
                            NewDevice {
                                user: user.into(),
                                name: "phone".into(),
                                public_key: format!("pk-{user}"),
                                created_at: 1,
                            },
                            pool,
                            &[],
                        )?;
                        w.create_enrollment_token(user, &hash_token(user), 1, 100)?;
                    }
                    Ok(())
                })
                .unwrap();
            let gone = store.write_blocking(|w| w.delete_user("alice")).unwrap();
            assert_eq!(gone.name, "alice");
            assert_eq!(gone.groups, ["research"]);
            let (keys, devices, user) = store
                .read_blocking(|r| Ok((r.all_ssh_keys()?, r.devices(None)?, r.user("alice")?)))
                .unwrap();
            assert!(user.is_none());
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0].0, "bob");
            assert_eq!(devices.len(), 1);
            assert_eq!(devices[0].user, "bob");
            let rows: Vec<i64> = db.raw_column(
                r#"SELECT (SELECT count(*) FROM enrollment_tokens WHERE "user" = 'alice')
                   + (SELECT count(*) FROM user_groups WHERE "user" = 'alice')"#,
            );
            assert_eq!(rows, [0]);
            let err = store
                .write_blocking(|w| w.consume_enrollment_token(&hash_token("alice"), 2))
                .unwrap_err();
            assert!(matches!(err, StoreError::TokenNotFound));
            assert!(store.write_blocking(|w| w.delete_user("alice")).is_err());
        });
    }
}
