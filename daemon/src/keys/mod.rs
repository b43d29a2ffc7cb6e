//! The gateway's identity keys, in one place: what each key is, where its
//! file lives, how it is made, read and kept, its home in SSM, and which
//! home wins at start.
//!
//! - [`private_file`]: the one way a secret file is read (refused when
//!   group or others may read it, or empty), created (new, 0600) and
//!   replaced (atomically); the store and SSO read their secret files
//!   through it too.
//! - [`wireguard`]: the WireGuard static key ([`wireguard::GatewayKey`]).
//! - [`ssh_host`]: the jump host's SSH host key, and the ed25519 key files
//!   it shares with the user CA.
//! - [`ssh_ca_key`]: the SSH user CA's and host CA's keys
//!   ([`ssh_ca_key::UserCa`], [`ssh_ca_key::HostCa`]).
//! - [`secrets`]: the key that seals the store's secrets at rest.
//! - [`audit`]: the audit chain key and the checkpoint signing key, both
//!   derived from the secrets key.
//! - [`portal_tls`]: the portal's certificate and key, configured or
//!   self-signed.
//! - [`ssm`]: each key as an SSM SecureString ([`ssm::SsmKey`]), and the
//!   one thing asked of SSM ([`ssm::ParameterStore`]).
//! - [`resolve`]: where each key comes from at start: the file the config
//!   names, SSM with `[aws]` (the local copy when it is out of reach), or
//!   `state_dir`.
//!
//! A foundation: imports nothing of the daemon's. The SSM calls themselves
//! need the AWS SDK's clients, so they stay in `crate::aws`, which
//! implements [`ssm::ParameterStore`] over its session: `aws` imports
//! `keys`, never the reverse, and the rules of resolution are tested here
//! without AWS. Does not own what the keys are used for (the data plane,
//! the jump host, signing certificates in `crate::ssh_ca`, sealing in the
//! store, the portal's rustls config), nor the audit record of a key stored
//! in SSM at start (the start-up writes it, once the store is open).

pub mod audit;
pub mod portal_tls;
pub mod private_file;
pub mod resolve;
pub mod secrets;
pub mod ssh_ca_key;
pub mod ssh_host;
pub mod ssm;
pub mod wireguard;

/// A key could not be read or kept in its file.
#[derive(Debug, thiserror::Error)]
pub enum LocalKeyError {
    #[error(transparent)]
    WireGuard(#[from] wireguard::WireGuardKeyError),
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsKeyError),
    #[error(transparent)]
    HostKey(#[from] ssh_host::HostKeyError),
    #[error(transparent)]
    PortalTls(#[from] portal_tls::PortalTlsError),
}
