//! The audit log's kinds: every `kind` accessd writes, named once here so
//! the daemon, `accessctl audit --kind` (completion and help) and the
//! documentation (`packaging/README.md`, "Audit kinds") cannot drift apart.
//!
//! Kinds are dotted, general to specific (`ssh.session.end`); filters match
//! whole leading segments, so `ssh` and `ssh.session` are both useful
//! prefixes. A record's kind is stored and sent as its dotted string, which
//! is also this type's serde form.
//!
//! Does not own the rest of a record (actor, source, target, detail) nor the
//! prefix matching, which the daemon's store does.

use std::fmt;
use std::str::FromStr;

/// One line per kind: `Variant = "dotted.name": "summary for the docs"`.
/// The macro writes the enum, [`AuditKind::ALL`] and the two total matches,
/// so a new kind is a new line here and nothing else.
macro_rules! audit_kinds {
    ($($variant:ident = $name:literal: $summary:literal,)+) => {
        /// What an audit record is about.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AuditKind {
            $(
                #[doc = concat!("`", $name, "`: ", $summary)]
                $variant,
            )+
        }

        impl AuditKind {
            /// Every kind, in documentation order (grouped by first segment).
            pub const ALL: &[AuditKind] = &[$(AuditKind::$variant,)+];

            /// The dotted name, as stored in the log and shown by `accessctl audit`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(AuditKind::$variant => $name,)+
                }
            }

            /// One line saying what happened, for help texts and the docs.
            pub const fn summary(self) -> &'static str {
                match self {
                    $(AuditKind::$variant => $summary,)+
                }
            }
        }
    };
}

audit_kinds! {
    UserAdd = "user.add": "An admin created a user (with groups, and an enrollment link unless it is a machine account), or an SSO login did (actor oidc, with oidc.auto_provision).",
    UserRemove = "user.remove": "An admin removed a user, with their devices and keys.",
    UserEnable = "user.enable": "An admin enabled a user again.",
    UserDisable = "user.disable": "An admin disabled a user.",
    UserSetGroups = "user.set_groups": "An admin replaced a user's groups, or an SSO login did (actor oidc: the groups mapped from the provider's at that login).",
    UserSetNoLogin = "user.set_no_login": "An admin set or cleared a user's no-login mark (a machine that never logs in to the portal).",
    UserEnrollmentLink = "user.enrollment_link": "An admin issued a new enrollment link for a pending user (their older unused links stop working).",
    UserKeyAdd = "user.key.add": "An admin added an SSH public key to a user, or the member did on the portal (via portal).",
    UserKeyRemove = "user.key.remove": "An admin removed one of a user's SSH keys, or the member did on the portal (via portal).",
    DeviceCreate = "device.create": "A WireGuard device was created, by an admin or by its user in the portal.",
    DeviceRevoke = "device.revoke": "A WireGuard device was revoked, by an admin or by its user in the portal.",
    PortalEnroll = "portal.enroll": "A user finished enrolling in the portal (password, TOTP); this logs them in.",
    PortalLoginOk = "portal.login.ok": "A user logged in to the portal (method password or oidc); with vpn.require_login this starts their VPN session.",
    PortalLoginFail = "portal.login.fail": "A portal login was refused (wrong password or TOTP code, locked out; or for SSO: state, nonce, signature, audience, expired, unmapped, domain, provider error), with the reason.",
    PortalLogout = "portal.logout": "A user logged out of the portal.",
    VpnConnect = "vpn.connect": "A device's tunnel came up: its first handshake, or one after none for 3 minutes.",
    VpnDisconnect = "vpn.disconnect": "A device's tunnel went down: no handshake for 3 minutes, or accessd stopped.",
    VpnAclDeny = "vpn.acl.deny": "A device sent packets its user's groups do not allow (counted, at most one record a minute per device).",
    VpnFlow = "vpn.flow": "A device's allowed traffic to one host, protocol and port in a minute: packets and bytes each way, first and last seen; past audit.flows_per_device flows, the rest in one record marked rollup.",
    VpnSessionExpire = "vpn.session.expire": "A user's VPN session ran out (vpn.session_lifetime after their portal login).",
    SshAuthFail = "ssh.auth.fail": "A jump host login failed (key, user state, TOTP code, login grace time); floods are summarised per minute.",
    SshSessionStart = "ssh.session.start": "The jump host opened a forwarded connection to a target.",
    SshSessionEnd = "ssh.session.end": "A forwarded connection through the jump host closed (bytes, duration, reason).",
    SshForwardDeny = "ssh.forward.deny": "The jump host refused a channel or request (target not allowed or unreachable, not direct-tcpip).",
    SshChannelKill = "ssh.channel.kill": "An admin closed a live jump host channel.",
    SshCertIssue = "ssh.cert.issue": "The SSH user CA issued a certificate (serial, principals, validity, key fingerprint, who asked: the member on the portal or an admin).",
    SshHostCertIssue = "ssh.host_cert.issue": "The SSH host CA signed a private host's certificate (serial, principals, validity, host key fingerprint, the admin who asked).",
    SshHostJoinFail = "ssh.host_join.fail": "A private EC2 host asking to join by instance identity was refused (unsigned or wrongly signed document, stale or replayed, unknown instance, outside the VPC, no gatehouse:host tag, address outside the groups), with the reason.",
    SshHostCertRevoke = "ssh.host_cert.revoke": "An admin revoked a private host's certificate (serial, principals); the host KRL lists it until it expires.",
    AwsChange = "aws.change": "The AWS provisioner changed a resource (elastic IP, security group, route, SSM key).",
    AwsChangeFail = "aws.change.fail": "An AWS change failed.",
    ConfigReload = "config.reload": "The config file was re-read and applied (with the keys that need a restart).",
    ConfigReloadFail = "config.reload.fail": "A config reload was refused (an invalid file); the running config stays.",
    HaAcquire = "ha.acquire": "This gateway took the HA lease and became the active one (generation, previous holder, takeover time).",
    HaRelease = "ha.release": "This gateway gave up the HA lease: a planned stop or handover, or a lease it could not renew in time.",
    HaFailover = "ha.failover": "The standby took over from an active whose lease ran out (from, to, how long traffic had no active gateway).",
    GatewayStart = "gateway.start": "accessd started.",
    GatewayStop = "gateway.stop": "accessd stopped (also after a failed start).",
    AdminBackup = "admin.backup": "An admin took a backup of the database.",
    AuditView = "audit.view": "An auditor viewed the audit log in the portal (the page and the filter used); the same view again within a minute is not recorded again.",
    AuditCheckpoint = "audit.checkpoint": "The active gateway signed where the audit chain stands (the record before, its chain value, gateway, node, time) with the audit signing key: at least every minute or 1,000 records, and where the keyed chain begins.",
}

