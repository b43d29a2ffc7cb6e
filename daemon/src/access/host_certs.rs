//! SSH host certificates for the private hosts (`ssh.certificates`),
//! written once for the admin API, the portal and the metrics: the host
//! CA's public side, which
//! principals a host certificate may name (host names, and addresses only
//! inside a group's subnet, the hosts members trust the host CA for), for
//! how long (`ssh.host_cert_lifetime` at most, the default), which of them
//! expire soon (14 days), revoking one, the host KRL and `@revoked` lines,
//! and the `@cert-authority` line a member's `known_hosts` needs for the
//! hosts their groups may reach. Each signing and revocation is recorded
//! and audited (`ssh.host_cert.issue`, `ssh.host_cert.revoke`) in one
//! transaction.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use gatehouse_config::Config;
use gatehouse_config::api::{
    HostCertInfo, HostCertList, HostKrlResponse, SignedHostCert, SshHostCaInfo,
};
use gatehouse_config::known_hosts::{Cover, host_patterns};
use ipnet::IpNet;
use russh::keys::PublicKey;
use serde::{Deserialize, Serialize};

use super::user_error::UserError;
use super::{Access, JumpHost, Requester};
use crate::audit::detail::Detail;
use crate::audit::event::{Kind, event};
use crate::keys::ssh_ca_key::HostCa;
use crate::keys::ssh_host;
use crate::ssh_ca::{BACKDATE_SECS, HostCertSpec, krl};
use crate::store::ssh_host_certs::HostCertRow;
use crate::store::{Store, StoreError};
use crate::time_fmt::now_unix;

/// A certificate that expires within this long is "expiring soon": listed
/// first, marked, and counted by the metric.
pub const EXPIRING_WITHIN: Duration = Duration::from_secs(14 * 86_400);
/// The most principals one host certificate names.
pub const MAX_PRINCIPALS: usize = 32;

impl Access {
    /// The host CA's public side and its `@cert-authority` line for the
    /// hosts of every group's subnets, when its key was loaded at start.
    pub fn ssh_host_ca_info(&self) -> Result<SshHostCaInfo, UserError> {
        let Some(ca) = self.core.host_ca() else {
            return Err(UserError::CertificatesOff);
        };
        let config = self.core.config();
        let public_key = ca.public_line(&config.gateway.name);
        // A line with no host would be refused by ssh; trusting the CA for
        // every host ("*") would be wider than any group.
        let subnets = group_subnets(&config);
        let known_hosts = self.cert_authority_line(&subnets).unwrap_or_else(|| {
            format!(
                "# no group has an IPv4 subnet: name the hosts yourself, e.g. \
                 @cert-authority *.internal {public_key}"
            )
        });
        Ok(SshHostCaInfo {
            known_hosts,
            fingerprint: ca.fingerprint(),
            public_key,
        })
    }

    /// Signs a certificate for a private host's `public_key` (an OpenSSH
    /// line) naming `principals`, valid for `lifetime` or
    /// `ssh.host_cert_lifetime`, whichever is shorter.
    pub async fn sign_host_certificate(
        &self,
        by: &Requester,
        public_key: &str,
        principals: &[String],
        lifetime: Option<Duration>,
    ) -> Result<SignedHostCert, UserError> {
        let ca = self.host_ca()?.clone();
        let config = self.core.config();
        let key = PublicKey::from_openssh(public_key.trim()).map_err(UserError::CertKeyLine)?;
        let principals = checked_principals(&config, principals)?;
        let most = config.ssh.host_cert_lifetime;
        let lifetime = match lifetime {
            Some(asked) if asked.is_zero() => return Err(UserError::CertZeroLifetime),
            Some(asked) => asked.min(most),
            None => most,
        };
        let now = now_unix();
        let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        let valid_after = now - i64::try_from(BACKDATE_SECS).unwrap_or(0);
        let valid_before = now.saturating_add(secs);
        let serial = super::certs::new_serial();
        let key_id = key_id(&principals, &config.gateway.name);
        let cert = ca
            .sign_host(&HostCertSpec {
                key: &key,
                serial,
                key_id: key_id.clone(),
                principals: &principals,
                valid_after: u64::try_from(valid_after).unwrap_or(0),
                valid_before: u64::try_from(valid_before).unwrap_or(0),
            })
            .map_err(UserError::CertSign)?;
        let line = cert.to_openssh().map_err(UserError::CertEncode)?;
        let mut plain = key.clone();
        plain.set_comment("");
        let row = HostCertRow {
            serial,
            key_fingerprint: ssh_host::fingerprint(&key),
            public_key: plain.to_openssh().map_err(UserError::CertEncode)?,
            principals: principals.clone(),
            valid_after,
            valid_before,
            issued_at: now,
            issued_by: by.actor.to_string(),
            revoked: None,
        };
        let audit = event(Kind::SshHostCertIssue, by.actor.clone(), by.source.clone())
            .on(principals[0].clone())
            .with(&HostCertIssued {
                serial: serial.to_string(),
                key_id,
                principals,
                valid_after,
                valid_before,
                key_fingerprint: row.key_fingerprint.clone(),
            });
        let info = info_of(&row, &config.gateway.name, now);
        self.core
            .store()
            .write(move |w| {
                w.record_host_cert(&row)?;
                w.audit(audit).map(drop)
            })
            .await?;
        Ok(SignedHostCert {
            certificate: line,
            info,
        })
    }

