//! This installation's id, kept in `state_dir` (`installation-id`): made
//! once, at the first start with `[ha]`, and the same on every start after.
//! Two nodes of a pair are told apart by it, not only by `ha.node`: the
//! lease counts as "my previous run" only for the same id, and a node
//! refuses to start while another id reports under its name (a copied
//! config), instead of the two taking the lease from each other.
//!
//! Not a secret (it is in `accessctl ha status`). A cloned disk carries it:
//! delete the file on the clone before its first start.

use std::fmt;
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

use crate::keys::private_file::{PrivateFileError, replace_public_file};

/// The file under `state_dir`.
pub const INSTALLATION_FILE: &str = "installation-id";

/// 128 random bits, as 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationId(String);

/// The id file could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum InstallationError {
    #[error("cannot read this installation's id from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} does not hold an installation id (32 hex digits); delete it and accessd makes a new one"
    )]
    Malformed { path: PathBuf },
    #[error("cannot keep this installation's id: {0}")]
    Write(#[from] PrivateFileError),
}

impl InstallationId {
    /// The id in `state_dir`, made and kept there if there is none yet.
    pub fn load_or_create(state_dir: &Path) -> Result<InstallationId, InstallationError> {
        let path = state_dir.join(INSTALLATION_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => InstallationId::parse(text.trim())
                .ok_or(InstallationError::Malformed { path: path.clone() }),
            Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
                let id = InstallationId::random();
                replace_public_file(&path, format!("{}\n", id.0).as_bytes())?;
                Ok(id)
            }
            Err(source) => Err(InstallationError::Read { path, source }),
        }
    }

    /// A new random id.
    pub fn random() -> InstallationId {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        InstallationId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// `text` if it is 32 lowercase hex digits.
    pub fn parse(text: &str) -> Option<InstallationId> {
        (text.len() == 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| InstallationId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_the_same_on_every_start_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstallationId::load_or_create(dir.path()).unwrap();
        assert_eq!(first.as_str().len(), 32);
        assert_eq!(InstallationId::load_or_create(dir.path()).unwrap(), first);
        assert_ne!(InstallationId::random(), first);

        std::fs::write(dir.path().join(INSTALLATION_FILE), "not an id\n").unwrap();
        let refused = InstallationId::load_or_create(dir.path()).unwrap_err();
        assert!(refused.to_string().contains(INSTALLATION_FILE), "{refused}");
    }
}
