//! The team's SSH user CA (`ssh.certificates`) at work: it signs members'
//! short-lived OpenSSH user certificates, and checks the ones the jump host
//! is shown. [`krl`] writes the revocation list for the hosts'
//! `RevokedKeys`.
//!
//! The CA key itself ([`UserCa`]: where it lives, made, loaded, kept in
//! SSM) is [`crate::keys::ssh_user_ca`]'s; this module adds
//! [`UserCa::sign`] and [`UserCa::check`] to it, so a caller holds one CA.
//! What a certificate says (who may have one, which principals) is the
//! access service's rule (`access::certs`); this module only signs and
//! checks.

pub mod krl;

use russh::keys::ssh_key;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::{Certificate, HashAlg, PublicKey};

use crate::keys::ssh_ca_key::UserCa;

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
        let mut nonce = [0u8; 32];
        rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut nonce)
            .map_err(|err| CaError::Random(err.to_string()))?;
        let mut builder = Builder::new(
            nonce.to_vec(),
            spec.key.key_data().clone(),
            spec.valid_after,
            spec.valid_before,
        )
        .map_err(CaError::Sign)?;
        builder
            .serial(spec.serial)
            .and_then(|b| b.cert_type(CertType::User))
            .and_then(|b| b.key_id(spec.key_id.clone()))
            .and_then(|b| b.critical_option("source-address", spec.source_address.clone()))
            .map_err(CaError::Sign)?;
        for principal in spec.principals {
            builder
                .valid_principal(principal.clone())
                .map_err(CaError::Sign)?;
        }
        for extension in EXTENSIONS {
            builder.extension(*extension, "").map_err(CaError::Sign)?;
        }
        builder
            .comment(spec.key_id.clone())
            .map_err(CaError::Sign)?;
        builder.sign(self.private_key()).map_err(CaError::Sign)
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
