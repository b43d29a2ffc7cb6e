//! The identity keys' home in SSM Parameter Store, each a SecureString
//! under `/gatehouse/<name>/`, so every node of a pair and every replaced
//! instance looks like one gateway:
//! - the WireGuard key (`wireguard-key`: every device config keeps working);
//! - the secrets key (`secrets-key`: it opens the TOTP secrets the store
//!   keeps sealed);
//! - the SSH host key (`ssh-host-key`: `ssh -J` never warns of a changed
//!   host key), unless `ssh.host_key_file` names one;
//! - the SSH user CA key (`ssh-user-ca`, with `ssh.certificates`: both nodes
//!   sign members' certificates with the CA the private hosts trust), and
//!   the host CA key (`ssh-host-ca`: the CA members trust for the hosts),
//!   unless `ssh.ca_key_file` and `ssh.host_ca_key_file` name them;
//! - the portal's self-signed certificate and key (`portal-tls`: one
//!   fingerprint), unless `portal.tls_cert` names a certificate.
//!
//! [`SsmKey`] says what each key is as a parameter (its name, its value,
//! what may be logged of it, its 0600 local copy under `state_dir`);
//! [`ParameterStore`] is the one thing asked of SSM, which `crate::aws`
//! implements with the SDK. A key is never logged: only its public half or
//! fingerprint.

use std::path::Path;

use russh::keys::PrivateKey;

use super::LocalKeyError;
use super::portal_tls::{PortalTlsError, SelfSigned};
use super::secrets::{self, SecretsKey};
use super::ssh_ca_key::{CaKey, CaRole};
use super::ssh_host;
use super::wireguard::{self, GatewayKey};

/// Where the running key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// SSM held it (the local copy now matches).
    Ssm,
    /// SSM had none: the local key (made now if new) was stored there.
    StoredInSsm,
}

/// A key whose home is an SSM SecureString, with a local copy under
/// `state_dir` (the same 0600 file accessd uses without `[aws]`).
pub trait SsmKey: Sized + Send + Sync + 'static {
    /// What it is, for the parameter's description, logs and audit records.
    const WHAT: &'static str;
    /// What the operator can do when the parameter holds something else.
    const IF_MALFORMED: &'static str;
    /// Why a new key is no answer when SSM is out of reach on a first start.
    const WHY_NOT_NEW: &'static str;
    /// The local copy's file name under `state_dir`.
    const LOCAL_FILE: &'static str;
    /// `/gatehouse/<gateway>/...`.
    fn parameter_name(gateway: &str) -> String;
    /// From the parameter's value (trimmed); `None` when it is not one.
    fn from_parameter(text: &str) -> Option<Self>;
    /// The parameter's value. Never log it.
    fn parameter_value(&self) -> String;
    /// What may be logged and audited to tell two keys apart.
    fn label(&self) -> String;
    /// The local copy, if there is one.
    fn load_local(state_dir: &Path) -> Result<Option<Self>, LocalKeyError>;
    /// The local copy, made now (0600) if there is none.
    fn load_or_create_local(state_dir: &Path) -> Result<Self, LocalKeyError>;
    /// Makes this the local copy, replacing another atomically.
    fn store_local(&self, state_dir: &Path) -> Result<(), LocalKeyError>;
}

/// SSM, as the keys' resolution at start ([`super::resolve`]) needs it.
pub trait ParameterStore: Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The key in its parameter (its local copy made to match), or, when
    /// there is none, the local key (made now if new) stored there.
    fn load_or_store<K: SsmKey>(
        &self,
        gateway: &str,
        state_dir: &Path,
    ) -> impl Future<Output = Result<(K, KeyOrigin), Self::Error>> + Send;
}

/// `/gatehouse/<name>/wireguard-key`.
pub fn wireguard_key_parameter_name(gateway: &str) -> String {
    format!("/gatehouse/{gateway}/wireguard-key")
}

/// `/gatehouse/<name>/secrets-key`: the key that seals the store's secrets
/// (read or created at start, not part of the plan).
pub fn secrets_key_parameter_name(gateway: &str) -> String {
    format!("/gatehouse/{gateway}/secrets-key")
}

