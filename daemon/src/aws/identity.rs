//! An EC2 instance identity document and its PKCS #7 signature (what
//! instance metadata serves at `/latest/dynamic/instance-identity/document`
//! and `.../rsa2048`): checked against the region's AWS certificate
//! (`ssh.host_join_signer_file`), then read. Sans-I/O: bytes in, the
//! document or why not out; the caller checks freshness and asks EC2.
//!
//! The signature is CMS SignedData (RFC 5652) over the document, one
//! signer, SHA-256 and RSA PKCS #1 v1.5, with or without signed attributes
//! (with them, their message digest must be the document's). Parsed with
//! RustCrypto's `cms` and verified with its `rsa`: no OpenSSL in the daemon.

use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::asn1::{ObjectIdentifier, OctetString};
use x509_cert::der::{self, Decode, DecodePem, Encode};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");

/// Why a signed identity document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the signature is not PKCS #7 SignedData: {0}")]
    NotSignedData(String),
    #[error("the signature holds no document")]
    NoDocument,
    #[error("the signature has {0} signers, not one")]
    Signers(usize),
    #[error("the signature uses another digest or algorithm than SHA-256 with RSA")]
    Algorithm,
    #[error("the signed attributes' message digest is not the document's")]
    DigestMismatch,
    #[error("the signature does not verify with the configured AWS certificate")]
    BadSignature,
    #[error("the document given is not the document signed")]
    OtherDocument,
    #[error("the document is not an instance identity document: {0}")]
    Document(String),
}

/// The AWS certificate a region's identity documents are signed with.
#[derive(Clone)]
pub struct Signer {
    key: VerifyingKey<Sha256>,
}

impl Signer {
    /// From the certificate's PEM text; why not, as text.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| e.to_string())?;
        let key = RsaPublicKey::from_public_key_der(&spki)
            .map_err(|e| format!("not an RSA certificate: {e}"))?;
        Ok(Self {
            key: VerifyingKey::new(key),
        })
    }
}

/// What the gateway reads of an instance identity document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityDocument {
    pub instance_id: String,
    pub region: String,
    pub account_id: String,
    pub private_ip: String,
    /// RFC 3339: when the instance was launched (its first `pending`).
    pub pending_time: String,
}

/// The document `pkcs7` (DER) signs, if `signer` signed it, and it is the
/// `document` the host sent (trailing whitespace aside).
pub fn verify(
    pkcs7: &[u8],
    document: &str,
    signer: &Signer,
) -> Result<IdentityDocument, IdentityError> {
    let signed = signed_content(pkcs7, signer)?;
    if String::from_utf8_lossy(&signed).trim_end() != document.trim_end() {
        return Err(IdentityError::OtherDocument);
    }
    serde_json::from_slice(&signed).map_err(|e| IdentityError::Document(e.to_string()))
}