    /// Every unexpired host certificate, the soonest to expire first.
    pub async fn host_certificates(&self) -> Result<HostCertList, UserError> {
        self.host_ca()?;
        let now = now_unix();
        let rows = self
            .core
            .store()
            .read(move |r| r.unexpired_host_certs(now))
            .await?;
        let gateway = &self.core.config().gateway.name;
        Ok(HostCertList {
            expiring_within_secs: EXPIRING_WITHIN.as_secs(),
            certificates: rows.iter().map(|row| info_of(row, gateway, now)).collect(),
        })
    }

    /// Revokes host certificate `serial`: recorded and audited; the host
    /// KRL lists it from now until it expires.
    pub async fn revoke_host_certificate(
        &self,
        by: &Requester,
        serial: u64,
    ) -> Result<HostCertInfo, UserError> {
        self.host_ca()?;
        let now = now_unix();
        let actor = by.actor.clone();
        let source = by.source.clone();
        let row = self
            .core
            .store()
            .write(move |w| {
                let row = w.revoke_host_cert(serial, now, &actor.to_string())?;
                let audit = event(Kind::SshHostCertRevoke, actor, source)
                    .on(row.principals.first().cloned().unwrap_or_default())
                    .with(&HostCertRevoked {
                        serial: serial.to_string(),
                        principals: row.principals.clone(),
                        key_fingerprint: row.key_fingerprint.clone(),
                    });
                w.audit(audit)?;
                Ok(row)
            })
            .await?;
        Ok(info_of(&row, &self.core.config().gateway.name, now))
    }

    /// The host KRL (every unexpired revoked host certificate, by serial)
    /// for members' `RevokedHostKeys`, and the same as `@revoked` lines
    /// of the certified keys for their `known_hosts`.
    pub async fn host_revocation_list(&self) -> Result<HostKrlResponse, UserError> {
        let ca = self.host_ca()?.clone();
        let now = now_unix();
        let revoked: Vec<HostCertRow> = self
            .core
            .store()
            .read(move |r| r.unexpired_host_certs(now))
            .await?
            .into_iter()
            .filter(|row| row.revoked.is_some())
            .collect();
        let mut serials: Vec<u64> = revoked.iter().map(|row| row.serial).collect();
        serials.sort_unstable();
        let generated = u64::try_from(now).unwrap_or(0);
        let config = self.core.config();
        let comment = format!("gatehouse {} host certificates", config.gateway.name);
        let bytes =
            krl::certificate_krl(&ca.public_blob(), &serials, generated, generated, &comment);
        Ok(HostKrlResponse {
            krl_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            known_hosts_revoked: revoked
                .iter()
                .map(|row| format!("@revoked * {}", row.public_key))
                .collect(),
            revoked: revoked
                .iter()
                .map(|row| info_of(row, &config.gateway.name, now))
                .collect(),
        })
    }

    /// The `@cert-authority` line that trusts the host CA for the hosts
    /// `subnets` hold (IPv4 octet patterns, never wider); `None` without
    /// a host CA, or when no subnet gives a pattern.
    pub fn cert_authority_line(&self, subnets: &[IpNet]) -> Option<String> {
        let ca = self.core.host_ca()?;
        let patterns = host_patterns(subnets, Cover::Exactly);
        (!patterns.is_empty()).then(|| {
            format!(
                "@cert-authority {} {}",
                patterns.join(","),
                ca.public_line(&self.core.config().gateway.name)
            )
        })
    }