/// `/gatehouse/<name>/ssh-host-key`: the jump host's SSH host key (an
/// OpenSSH private key), when no `ssh.host_key_file` is set.
pub fn ssh_host_key_parameter_name(gateway: &str) -> String {
    format!("/gatehouse/{gateway}/ssh-host-key")
}

/// `/gatehouse/<name>/ssh-user-ca` and `/gatehouse/<name>/ssh-host-ca`:
/// the SSH CA keys (`ssh.certificates`).
pub fn ssh_ca_parameter_name<R: CaRole>(gateway: &str) -> String {
    format!("/gatehouse/{gateway}/{}", R::PARAMETER)
}

/// `/gatehouse/<name>/portal-tls`: the portal's self-signed certificate and
/// its key (PEM, one after the other), when no `portal.tls_cert` is set.
pub fn portal_tls_parameter_name(gateway: &str) -> String {
    format!("/gatehouse/{gateway}/portal-tls")
}

impl SsmKey for GatewayKey {
    const WHAT: &'static str = "the gateway's WireGuard private key";
    const IF_MALFORMED: &'static str = "restore it, or delete it to store this gateway's key there (every device config then needs re-issuing)";
    const WHY_NOT_NEW: &'static str = "making a new key would break every device config";
    const LOCAL_FILE: &'static str = wireguard::KEY_FILE;
    fn parameter_name(gateway: &str) -> String {
        wireguard_key_parameter_name(gateway)
    }
    fn from_parameter(text: &str) -> Option<Self> {
        GatewayKey::from_base64(text)
    }
    fn parameter_value(&self) -> String {
        self.private_base64()
    }
    fn label(&self) -> String {
        format!("public key {}", self.public_base64())
    }
    fn load_local(state_dir: &Path) -> Result<Option<Self>, LocalKeyError> {
        if !state_dir.join(wireguard::KEY_FILE).exists() {
            return Ok(None);
        }
        Ok(Some(GatewayKey::load_or_create(state_dir)?))
    }
    fn load_or_create_local(state_dir: &Path) -> Result<Self, LocalKeyError> {
        Ok(GatewayKey::load_or_create(state_dir)?)
    }
    fn store_local(&self, state_dir: &Path) -> Result<(), LocalKeyError> {
        Ok(self.store(state_dir)?)
    }
}

impl SsmKey for SecretsKey {
    const WHAT: &'static str = "the key that seals the store's secrets";
    const IF_MALFORMED: &'static str =
        "restore it from a backup: the stored TOTP secrets open only with the key that sealed them";
    const WHY_NOT_NEW: &'static str =
        "a new key would not open the TOTP secrets the store already holds";
    const LOCAL_FILE: &'static str = secrets::KEY_FILE;
    fn parameter_name(gateway: &str) -> String {
        secrets_key_parameter_name(gateway)
    }
    fn from_parameter(text: &str) -> Option<Self> {
        SecretsKey::from_base64(text)
    }
    fn parameter_value(&self) -> String {
        self.to_base64()
    }
    fn label(&self) -> String {
        format!("fingerprint {}", self.fingerprint())
    }
    fn load_local(state_dir: &Path) -> Result<Option<Self>, LocalKeyError> {
        Ok(SecretsKey::load_local(state_dir)?)
    }
    fn load_or_create_local(state_dir: &Path) -> Result<Self, LocalKeyError> {
        Ok(SecretsKey::load_or_create(state_dir)?)
    }
    fn store_local(&self, state_dir: &Path) -> Result<(), LocalKeyError> {
        Ok(self.store(state_dir)?)
    }
}

