//! Parsing the SSH public keys admins register for users (`--ssh-key
//! alice.pub`): one OpenSSH public key line in, a store [`SshKey`] row out,
//! with the same `SHA256:...` fingerprint `ssh-keygen -lf` prints.
//!
//! Accepts ed25519, ECDSA (nistp256/384/521) and RSA of at least 2048 bits.
//! Refuses private keys with a message that says what to pass instead. Does
//! not authenticate anyone: the SSH broker compares keys against the store.

use ssh_key::{Algorithm, HashAlg, PublicKey};

use crate::store::SshKey;
use gatehouse_config::api::ErrorCode;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Why a public key was refused.
#[derive(Debug, thiserror::Error)]
pub enum SshKeyError {
    #[error("no public key given: the input is empty")]
    Empty,

    #[error("this is a private key; pass the .pub file")]
    PrivateKey,

    #[error(
        "RFC 4716 (\"SSH2\") public keys are not accepted; convert it with `ssh-keygen -i -f FILE`"
    )]
    Rfc4716,

    #[error("expected exactly one public key line, got {lines} lines")]
    MultipleLines { lines: usize },

    #[error("not an OpenSSH public key (expected \"ssh-ed25519 AAAA... comment\"): {source}")]
    Invalid { source: ssh_key::Error },

    #[error(
        "{algorithm} keys are not accepted; use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or \
         ssh-rsa with at least {MIN_RSA_BITS} bits"
    )]
    Unsupported { algorithm: String },

    #[error("this RSA key has {bits} bits; at least {MIN_RSA_BITS} are required")]
    RsaTooSmall { bits: usize },

    #[error("cannot re-encode the public key: {source}")]
    Encode { source: ssh_key::Error },
}

impl SshKeyError {
    /// The admin API error code: every refusal is a bad value.
    pub fn api_code(&self) -> ErrorCode {
        ErrorCode::InvalidValue
    }
}

/// Parses one OpenSSH public key line (`algorithm base64 [comment]`, as in a
/// `.pub` file) into a store row. `added_at` is 0: the caller sets it.
pub fn parse_public_key(line: &str) -> Result<SshKey, SshKeyError> {
    let text = line.trim();
    if text.is_empty() {
        return Err(SshKeyError::Empty);
    }
    if text.contains("PRIVATE KEY") || text.starts_with("PuTTY-User-Key-File") {
        return Err(SshKeyError::PrivateKey);
    }
    if text.starts_with("---- BEGIN SSH2 PUBLIC KEY") {
        return Err(SshKeyError::Rfc4716);
    }
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    if lines != 1 {
        return Err(SshKeyError::MultipleLines { lines });
    }
    let key = PublicKey::from_openssh(text).map_err(|source| SshKeyError::Invalid { source })?;
    check_algorithm(&key)?;
    let openssh = key
        .to_openssh()
        .map_err(|source| SshKeyError::Encode { source })?;
    Ok(SshKey {
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        algorithm: key.algorithm().as_str().to_string(),
        comment: key.comment().to_string(),
        openssh,
        added_at: 0,
    })
}

fn check_algorithm(key: &PublicKey) -> Result<(), SshKeyError> {
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => Ok(()),
        Algorithm::Rsa { .. } => {
            let bits = key
                .key_data()
                .rsa()
                .and_then(|rsa| rsa.n.as_positive_bytes())
                .map_or(0, bit_length);
            if bits < MIN_RSA_BITS {
                Err(SshKeyError::RsaTooSmall { bits })
            } else {
                Ok(())
            }
        }
        other => Err(SshKeyError::Unsupported {
            algorithm: other.as_str().to_string(),
        }),
    }
}

