//! The syslog client's TLS settings: rustls on ring (as the portal and the
//! shared store), the receiver's certificate checked against
//! `audit.syslog.ca_file` (else the system's roots) for
//! `audit.syslog.server_name`, and the gateway's client certificate when
//! one is configured. Read once at start: a missing or malformed file stops
//! start-up with its path.

use std::path::Path;
use std::sync::Arc;

use gatehouse_config::file::{SyslogConfig, TlsFiles};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::ExportError;

/// The connector and the name the receiver's certificate must carry.
pub fn connector(
    config: &SyslogConfig,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), ExportError> {
    let server_name = ServerName::try_from(config.server_name.clone()).map_err(|source| {
        ExportError::ServerName {
            name: config.server_name.clone(),
            source,
        }
    })?;
    let client = client_config(config.ca_file.as_deref(), config.client_auth.as_ref())?;
    Ok((
        tokio_rustls::TlsConnector::from(Arc::new(client)),
        server_name,
    ))
}

/// The client settings: the roots, and the client certificate if any.
pub fn client_config(
    ca_file: Option<&Path>,
    client_auth: Option<&TlsFiles>,
) -> Result<rustls::ClientConfig, ExportError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates("audit.syslog.ca_file", path)? {
                roots
                    .add(cert)
                    .map_err(|source| ExportError::Tls { source })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let reason = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_string(), ToString::to_string);
                return Err(ExportError::NoRoots { reason });
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| ExportError::Tls { source })?
        .with_root_certificates(roots);
    match client_auth {
        None => Ok(builder.with_no_client_auth()),
        Some(files) => {
            let chain = certificates("audit.syslog.client_cert_file", &files.cert)?;
            let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| {
                ExportError::TlsFile {
                    what: "audit.syslog.client_key_file",
                    path: files.key.clone(),
                    source,
                }
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| ExportError::Tls { source })
        }
    }
}

/// Every PEM certificate in `path`; at least one.
fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ExportError> {
    let error = |source| ExportError::TlsFile {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(error)?;
    if certs.is_empty() {
        return Err(ExportError::TlsFileEmpty {
            what,
            path: path.to_path_buf(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_their_key_and_path() {
        let dir = tempfile::TempDir::new().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = client_config(Some(&missing), None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("audit.syslog.ca_file") && text.contains("nope.pem"),
            "{text}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = client_config(Some(&empty), None).unwrap_err();
        assert!(matches!(err, ExportError::TlsFileEmpty { .. }), "{err}");

        let ca = rcgen::generate_simple_self_signed(vec!["logs.test".into()]).unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert.pem()).unwrap();
        assert!(client_config(Some(&ca_path), None).is_ok());
        let files = TlsFiles {
            cert: ca_path.clone(),
            key: dir.path().join("no-key.pem"),
        };
        let err = client_config(Some(&ca_path), Some(&files)).unwrap_err();
        assert!(
            err.to_string().contains("audit.syslog.client_key_file"),
            "{err}"
        );
        std::fs::write(&files.key, ca.signing_key.serialize_pem()).unwrap();
        assert!(client_config(Some(&ca_path), Some(&files)).is_ok());
    }
}
