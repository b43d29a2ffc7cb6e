//! SSH certificates for members (`ssh.certificates`), written once for the
//! portal and the admin API: who may have one (an active member, not
//! expired), for which key (one of theirs; on the portal a new key is
//! added to their keys first, audited), with which principals (their
//! groups' `ssh_principals`), for how long (`ssh.cert_lifetime` at most,
//! never past the account's expiry), usable from where (`source-address`:
//! every HA node's own addresses and the VPN pool). Each issue is recorded
//! under its serial and audited (`ssh.cert.issue`) in one transaction.
//! Also the CA's public side and the KRL for the private hosts; the host
//! CA is [`super::host_certs`]'.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use gatehouse_config::api::{IssuedCert, KrlResponse, RevokedCert, SshCaInfo};
use rand_core::{OsRng, RngCore};
use russh::keys::{HashAlg, PublicKey};
use serde::{Deserialize, Serialize};

use super::user_error::UserError;
use super::{Access, Door, Requester};
use crate::audit::detail::Detail;
use crate::audit::event::{Kind, event};
use crate::auth::Standing;
use crate::keys::ssh_ca_key::UserCa;
use crate::ssh_ca::{BACKDATE_SECS, CertSpec, krl, sshd_snippet};
use crate::store::ssh_certs::IssuedCertRow;
use crate::store::{StoreError, User};
use crate::time_fmt::now_unix;

impl Access {
    /// The CA's public side, when its key was loaded at start; `enabled`
    /// says whether it issues now (the running `ssh.certificates`).
    pub fn ssh_ca_info(&self) -> Result<SshCaInfo, UserError> {
        let Some(ca) = self.core.user_ca() else {
            return Err(UserError::CertificatesOff);
        };
        let config = self.core.config();
        let gateway = &config.gateway.name;
        Ok(SshCaInfo {
            public_key: ca.public_line(gateway),
            fingerprint: ca.fingerprint(),
            sshd_snippet: sshd_snippet(gateway),
            enabled: config.ssh.certificates,
        })
    }

    /// Issues `user` a certificate for `public_key` (an OpenSSH line),
    /// valid for `lifetime` or `ssh.cert_lifetime`, whichever is shorter.
    pub async fn issue_certificate(
        &self,
        by: &Requester,
        user: &str,
        public_key: &str,
        lifetime: Option<Duration>,
    ) -> Result<IssuedCert, UserError> {
        let ca = self.user_ca()?.clone();
        let config = self.core.config();
        let key = PublicKey::from_openssh(public_key.trim()).map_err(UserError::CertKeyLine)?;
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let name = user.to_string();
        let (row, keys) = self
            .core
            .store()
            .read(move |r| {
                let row = r.user(&name)?.ok_or_else(|| StoreError::NotFound {
                    what: "user",
                    name: name.clone(),
                })?;
                Ok((row, r.ssh_keys(&name)?))
            })
            .await?;
        let now = now_unix();
        match Standing::of(&row, now) {
            Standing::Active | Standing::Machine => {}
            Standing::Expired => {
                return Err(UserError::CertAccountExpired {
                    user: user.to_string(),
                });
            }
            standing => {
                return Err(UserError::CertNotActive {
                    user: user.to_string(),
                    standing,
                });
            }
        }
        let principals = principals_of(&config, &row.groups);
        if principals.is_empty() {
            return Err(UserError::CertNoPrincipals {
                user: user.to_string(),
            });
        }
        let theirs = keys.iter().any(|k| k.fingerprint == fingerprint);
        if !theirs {
            if by.door != Door::Portal {
                return Err(UserError::CertKeyNotTheirs {
                    user: user.to_string(),
                    fingerprint,
                });
            }
            // On the portal, the member's own new key becomes one of theirs.
            self.add_ssh_key(by, user, public_key).await?;
        }
        let most = config.ssh.cert_lifetime;
        let lifetime = match lifetime {
            Some(asked) if asked.is_zero() => {
                return Err(UserError::CertZeroLifetime);
            }
            Some(asked) => asked.min(most),
            None => most,
        };
        let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        let mut valid_before = now.saturating_add(secs);
        if let Some(expires) = row.expires_at {
            valid_before = valid_before.min(expires);
        }
        let valid_after = now - i64::try_from(BACKDATE_SECS).unwrap_or(0);
        let source_address = self.source_address().await?;
        let serial = new_serial();
        let key_id = format!("{user}@{}", config.gateway.name);
        let cert = ca
            .sign(&CertSpec {
                key: &key,
                serial,
                key_id: key_id.clone(),
                principals: &principals,
                valid_after: u64::try_from(valid_after).unwrap_or(0),
                valid_before: u64::try_from(valid_before).unwrap_or(0),
                source_address: source_address.clone(),
            })
            .map_err(UserError::CertSign)?;
        let line = cert.to_openssh().map_err(UserError::CertEncode)?;
        let record = IssuedCertRow {
            serial,
            user: user.to_string(),
            key_fingerprint: fingerprint.clone(),
            principals: principals.clone(),
            valid_after,
            valid_before,
            issued_at: now,
            issued_by: by.actor.to_string(),
            removed: false,
        };
        let audit = event(Kind::SshCertIssue, by.actor.clone(), by.source.clone())
            .on(user)
            .with(&CertIssued {
                serial: serial.to_string(),
                key_id: key_id.clone(),
                principals: principals.clone(),
                valid_after,
                valid_before,
                key_fingerprint: fingerprint.clone(),
                source_address: source_address.clone(),
                via: by.door,
            });
        self.core
            .store()
            .write(move |w| {
                w.record_issued_cert(&record)?;
                w.audit(audit).map(drop)
            })
            .await?;
        Ok(IssuedCert {
            certificate: line,
            serial,
            key_id,
            principals,
            valid_after,
            valid_before,
            key_fingerprint: fingerprint,
            source_address,
        })
    }

