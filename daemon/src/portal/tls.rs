//! The portal's TLS: the certificate and key from the config, or a
//! self-signed pair generated once and kept under `state_dir/portal-tls/`
//! (key file mode 0600), so its fingerprint stays the same across restarts.
//! Serves TLS 1.2 and 1.3 only (rustls), with ring as the crypto provider.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gatehouse_config::file::TlsFiles;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Directory under `state_dir` for the generated certificate.
pub const TLS_DIR: &str = "portal-tls";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
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
    #[error("the portal's certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What the portal serves, and what `accessctl status` shows of it.
pub struct PortalTls {
    pub config: Arc<ServerConfig>,
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
) -> Result<PortalTls, TlsError> {
    let (cert_path, key_path, self_signed) = match files {
        Some(files) => (files.cert.clone(), files.key.clone(), false),
        None => {
            let dir = state_dir.join(TLS_DIR);
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            if !cert.exists() || !key.exists() {
                generate(&dir, &cert, &key, hosts)?;
            }
            (cert, key, true)
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(Iterator::collect)
        .map_err(|err| TlsError::NoCertificate {
            path: cert_path.clone(),
            reason: err.to_string(),
        })?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        path: cert_path.clone(),
        reason: "the file is empty".into(),
    })?;
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|err| TlsError::NoKey {
        path: key_path.clone(),
        reason: err.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(PortalTls {
        config: Arc::new(config),
        fingerprint,
        self_signed,
    })
}

/// `SHA256:` + hex of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

fn generate(dir: &Path, cert: &Path, key: &Path, hosts: Vec<String>) -> Result<(), TlsError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { op, path, source }
    };
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("secure", dir))?;
    let pair = rcgen::generate_simple_self_signed(hosts)?;
    // The key first, created 0600 before a byte is written.
    write_new(key, pair.signing_key.serialize_pem().as_bytes(), 0o600).map_err(io("write", key))?;
    write_new(cert, pair.cert.pem().as_bytes(), 0o644).map_err(io("write", cert))?;
    tracing::info!(cert = %cert.display(), "generated the portal's self-signed certificate");
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
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
