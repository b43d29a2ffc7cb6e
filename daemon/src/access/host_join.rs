//! Private EC2 hosts joining by instance identity (`ssh.host_join`): a
//! host sends its host key, its instance identity document and the
//! document's PKCS #7 signature; the gateway signs it a host certificate
//! for its private address and DNS name when the signature is AWS's (the
//! region's certificate, `ssh.host_join_signer_file`), the instance
//! launched within `ssh.host_join_window` and has not joined before (a
//! replayed document is refused), and EC2 says it is in the gateway's VPC,
//! tagged `gatehouse:host`, at the address the document gives. Every
//! refusal is audited (`ssh.host_join.fail`, with its reason); the
//! certificate is recorded and audited as any other
//! (`ssh.host_cert.issue`, asked by `instance:<id>`).

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use gatehouse_config::api::SignedHostCert;
use russh::keys::PublicKey;
use serde_json::json;

use super::host_certs::checked_principals;
use super::user_error::UserError;
use super::{Access, Door, Requester};
use crate::audit::event::{Actor, Kind, Source, event};
use crate::aws::identity::{self, IdentityDocument, IdentityError, Signer};
use crate::aws::joining;
use crate::time_fmt::now_unix;

/// What a joining host sends.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Its host key's OpenSSH line (`/etc/ssh/ssh_host_ed25519_key.pub`).
    pub public_key: String,
    /// `/latest/dynamic/instance-identity/document`, as served.
    pub document: String,
    /// `/latest/dynamic/instance-identity/rsa2048`: base64 of the DER.
    pub pkcs7: String,
}

/// Why a join was not served.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("this gateway does not let hosts join by instance identity (ssh.host_join is off)")]
    Off,
    /// Refused, and audited.
    #[error("refused: {0}")]
    Refused(#[from] JoinRefusal),
    /// The gateway cannot judge now (AWS or its signer file); not audited:
    /// nothing was decided about the host.
    #[error("the gateway cannot check the instance now: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Sign(UserError),
}

/// Why a host was refused (the `reason` of `ssh.host_join.fail`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    Signature(#[from] IdentityError),
    #[error(
        "the document is stale: its instance launched at {pending_time}, more than ssh.host_join_window ago (a replay, or a host that must be signed by an admin)"
    )]
    Stale { pending_time: String },
    #[error("instance {0} joined before: a document is used once")]
    Replayed(String),
    #[error("EC2 knows no instance {0}")]
    UnknownInstance(String),
    #[error("instance {instance} is in {vpc}, not this gateway's VPC")]
    OutsideVpc { instance: String, vpc: String },
    #[error("instance {0} does not carry the gatehouse:host tag")]
    Untagged(String),
    #[error("instance {0}'s address is not the one its document gives")]
    AddressMismatch(String),
    #[error("{0}")]
    Principals(String),
}

impl JoinRefusal {
    /// The `reason` of its record.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Signature(_) => "signature",
            Self::Stale { .. } => "stale",
            Self::Replayed(_) => "replayed",
            Self::UnknownInstance(_) => "unknown_instance",
            Self::OutsideVpc { .. } => "outside_vpc",
            Self::Untagged(_) => "untagged",
            Self::AddressMismatch(_) => "address_mismatch",
            Self::Principals(_) => "outside_groups",
        }
    }
}

impl Access {
    /// Judges `request` from `source`: a host certificate, or why not
    /// (each refusal audited).
    pub async fn join_host(
        &self,
        source: IpAddr,
        request: &JoinRequest,
    ) -> Result<SignedHostCert, JoinError> {
        let config = self.core.config();
        if !config.ssh.host_join {
            return Err(JoinError::Off);
        }
        let (Some(session), Some(signer_file)) = (&self.aws, &config.ssh.host_join_signer_file)
        else {
            return Err(JoinError::Unavailable(
                "no AWS session (see the log at start)".into(),
            ));
        };
        let pem = tokio::fs::read_to_string(signer_file).await.map_err(|e| {
            JoinError::Unavailable(format!(
                "cannot read ssh.host_join_signer_file {}: {e}",
                signer_file.display()
            ))
        })?;
        let signer = Signer::from_pem(&pem).map_err(|e| {
            JoinError::Unavailable(format!(
                "ssh.host_join_signer_file {}: {e}",
                signer_file.display()
            ))
        })?;
        // One join at a time on this gateway: "joined before" is then
        // decided before the next one asks.
        let _one = self.join_lock.lock().await;
        let document =
            match check_document(request, &signer, now_unix(), config.ssh.host_join_window) {
                Ok(document) => document,
                Err(refusal) => return Err(self.refuse(source, None, refusal).await),
            };
        let instance = document.instance_id.clone();
        if let Err(err) = PublicKey::from_openssh(request.public_key.trim()) {
            let refusal = JoinRefusal::Malformed(format!(
                "public_key is not an OpenSSH public key line: {err}"
            ));
            return Err(self.refuse(source, Some(&instance), refusal).await);
        }
        let actor = Actor::Instance(instance.clone()).to_string();
        let joined = self
            .core
            .store()
            .read(move |r| r.host_cert_issued_by(&actor))
            .await
            .map_err(|e| JoinError::Unavailable(e.to_string()))?;
        if joined {
            let refusal = JoinRefusal::Replayed(instance.clone());
            return Err(self.refuse(source, Some(&instance), refusal).await);
        }
        let found = joining::describe(session, &instance)
            .await
            .map_err(|e| JoinError::Unavailable(e.to_string()))?;
        let principals = match judge_instance(&document, found, &session.facts.vpc_id) {
            Ok(principals) => principals,
            Err(refusal) => return Err(self.refuse(source, Some(&instance), refusal).await),
        };
        if let Err(err) = checked_principals(&config, &principals) {
            let refusal = JoinRefusal::Principals(err.to_string());
            return Err(self.refuse(source, Some(&instance), refusal).await);
        }
        let by = Requester {
            actor: Actor::Instance(instance),
            source: Source::Addr(source),
            door: Door::Portal,
        };
        self.sign_host_certificate(&by, &request.public_key, &principals, None)
            .await
            .map_err(JoinError::Sign)
    }

