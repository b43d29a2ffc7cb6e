//! The jump host's SSH host key: ed25519, generated once, kept 0600 under
//! `state_dir`, so clients' `known_hosts` stay valid across restarts; or,
//! with `ssh.host_key_file`, a key file the operator gives every gateway of
//! a pair, so clients see one host key whichever of them answers. With
//! `[aws]` (and no file) its home is SSM ([`super::ssm`]), the file under
//! `state_dir` its local copy. Loaded at start-up; the jump host serves it,
//! the portal and `accessctl status` show it. The ed25519 key files here
//! ([`load_or_create_key`], [`store_key`]) serve the SSH user CA's key too
//! ([`super::ssh_user_ca`]).

use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey, PublicKey};

use super::private_file::{PrivateFile, PrivateFileError};

/// File name of the host key inside the state directory.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("cannot read the SSH key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the SSH key {path} is not an OpenSSH private key: {source}")]
    Parse {
        path: PathBuf,
        source: russh::keys::ssh_key::Error,
    },
    #[error("cannot write the SSH key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode an SSH key: {source}")]
    Encode { source: russh::keys::ssh_key::Error },
    #[error("no randomness for a new SSH key: {message}")]
    Random { message: String },
    #[error(
        "{setting} {path} does not exist: make it with `ssh-keygen -t ed25519 -N '' -f {path}` and give every gateway the same file (mode 0600)"
    )]
    Missing {
        setting: &'static str,
        path: PathBuf,
    },
    #[error(
        "{setting} {path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`"
    )]
    Unprotected {
        setting: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "{setting} {path} is protected by a passphrase: the gateway needs it unencrypted (mode 0600)"
    )]
    Encrypted {
        setting: &'static str,
        path: PathBuf,
    },
    #[error(
        "the SSH key {path} is empty: put an unencrypted OpenSSH private key there (mode 0600)"
    )]
    Empty { path: PathBuf },
}

/// The host key `ssh.host_key_file` names (never created: every gateway of
/// a pair must get the same file), or else the generated one under
/// `state_dir`.
pub fn load_host_key(file: Option<&Path>, state_dir: &Path) -> Result<PrivateKey, HostKeyError> {
    match file {
        Some(path) => load_key_file(path, "ssh.host_key_file"),
        None => load_or_create_host_key(state_dir),
    }
}

/// The OpenSSH private key in the file the config's `setting` names: never
/// created (every gateway of a pair must get the same file), 0600 and
/// unencrypted, or refused with the fix. The host key's and the CAs' way.
pub fn load_key_file(path: &Path, setting: &'static str) -> Result<PrivateKey, HostKeyError> {
    let path = path.to_path_buf();
    let read = PrivateFile::new(&path)
        .read_if_exists()
        .map_err(|err| match err {
            PrivateFileError::Unprotected { path, mode } => HostKeyError::Unprotected {
                setting,
                path,
                mode,
            },
            other => other.into(),
        })?;
    let Some(text) = read else {
        return Err(HostKeyError::Missing { setting, path });
    };
    let key = PrivateKey::from_openssh(text.as_bytes()).map_err(|source| HostKeyError::Parse {
        path: path.clone(),
        source,
    })?;
    if key.is_encrypted() {
        return Err(HostKeyError::Encrypted { setting, path });
    }
    Ok(key)
}

/// Loads the host key, creating it (mode 0600) on first start.
pub fn load_or_create_host_key(state_dir: &Path) -> Result<PrivateKey, HostKeyError> {
    load_or_create_key(state_dir, HOST_KEY_FILE, "the SSH host key")
}

/// Loads the ed25519 key `file` under `state_dir` (`what` it is, for the
/// log), creating it (mode 0600) if there is none: the host key's and the
/// user CA's ([`super::ssh_user_ca`]) way. Unlike a key file the operator
/// gives, the copy accessd made is read without a mode check, as it always
/// has been.
pub fn load_or_create_key(
    state_dir: &Path,
    file: &str,
    what: &str,
) -> Result<PrivateKey, HostKeyError> {
    let path = state_dir.join(file);
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
            let text = host_key_to_openssh(&key)?;
            // create_new: never overwrite a key another process just wrote.
            PrivateFile::new(&path).create_new(text.as_bytes())?;
            tracing::info!(path = %path.display(), fingerprint = %fingerprint(key.public_key()), "created {what}");
            Ok(key)
        }
        Err(source) => Err(HostKeyError::Read { path, source }),
    }
}

