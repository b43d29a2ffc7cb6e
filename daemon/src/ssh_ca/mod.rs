//! The team's SSH CAs (`ssh.certificates`) at work: the user CA signs
//! members' short-lived OpenSSH user certificates and checks the ones the
//! jump host is shown; the host CA signs the private hosts' certificates.
//! [`krl`] writes the revocation lists (the hosts' `RevokedKeys`, members'
//! `@revoked`).
//!
//! The CA keys themselves ([`UserCa`], [`HostCa`]: where they live, made,
//! loaded, kept in SSM) are [`crate::keys::ssh_ca_key`]'s; this module adds
//! [`UserCa::sign`], [`UserCa::check`] and [`HostCa::sign_host`] to them,
//! so a caller holds one CA. What a certificate says (who may have one,
//! which principals) is the access service's rule (`access::certs`,
//! `access::host_certs`); this module only signs and checks.

pub mod krl;

use russh::keys::ssh_key;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::{Certificate, HashAlg, PublicKey};

use crate::keys::ssh_ca_key::{CaKey, CaRole, HostCa, UserCa};

/// The extension a login needs, and the only one certificates carry.
pub const EXTENSIONS: &[&str] = &["permit-pty"];
/// How far back a certificate's validity starts (clock skew).
pub const BACKDATE_SECS: u64 = 60;

/// Why a certificate could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot sign the certificate: {0}")]
    Sign(#[source] ssh_key::Error),
    #[error("no randomness for the certificate's nonce: {0}")]
    Random(String),
}

/// Why the jump host refuses a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertRefusal {
    #[error("not signed by this gateway's user CA")]
    OtherCa,
    #[error("not a user certificate")]
    NotUser,
    #[error("expired or not valid yet")]
    Expired,
    #[error("its key id names another user")]
    KeyId,
    #[error("an unknown critical option")]
    CriticalOption,
    #[error("this gateway issues no certificates (ssh.certificates is off)")]
    Off,
    #[error("not issued to this user for this key, or the member was removed since")]
    Unknown,
}

impl CertRefusal {
    /// The `reason` of its `ssh.auth.fail` record.
    pub fn code(self) -> &'static str {
        match self {
            Self::OtherCa => "cert_other_ca",
            Self::NotUser => "cert_not_user",
            Self::Expired => "cert_expired",
            Self::KeyId => "cert_key_id",
            Self::CriticalOption => "cert_critical_option",
            Self::Off => "cert_off",
            Self::Unknown => "cert_unknown",
        }
    }
}

/// What a certificate is for; the access service fills it in.
pub struct CertSpec<'a> {
    pub key: &'a PublicKey,
    pub serial: u64,
    pub key_id: String,
    pub principals: &'a [String],
    pub valid_after: u64,
    pub valid_before: u64,
    /// The `source-address` critical option: comma-separated CIDRs.
    pub source_address: String,
}

impl UserCa {
    /// Signs a user certificate for `spec`.
    pub fn sign(&self, spec: &CertSpec<'_>) -> Result<Certificate, CaError> {
        let mut builder = builder(
            spec.key,
            spec.serial,
            CertType::User,
            &spec.key_id,
            spec.principals,
            (spec.valid_after, spec.valid_before),
        )?;
        builder
            .critical_option("source-address", spec.source_address.clone())
            .map_err(CaError::Sign)?;
        for extension in EXTENSIONS {
            builder.extension(*extension, "").map_err(CaError::Sign)?;
        }
        finish(builder, self)
    }

    /// Checks a certificate the jump host is shown by `user`: signed by
    /// this CA, a user certificate, valid at `now`, its key id `key_id`,
    /// and no critical option but `source-address` (which the private hosts
    /// enforce: it names the addresses a certificate is used *from* on its
    /// second hop, the jump host being the first).
    pub fn check(&self, cert: &Certificate, key_id: &str, now: u64) -> Result<(), CertRefusal> {
        let ours = self.private_key().public_key().fingerprint(HashAlg::Sha256);
        if cert.signature_key().fingerprint(HashAlg::Sha256) != ours {
            return Err(CertRefusal::OtherCa);
        }
        if cert.validate_at(now, [&ours]).is_err() {
            return Err(CertRefusal::Expired);
        }
        if cert.cert_type() != CertType::User {
            return Err(CertRefusal::NotUser);
        }
        if cert.key_id() != key_id {
            return Err(CertRefusal::KeyId);
        }
        if cert
            .critical_options()
            .keys()
            .any(|name| name != "source-address")
        {
            return Err(CertRefusal::CriticalOption);
        }
        Ok(())
    }
}

/// What a host certificate is for; the access service fills it in.
pub struct HostCertSpec<'a> {
    /// The host's own public key.
    pub key: &'a PublicKey,
    pub serial: u64,
    pub key_id: String,
    /// The host names and addresses members reach it by.
    pub principals: &'a [String],
    pub valid_after: u64,
    pub valid_before: u64,
}

impl HostCa {
    /// Signs a host certificate for `spec`: no critical option, no
    /// extension (OpenSSH defines none for hosts).
    pub fn sign_host(&self, spec: &HostCertSpec<'_>) -> Result<Certificate, CaError> {
        let builder = builder(
            spec.key,
            spec.serial,
            CertType::Host,
            &spec.key_id,
            spec.principals,
            (spec.valid_after, spec.valid_before),
        )?;
        finish(builder, self)
    }
}