/// A string that names no [`AuditKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an audit kind")]
pub struct UnknownAuditKind(pub String);

impl AuditKind {
    /// The kind named `name` (dotted, exact).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditKind {
    type Err = UnknownAuditKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownAuditKind(s.to_string()))
    }
}

impl serde::Serialize for AuditKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for AuditKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashSet;

    use super::*;

    const README: &str = include_str!("../../packaging/README.md");

    #[test]
    fn names_are_unique_dotted_lowercase_and_round_trip() {
        let mut seen = HashSet::new();
        for kind in AuditKind::ALL {
            let name = kind.as_str();
            assert!(seen.insert(name), "{name} twice");
            let segments: Vec<&str> = name.split('.').collect();
            assert!(segments.len() >= 2, "{name}: at least two segments");
            for segment in segments {
                assert!(
                    !segment.is_empty()
                        && segment.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{name}: segments of a-z and _"
                );
            }
            assert_eq!(name.parse::<AuditKind>(), Ok(*kind));
            assert_eq!(kind.to_string(), name);
            let summary = kind.summary();
            assert!(
                summary.ends_with('.') && !summary.contains('\n'),
                "{name}: one sentence on one line"
            );
        }
    }

    #[test]
    fn all_is_grouped_by_first_segment() {
        let firsts: Vec<&str> = AuditKind::ALL
            .iter()
            .map(|k| k.as_str().split('.').next().unwrap())
            .collect();
        let mut groups = firsts.clone();
        groups.dedup();
        let distinct: HashSet<&str> = firsts.iter().copied().collect();
        assert_eq!(groups.len(), distinct.len(), "{groups:?}");
    }

    #[test]
    fn unknown_names_and_prefixes_are_not_kinds() {
        for name in [
            "",
            "user",
            "ssh.session",
            "user.add.x",
            "User.Add",
            " user.add",
        ] {
            assert_eq!(
                name.parse::<AuditKind>(),
                Err(UnknownAuditKind(name.to_string()))
            );
        }
        assert_eq!(
            UnknownAuditKind("user".into()).to_string(),
            "\"user\" is not an audit kind"
        );
    }

    #[test]
    fn serde_form_is_the_dotted_name() {
        let json = serde_json::to_string(&AuditKind::SshSessionEnd).unwrap();
        assert_eq!(json, "\"ssh.session.end\"");
        let back: AuditKind = serde_json::from_str(&json).unwrap();
        assert_eq!(back, AuditKind::SshSessionEnd);
        let all: Vec<AuditKind> =
            serde_json::from_value(serde_json::to_value(AuditKind::ALL).unwrap()).unwrap();
        assert_eq!(all, AuditKind::ALL);
        let err = serde_json::from_str::<AuditKind>("\"ssh.nope\"").unwrap_err();
        assert!(
            err.to_string()
                .contains("\"ssh.nope\" is not an audit kind"),
            "{err}"
        );
    }

    /// `packaging/README.md` lists every kind with its summary, in order,
    /// under "## Audit kinds", one `` - `kind`: summary `` line each.
    #[test]
    fn the_readme_lists_every_kind_with_its_summary() {
        let section = README
            .split("\n## Audit kinds\n")
            .nth(1)
            .expect("packaging/README.md has a \"## Audit kinds\" section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let documented: Vec<&str> = section
            .lines()
            .filter(|line| line.starts_with("- `"))
            .collect();
        let expected: Vec<String> = AuditKind::ALL
            .iter()
            .map(|k| format!("- `{}`: {}", k.as_str(), k.summary()))
            .collect();
        assert_eq!(
            documented,
            expected,
            "the README's audit kinds differ from AuditKind::ALL; the section should read:\n{}",
            expected.join("\n")
        );
    }
}