    /// What a member's SSH needs to reach the hosts `groups` may reach
    /// through the jump host: the jump host, those subnets, and the lines
    /// of their `~/.ssh/gatehouse_known_hosts` (the jump host's pinned key,
    /// and with a host CA the `@cert-authority` line for those hosts).
    /// `None` while the jump host is not running.
    pub fn member_ssh(&self, groups: &[String]) -> Option<MemberSsh> {
        let jump = self.jump_host()?;
        let subnets = self.core.config().policy().access_for(groups).subnets();
        let cert_authority = self.cert_authority_line(&subnets);
        let mut known_hosts = format!("{}\n", jump.known_hosts);
        if let Some(line) = &cert_authority {
            known_hosts.push_str(line);
            known_hosts.push('\n');
        }
        Some(MemberSsh {
            jump,
            subnets,
            known_hosts,
            host_ca: cert_authority.is_some(),
        })
    }

    fn host_ca(&self) -> Result<&HostCa, UserError> {
        match self.core.host_ca() {
            Some(ca) if self.core.config().ssh.certificates => Ok(ca),
            _ => Err(UserError::CertificatesOff),
        }
    }
}

/// See [`Access::member_ssh`].
pub struct MemberSsh {
    pub jump: JumpHost,
    pub subnets: Vec<IpNet>,
    /// The file's text, a line each.
    pub known_hosts: String,
    /// It trusts the host CA for some of `subnets`.
    pub host_ca: bool,
}

/// How many unrevoked host certificates expire within
/// [`EXPIRING_WITHIN`] of `now`: the metric.
pub async fn count_expiring(store: &Store, now: i64) -> Result<u64, StoreError> {
    let rows = store.read(move |r| r.unexpired_host_certs(now)).await?;
    Ok(rows.iter().filter(|row| expires_soon(row, now)).count() as u64)
}

fn expires_soon(row: &HostCertRow, now: i64) -> bool {
    let soon = i64::try_from(EXPIRING_WITHIN.as_secs()).unwrap_or(i64::MAX);
    row.revoked.is_none() && row.valid_before <= now.saturating_add(soon)
}

/// `host:<first principal>@<gateway>`, the certificate's key id.
fn key_id(principals: &[String], gateway: &str) -> String {
    format!(
        "host:{}@{gateway}",
        principals.first().map(String::as_str).unwrap_or_default()
    )
}

fn info_of(row: &HostCertRow, gateway: &str, now: i64) -> HostCertInfo {
    HostCertInfo {
        serial: row.serial,
        key_id: key_id(&row.principals, gateway),
        principals: row.principals.clone(),
        valid_after: row.valid_after,
        valid_before: row.valid_before,
        key_fingerprint: row.key_fingerprint.clone(),
        issued_at: row.issued_at,
        issued_by: row.issued_by.clone(),
        revoked_at: row.revoked.as_ref().map(|(at, _)| *at),
        revoked_by: row.revoked.as_ref().map(|(_, by)| by.clone()),
        expires_soon: expires_soon(row, now),
    }
}

/// The principals, each once in the order given, if each is a host name
/// or an address inside one of the groups' subnets (members trust the
/// host CA for those hosts only, so a certificate for any other address
/// would vouch for a host the gateway does not front).
pub fn checked_principals(
    config: &Config,
    principals: &[String],
) -> Result<Vec<String>, UserError> {
    let subnets = group_subnets(config);
    let mut checked: Vec<String> = Vec::new();
    for principal in principals {
        let principal = principal.trim();
        if principal.is_empty() || checked.iter().any(|p| p == principal) {
            continue;
        }
        match principal.parse::<IpAddr>() {
            Ok(ip) => {
                if !subnets.iter().any(|net| net.contains(&ip)) {
                    return Err(UserError::HostCertAddressOutside {
                        address: ip,
                        subnets: subnets.iter().map(ToString::to_string).collect(),
                    });
                }
            }
            Err(_) => {
                if let Some(why) = host_name_problem(principal) {
                    return Err(UserError::HostCertPrincipal {
                        principal: principal.to_string(),
                        why,
                    });
                }
            }
        }
        checked.push(principal.to_string());
    }
    if checked.is_empty() {
        return Err(UserError::HostCertNoPrincipals);
    }
    if checked.len() > MAX_PRINCIPALS {
        return Err(UserError::HostCertTooManyPrincipals {
            count: checked.len(),
            max: MAX_PRINCIPALS,
        });
    }
    Ok(checked)
}

