//! The portal's certificate and key: the pair the config names, or a
//! self-signed pair generated once and kept under `state_dir/portal-tls/`
//! (key file mode 0600), so its fingerprint stays the same across restarts.
//! With `[aws]` the self-signed pair's home is SSM ([`SelfSigned`], see
//! [`super::ssm`]), so every gateway of a pair and every replaced instance
//! serves the same one.
//!
//! Does not own how the portal serves the pair (`portal::tls` builds the
//! rustls server config from a [`TlsPair`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gatehouse_config::file::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::private_file::{PrivateFile, PrivateFileError, replace_public_file};

/// Directory under `state_dir` for the generated certificate.
pub const TLS_DIR: &str = "portal-tls";

#[derive(Debug, thiserror::Error)]
pub enum PortalTlsError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate: {reason}")]
    NoCertificate { path: PathBuf, reason: String },
    #[error("{path} holds no usable PEM private key: {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error("cannot generate the portal's self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What the portal serves: the certificate chain and its key, read from
/// their files.
pub struct TlsPair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// `SHA256:` + lowercase hex of the leaf certificate's DER.
    pub fingerprint: String,
    pub self_signed: bool,
}

/// Loads the configured pair, or the generated one (creating it on first
/// use). `hosts` are the names and addresses the generated certificate is
/// for. Blocking.
pub fn load_or_create(
    files: Option<&TlsFiles>,
    state_dir: &Path,
    hosts: Vec<String>,
) -> Result<TlsPair, PortalTlsError> {
    let (cert_path, key_path, self_signed) = match files {
        Some(files) => (files.cert.clone(), files.key.clone(), false),
        None => {
            ensure_self_signed(state_dir, hosts)?;
            let (cert, key) = self_signed_paths(state_dir);
            (cert, key, true)
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(Iterator::collect)
        .map_err(|err| PortalTlsError::NoCertificate {
            path: cert_path.clone(),
            reason: err.to_string(),
        })?;
    let leaf = chain.first().ok_or_else(|| PortalTlsError::NoCertificate {
        path: cert_path.clone(),
        reason: "the file is empty".into(),
    })?;
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|err| PortalTlsError::NoKey {
        path: key_path.clone(),
        reason: err.to_string(),
    })?;
    Ok(TlsPair {
        chain,
        key,
        fingerprint,
        self_signed,
    })
}

/// The generated pair as files hold it: the certificate's PEM and the
/// key's. Its SSM value is the two one after the other. Never log the key.
#[derive(Clone)]
pub struct SelfSigned {
    cert_pem: String,
    key_pem: String,
    fingerprint: String,
}

impl SelfSigned {
    /// From the certificate's PEM followed by the key's; `None` unless both
    /// parse.
    pub fn from_pem_bundle(text: &str) -> Option<SelfSigned> {
        let split = text.find("-----BEGIN PRIVATE KEY-----")?;
        let (cert, key) = text.split_at(split);
        SelfSigned::from_pems(
            cert.trim().to_string() + "\n",
            key.trim().to_string() + "\n",
        )
    }

    /// The certificate's PEM, then the key's. Never log it.
    pub fn pem_bundle(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The pair under `state_dir`, if both files are there.
    pub fn load(state_dir: &Path) -> Result<Option<SelfSigned>, PortalTlsError> {
        let (cert, key) = self_signed_paths(state_dir);
        if !cert.exists() || !key.exists() {
            return Ok(None);
        }
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| PortalTlsError::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            })
        };
        SelfSigned::from_pems(read(&cert)?, read(&key)?)
            .map(Some)
            .ok_or_else(|| PortalTlsError::NoCertificate {
                path: cert,
                reason: "the generated certificate or its key does not parse".into(),
            })
    }

    /// Makes this the pair under `state_dir`, replacing another (each file
    /// written new, the key 0600, then renamed over the old).
    pub fn store(&self, state_dir: &Path) -> Result<(), PortalTlsError> {
        let (cert, key) = self_signed_paths(state_dir);
        secure_dir(&state_dir.join(TLS_DIR))?;
        PrivateFile::new(&key).replace(self.key_pem.as_bytes())?;
        replace_public_file(&cert, self.cert_pem.as_bytes())?;
        Ok(())
    }

    fn from_pems(cert_pem: String, key_pem: String) -> Option<SelfSigned> {
        let leaf = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()?
            .ok()?;
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).ok()?;
        Some(SelfSigned {
            fingerprint: fingerprint(&leaf),
            cert_pem,
            key_pem,
        })
    }
}