    /// The KRL of every unexpired certificate that is dead
    /// ([`revocation`]), for the private hosts' `RevokedKeys`.
    pub async fn revocation_list(&self) -> Result<KrlResponse, UserError> {
        let ca = self.user_ca()?.clone();
        let now = now_unix();
        let config = self.core.config();
        let judged = self
            .core
            .store()
            .read(move |r| {
                let mut members: BTreeMap<String, (Option<User>, Vec<String>)> = BTreeMap::new();
                let certs = r.unexpired_certs(now)?;
                for cert in &certs {
                    if !members.contains_key(&cert.user) {
                        let member = r.user(&cert.user)?;
                        let keys = match member {
                            Some(_) => r.ssh_keys(&cert.user)?,
                            None => Vec::new(),
                        };
                        let fingerprints = keys.into_iter().map(|k| k.fingerprint).collect();
                        members.insert(cert.user.clone(), (member, fingerprints));
                    }
                }
                Ok(certs
                    .into_iter()
                    .filter_map(|cert| {
                        let (member, keys) = &members[&cert.user];
                        let principals = member
                            .as_ref()
                            .map(|m| principals_of(&config, &m.groups))
                            .unwrap_or_default();
                        let why = revocation(&cert, member.as_ref(), keys, &principals, now)?;
                        Some((cert, why))
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
        let serials: Vec<u64> = judged.iter().map(|(c, _)| c.serial).collect();
        let generated = u64::try_from(now).unwrap_or(0);
        let comment = format!("gatehouse {}", self.core.config().gateway.name);
        let bytes =
            krl::certificate_krl(&ca.public_blob(), &serials, generated, generated, &comment);
        Ok(KrlResponse {
            krl_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            revoked: judged
                .into_iter()
                .map(|(cert, why)| RevokedCert {
                    serial: cert.serial,
                    user: cert.user,
                    valid_before: cert.valid_before,
                    why: why.as_str().to_string(),
                })
                .collect(),
        })
    }

    /// The `source-address` of new certificates: the addresses of every
    /// node of an HA pair (this one's now, the others' as they registered
    /// them), since a private host sees the jump host's connections come
    /// from whichever node is active, and the VPN pool (members' tunnels);
    /// never loopback.
    pub async fn source_address(&self) -> Result<String, UserError> {
        let config = self.core.config();
        let mut addresses = self.core.host_addrs().reachable();
        // Empty without `[ha]`: only HA nodes register.
        addresses.extend(self.core.store().read(|r| r.ha_node_addresses()).await?);
        let mut nets: Vec<String> = addresses
            .into_iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => format!("{v4}/32"),
                IpAddr::V6(v6) => format!("{v6}/128"),
            })
            .collect();
        if config.vpn.enabled {
            nets.push(config.vpn.pool.to_string());
        }
        nets.sort();
        nets.dedup();
        Ok(nets.join(","))
    }

    fn user_ca(&self) -> Result<&UserCa, UserError> {
        match self.core.user_ca() {
            Some(ca) if self.core.config().ssh.certificates => Ok(ca),
            _ => Err(UserError::CertificatesOff),
        }
    }
}

/// The detail of `ssh.cert.issue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertIssued {
    /// The serial in decimal (a JSON number would lose digits in readers
    /// that use doubles).
    pub serial: String,
    pub key_id: String,
    pub principals: Vec<String>,
    /// Unix seconds.
    pub valid_after: i64,
    pub valid_before: i64,
    pub key_fingerprint: String,
    /// The certificate's `source-address` list.
    pub source_address: String,
    /// The door it was asked at.
    pub via: Door,
}

impl Detail for CertIssued {
    const KINDS: &'static [Kind] = &[Kind::SshCertIssue];
}

/// Why an unexpired certificate is in the KRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Its member was removed (a new member of the same name changes
    /// nothing).
    Removed,
    Disabled,
    Expired,
    /// Its member is pending again (not enrolled).
    Pending,
    /// Its key is no longer one of its member's.
    KeyRemoved,
    /// It names a principal its member's groups no longer give them.
    PrincipalsChanged,
}

impl Revoked {
    pub fn as_str(self) -> &'static str {
        match self {
            Revoked::Removed => "removed",
            Revoked::Disabled => "disabled",
            Revoked::Expired => "expired",
            Revoked::Pending => "pending",
            Revoked::KeyRemoved => "key_removed",
            Revoked::PrincipalsChanged => "principals_changed",
        }
    }
}