/// Every group's subnets: the hosts the host CA vouches for.
pub fn group_subnets(config: &Config) -> Vec<IpNet> {
    config
        .groups
        .iter()
        .flat_map(|group| group.subnets.iter().copied())
        .collect()
}

/// Why `name` is no host name (letters, digits, `-`, `_` and dots; no
/// wildcard: a certificate names hosts, it does not match them).
fn host_name_problem(name: &str) -> Option<&'static str> {
    if name.len() > 253 {
        return Some("longer than 253 characters");
    }
    if name.contains(['*', '?']) {
        return Some("a certificate names hosts exactly: no wildcards");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Some("a host name has only letters, digits, '-', '_' and dots");
    }
    if name.starts_with(['-', '.']) || name.ends_with('-') || name.contains("..") {
        return Some("not a host name (a label starts or ends with '-', or is empty)");
    }
    None
}

/// The detail of `ssh.host_cert.issue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCertIssued {
    /// The serial in decimal (as `ssh.cert.issue`'s).
    pub serial: String,
    pub key_id: String,
    pub principals: Vec<String>,
    /// Unix seconds.
    pub valid_after: i64,
    pub valid_before: i64,
    pub key_fingerprint: String,
}

impl Detail for HostCertIssued {
    const KINDS: &'static [Kind] = &[Kind::SshHostCertIssue];
}

/// The detail of `ssh.host_cert.revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCertRevoked {
    pub serial: String,
    pub principals: Vec<String>,
    pub key_fingerprint: String,
}

impl Detail for HostCertRevoked {
    const KINDS: &'static [Kind] = &[Kind::SshHostCertRevoke];
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(crate::testing::CONFIG, "test.toml").unwrap()
    }

    /// Names pass, addresses only inside a group's subnet; duplicates and
    /// blanks go; wildcards, odd characters, none and too many are named.
    #[test]
    fn principals_are_host_names_or_addresses_the_groups_reach() {
        let config = config();
        let given = |list: &[&str]| {
            checked_principals(
                &config,
                &list.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            given(&["10.0.3.140", " jupyter.internal", "10.0.3.140", ""]).unwrap(),
            ["10.0.3.140", "jupyter.internal"]
        );
        let outside = given(&["10.0.4.1"]).unwrap_err();
        assert!(given(&["10.0.2.7"]).is_ok(), "the other group's subnet");
        assert!(
            matches!(outside, UserError::HostCertAddressOutside { .. })
                && outside.to_string().contains("10.0.3.0/24"),
            "{outside}"
        );
        for bad in ["*.internal", "a b", "-x", "a..b", "host,other"] {
            assert!(
                matches!(given(&[bad]), Err(UserError::HostCertPrincipal { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            given(&[" "]),
            Err(UserError::HostCertNoPrincipals)
        ));
        let many: Vec<String> = (0..=MAX_PRINCIPALS).map(|i| format!("h{i}")).collect();
        assert!(matches!(
            checked_principals(&config, &many),
            Err(UserError::HostCertTooManyPrincipals { .. })
        ));
    }

    /// Soon is 14 days, and a revoked certificate is never "soon".
    #[test]
    fn a_certificate_expires_soon_within_14_days_unless_revoked() {
        let day = 86_400;
        let row = |valid_before: i64, revoked: bool| HostCertRow {
            serial: 1,
            key_fingerprint: String::new(),
            public_key: String::new(),
            principals: vec!["h".into()],
            valid_after: 0,
            valid_before,
            issued_at: 0,
            issued_by: "admin:0".into(),
            revoked: revoked.then(|| (1, "admin:0".to_string())),
        };
        assert!(expires_soon(&row(14 * day, false), 0));
        assert!(!expires_soon(&row(14 * day + 1, false), 0));
        assert!(!expires_soon(&row(day, true), 0));
    }
}