/// Generates the self-signed pair under `state_dir` for `hosts` unless it
/// is there. Blocking.
pub fn ensure_self_signed(state_dir: &Path, hosts: Vec<String>) -> Result<(), PortalTlsError> {
    let (cert, key) = self_signed_paths(state_dir);
    if !cert.exists() || !key.exists() {
        generate(&state_dir.join(TLS_DIR), &cert, &key, hosts)?;
    }
    Ok(())
}

/// `SHA256:` + hex of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

impl From<PrivateFileError> for PortalTlsError {
    fn from(err: PrivateFileError) -> Self {
        let reason = err.to_string();
        match err {
            PrivateFileError::Read { path, source } => Self::Io {
                op: "read",
                path,
                source,
            },
            PrivateFileError::Write { path, source } => Self::Io {
                op: "write",
                path,
                source,
            },
            PrivateFileError::Unprotected { path, .. } | PrivateFileError::Empty { path } => {
                Self::NoKey { path, reason }
            }
        }
    }
}

/// The generated pair's certificate and key files.
fn self_signed_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = state_dir.join(TLS_DIR);
    (dir.join("cert.pem"), dir.join("key.pem"))
}

fn secure_dir(dir: &Path) -> Result<(), PortalTlsError> {
    let io = |op| {
        let path = dir.to_path_buf();
        move |source| PortalTlsError::Io { op, path, source }
    };
    fs::create_dir_all(dir).map_err(io("create"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("secure"))
}

fn generate(dir: &Path, cert: &Path, key: &Path, hosts: Vec<String>) -> Result<(), PortalTlsError> {
    secure_dir(dir)?;
    let pair = rcgen::generate_simple_self_signed(hosts)?;
    // The key first, created 0600 before a byte is written.
    PrivateFile::new(key).replace(pair.signing_key.serialize_pem().as_bytes())?;
    replace_public_file(cert, pair.cert.pem().as_bytes())?;
    tracing::info!(cert = %cert.display(), "generated the portal's self-signed certificate");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = load_or_create(None, dir.path(), hosts.clone()).unwrap();
        assert!(first.self_signed);
        assert!(first.fingerprint.starts_with("SHA256:") && first.fingerprint.len() == 71);
        let key = dir.path().join(TLS_DIR).join("key.pem");
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(None, dir.path(), hosts).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint, "kept across restarts");
    }

    /// The pair as SSM keeps it (both PEMs in one value, trimmed) replaces
    /// the local one, which the portal then serves.
    #[test]
    fn a_pair_from_ssm_replaces_the_generated_one() {
        let theirs = tempfile::tempdir().unwrap();
        let ours = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string()];
        ensure_self_signed(theirs.path(), hosts.clone()).unwrap();
        ensure_self_signed(ours.path(), hosts.clone()).unwrap();
        let pair = SelfSigned::load(theirs.path()).unwrap().unwrap();
        let parsed = SelfSigned::from_pem_bundle(pair.pem_bundle().trim()).unwrap();
        assert_eq!(parsed.fingerprint(), pair.fingerprint());
        assert!(SelfSigned::from_pem_bundle("-----BEGIN PRIVATE KEY-----\nx").is_none());
        assert_ne!(
            SelfSigned::load(ours.path())
                .unwrap()
                .unwrap()
                .fingerprint(),
            pair.fingerprint()
        );
        parsed.store(ours.path()).unwrap();
        let served = load_or_create(None, ours.path(), hosts).unwrap();
        assert_eq!(served.fingerprint, pair.fingerprint());
        let key = ours.path().join(TLS_DIR).join("key.pem");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn configured_files_that_are_not_pem_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        fs::write(&cert, "not pem").unwrap();
        let files = TlsFiles {
            cert: cert.clone(),
            key: dir.path().join("k.pem"),
        };
        let err = load_or_create(Some(&files), dir.path(), vec![])
            .err()
            .unwrap();
        assert!(err.to_string().contains("c.pem"), "{err}");
    }
}