/// Bits of a big-endian unsigned integer without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(&first) => (bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    // Generated with ssh-keygen; fingerprints from `ssh-keygen -lf`.
    pub(crate) const ED25519_PUB: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGV5ffwR1GmrY7ksCi0MSRi4c3XUnRhUOnJFESBlkUxv alice@laptop";
    const ED25519_FP: &str = "SHA256:IuoSkcxn23brXQtWVBVcXFnIA3Cle6Rqa0DZK15QHkE";
    const ECDSA_PUB: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNSmk1arRjrIKLkecNPAgITybzUrb6gqDxHTfjKpX2uPKsSnmf2tcNZWf36JWSvA883s8v/6G7+wgI2N2guQiUM= ec key";
    const ECDSA_FP: &str = "SHA256:GFbbUSVbsLJjKdnsKJegiBmN/KmHtn1MWxrFrM3XBT4";
    const RSA2048_PUB: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDd9dR64MK+JBPDm6yg4pCkAAuy5WqVbIopzCylLn9NJtkiYpY84AN9puG/JiMTTnaqJqzvtKervC8ghk9Fw4fPsUvs4E2+GX7hgWe6qo0mhDSWJHoudL9U5C4UcK4I1tRaISxo5oZD4mRyMygnOWoAhd6WHHOMbcpHwD1Z5M55/En7IFjYuHUKp3OH9NYwLBW6pHbrOKCHiLWMnM0605NG4bQGmudO6jV8a6QcTP/vGJtvhYYdb/91x+AZvbhzMdyGQBGF7uY66ztBjaFKfZeFhSvF7jOtclCFVHQqVgPBlulGdcWHHUDn1AchC/7lg+EVFTN6+XnkjOkH+0xv7+0v rsa2048";
    const RSA2048_FP: &str = "SHA256:uKtEhoPqAQyGRvId4VIazzws5O/Ea/ecD1PCHNgzj1w";
    const RSA1024_PUB: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDIFYMDs7emeTtJIVlboubUhbvdy6ZqMqYpiaCqx+/dDC0cuRVoOUPh/iq4elCJL/ndRx+LxdClKTG/PsSTUP5llkogrPvE7wboTxe6qdnS3VSHW8IXeLctiI6uqHqTZvO4DIzz6n4nPZlY5RaW4ChBpkPG50zMGomlrGRF25QRyw== rsa1024";

    #[test]
    fn parses_ed25519() {
        let key = parse_public_key(&format!("  {ED25519_PUB}\n")).unwrap();
        assert_eq!(key.fingerprint, ED25519_FP);
        assert_eq!(key.algorithm, "ssh-ed25519");
        assert_eq!(key.comment, "alice@laptop");
        assert_eq!(key.openssh, ED25519_PUB);
        assert_eq!(key.added_at, 0);
    }

    #[test]
    fn parses_ecdsa_and_rsa() {
        let ec = parse_public_key(ECDSA_PUB).unwrap();
        assert_eq!(ec.fingerprint, ECDSA_FP);
        assert_eq!(ec.algorithm, "ecdsa-sha2-nistp256");
        assert_eq!(ec.comment, "ec key");
        let rsa = parse_public_key(RSA2048_PUB).unwrap();
        assert_eq!(rsa.fingerprint, RSA2048_FP);
        assert_eq!(rsa.algorithm, "ssh-rsa");
    }

    #[test]
    fn key_without_comment() {
        let bare: String = ED25519_PUB.split(' ').take(2).collect::<Vec<_>>().join(" ");
        let key = parse_public_key(&bare).unwrap();
        assert_eq!(key.comment, "");
        assert_eq!(key.fingerprint, ED25519_FP);
        assert_eq!(key.openssh, bare);
    }

    #[test]
    fn refuses_small_rsa() {
        let err = parse_public_key(RSA1024_PUB).unwrap_err();
        assert!(
            matches!(err, SshKeyError::RsaTooSmall { bits: 1024 }),
            "{err}"
        );
    }

    #[test]
    fn refuses_private_keys_and_garbage() {
        let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n";
        let err = parse_public_key(private).unwrap_err();
        assert!(matches!(err, SshKeyError::PrivateKey));
        assert_eq!(err.to_string(), "this is a private key; pass the .pub file");
        assert!(matches!(
            parse_public_key("-----BEGIN RSA PRIVATE KEY-----"),
            Err(SshKeyError::PrivateKey)
        ));
        assert!(matches!(parse_public_key(" \n "), Err(SshKeyError::Empty)));
        assert!(matches!(
            parse_public_key("hello world"),
            Err(SshKeyError::Invalid { .. })
        ));
        assert!(matches!(
            parse_public_key("ssh-ed25519 AAAAnotbase64!!"),
            Err(SshKeyError::Invalid { .. })
        ));
        assert!(matches!(
            parse_public_key(&format!("{ED25519_PUB}\n{ECDSA_PUB}")),
            Err(SshKeyError::MultipleLines { lines: 2 })
        ));
        assert!(matches!(
            parse_public_key(
                "---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----"
            ),
            Err(SshKeyError::Rfc4716)
        ));
        // The algorithm name must match the key inside.
        let mismatched = ED25519_PUB.replacen("ssh-ed25519", "ssh-rsa", 1);
        assert!(parse_public_key(&mismatched).is_err());
    }

    #[test]
    fn bit_length_counts_significant_bits() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f, 0]), 15);
    }
}
