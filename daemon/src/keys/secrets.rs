//! The secrets key: 32 random bytes that seal the secrets the store keeps
//! at rest (the members' TOTP secrets) with ChaCha20-Poly1305, so a copy of
//! the database (a backup, a snapshot of the shared PostgreSQL server)
//! opens none of them without the key, which is never in the database.
//!
//! Where the key lives: `gateway.secrets_key_file`, a 0600 file the operator
//! makes and gives both gateways of a pair (never created here); with
//! `[aws]` and no such file, an SSM SecureString ([`super::ssm`])
//! with a local copy under `state_dir`; otherwise `state_dir/secrets.key`,
//! made 0600 on first start. Does not own what is sealed, nor when (the
//! store seals and opens).
//!
//! Sealed text is `sealed:v1:` + base64(nonce || ciphertext || tag), with a
//! fresh random 96-bit nonce each time; the caller's AAD (the user's name)
//! binds it to its row, so a sealed secret copied to another row does not
//! open.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use super::private_file::{PrivateFile, PrivateFileError};

/// File name of the key (or of SSM's local copy) under `state_dir`.
pub const KEY_FILE: &str = "secrets.key";

/// What every sealed text starts with.
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// The key. `Debug` never shows it.
pub struct SecretsKey {
    bytes: [u8; 32],
    aead: LessSafeKey,
}

/// Why a text could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the text is not sealed (it does not start with {SEALED_PREFIX:?})")]
    NotSealed,
    #[error("the sealed text is malformed: {reason}")]
    Malformed { reason: &'static str },
    /// Wrong key, another row's AAD, or changed bytes: AEAD cannot tell
    /// which, and says nothing more on purpose.
    #[error("the sealed text does not open with this key for this row")]
    Refused,
    #[error("no randomness for a nonce")]
    Random,
}

/// Why the key could not be loaded or kept.
#[derive(Debug, thiserror::Error)]
pub enum SecretsKeyError {
    #[error("cannot read the secrets key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the secrets key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the secrets key {path} is not 32 bytes of base64: restore it from a backup (without it the stored TOTP secrets cannot be opened and members must enroll TOTP again)"
    )]
    Malformed { path: PathBuf },
    #[error(
        "the secrets key {path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`"
    )]
    Unprotected { path: PathBuf, mode: u32 },
    #[error(
        "gateway.secrets_key_file {path} does not exist: make it with `(umask 077 && head -c 32 /dev/urandom | base64 > {path})` and give both gateways of a pair the same file (mode 0600)"
    )]
    Missing { path: PathBuf },
    #[error("no randomness for a new secrets key")]
    Random,
}

impl SecretsKey {
    /// A new random key.
    pub fn generate() -> Result<Self, SecretsKeyError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SecretsKeyError::Random)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key from its base64 text (file or SSM); `None` unless it is 32
    /// bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes: [u8; 32] = BASE64.decode(text.trim()).ok()?.try_into().ok()?;
        Some(Self::from_bytes(bytes))
    }

    /// The key as base64, for its file or SSM. Never log this.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.bytes)
    }

    /// A short name of the key that is safe to log and audit (the first 8
    /// bytes of its SHA-256): says whether two nodes hold the same key.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.bytes);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// A 32-byte key for another use, derived with HKDF-SHA256 under
    /// `info` (which names the use): one-way, so a derived key never tells
    /// this one, nor a key derived under another `info`.
    pub fn derive(&self, info: &'static [u8]) -> [u8; 32] {
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"gatehouse").extract(&self.bytes);
        let mut out = [0u8; 32];
        let infos = [info];
        // HKDF refuses only an output over 255 hash lengths; this is one.
        let filled = prk.expand(&infos, Len32).and_then(|okm| okm.fill(&mut out));
        if filled.is_err() {
            unreachable!("HKDF-SHA256 gives 32 bytes");
        }
        out
    }

    /// Seals `plaintext`, bound to `aad` (the row's owner).
    pub fn seal(&self, plaintext: &str, aad: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut in_out = plaintext.as_bytes().to_vec();
        self.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| SealError::Malformed {
                reason: "too long to seal",
            })?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(format!("{SEALED_PREFIX}{}", BASE64.encode(sealed)))
    }

    /// Opens what [`SecretsKey::seal`] made with this key and this `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, SealError> {
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SealError::NotSealed)?;
        let mut bytes = BASE64.decode(body).map_err(|_| SealError::Malformed {
            reason: "not base64",
        })?;
        if bytes.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(SealError::Malformed {
                reason: "shorter than a nonce and a tag",
            });
        }
        let mut in_out = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| SealError::Malformed {
            reason: "bad nonce",
        })?;
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut in_out)
            .map_err(|_| SealError::Refused)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Malformed {
            reason: "not UTF-8 inside",
        })
    }

    /// The key `gateway.secrets_key_file` names: never created (both
    /// gateways of a pair must get the same file), refused when group or
    /// others can read it.
    pub fn load_file(path: &Path) -> Result<Self, SecretsKeyError> {
        match read_private(path)? {
            Some(key) => Ok(key),
            None => Err(SecretsKeyError::Missing {
                path: path.to_path_buf(),
            }),
        }
    }

    /// The key under `state_dir`, made (0600) on first start.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, SecretsKeyError> {
        let path = state_dir.join(KEY_FILE);
        if let Some(key) = read_private(&path)? {
            return Ok(key);
        }
        let key = Self::generate()?;
        key.save(&path)?;
        tracing::info!(path = %path.display(), fingerprint = %key.fingerprint(), "created the secrets key");
        Ok(key)
    }

    /// The local copy under `state_dir`, when there is one.
    pub fn load_local(state_dir: &Path) -> Result<Option<Self>, SecretsKeyError> {
        read_private(&state_dir.join(KEY_FILE))
    }

    /// Makes this the key under `state_dir`, replacing another one
    /// atomically (a new 0600 file renamed over the old): SSM's local copy.
    pub fn store(&self, state_dir: &Path) -> Result<(), SecretsKeyError> {
        let path = state_dir.join(KEY_FILE);
        Ok(PrivateFile::new(&path).replace(self.file_text().as_bytes())?)
    }

    fn from_bytes(bytes: [u8; 32]) -> Self {
        let aead = match UnboundKey::new(&CHACHA20_POLY1305, &bytes) {
            Ok(key) => LessSafeKey::new(key),
            // ring refuses only a key of the wrong length; this one is 32.
            Err(_) => unreachable!("a ChaCha20-Poly1305 key is 32 bytes"),
        };
        Self { bytes, aead }
    }

    /// Writes the key to a new file created 0600; never replaces one.
    fn save(&self, path: &Path) -> Result<(), SecretsKeyError> {
        Ok(PrivateFile::new(path).create_new(self.file_text().as_bytes())?)
    }

    /// The key file's content. Never log it.
    fn file_text(&self) -> String {
        format!("{}\n", self.to_base64())
    }
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<secret>)")
    }
}