impl SsmKey for PrivateKey {
    const WHAT: &'static str = "the jump host's SSH host key";
    const IF_MALFORMED: &'static str = "put an unencrypted OpenSSH private key there, or delete it to store this gateway's host key (clients then see a changed host key)";
    const WHY_NOT_NEW: &'static str =
        "a new host key would make every `ssh -J` warn of a changed host key";
    const LOCAL_FILE: &'static str = ssh_host::HOST_KEY_FILE;
    fn parameter_name(gateway: &str) -> String {
        ssh_host_key_parameter_name(gateway)
    }
    fn from_parameter(text: &str) -> Option<Self> {
        ssh_host::host_key_from_openssh(text)
    }
    fn parameter_value(&self) -> String {
        // An ed25519 key made or checked at load always encodes.
        ssh_host::host_key_to_openssh(self).unwrap_or_default()
    }
    fn label(&self) -> String {
        format!("fingerprint {}", ssh_host::fingerprint(self.public_key()))
    }
    fn load_local(state_dir: &Path) -> Result<Option<Self>, LocalKeyError> {
        Ok(ssh_host::load_local_host_key(state_dir)?)
    }
    fn load_or_create_local(state_dir: &Path) -> Result<Self, LocalKeyError> {
        Ok(ssh_host::load_or_create_host_key(state_dir)?)
    }
    fn store_local(&self, state_dir: &Path) -> Result<(), LocalKeyError> {
        Ok(ssh_host::store_host_key(self, state_dir)?)
    }
}

impl<R: CaRole> SsmKey for CaKey<R> {
    const WHAT: &'static str = R::WHAT;
    const IF_MALFORMED: &'static str = R::IF_MALFORMED;
    const WHY_NOT_NEW: &'static str = R::WHY_NOT_NEW;
    const LOCAL_FILE: &'static str = R::LOCAL_FILE;
    fn parameter_name(gateway: &str) -> String {
        ssh_ca_parameter_name::<R>(gateway)
    }
    fn from_parameter(text: &str) -> Option<Self> {
        ssh_host::host_key_from_openssh(text).map(CaKey::new)
    }
    fn parameter_value(&self) -> String {
        ssh_host::host_key_to_openssh(self.private_key()).unwrap_or_default()
    }
    fn label(&self) -> String {
        format!("fingerprint {}", self.fingerprint())
    }
    fn load_local(state_dir: &Path) -> Result<Option<Self>, LocalKeyError> {
        Ok(CaKey::load_local(state_dir)?)
    }
    fn load_or_create_local(state_dir: &Path) -> Result<Self, LocalKeyError> {
        Ok(CaKey::load_or_create_local(state_dir)?)
    }
    fn store_local(&self, state_dir: &Path) -> Result<(), LocalKeyError> {
        Ok(self.store_local(state_dir)?)
    }
}

impl SsmKey for SelfSigned {
    const WHAT: &'static str = "the portal's self-signed certificate and key";
    const IF_MALFORMED: &'static str = "put a PEM certificate followed by its PEM private key there, or delete it to store this gateway's (browsers then see a new certificate)";
    const WHY_NOT_NEW: &'static str =
        "a new certificate would greet every member with a changed fingerprint";
    const LOCAL_FILE: &'static str = "portal-tls/cert.pem";
    fn parameter_name(gateway: &str) -> String {
        portal_tls_parameter_name(gateway)
    }
    fn from_parameter(text: &str) -> Option<Self> {
        SelfSigned::from_pem_bundle(text)
    }
    fn parameter_value(&self) -> String {
        self.pem_bundle()
    }
    fn label(&self) -> String {
        format!("fingerprint {}", self.fingerprint())
    }
    fn load_local(state_dir: &Path) -> Result<Option<Self>, LocalKeyError> {
        Ok(SelfSigned::load(state_dir)?)
    }
    /// The portal's start generates the pair first (it knows the names it
    /// is for), so the local copy is there by now.
    fn load_or_create_local(state_dir: &Path) -> Result<Self, LocalKeyError> {
        SelfSigned::load(state_dir)?.ok_or_else(|| {
            LocalKeyError::PortalTls(PortalTlsError::NoCertificate {
                path: state_dir.join(Self::LOCAL_FILE),
                reason: "the file is missing".into(),
            })
        })
    }
    fn store_local(&self, state_dir: &Path) -> Result<(), LocalKeyError> {
        Ok(self.store(state_dir)?)
    }
}