/// A certificate of `cert_type` for `key`, with a random nonce, its
/// serial, key id, principals and window; the caller adds the rest.
fn builder(
    key: &PublicKey,
    serial: u64,
    cert_type: CertType,
    key_id: &str,
    principals: &[String],
    (valid_after, valid_before): (u64, u64),
) -> Result<Builder, CaError> {
    let mut nonce = [0u8; 32];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut nonce)
        .map_err(|err| CaError::Random(err.to_string()))?;
    let mut builder = Builder::new(
        nonce.to_vec(),
        key.key_data().clone(),
        valid_after,
        valid_before,
    )
    .map_err(CaError::Sign)?;
    builder
        .serial(serial)
        .and_then(|b| b.cert_type(cert_type))
        .and_then(|b| b.key_id(key_id))
        .and_then(|b| b.comment(key_id))
        .map_err(CaError::Sign)?;
    for principal in principals {
        builder
            .valid_principal(principal.clone())
            .map_err(CaError::Sign)?;
    }
    Ok(builder)
}

/// Signs what `builder` holds with `ca`'s key.
fn finish<R: CaRole>(builder: Builder, ca: &CaKey<R>) -> Result<Certificate, CaError> {
    builder.sign(ca.private_key()).map_err(CaError::Sign)
}

/// The `sshd_config` lines for a private host that trusts this CA.
pub fn sshd_snippet(gateway: &str) -> String {
    format!(
        "# gatehouse ({gateway}): trust members' short-lived certificates instead of\n\
         # their keys. Put the CA line (`accessctl ssh ca --public-key-only`) in\n\
         # /etc/ssh/gatehouse_user_ca.pub, and in /etc/ssh/gatehouse_principals/<login>\n\
         # the principals (group.ssh_principals) that may log in as <login>, one a line.\n\
         TrustedUserCAKeys /etc/ssh/gatehouse_user_ca.pub\n\
         AuthorizedPrincipalsFile /etc/ssh/gatehouse_principals/%u\n\
         # With `accessctl ssh krl --out /etc/ssh/gatehouse_revoked.krl` kept current:\n\
         # RevokedKeys /etc/ssh/gatehouse_revoked.krl\n"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use russh::keys::PrivateKey;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    fn ca(seed: u8) -> UserCa {
        UserCa::new(PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32])))
    }

    fn issue(ca: &UserCa, key: &PublicKey, valid: (u64, u64)) -> Certificate {
        let principals = vec!["ec2-user".to_string()];
        ca.sign(&CertSpec {
            key,
            serial: 42,
            key_id: "alice@gw".into(),
            principals: &principals,
            valid_after: valid.0,
            valid_before: valid.1,
            source_address: "10.0.1.5/32,10.99.0.0/24".into(),
        })
        .unwrap()
    }

    /// A host certificate is a host certificate, for the host's key and
    /// its principals, signed by the host CA, with nothing else in it.
    #[test]
    fn host_certificates_carry_their_principals_and_nothing_else() {
        let host_ca = HostCa::new(PrivateKey::from(Ed25519Keypair::from_seed(&[3; 32])));
        let host = PrivateKey::from(Ed25519Keypair::from_seed(&[6; 32]));
        let principals = vec!["10.0.3.140".to_string(), "jupyter.internal".to_string()];
        let cert = host_ca
            .sign_host(&HostCertSpec {
                key: host.public_key(),
                serial: 9,
                key_id: "jupyter.internal@gw".into(),
                principals: &principals,
                valid_after: 1000,
                valid_before: 2000,
            })
            .unwrap();
        assert_eq!(cert.cert_type(), CertType::Host);
        assert_eq!(cert.serial(), 9);
        assert_eq!(cert.valid_principals(), principals.as_slice());
        assert_eq!(cert.public_key(), host.public_key().key_data());
        assert!(cert.critical_options().is_empty() && cert.extensions().is_empty());
        let ca_fp = host_ca
            .private_key()
            .public_key()
            .fingerprint(HashAlg::Sha256);
        assert!(cert.validate_at(1500, [&ca_fp]).is_ok());
        assert!(cert.validate_at(2000, [&ca_fp]).is_err());
    }

    /// What is signed is what the spec says, and only this CA's
    /// certificates for the right key id, in their window, pass.
    #[test]
    fn certificates_carry_the_spec_and_are_checked_against_this_ca() {
        let ours = ca(1);
        let member = PrivateKey::from(Ed25519Keypair::from_seed(&[5; 32]));
        let cert = issue(&ours, member.public_key(), (1000, 2000));
        assert_eq!(cert.serial(), 42);
        assert_eq!(cert.valid_principals(), ["ec2-user"]);
        assert_eq!(cert.key_id(), "alice@gw");
        assert_eq!(
            cert.critical_options()
                .get("source-address")
                .map(String::as_str),
            Some("10.0.1.5/32,10.99.0.0/24")
        );
        assert_eq!(cert.extensions().keys().collect::<Vec<_>>(), ["permit-pty"]);
        assert_eq!(cert.public_key(), member.public_key().key_data());
        assert_eq!(ours.check(&cert, "alice@gw", 1500), Ok(()));
        assert_eq!(
            ours.check(&cert, "alice@gw", 2000),
            Err(CertRefusal::Expired)
        );
        assert_eq!(
            ours.check(&cert, "alice@gw", 999),
            Err(CertRefusal::Expired)
        );
        assert_eq!(ours.check(&cert, "bob@gw", 1500), Err(CertRefusal::KeyId));
        let theirs = issue(&ca(2), member.public_key(), (1000, 2000));
        assert_eq!(
            ours.check(&theirs, "alice@gw", 1500),
            Err(CertRefusal::OtherCa)
        );
        let line = ours.public_line("gw");
        assert!(
            line.starts_with("ssh-ed25519 ") && line.ends_with(" gatehouse-user-ca@gw"),
            "{line}"
        );
    }
}