/// The local copy under `state_dir`, if there is one.
pub fn load_local_host_key(state_dir: &Path) -> Result<Option<PrivateKey>, HostKeyError> {
    if !state_dir.join(HOST_KEY_FILE).exists() {
        return Ok(None);
    }
    load_or_create_host_key(state_dir).map(Some)
}

/// An unencrypted OpenSSH private key, from its text (as SSM keeps it).
pub fn host_key_from_openssh(text: &str) -> Option<PrivateKey> {
    PrivateKey::from_openssh(text.as_bytes())
        .ok()
        .filter(|key| !key.is_encrypted())
}

/// The key's OpenSSH text. Never log it.
pub fn host_key_to_openssh(key: &PrivateKey) -> Result<String, HostKeyError> {
    key.to_openssh(LineEnding::LF)
        .map(|text| text.to_string())
        .map_err(|source| HostKeyError::Encode { source })
}

/// Makes `key` the one under `state_dir`, replacing another atomically (a
/// new 0600 file renamed over the old): used when SSM holds the key.
pub fn store_host_key(key: &PrivateKey, state_dir: &Path) -> Result<(), HostKeyError> {
    store_key(key, state_dir, HOST_KEY_FILE)
}

/// Makes `key` the file `file` under `state_dir`, as [`store_host_key`].
pub fn store_key(key: &PrivateKey, state_dir: &Path, file: &str) -> Result<(), HostKeyError> {
    let text = host_key_to_openssh(key)?;
    Ok(PrivateFile::new(&state_dir.join(file)).replace(text.as_bytes())?)
}

/// `SHA256:...`, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl From<PrivateFileError> for HostKeyError {
    fn from(err: PrivateFileError) -> Self {
        match err {
            PrivateFileError::Read { path, source } => Self::Read { path, source },
            PrivateFileError::Write { path, source } => Self::Write { path, source },
            PrivateFileError::Unprotected { path, mode } => Self::Unprotected {
                setting: "the key file",
                path,
                mode,
            },
            PrivateFileError::Empty { path } => Self::Empty { path },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write_key(path: &Path, mode: u32) -> PrivateKey {
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]));
        std::fs::write(path, key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        key
    }

    #[test]
    fn a_shared_key_file_is_used_as_given_and_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared_key");
        let missing = load_host_key(Some(&shared), dir.path()).unwrap_err();
        assert!(matches!(missing, HostKeyError::Missing { .. }), "{missing}");
        assert!(
            missing.to_string().contains("ssh-keygen -t ed25519"),
            "{missing}"
        );
        assert!(!shared.exists() && !dir.path().join(HOST_KEY_FILE).exists());

        let written = write_key(&shared, 0o600);
        let loaded = load_host_key(Some(&shared), dir.path()).unwrap();
        assert_eq!(
            fingerprint(loaded.public_key()),
            fingerprint(written.public_key())
        );
        assert!(!dir.path().join(HOST_KEY_FILE).exists(), "no key generated");
    }

    #[test]
    fn a_shared_key_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared_key");
        write_key(&shared, 0o644);
        let err = load_host_key(Some(&shared), dir.path()).unwrap_err();
        assert!(
            matches!(err, HostKeyError::Unprotected { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    /// SSM's copy replaces the local one (0600), and its trimmed text (as
    /// SSM hands it back) parses to the same key.
    #[test]
    fn a_key_from_ssm_replaces_the_local_copy() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_local_host_key(dir.path()).unwrap().is_none());
        let local = load_or_create_host_key(dir.path()).unwrap();
        let theirs = PrivateKey::from(Ed25519Keypair::from_seed(&[9; 32]));
        let text = host_key_to_openssh(&theirs).unwrap();
        let parsed = host_key_from_openssh(text.trim()).unwrap();
        assert_eq!(parsed.public_key(), theirs.public_key());
        assert!(host_key_from_openssh("not a key").is_none());
        store_host_key(&parsed, dir.path()).unwrap();
        let now = load_local_host_key(dir.path()).unwrap().unwrap();
        assert_eq!(now.public_key(), theirs.public_key());
        assert_ne!(now.public_key(), local.public_key());
        let mode = std::fs::metadata(dir.path().join(HOST_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
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
}