/// Is `cert` dead at `now`, and why? Its `member` (`None`: removed), the
/// fingerprints of the member's keys, and the principals their groups give
/// them now. A certificate is alive only while its member is in good
/// standing, holds its key, and still has every principal it names.
pub fn revocation(
    cert: &IssuedCertRow,
    member: Option<&User>,
    key_fingerprints: &[String],
    principals_now: &[String],
    now: i64,
) -> Option<Revoked> {
    let Some(member) = member.filter(|_| !cert.removed) else {
        return Some(Revoked::Removed);
    };
    match Standing::of(member, now) {
        Standing::Disabled => return Some(Revoked::Disabled),
        Standing::Expired => return Some(Revoked::Expired),
        Standing::Pending => return Some(Revoked::Pending),
        Standing::Active | Standing::Machine => {}
    }
    if !key_fingerprints.contains(&cert.key_fingerprint) {
        return Some(Revoked::KeyRemoved);
    }
    if !cert.principals.iter().all(|p| principals_now.contains(p)) {
        return Some(Revoked::PrincipalsChanged);
    }
    None
}

/// The principals `groups` give: their `ssh_principals`, sorted, once each.
fn principals_of(config: &gatehouse_config::Config, groups: &[String]) -> Vec<String> {
    let mut principals: Vec<String> = config
        .groups
        .iter()
        .filter(|g| groups.contains(&g.name))
        .flat_map(|g| g.ssh_principals.iter().cloned())
        .collect();
    principals.sort();
    principals.dedup();
    principals
}

/// A random serial in 1..2^63 (the store keeps it as a signed 64-bit
/// integer; OpenSSH cannot revoke serial 0 by serial).
pub(super) fn new_serial() -> u64 {
    loop {
        let serial = OsRng.next_u64() >> 1;
        if serial != 0 {
            return serial;
        }
    }
}
