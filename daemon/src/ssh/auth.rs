//! Who may log in to the jump host, and who must be thrown out: the host
//! key (ed25519, generated once, 0600 under `state_dir`), the user key check
//! (an active, unexpired user and one of their registered keys), the TOTP
//! second factor of `ssh.require_totp` (the secret the portal enrolled), and
//! the revocation decision for live logins after a store change.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use gatehouse_config::api::UserState;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey, PublicKey};

use super::registry::LiveLogin;
use crate::store::{SshKey, User};
use crate::totp::{self, TotpReject};

/// File name of the host key inside the state directory.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("cannot read the SSH host key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the SSH host key {path} is not an OpenSSH private key: {source}")]
    Parse {
        path: PathBuf,
        source: russh::keys::ssh_key::Error,
    },
    #[error("cannot write the SSH host key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the SSH host key: {source}")]
    Encode { source: russh::keys::ssh_key::Error },
    #[error("no randomness for the SSH host key: {message}")]
    Random { message: String },
}

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
    /// `ssh.require_totp`: the code was refused.
    Totp(TotpReject),
    /// The store could not be read: refused, failing closed.
    StoreUnavailable,
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
            Self::Totp(reject) => reject.reason(),
            Self::StoreUnavailable => "store_unavailable",
        }
    }
}

/// Loads the host key, creating it (mode 0600) on first start.
pub fn load_or_create_host_key(state_dir: &Path) -> Result<PrivateKey, HostKeyError> {
    let path = state_dir.join(HOST_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes())
            .map_err(|source| HostKeyError::Parse { path, source }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut seed).map_err(
                |err| HostKeyError::Random {
                    message: err.to_string(),
                },
            )?;
            let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|source| HostKeyError::Encode { source })?;
            let write_error = |source| HostKeyError::Write {
                path: path.clone(),
                source,
            };
            // create_new: never overwrite a key another process just wrote.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(write_error)?;
            file.write_all(text.as_bytes()).map_err(write_error)?;
            file.sync_all().map_err(write_error)?;
            tracing::info!(path = %path.display(), fingerprint = %fingerprint(key.public_key()), "created the SSH host key");
            Ok(key)
        }
        Err(source) => Err(HostKeyError::Read { path, source }),
    }
}

/// `SHA256:...`, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
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
    Ok(fingerprint(offered))
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
    use std::os::unix::fs::PermissionsExt;

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
    fn host_key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_host_key(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(HOST_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_host_key(dir.path()).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        assert!(fingerprint(first.public_key()).starts_with("SHA256:"));
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
