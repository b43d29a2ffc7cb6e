//! Who may log in to the jump host, and who must be thrown out: the user key check
//! (an active, unexpired user and one of their registered keys), the TOTP
//! second factor of `ssh.require_totp` (the secret the portal enrolled), and
//! the revocation decision for live logins after a store change.

use std::collections::HashMap;

use gatehouse_config::api::UserState;
use russh::keys::PublicKey;

use super::registry::LiveLogin;
use crate::store::{SshKey, User};
use crate::totp::{self, TotpReject};

/// Why a login is refused (the `reason` of `ssh.auth.fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefused {
    UnknownUser,
    NotActive,
    Expired,
    UnknownKey,
    /// Too many failures lately, for this user.
    Penalised,
    /// `ssh.require_totp`, but the user has no TOTP secret.
    TotpNotEnrolled,
    /// `ssh.require_totp`: the key passed, no code followed.
    TotpMissing,
    /// A TOTP code without a key accepted for that same user in that same
    /// connection first.
    TotpBeforeKey,
    /// `ssh.require_totp`: the code was refused.
    Totp(TotpReject),
    /// The store could not be read: refused, failing closed.
    StoreUnavailable,
    /// The user holds `ssh.max_connections_per_user` logins already.
    TooManyConnections,
    /// A certificate this gateway's CA did not issue to this user now.
    Certificate(crate::ssh_ca::CertRefusal),
}

impl AuthRefused {
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownUser => "unknown_user",
            Self::NotActive => "user_not_active",
            Self::Expired => "user_expired",
            Self::UnknownKey => "unknown_key",
            Self::Penalised => "penalised",
            Self::TotpNotEnrolled => "totp_not_enrolled",
            Self::TotpMissing => "totp_missing",
            Self::TotpBeforeKey => "totp_before_key",
            Self::Totp(reject) => reject.reason(),
            Self::StoreUnavailable => "store_unavailable",
            Self::TooManyConnections => "too_many_connections",
            Self::Certificate(refusal) => refusal.code(),
        }
    }
}

/// May `user` log in with `offered`? Returns the key's fingerprint.
pub fn authorize(
    user: Option<&User>,
    keys: &[SshKey],
    offered: &PublicKey,
    now: i64,
) -> Result<String, AuthRefused> {
    let user = user.ok_or(AuthRefused::UnknownUser)?;
    let registered = keys.iter().any(|k| {
        PublicKey::from_openssh(&k.openssh).is_ok_and(|pk| pk.key_data() == offered.key_data())
    });
    // The key is checked first so that a probe cannot tell a disabled user
    // from an unknown key without holding the user's private key.
    if !registered {
        return Err(AuthRefused::UnknownKey);
    }
    if user.state != UserState::Active {
        return Err(AuthRefused::NotActive);
    }
    if user.is_expired(now) {
        return Err(AuthRefused::Expired);
    }
    Ok(crate::keys::ssh_host::fingerprint(offered))
}

/// The second factor of `ssh.require_totp`: may `user`, whose key passed,
/// log in with `code` at unix time `now`? The user is checked again (the
/// key check was a moment ago, an admin may have acted since). `last_step`
/// is the newest step accepted for the user, by the portal or here: a code
/// works once across both. Returns the matched step, to be stored.
pub fn check_totp(
    user: Option<&User>,
    last_step: Option<i64>,
    code: &str,
    now: i64,
) -> Result<u64, AuthRefused> {
    let user = user.ok_or(AuthRefused::UnknownUser)?;
    if user.state != UserState::Active {
        return Err(AuthRefused::NotActive);
    }
    if user.is_expired(now) {
        return Err(AuthRefused::Expired);
    }
    let secret = user
        .totp_secret
        .as_deref()
        .ok_or(AuthRefused::TotpNotEnrolled)?;
    let now = u64::try_from(now).unwrap_or(0);
    let last_step = last_step.and_then(|s| u64::try_from(s).ok());
    totp::verify(secret, code, now, last_step).map_err(AuthRefused::Totp)
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
            let reason = match users.get(login.user.as_str()) {
                None => "user removed",
                Some(u) if u.state != UserState::Active => "user disabled",
                Some(u) if u.is_expired(now) => "user expired",
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

    use super::*;
    use crate::ssh_keys::parse_public_key;
    use crate::ssh_keys::tests::ED25519_PUB;

    fn user(name: &str, state: UserState, expires_at: Option<i64>) -> User {
        User {
            name: name.into(),
            state,
            groups: vec!["research".into()],
            created_at: 1,
            expires_at,
            last_seen: None,
            password_hash: None,
            totp_secret: None,
            no_login: false,
            vpn_login_at: None,
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
            Err(AuthRefused::UnknownKey)
        );
        assert_eq!(
            authorize(None, &keys, &offered, 10),
            Err(AuthRefused::UnknownUser)
        );
        let pending = user("alice", UserState::Pending, None);
        assert_eq!(
            authorize(Some(&pending), &keys, &offered, 10),
            Err(AuthRefused::NotActive)
        );
        let disabled = user("alice", UserState::Disabled, None);
        assert_eq!(
            authorize(Some(&disabled), &keys, &offered, 10),
            Err(AuthRefused::NotActive)
        );
        let expired = user("alice", UserState::Active, Some(5));
        assert_eq!(
            authorize(Some(&expired), &keys, &offered, 10),
            Err(AuthRefused::Expired)
        );
    }

    #[test]
    fn the_totp_step_takes_a_current_unused_code_of_an_active_enrolled_user() {
        let secret = crate::totp::new_secret();
        let now = 1_800_000_000_i64;
        let code = crate::totp::code_at(&secret, now as u64).unwrap();
        let step = (now as u64) / crate::totp::STEP_SECS;
        let mut alice = user("alice", UserState::Active, None);
        assert_eq!(
            check_totp(Some(&alice), None, &code, now),
            Err(AuthRefused::TotpNotEnrolled)
        );
        alice.totp_secret = Some(secret.clone());
        assert_eq!(check_totp(Some(&alice), None, &code, now), Ok(step));
        // Used once (here or in the portal): refused.
        let used = Some(i64::try_from(step).unwrap());
        assert_eq!(
            check_totp(Some(&alice), used, &code, now),
            Err(AuthRefused::Totp(TotpReject::Reused))
        );
        let wrong = if code == "000000" { "111111" } else { "000000" };
        assert_eq!(
            check_totp(Some(&alice), None, wrong, now),
            Err(AuthRefused::Totp(TotpReject::Mismatch))
        );
        assert_eq!(
            check_totp(Some(&alice), None, "12 34", now),
            Err(AuthRefused::Totp(TotpReject::Malformed))
        );
        assert_eq!(
            AuthRefused::Totp(TotpReject::Mismatch).code(),
            "totp_mismatch"
        );
        // A right code does not help a user who was disabled or expired
        // after their key passed.
        alice.state = UserState::Disabled;
        assert_eq!(
            check_totp(Some(&alice), None, &code, now),
            Err(AuthRefused::NotActive)
        );
        alice.state = UserState::Active;
        alice.expires_at = Some(now - 1);
        assert_eq!(
            check_totp(Some(&alice), None, &code, now),
            Err(AuthRefused::Expired)
        );
        assert_eq!(
            check_totp(None, None, &code, now),
            Err(AuthRefused::UnknownUser)
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
