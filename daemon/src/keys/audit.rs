//! The audit log's two keys, neither ever in the database:
//! - the chain key: each record's chain value is an HMAC-SHA256 under it
//!   ([`crate::audit::chain`]), so someone who can write only the database
//!   cannot insert or alter a record that verifies;
//! - the signing key: an ed25519 key that signs the chain's checkpoints
//!   ([`crate::audit::checkpoint`]) as OpenSSH signatures (`SSHSIG`, namespace
//!   [`SIGNATURE_NAMESPACE`]), so a third party verifies them with the public
//!   key alone, even with stock `ssh-keygen -Y verify`.
//!
//! Both are derived from the secrets key ([`SecretsKey::derive`], HKDF-SHA256
//! under a name for each use). They therefore live where that key lives
//! (`state_dir`, `gateway.secrets_key_file`, or an SSM SecureString with
//! `[aws]`), the two gateways of a pair share them without another file to
//! hand out, and neither derived key tells the secrets key or the other.
//! Does not own what is chained or signed, only the keys and the two
//! operations.

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{HashAlg, LineEnding, SshSig};
use russh::keys::{PrivateKey, PublicKey};

use super::secrets::SecretsKey;

/// The `SSHSIG` namespace of checkpoint signatures (`ssh-keygen -Y verify -n`).
pub const SIGNATURE_NAMESPACE: &str = "gatehouse-audit";

/// HKDF `info` of the chain key. Changing it changes every keyed record's
/// expected hash: never.
const CHAIN_KEY_INFO: &[u8] = b"gatehouse audit chain key v1";
/// HKDF `info` of the signing key's seed. Changing it changes the public
/// key that third parties trust: never.
const SIGNING_KEY_INFO: &[u8] = b"gatehouse audit signing key v1";

/// The chain key and the signing key. `Debug` shows only the public key.
#[derive(Clone)]
pub struct AuditKeys {
    chain: ring::hmac::Key,
    signing: PrivateKey,
}

/// A checkpoint signature could not be made or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("cannot sign the audit checkpoint: {0}")]
    Sign(#[source] russh::keys::ssh_key::Error),
    #[error("the signature is not an armored SSH signature: {0}")]
    Malformed(#[source] russh::keys::ssh_key::Error),
    #[error("the signature does not verify with the audit signing key {fingerprint}")]
    Refused { fingerprint: String },
}

impl AuditKeys {
    /// The audit keys of the gateway whose secrets key is `secrets`.
    pub fn derive(secrets: &SecretsKey) -> Self {
        let chain = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secrets.derive(CHAIN_KEY_INFO));
        let seed = secrets.derive(SIGNING_KEY_INFO);
        let signing = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        Self { chain, signing }
    }

    /// HMAC-SHA256 of `bytes` under the chain key.
    pub fn chain_mac(&self, bytes: &[u8]) -> ring::hmac::Tag {
        ring::hmac::sign(&self.chain, bytes)
    }

    /// An armored `SSHSIG` of `message` (namespace [`SIGNATURE_NAMESPACE`]).
    pub fn sign(&self, message: &[u8]) -> Result<String, SignatureError> {
        self.signing
            .sign(SIGNATURE_NAMESPACE, HashAlg::Sha512, message)
            .and_then(|sig| sig.to_pem(LineEnding::LF))
            .map_err(SignatureError::Sign)
    }

    /// The signing key's public half: what third parties verify against.
    pub fn public_key(&self) -> &PublicKey {
        self.signing.public_key()
    }

    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        self.public_key().fingerprint(HashAlg::Sha256).to_string()
    }

    /// The line of an `allowed_signers` file that lets `ssh-keygen -Y
    /// verify -I gatehouse-audit@<gateway> -n gatehouse-audit` check a
    /// checkpoint.
    pub fn allowed_signers_line(&self, gateway: &str) -> String {
        format!(
            "gatehouse-audit@{gateway} namespaces=\"{SIGNATURE_NAMESPACE}\" {}",
            self.public_line(gateway)
        )
    }

    /// `ssh-ed25519 AAAA... gatehouse-audit@<gateway>`.
    pub fn public_line(&self, gateway: &str) -> String {
        let mut public = self.public_key().clone();
        public.set_comment(format!("gatehouse-audit@{gateway}"));
        public.to_openssh().unwrap_or_default()
    }
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKeys(signing {})", self.fingerprint())
    }
}

/// Fixed audit keys for tests (from a fixed secrets key).
#[cfg(test)]
pub(crate) fn test_keys() -> AuditKeys {
    let secrets = SecretsKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    match secrets {
        Some(secrets) => AuditKeys::derive(&secrets),
        None => unreachable!("the test key is 32 bytes of base64"),
    }
}

/// Whether `armored` is `public`'s signature of `message`: needs no private
/// key.
pub fn check_signature(
    public: &PublicKey,
    message: &[u8],
    armored: &str,
) -> Result<(), SignatureError> {
    let sig = SshSig::from_pem(armored).map_err(SignatureError::Malformed)?;
    public
        .verify(SIGNATURE_NAMESPACE, message, &sig)
        .map_err(|_| SignatureError::Refused {
            fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn secrets(text: &str) -> SecretsKey {
        SecretsKey::from_base64(text).unwrap()
    }

    const ONE: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const TWO: &str = "HwAeHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

    /// The same secrets key gives the same keys (both gateways of a pair
    /// agree); another gives others; neither is the secrets key itself.
    #[test]
    fn the_keys_follow_the_secrets_key_and_are_not_it() {
        let a = AuditKeys::derive(&secrets(ONE));
        let again = AuditKeys::derive(&secrets(ONE));
        let b = AuditKeys::derive(&secrets(TWO));
        assert_eq!(a.chain_mac(b"x").as_ref(), again.chain_mac(b"x").as_ref());
        assert_ne!(a.chain_mac(b"x").as_ref(), b.chain_mac(b"x").as_ref());
        assert_eq!(a.public_line("gw"), again.public_line("gw"));
        assert_ne!(a.public_line("gw"), b.public_line("gw"));
        let plain = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secrets(ONE).derive(b"")),
            b"x",
        );
        assert_ne!(a.chain_mac(b"x").as_ref(), plain.as_ref());
        assert!(a.public_line("gw").starts_with("ssh-ed25519 "));
        assert!(a.public_line("gw").ends_with(" gatehouse-audit@gw"));
    }

    #[test]
    fn a_signature_verifies_with_the_public_key_only_and_binds_the_message() {
        let keys = AuditKeys::derive(&secrets(ONE));
        let sig = keys.sign(b"checkpoint 42").unwrap();
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----"), "{sig}");
        let public = keys.public_key().clone();
        check_signature(&public, b"checkpoint 42", &sig).unwrap();
        assert!(matches!(
            check_signature(&public, b"checkpoint 43", &sig),
            Err(SignatureError::Refused { .. })
        ));
        let other = AuditKeys::derive(&secrets(TWO));
        assert!(check_signature(other.public_key(), b"checkpoint 42", &sig).is_err());
        assert!(matches!(
            check_signature(&public, b"checkpoint 42", "not a signature"),
            Err(SignatureError::Malformed(_))
        ));
        assert!(!format!("{keys:?}").contains(ONE));
    }
}
