//! The portal's TLS server config: the certificate and key
//! ([`crate::keys::portal_tls`]: configured, or self-signed and kept under
//! `state_dir`, with `[aws]` in SSM) served with rustls, TLS 1.2 and 1.3
//! only, ring as the crypto provider.

use std::path::Path;
use std::sync::Arc;

use gatehouse_config::file::TlsFiles;
use rustls::ServerConfig;

use crate::keys::portal_tls::{self, PortalTlsError};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pair(#[from] PortalTlsError),
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

/// The server config for the configured pair, or the generated one
/// (creating it on first use); `hosts` are the names and addresses the
/// generated certificate is for. Blocking.
pub fn load_server_config(
    files: Option<&TlsFiles>,
    state_dir: &Path,
    hosts: Vec<String>,
) -> Result<PortalTls, TlsError> {
    let pair = portal_tls::load_or_create(files, state_dir, hosts)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(pair.chain, pair.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(PortalTls {
        config: Arc::new(config),
        fingerprint: pair.fingerprint,
        self_signed: pair.self_signed,
    })
}
