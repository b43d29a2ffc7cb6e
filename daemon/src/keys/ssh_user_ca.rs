//! The team's SSH user CA key (`ssh.certificates`): the file
//! `ssh.ca_key_file` names (never created, so a pair without `[aws]` gives
//! both gateways the same key), or one ed25519 key made once under
//! `state_dir` (mode 0600) or, with `[aws]`, kept in SSM
//! (`/gatehouse/<name>/ssh-user-ca`, [`super::ssm`]) so both gateways of a
//! pair and a replaced instance sign with it. The private hosts trust its
//! public line (`TrustedUserCAKeys`).
//!
//! Does not own what the CA does with the key: signing and checking
//! certificates, and the revocation list, are [`crate::ssh_ca`]'s.

use std::path::Path;

use russh::keys::PrivateKey;

use super::ssh_host::{self, HostKeyError};

/// The CA key's file name under `state_dir`.
pub const CA_KEY_FILE: &str = "ssh_user_ca_ed25519_key";

/// The CA: its key. Never log it: [`UserCa::public_line`] and
/// [`UserCa::fingerprint`] are what may be shown.
#[derive(Clone)]
pub struct UserCa {
    key: PrivateKey,
}

impl UserCa {
    pub fn new(key: PrivateKey) -> Self {
        Self { key }
    }

    /// The local CA key, made now (0600) if there is none.
    pub fn load_or_create_local(state_dir: &Path) -> Result<Self, HostKeyError> {
        ssh_host::load_or_create_key(state_dir, CA_KEY_FILE, "the SSH user CA key").map(Self::new)
    }

    /// The CA key `ssh.ca_key_file` names: never created, 0600, unencrypted.
    pub fn load_file(path: &Path) -> Result<Self, HostKeyError> {
        ssh_host::load_key_file(path, "ssh.ca_key_file").map(Self::new)
    }

    /// The local CA key, if there is one.
    pub fn load_local(state_dir: &Path) -> Result<Option<Self>, HostKeyError> {
        if !state_dir.join(CA_KEY_FILE).exists() {
            return Ok(None);
        }
        Self::load_or_create_local(state_dir).map(Some)
    }

    /// Makes this the local copy, replacing another atomically.
    pub fn store_local(&self, state_dir: &Path) -> Result<(), HostKeyError> {
        ssh_host::store_key(&self.key, state_dir, CA_KEY_FILE)
    }

    /// The private key. Never log it.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// `ssh-ed25519 AAAA... gatehouse-user-ca@<gateway>`, for
    /// `TrustedUserCAKeys`.
    pub fn public_line(&self, gateway: &str) -> String {
        let mut public = self.key.public_key().clone();
        public.set_comment(format!("gatehouse-user-ca@{gateway}"));
        public.to_openssh().unwrap_or_default()
    }

    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        ssh_host::fingerprint(self.key.public_key())
    }

    /// The CA's public key blob (SSH wire encoding), as a KRL names it.
    pub fn public_blob(&self) -> Vec<u8> {
        self.key.public_key().to_bytes().unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The CA key is made once, 0600, and read back the same.
    #[test]
    fn the_local_ca_key_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(UserCa::load_local(dir.path()).unwrap().is_none());
        let first = UserCa::load_or_create_local(dir.path()).unwrap();
        let again = UserCa::load_local(dir.path()).unwrap().unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// `ssh.ca_key_file`: used as given, never created, refused with the
    /// fix when others may read it.
    #[test]
    fn a_ca_key_file_is_never_created_and_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user_ca_key");
        let missing = UserCa::load_file(&path).err().unwrap();
        assert!(
            matches!(missing, HostKeyError::Missing { .. })
                && missing.to_string().contains("ssh.ca_key_file"),
            "{missing}"
        );
        assert!(!path.exists(), "never created");
        let made = UserCa::load_or_create_local(dir.path()).unwrap();
        let text = ssh_host::host_key_to_openssh(made.private_key()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = UserCa::load_file(&path).err().unwrap();
        assert!(
            open.to_string().contains("ssh.ca_key_file") && open.to_string().contains("chmod 600"),
            "{open}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let given = UserCa::load_file(&path).unwrap();
        assert_eq!(given.fingerprint(), made.fingerprint());
    }
}