    /// Audits `refusal` and returns it as the answer; a record the store
    /// refuses makes the answer "unavailable" (nothing is refused unseen).
    async fn refuse(
        &self,
        source: IpAddr,
        instance: Option<&str>,
        refusal: JoinRefusal,
    ) -> JoinError {
        let actor = match instance {
            Some(id) => Actor::Instance(id.to_string()),
            None => Actor::Anonymous,
        };
        let record = event(Kind::SshHostJoinFail, actor, Source::Addr(source))
            .on(instance.unwrap_or_default().to_string())
            .detail(json!({ "reason": refusal.code(), "message": refusal.to_string() }));
        match self
            .core
            .store()
            .write(move |w| w.audit(record).map(drop))
            .await
        {
            Ok(()) => JoinError::Refused(refusal),
            Err(err) => JoinError::Unavailable(format!("cannot audit the refusal: {err}")),
        }
    }
}

/// The signed document of `request`, if `signer` signed it and its
/// instance launched within `window` of `now`.
fn check_document(
    request: &JoinRequest,
    signer: &Signer,
    now: i64,
    window: Duration,
) -> Result<IdentityDocument, JoinRefusal> {
    let pkcs7: String = request.pkcs7.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(pkcs7)
        .map_err(|e| JoinRefusal::Malformed(format!("pkcs7 is not base64: {e}")))?;
    let document = identity::verify(&der, &request.document, signer)?;
    let launched = humantime::parse_rfc3339_weak(&document.pending_time)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or_else(|| {
            JoinRefusal::Malformed(format!(
                "pendingTime {:?} is not a time",
                document.pending_time
            ))
        })?;
    let window = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    if now.saturating_sub(launched) > window {
        return Err(JoinRefusal::Stale {
            pending_time: document.pending_time,
        });
    }
    Ok(document)
}

/// The principals of an instance EC2 described (`found`): its private
/// address and DNS name, if it is in `vpc`, tagged, at the document's
/// address.
fn judge_instance(
    document: &IdentityDocument,
    found: Option<joining::JoiningInstance>,
    vpc: &str,
) -> Result<Vec<String>, JoinRefusal> {
    let id = &document.instance_id;
    let Some(instance) = found else {
        return Err(JoinRefusal::UnknownInstance(id.clone()));
    };
    if instance.vpc_id.as_deref() != Some(vpc) {
        return Err(JoinRefusal::OutsideVpc {
            instance: id.clone(),
            vpc: instance.vpc_id.unwrap_or_else(|| "no VPC".into()),
        });
    }
    if !instance.tagged {
        return Err(JoinRefusal::Untagged(id.clone()));
    }
    if instance.private_ip.as_deref() != Some(document.private_ip.as_str()) {
        return Err(JoinRefusal::AddressMismatch(id.clone()));
    }
    let mut principals = vec![document.private_ip.clone()];
    principals.extend(instance.private_dns_name);
    Ok(principals)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn document() -> IdentityDocument {
        IdentityDocument {
            instance_id: "i-1".into(),
            region: "eu-west-1".into(),
            account_id: "123456789012".into(),
            private_ip: "10.0.3.7".into(),
            pending_time: "2026-12-05T10:00:00Z".into(),
        }
    }

    fn instance(vpc: &str, tagged: bool, ip: &str) -> Option<joining::JoiningInstance> {
        Some(joining::JoiningInstance {
            vpc_id: Some(vpc.into()),
            private_ip: Some(ip.into()),
            private_dns_name: Some("ip-10-0-3-7.eu-west-1.compute.internal".into()),
            tagged,
        })
    }

    /// In the VPC, tagged, at its address: its address and name; each other
    /// case refused with its own reason.
    #[test]
    fn an_instance_joins_only_from_the_vpc_tagged_and_at_its_address() {
        let doc = document();
        assert_eq!(
            judge_instance(&doc, instance("vpc-1", true, "10.0.3.7"), "vpc-1").unwrap(),
            ["10.0.3.7", "ip-10-0-3-7.eu-west-1.compute.internal"]
        );
        let code = |found, vpc| judge_instance(&doc, found, vpc).unwrap_err().code();
        assert_eq!(code(None, "vpc-1"), "unknown_instance");
        assert_eq!(
            code(instance("vpc-2", true, "10.0.3.7"), "vpc-1"),
            "outside_vpc"
        );
        assert_eq!(
            code(instance("vpc-1", false, "10.0.3.7"), "vpc-1"),
            "untagged"
        );
        assert_eq!(
            code(instance("vpc-1", true, "10.0.3.8"), "vpc-1"),
            "address_mismatch"
        );
    }
}
