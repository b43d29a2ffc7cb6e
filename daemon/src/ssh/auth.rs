//! Who may log in to the jump host, and who must be thrown out: the user key check
//! (a member in good standing and one of their registered keys), and the
//! revocation decision for live logins after a store change. The TOTP
//! step of `ssh.require_totp` is the member-authentication service's
//! ([`crate::auth::consume_totp`], charged against its login budget).

use std::collections::HashMap;

use russh::keys::PublicKey;

use super::registry::LiveLogin;
use crate::auth::{LoginRefusal, Standing};
use crate::store::{SshKey, User};

/// May `user` log in with `offered`? Returns the key's fingerprint.
pub fn authorize(
    user: Option<&User>,
    keys: &[SshKey],
    offered: &PublicKey,
    now: i64,
) -> Result<String, LoginRefusal> {
    let user = user.ok_or(LoginRefusal::UnknownUser)?;
    let registered = keys.iter().any(|k| {
        PublicKey::from_openssh(&k.openssh).is_ok_and(|pk| pk.key_data() == offered.key_data())
    });
    // The key is checked first so that a probe cannot tell a disabled user
    // from an unknown key without holding the user's private key.
    if !registered {
        return Err(LoginRefusal::UnknownKey);
    }
    if let Some(refusal) = Standing::of(user, now).refusal() {
        return Err(refusal);
    }
    Ok(crate::keys::ssh_host::fingerprint(offered))
}

/// The live logins that must end after a store change, each with a reason:
/// the user is gone, no longer active, expired, or the key was removed.
pub fn revoked(
    logins: &[LiveLogin],
    users: &[User],
    keys: &[(String, SshKey)],
    now: i64,
) -> Vec<(u64, &'static str)> {
    let users: HashMap<&str, &User> = users.iter().map(|u| (u.name.as_str(), u)).collect();
    logins
        .iter()
        .filter_map(|login| {
            let reason = match users.get(login.user.as_str()).map(|u| Standing::of(u, now)) {
                None => "user removed",
                Some(Standing::Pending | Standing::Disabled) => "user disabled",
                Some(Standing::Expired) => "user expired",
                Some(_)
                    if !keys.iter().any(|(name, k)| {
                        *name == login.user && k.fingerprint == login.key_fingerprint
                    }) =>
                {
                    "key removed"
                }
                Some(_) => return None,
            };
            Some((login.conn, reason))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use russh::keys::PrivateKey;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    use gatehouse_config::api::UserState;

    use super::*;
    use crate::ssh_keys::parse_public_key;
    use crate::ssh_keys::tests::ED25519_PUB;

    fn user(name: &str, state: UserState, expires_at: Option<i64>) -> User {
        User {
            name: name.into(),
            ..crate::auth::standing::tests::user(state, false, expires_at)
        }
    }

    #[test]
    fn only_an_active_users_registered_key_logs_in() {
        let key = parse_public_key(ED25519_PUB).unwrap();
        let offered = PublicKey::from_openssh(ED25519_PUB).unwrap();
        let other = PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]));
        let keys = [key.clone()];
        let alice = user("alice", UserState::Active, None);
        assert_eq!(
            authorize(Some(&alice), &keys, &offered, 10),
            Ok(key.fingerprint)
        );
        assert_eq!(
            authorize(Some(&alice), &keys, other.public_key(), 10),
            Err(LoginRefusal::UnknownKey)
        );
        assert_eq!(
            authorize(None, &keys, &offered, 10),
            Err(LoginRefusal::UnknownUser)
        );
        let pending = user("alice", UserState::Pending, None);
        assert_eq!(
            authorize(Some(&pending), &keys, &offered, 10),
            Err(LoginRefusal::Pending)
        );
        let disabled = user("alice", UserState::Disabled, None);
        assert_eq!(
            authorize(Some(&disabled), &keys, &offered, 10),
            Err(LoginRefusal::Disabled)
        );
        let expired = user("alice", UserState::Active, Some(5));
        assert_eq!(
            authorize(Some(&expired), &keys, &offered, 10),
            Err(LoginRefusal::Expired)
        );
    }

    #[test]
    fn revocation_finds_removed_disabled_expired_users_and_removed_keys() {
        let key = parse_public_key(ED25519_PUB).unwrap();
        let login = |conn, user: &str| LiveLogin {
            conn,
            user: user.into(),
            key_fingerprint: key.fingerprint.clone(),
        };
        let logins = [
            login(1, "alice"),
            login(2, "bob"),
            login(3, "carol"),
            login(4, "dave"),
            login(5, "erin"),
        ];
        let users = [
            user("alice", UserState::Active, None),
            user("bob", UserState::Disabled, None),
            user("carol", UserState::Active, Some(5)),
            user("dave", UserState::Active, None),
        ];
        let keys = [
            ("alice".to_string(), key.clone()),
            ("carol".to_string(), key.clone()),
        ];
        let revoked = revoked(&logins, &users, &keys, 10);
        assert_eq!(
            revoked,
            [
                (2, "user disabled"),
                (3, "user expired"),
                (4, "key removed"),
                (5, "user removed")
            ]
        );
    }
}
