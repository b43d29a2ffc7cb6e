//! A secret the operator keeps in a file of its own (the database
//! password, the OIDC client secret): read only if no one but its owner may
//! read it (no group or other permission bits), and never empty.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why the file cannot be used; the caller names which file it is.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("mode {mode:o} lets others read it: chmod 600 {path}")]
    Unprotected { path: String, mode: u32 },
    #[error("it is empty")]
    Empty,
}

/// The file's text without its trailing line break (`trim` removes
/// surrounding whitespace too, for values that cannot hold any).
pub fn read_private_text(path: &Path, trim: bool) -> Result<String, PrivateFileError> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Unprotected {
            path: path.display().to_string(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path)?;
    let value = match trim {
        true => text.trim(),
        false => text.trim_end_matches(['\r', '\n']),
    };
    if value.is_empty() {
        return Err(PrivateFileError::Empty);
    }
    Ok(value.to_string())
}