impl From<PrivateFileError> for SecretsKeyError {
    fn from(err: PrivateFileError) -> Self {
        match err {
            PrivateFileError::Read { path, source } => Self::Read { path, source },
            PrivateFileError::Write { path, source } => Self::Write { path, source },
            PrivateFileError::Unprotected { path, mode } => Self::Unprotected { path, mode },
            PrivateFileError::Empty { path } => Self::Malformed { path },
        }
    }
}

/// The key in `path`; `None` when there is no such file.
fn read_private(path: &Path) -> Result<Option<SecretsKey>, SecretsKeyError> {
    let Some(text) = PrivateFile::new(path).read_if_exists()? else {
        return Ok(None);
    };
    SecretsKey::from_base64(&text)
        .map(Some)
        .ok_or_else(|| SecretsKeyError::Malformed {
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const SECRET: &str = "JBSWY3DPEHPK3PXP";

    fn key() -> SecretsKey {
        SecretsKey::generate().unwrap()
    }

    #[test]
    fn sealed_text_opens_with_its_key_and_aad_and_never_shows_the_secret() {
        let key = key();
        let sealed = key.seal(SECRET, "alice").unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
        assert!(!sealed.contains(SECRET), "{sealed}");
        assert_eq!(key.open(&sealed, "alice").unwrap(), SECRET);
        // A fresh nonce each time.
        assert_ne!(key.seal(SECRET, "alice").unwrap(), sealed);
    }

    #[test]
    fn another_key_another_row_or_a_flipped_byte_is_refused() {
        let key = key();
        let sealed = key.seal(SECRET, "alice").unwrap();
        assert!(matches!(key.open(&sealed, "bob"), Err(SealError::Refused)));
        let other = SecretsKey::generate().unwrap();
        assert!(matches!(
            other.open(&sealed, "alice"),
            Err(SealError::Refused)
        ));
        let mut bytes = BASE64
            .decode(sealed.strip_prefix(SEALED_PREFIX).unwrap())
            .unwrap();
        for at in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[at] ^= 1;
            let flipped = format!("{SEALED_PREFIX}{}", BASE64.encode(&bytes));
            assert!(
                matches!(key.open(&flipped, "alice"), Err(SealError::Refused)),
                "byte {at}"
            );
            bytes[at] ^= 1;
        }
        assert!(matches!(
            key.open(SECRET, "alice"),
            Err(SealError::NotSealed)
        ));
        assert!(matches!(
            key.open("sealed:v1:AAAA", "alice"),
            Err(SealError::Malformed { .. })
        ));
        assert!(matches!(
            key.open("sealed:v1:not base64!", "alice"),
            Err(SealError::Malformed { .. })
        ));
    }

    #[test]
    fn debug_and_fingerprint_never_show_the_key() {
        let key = key();
        let shown = format!("{key:?} {}", key.fingerprint());
        assert!(shown.contains("<secret>"));
        assert!(!shown.contains(&key.to_base64()));
        let again = SecretsKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert_ne!(
            SecretsKey::generate().unwrap().fingerprint(),
            key.fingerprint()
        );
    }

    #[test]
    fn the_state_dir_key_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = SecretsKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = SecretsKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());

        let other = key();
        other.store(dir.path()).unwrap();
        let loaded = SecretsKey::load_local(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.fingerprint(), other.fingerprint());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SecretsKey::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, SecretsKeyError::Unprotected { mode: 0o640, .. }),
            "{err}"
        );
        std::fs::write(&path, "short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = SecretsKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, SecretsKeyError::Malformed { .. }), "{err}");
    }

    #[test]
    fn a_shared_key_file_is_used_as_given_never_created_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared.key");
        let err = SecretsKey::load_file(&shared).unwrap_err();
        assert!(matches!(err, SecretsKeyError::Missing { .. }), "{err}");
        assert!(
            err.to_string().contains("head -c 32 /dev/urandom | base64"),
            "{err}"
        );
        assert!(!shared.exists(), "never created");

        let key = key();
        std::fs::write(&shared, format!("{}\n", key.to_base64())).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretsKey::load_file(&shared).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = SecretsKey::load_file(&shared).unwrap();
        assert_eq!(loaded.fingerprint(), key.fingerprint());
        assert!(!dir.path().join(KEY_FILE).exists());
    }
}
