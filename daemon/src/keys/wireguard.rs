//! The gateway's WireGuard static key: generated once, kept in
//! `state_dir/wireguard.key` (base64, mode 0600), so every client config
//! stays valid across restarts. With an `[aws]` section its home is SSM
//! ([`super::ssm`]) and this file is the local copy.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use x25519_dalek::{PublicKey, StaticSecret};

use super::private_file::{PrivateFile, PrivateFileError};

/// File name of the key under `state_dir`.
pub const KEY_FILE: &str = "wireguard.key";

/// The gateway's key pair. `Debug` never shows the private half.
#[derive(Clone)]
pub struct GatewayKey {
    secret: StaticSecret,
    public: PublicKey,
}

#[derive(Debug, thiserror::Error)]
pub enum WireGuardKeyError {
    #[error("cannot read the WireGuard key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the WireGuard key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the WireGuard key {path} is not 32 bytes of base64; restore it from a backup or move it away to make a new one (every device config then needs re-issuing)"
    )]
    Malformed { path: PathBuf },
    #[error(
        "the WireGuard key {path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "vpn.private_key_file {path} does not exist; accessd never creates it (both gateways of a pair must read the same key): make one with `wg genkey > {path} && chmod 600 {path}` and copy it to the other gateway"
    )]
    MissingShared { path: PathBuf },
}

impl GatewayKey {
    /// The key in `vpn.private_key_file`, which the operator shares between
    /// the gateways of a pair: never created here, refused when group or
    /// others can read it.
    pub fn load_shared(path: &Path) -> Result<Self, WireGuardKeyError> {
        if !path.exists() {
            return Err(WireGuardKeyError::MissingShared {
                path: path.to_path_buf(),
            });
        }
        Self::load_existing(path)
    }

    /// Loads the key from `state_dir`, generating and saving it on first start.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, WireGuardKeyError> {
        let path = state_dir.join(KEY_FILE);
        if path.exists() {
            return Self::load_existing(&path);
        }
        let key = Self::generate();
        key.save(&path)?;
        tracing::info!(path = %path.display(), public_key = %key.public_base64(), "generated the gateway's WireGuard key");
        Ok(key)
    }

    fn load_existing(path: &Path) -> Result<Self, WireGuardKeyError> {
        let text = PrivateFile::new(path).read()?;
        Self::from_base64(text.trim()).ok_or(WireGuardKeyError::Malformed {
            path: path.to_path_buf(),
        })
    }

    pub fn generate() -> Self {
        let secret = StaticSecret::random_from_rng(rand_core::OsRng);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes: [u8; 32] = BASE64.decode(text).ok()?.try_into().ok()?;
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Some(Self { secret, public })
    }

    pub fn public_base64(&self) -> String {
        BASE64.encode(self.public.as_bytes())
    }

    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// The private key as base64, for its home in SSM. Never log this.
    pub fn private_base64(&self) -> String {
        BASE64.encode(self.secret.to_bytes())
    }

    /// Makes this the key in `state_dir`, replacing another one atomically
    /// (a new 0600 file renamed over the old): used when SSM holds the key.
    pub fn store(&self, state_dir: &Path) -> Result<(), WireGuardKeyError> {
        let path = state_dir.join(KEY_FILE);
        Ok(PrivateFile::new(&path).replace(self.file_text().as_bytes())?)
    }

    /// Writes the key to a new file created 0600; never replaces an existing one.
    fn save(&self, path: &Path) -> Result<(), WireGuardKeyError> {
        Ok(PrivateFile::new(path).create_new(self.file_text().as_bytes())?)
    }

    /// The key file's content. Never log it.
    fn file_text(&self) -> String {
        format!("{}\n", self.private_base64())
    }
}

impl std::fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayKey")
            .field("public", &self.public_base64())
            .field("secret", &"<secret>")
            .finish()
    }
}

impl From<PrivateFileError> for WireGuardKeyError {
    fn from(err: PrivateFileError) -> Self {
        match err {
            PrivateFileError::Read { path, source } => Self::Read { path, source },
            PrivateFileError::Write { path, source } => Self::Write { path, source },
            PrivateFileError::Unprotected { path, mode } => Self::TooOpen { path, mode },
            PrivateFileError::Empty { path } => Self::Malformed { path },
        }
    }
}

/// True when `text` is a WireGuard public key: 32 bytes of standard base64.
pub fn is_public_key(text: &str) -> bool {
    BASE64.decode(text).is_ok_and(|bytes| bytes.len() == 32)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_shared_key_file_is_never_created_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wireguard.key");
        let err = GatewayKey::load_shared(&path).unwrap_err().to_string();
        assert!(
            err.contains("wg genkey") && err.contains("never creates"),
            "{err}"
        );
        assert!(!path.exists());
        let key = GatewayKey::generate();
        std::fs::write(&path, format!("{}\n", key.private_base64())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = GatewayKey::load_shared(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = GatewayKey::load_shared(&path).unwrap();
        assert_eq!(loaded.public_base64(), key.public_base64());
    }

    #[test]
    fn generated_once_then_reloaded_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = GatewayKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = GatewayKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.public_base64(), again.public_base64());
        assert!(is_public_key(&first.public_base64()));
    }

    #[test]
    fn refuses_a_key_others_can_read_and_a_garbled_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        GatewayKey::load_or_create(dir.path()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            GatewayKey::load_or_create(dir.path()),
            Err(WireGuardKeyError::TooOpen { .. })
        ));
        std::fs::write(&path, "not base64").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            GatewayKey::load_or_create(dir.path()),
            Err(WireGuardKeyError::Malformed { .. })
        ));
    }

    #[test]
    fn store_replaces_the_key_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = GatewayKey::load_or_create(dir.path()).unwrap();
        let other = GatewayKey::generate();
        other.store(dir.path()).unwrap();
        let loaded = GatewayKey::load_or_create(dir.path()).unwrap();
        assert_eq!(loaded.public_base64(), other.public_base64());
        assert_ne!(loaded.public_base64(), first.public_base64());
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            GatewayKey::from_base64(&other.private_base64())
                .unwrap()
                .public_base64(),
            other.public_base64()
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = GatewayKey::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains("<secret>"));
        assert!(!shown.contains(&BASE64.encode(key.secret.to_bytes())));
    }
}