/// The content of `pkcs7`, if its one signer is `signer`.
fn signed_content(pkcs7: &[u8], signer: &Signer) -> Result<Vec<u8>, IdentityError> {
    let not_signed = |e: der::Error| IdentityError::NotSignedData(e.to_string());
    let info = ContentInfo::from_der(pkcs7).map_err(not_signed)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(IdentityError::NotSignedData(format!(
            "content type {}",
            info.content_type
        )));
    }
    let data: SignedData = info.content.decode_as().map_err(not_signed)?;
    if data.encap_content_info.econtent_type != ID_DATA {
        return Err(IdentityError::NoDocument);
    }
    let content = data
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or(IdentityError::NoDocument)?
        .decode_as::<OctetString>()
        .map_err(not_signed)?
        .into_bytes();
    let signers = data.signer_infos.0.as_slice();
    let [signer_info] = signers else {
        return Err(IdentityError::Signers(signers.len()));
    };
    let algorithm = signer_info.signature_algorithm.oid;
    if signer_info.digest_alg.oid != ID_SHA256
        || (algorithm != RSA_ENCRYPTION && algorithm != SHA256_WITH_RSA)
    {
        return Err(IdentityError::Algorithm);
    }
    let message = match &signer_info.signed_attrs {
        None => content.clone(),
        Some(attrs) => {
            let digest = attrs
                .iter()
                .find(|a| a.oid == ID_MESSAGE_DIGEST)
                .and_then(|a| a.values.iter().next())
                .and_then(|v| v.decode_as::<OctetString>().ok())
                .ok_or(IdentityError::DigestMismatch)?;
            if digest.as_bytes() != Sha256::digest(&content).as_slice() {
                return Err(IdentityError::DigestMismatch);
            }
            // What was signed: the attributes' DER as a SET (RFC 5652 5.4).
            attrs.to_der().map_err(not_signed)?
        }
    };
    let signature = Signature::try_from(signer_info.signature.as_bytes())
        .map_err(|_| IdentityError::BadSignature)?;
    signer
        .key
        .verify(&message, &signature)
        .map_err(|_| IdentityError::BadSignature)?;
    Ok(content)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A test-only signer made by the stock `openssl` now: its certificate
    /// (PEM; [`openssl_sign`] signs with its key). `None`, after saying
    /// why, without openssl; a panic instead under `GATEHOUSE_E2E=1`.
    fn openssl_signer(dir: &std::path::Path, name: &str) -> Option<String> {
        let key = dir.join(format!("{name}.key"));
        let cert = dir.join(format!("{name}.pem"));
        let made = match Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", &format!("/CN={name}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
        {
            Ok(made) => made,
            Err(e) => {
                let reason = format!("cannot run openssl ({e})");
                if std::env::var("GATEHOUSE_E2E").as_deref() == Ok("1") {
                    panic!("{reason}, and GATEHOUSE_E2E=1 requires it");
                }
                #[allow(clippy::print_stderr)] // a test's printed reason to skip
                {
                    eprintln!("skipping: {reason}");
                }
                return None;
            }
        };
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        Some(std::fs::read_to_string(cert).unwrap())
    }

    /// `document` signed as instance metadata signs it (CMS SignedData, the
    /// document inside, SHA-256), DER; `extra` options for `openssl cms`.
    fn openssl_sign(dir: &std::path::Path, name: &str, document: &str, extra: &[&str]) -> Vec<u8> {
        let input = dir.join("document.json");
        std::fs::write(&input, document).unwrap();
        let out = dir.join("document.p7");
        let signed = Command::new("openssl")
            .args([
                "cms",
                "-sign",
                "-nodetach",
                "-binary",
                "-md",
                "sha256",
                "-outform",
                "DER",
            ])
            .args(extra)
            .arg("-signer")
            .arg(dir.join(format!("{name}.pem")))
            .arg("-inkey")
            .arg(dir.join(format!("{name}.key")))
            .arg("-in")
            .arg(&input)
            .arg("-out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            signed.status.success(),
            "{}",
            String::from_utf8_lossy(&signed.stderr)
        );
        std::fs::read(out).unwrap()
    }

    const DOCUMENT: &str = r#"{
  "accountId" : "123456789012",
  "architecture" : "x86_64",
  "availabilityZone" : "eu-west-1a",
  "imageId" : "ami-0123456789abcdef0",
  "instanceId" : "i-0123456789abcdef0",
  "instanceType" : "t3.micro",
  "pendingTime" : "2026-12-05T10:00:00Z",
  "privateIp" : "10.0.3.140",
  "region" : "eu-west-1",
  "version" : "2017-09-30"
}"#;

    /// Signed by the configured certificate, with or without signed
    /// attributes: read. Another signer, a changed document, garbage: each
    /// refused with its reason.
    #[test]
    fn only_the_configured_signer_vouches_for_the_document_it_signed() {
        let dir = tempfile::tempdir().unwrap();
        let Some(aws_pem) = openssl_signer(dir.path(), "aws") else {
            return;
        };
        let other_pem = openssl_signer(dir.path(), "other").unwrap();
        let aws = Signer::from_pem(&aws_pem).unwrap();
        let other = Signer::from_pem(&other_pem).unwrap();
        for extra in [&[][..], &["-noattr"][..]] {
            let pkcs7 = openssl_sign(dir.path(), "aws", DOCUMENT, extra);
            let doc = verify(&pkcs7, DOCUMENT, &aws).unwrap();
            assert_eq!(doc.instance_id, "i-0123456789abcdef0");
            assert_eq!(doc.private_ip, "10.0.3.140");
            assert_eq!(doc.pending_time, "2026-12-05T10:00:00Z");
            assert_eq!(
                verify(&pkcs7, DOCUMENT, &other).unwrap_err(),
                IdentityError::BadSignature,
                "{extra:?}"
            );
            let changed = DOCUMENT.replace("10.0.3.140", "10.0.3.141");
            assert_eq!(
                verify(&pkcs7, &changed, &aws).unwrap_err(),
                IdentityError::OtherDocument
            );
        }
        // The signed attributes name the document's digest: a signature
        // over attributes of another document does not carry over.
        let mut pkcs7 = openssl_sign(dir.path(), "aws", DOCUMENT, &[]);
        let at = pkcs7
            .windows(DOCUMENT.len())
            .position(|w| w == DOCUMENT.as_bytes())
            .unwrap();
        let forged = DOCUMENT.replace("10.0.3.140", "10.0.3.141");
        pkcs7[at..at + forged.len()].copy_from_slice(forged.as_bytes());
        assert_eq!(
            verify(&pkcs7, &forged, &aws).unwrap_err(),
            IdentityError::DigestMismatch
        );
        assert!(matches!(
            verify(b"not der", DOCUMENT, &aws).unwrap_err(),
            IdentityError::NotSignedData(_)
        ));
        assert!(Signer::from_pem("not a certificate").is_err());
    }
}
