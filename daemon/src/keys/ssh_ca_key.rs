//! The team's two SSH CA keys (`ssh.certificates`), each one ed25519 key:
//! - the **user CA** ([`UserCa`]) signs members' certificates; the private
//!   hosts trust its public line (`TrustedUserCAKeys`);
//! - the **host CA** ([`HostCa`]) signs the private hosts' certificates;
//!   members trust its public line (`@cert-authority` in `known_hosts`).
//!
//! Each is kept like the gateway's other keys: the file the config names
//! (`ssh.ca_key_file`, `ssh.host_ca_key_file`: never created, so a pair
//! without `[aws]` gives both gateways the same keys), or with `[aws]` in
//! SSM (`/gatehouse/<name>/ssh-user-ca`, `/gatehouse/<name>/ssh-host-ca`,
//! [`super::ssm`]) so both gateways of a pair and a replaced instance sign
//! with it, or made once under `state_dir` (mode 0600). The two are
//! separate keys: one that leaked could not vouch for the other side.
//!
//! Does not own what a CA does with its key: signing and checking
//! certificates, and the revocation list, are [`crate::ssh_ca`]'s.

use std::marker::PhantomData;
use std::path::Path;

use gatehouse_config::Config;
use russh::keys::PrivateKey;

use super::ssh_host::{self, HostKeyError};

/// What tells one CA from the other: its file, its names, its SSM home.
pub trait CaRole: Send + Sync + 'static {
    /// The key's file name under `state_dir`.
    const LOCAL_FILE: &'static str;
    /// The config key that names a shared file instead.
    const SETTING: &'static str;
    /// What it is, for logs, errors and audit records.
    const WHAT: &'static str;
    /// The comment of its public line (`<comment>@<gateway>`).
    const COMMENT: &'static str;
    /// The last part of its SSM parameter's name.
    const PARAMETER: &'static str;
    /// Why a new key is no answer when the old one is out of reach.
    const WHY_NOT_NEW: &'static str;
    /// What the operator can do when SSM holds something else.
    const IF_MALFORMED: &'static str;
    /// The shared file [`CaRole::SETTING`] names, when it is set.
    fn configured_file(config: &Config) -> Option<&Path>;
}

/// The user CA: signs members' certificates.
pub struct User;
/// The host CA: signs the private hosts' certificates.
pub struct Host;

impl CaRole for User {
    const LOCAL_FILE: &'static str = "ssh_user_ca_ed25519_key";
    const SETTING: &'static str = "ssh.ca_key_file";
    const WHAT: &'static str = "the SSH user CA key";
    const COMMENT: &'static str = "gatehouse-user-ca";
    const PARAMETER: &'static str = "ssh-user-ca";
    const WHY_NOT_NEW: &'static str =
        "a new CA key would not be trusted by the private hosts, which trust the old one";
    const IF_MALFORMED: &'static str = "put an unencrypted OpenSSH private key there, or delete it to store this gateway's CA key (every private host then needs the new CA line)";
    fn configured_file(config: &Config) -> Option<&Path> {
        config.ssh.ca_key_file.as_deref()
    }
}

impl CaRole for Host {
    const LOCAL_FILE: &'static str = "ssh_host_ca_ed25519_key";
    const SETTING: &'static str = "ssh.host_ca_key_file";
    const WHAT: &'static str = "the SSH host CA key";
    const COMMENT: &'static str = "gatehouse-host-ca";
    const PARAMETER: &'static str = "ssh-host-ca";
    const WHY_NOT_NEW: &'static str = "a new host CA key would not be trusted by the members, whose known_hosts trust the old one";
    const IF_MALFORMED: &'static str = "put an unencrypted OpenSSH private key there, or delete it to store this gateway's host CA key (every member then needs the new @cert-authority line)";
    fn configured_file(config: &Config) -> Option<&Path> {
        config.ssh.host_ca_key_file.as_deref()
    }
}

/// The user CA's key.
pub type UserCa = CaKey<User>;
/// The host CA's key.
pub type HostCa = CaKey<Host>;

/// A CA: its key. Never log it: [`CaKey::public_line`] and
/// [`CaKey::fingerprint`] are what may be shown.
pub struct CaKey<R> {
    key: PrivateKey,
    role: PhantomData<R>,
}

impl<R> Clone for CaKey<R> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            role: PhantomData,
        }
    }
}

impl<R: CaRole> CaKey<R> {
    pub fn new(key: PrivateKey) -> Self {
        Self {
            key,
            role: PhantomData,
        }
    }

    /// The local CA key, made now (0600) if there is none.
    pub fn load_or_create_local(state_dir: &Path) -> Result<Self, HostKeyError> {
        ssh_host::load_or_create_key(state_dir, R::LOCAL_FILE, R::WHAT).map(Self::new)
    }

    /// The CA key the config's file setting names: never created, 0600,
    /// unencrypted.
    pub fn load_file(path: &Path) -> Result<Self, HostKeyError> {
        ssh_host::load_key_file(path, R::SETTING).map(Self::new)
    }

    /// The local CA key, if there is one.
    pub fn load_local(state_dir: &Path) -> Result<Option<Self>, HostKeyError> {
        if !state_dir.join(R::LOCAL_FILE).exists() {
            return Ok(None);
        }
        Self::load_or_create_local(state_dir).map(Some)
    }

    /// Makes this the local copy, replacing another atomically.
    pub fn store_local(&self, state_dir: &Path) -> Result<(), HostKeyError> {
        ssh_host::store_key(&self.key, state_dir, R::LOCAL_FILE)
    }

    /// The private key. Never log it.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// `ssh-ed25519 AAAA... gatehouse-user-ca@<gateway>` (or
    /// `gatehouse-host-ca@`): for `TrustedUserCAKeys`, or after
    /// `@cert-authority <patterns>` in `known_hosts`.
    pub fn public_line(&self, gateway: &str) -> String {
        let mut public = self.key.public_key().clone();
        public.set_comment(format!("{}@{gateway}", R::COMMENT));
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
        let host = HostCa::load_or_create_local(dir.path()).unwrap();
        let first = UserCa::load_or_create_local(dir.path()).unwrap();
        let again = UserCa::load_local(dir.path()).unwrap().unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_ne!(first.fingerprint(), host.fingerprint(), "two CAs, two keys");
        assert!(first.public_line("gw").ends_with(" gatehouse-user-ca@gw"));
        assert!(host.public_line("gw").ends_with(" gatehouse-host-ca@gw"));
        let mode = std::fs::metadata(dir.path().join(User::LOCAL_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// `ssh.ca_key_file` (and `ssh.host_ca_key_file`, the same code): used
    /// as given, never created, refused with the fix when others may read it.
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
        let missing = HostCa::load_file(&dir.path().join("none")).err().unwrap();
        assert!(
            missing.to_string().contains("ssh.host_ca_key_file"),
            "{missing}"
        );
    }
}
