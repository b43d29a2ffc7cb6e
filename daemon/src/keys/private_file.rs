//! A secret kept in a file of its own (a key under `state_dir`, a key file
//! the operator gives both gateways of a pair, the database password, the
//! OIDC client secret), read and written one way:
//! - read only if no one but its owner may read it (no group or other
//!   permission bits), and never empty;
//! - created new with mode 0600, never over another file;
//! - replaced atomically: a new 0600 file beside it, synced, renamed over
//!   the old, the directory synced.
//!
//! Does not own what the file holds, nor what its owner calls it: errors
//! carry the path and the cause, and each key maps them to its own words.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the file cannot be used. Written to follow the caller's "cannot use
/// <which file> <path>: ", so only [`PrivateFileError::Unprotected`] names
/// the path again (in the command that fixes it).
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mode {mode:o} lets others read it: chmod 600 {}", path.display())]
    Unprotected { path: PathBuf, mode: u32 },
    #[error("it is empty")]
    Empty { path: PathBuf },
}

/// A file only its owner may read.
#[derive(Debug, Clone, Copy)]
pub struct PrivateFile<'a> {
    path: &'a Path,
}

impl<'a> PrivateFile<'a> {
    pub fn new(path: &'a Path) -> Self {
        Self { path }
    }

    /// True when `mode` gives group and others no permission at all: the
    /// one rule every secret file is held to.
    pub fn mode_is_private(mode: u32) -> bool {
        mode & 0o077 == 0
    }

    /// The file's text, refused when group or others may read it or when
    /// it is empty.
    pub fn read(&self) -> Result<String, PrivateFileError> {
        let read_error = |source| PrivateFileError::Read {
            path: self.path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(self.path)
            .map_err(read_error)?
            .permissions()
            .mode()
            & 0o777;
        if !Self::mode_is_private(mode) {
            return Err(PrivateFileError::Unprotected {
                path: self.path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(self.path).map_err(read_error)?;
        if text.is_empty() {
            return Err(PrivateFileError::Empty {
                path: self.path.to_path_buf(),
            });
        }
        Ok(text)
    }

    /// As [`PrivateFile::read`], `None` when there is no such file.
    pub fn read_if_exists(&self) -> Result<Option<String>, PrivateFileError> {
        match self.read() {
            Ok(text) => Ok(Some(text)),
            Err(PrivateFileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// One value (a password, a client secret): the text without its
    /// trailing line break (`trim` removes surrounding whitespace too, for
    /// values that cannot hold any), refused when nothing is left.
    pub fn read_value(&self, trim: bool) -> Result<String, PrivateFileError> {
        let text = self.read()?;
        let value = match trim {
            true => text.trim(),
            false => text.trim_end_matches(['\r', '\n']),
        };
        if value.is_empty() {
            return Err(PrivateFileError::Empty {
                path: self.path.to_path_buf(),
            });
        }
        Ok(value.to_string())
    }

    /// Writes `bytes` to a new file created 0600 (before a byte is
    /// written) and synced; never replaces an existing one, so a key
    /// another process has just made is never lost.
    pub fn create_new(&self, bytes: &[u8]) -> Result<(), PrivateFileError> {
        write_new(self.path, bytes, 0o600).map_err(|source| self.write_error(source))
    }

    /// Makes `bytes` the file's content, replacing what is there
    /// atomically: a reader sees the old file or the new one, never a part.
    pub fn replace(&self, bytes: &[u8]) -> Result<(), PrivateFileError> {
        replace_with_mode(self.path, bytes, 0o600).map_err(|source| self.write_error(source))
    }

    fn write_error(&self, source: std::io::Error) -> PrivateFileError {
        PrivateFileError::Write {
            path: self.path.to_path_buf(),
            source,
        }
    }
}

/// As [`PrivateFile::replace`], for a file that goes beside a private one
/// and that anyone may read (a certificate): mode 0644.
pub fn replace_public_file(path: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    replace_with_mode(path, bytes, 0o644).map_err(|source| PrivateFileError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The new content goes to `<name>.new` in the same directory (so the
/// rename cannot cross file systems), then over `path`.
fn replace_with_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(".new");
    let fresh = PathBuf::from(fresh);
    // A leftover of a replace that was interrupted: never anyone's key.
    match std::fs::remove_file(&fresh) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    write_new(&fresh, bytes, mode)?;
    std::fs::rename(&fresh, path)?;
    // The rename itself is durable only once the directory is synced.
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_file_others_may_read_is_refused_with_the_path_the_mode_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = PrivateFile::new(&path).read().unwrap_err();
        assert!(
            matches!(err, PrivateFileError::Unprotected { mode: 0o640, .. }),
            "{err}"
        );
        let said = err.to_string();
        assert!(
            said.contains("640") && said.contains(&format!("chmod 600 {}", path.display())),
            "{said}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(PrivateFile::new(&path).read().unwrap(), "s3cret\n");
        assert_eq!(PrivateFile::new(&path).read_value(false).unwrap(), "s3cret");
    }

    #[test]
    fn missing_empty_and_blank_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let file = PrivateFile::new(&path);
        assert!(file.read_if_exists().unwrap().is_none());
        assert!(matches!(file.read(), Err(PrivateFileError::Read { .. })));
        file.create_new(b"").unwrap();
        assert!(matches!(file.read(), Err(PrivateFileError::Empty { .. })));
        file.replace(b" \n").unwrap();
        assert_eq!(file.read_value(false).unwrap(), " ");
        assert!(matches!(
            file.read_value(true),
            Err(PrivateFileError::Empty { .. })
        ));
    }

    #[test]
    fn created_new_0600_never_over_another_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let file = PrivateFile::new(&path);
        file.create_new(b"first").unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert!(matches!(
            file.create_new(b"second"),
            Err(PrivateFileError::Write { .. })
        ));
        assert_eq!(file.read().unwrap(), "first");
        // A leftover temporary file does not stop a replace.
        std::fs::write(dir.path().join("key.new"), "stale").unwrap();
        file.replace(b"second").unwrap();
        assert_eq!(file.read().unwrap(), "second");
        assert_eq!(mode_of(&path), 0o600);
        assert!(!dir.path().join("key.new").exists());

        let cert = dir.path().join("cert.pem");
        replace_public_file(&cert, b"cert").unwrap();
        assert_eq!(mode_of(&cert), 0o644);
    }
}
