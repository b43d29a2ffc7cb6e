//! Why a user or certificate operation of the access service was refused:
//! one typed variant per case, each with the text the doors show, grouped
//! into the few [`UserErrorKind`]s the doors map to HTTP answers.

use gatehouse_config::api::UserState;
use gatehouse_config::names::NAME_RULE;
use russh::keys::ssh_key;

use crate::auth::Standing;
use crate::ssh_ca::CaError;
use crate::ssh_keys::SshKeyError;
use crate::store::StoreError;

/// The longest OIDC subject a user may be linked to.
pub(super) const MAX_OIDC_SUBJECT: usize = 255;

/// Why a user operation was refused. The doors report each as one of the
/// few [`UserErrorKind`]s, with this text as the message.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user name {name:?}: {}", NAME_RULE)]
    InvalidName { name: String },
    #[error("SSH key: {0}")]
    SshKey(#[source] SshKeyError),
    #[error("the expiry must be in the future")]
    ExpiryNotInFuture,
    #[error("the expiry must be before the year 10000")]
    ExpiryTooLate,
    #[error("the OIDC subject is empty: give the `sub` of the user's ID token")]
    OidcSubjectEmpty,
    #[error("the OIDC subject is longer than {} characters", MAX_OIDC_SUBJECT)]
    OidcSubjectTooLong,
    #[error("an OIDC subject needs the [oidc] section in the gateway's config")]
    OidcNotConfigured,
    #[error("a machine account (no_login) never signs in, with SSO or otherwise")]
    MachineWithSso,
    #[error("give at least one group (--group NAME)")]
    NoGroups,
    #[error(
        "unknown group(s): {}; the config defines: {}",
        .unknown.join(", "),
        names_or_none(.defined)
    )]
    UnknownGroups {
        unknown: Vec<String>,
        defined: Vec<String>,
    },
    #[error(
        "{name} is a machine account (no-login): it never enrolls; its SSH keys and devices work while it is active"
    )]
    MachineNeverEnrolls { name: String },
    #[error(
        "{name} is {}, not pending: only a user who has not enrolled (or an active one without an authenticator app) gets an enrollment link",
        .state.as_str()
    )]
    NotPending { name: String, state: UserState },
    /// The certificate's key line (not yet one of the member's keys, so
    /// not checked as [`Self::SshKey`] is).
    #[error("SSH key: not an OpenSSH public key line: {0}")]
    CertKeyLine(#[source] ssh_key::Error),
    #[error("{user}'s account has expired: no certificate")]
    CertAccountExpired { user: String },
    #[error(
        "{user} is {}: certificates are issued to active members only",
        .standing.as_str()
    )]
    CertNotActive { user: String, standing: Standing },
    #[error("none of {user}'s groups lists ssh_principals: there is no login name to certify")]
    CertNoPrincipals { user: String },
    #[error(
        "{fingerprint} is not one of {user}'s SSH keys: add it first (`accessctl user add-key`)"
    )]
    CertKeyNotTheirs { user: String, fingerprint: String },
    #[error("lifetime must be positive")]
    CertZeroLifetime,
    #[error(transparent)]
    CertSign(CaError),
    #[error("cannot encode the certificate: {0}")]
    CertEncode(#[source] ssh_key::Error),
    #[error(
        "this gateway issues no SSH certificates: set ssh.certificates = true and restart accessd"
    )]
    CertificatesOff,
    #[error(
        "give at least one principal: the names and addresses members reach the host by (--principals 10.0.3.140,jupyter.internal)"
    )]
    HostCertNoPrincipals,
    #[error("principal {principal:?}: {why}")]
    HostCertPrincipal {
        principal: String,
        why: &'static str,
    },
    #[error(
        "{address} is in no group's subnet ({}): members trust the host CA only for the hosts their groups may reach",
        names_or_none(.subnets)
    )]
    HostCertAddressOutside {
        address: std::net::IpAddr,
        subnets: Vec<String>,
    },
    #[error("{count} principals: a host certificate names at most {max}")]
    HostCertTooManyPrincipals { count: usize, max: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the admin API and the portal report a [`UserError`] (status and
/// code), so that both doors group its variants alike.
#[derive(Debug)]
pub enum UserErrorKind {
    /// The user name breaks the naming rule.
    InvalidName,
    /// A value the caller gave is not acceptable.
    InvalidValue,
    /// The user (or the gateway) is not in a state where this makes sense.
    WrongState,
    /// The store failed or refused; the doors map it as any `StoreError`.
    Store(StoreError),
}

impl UserError {
    /// Its kind, for the doors; take the message (`to_string`) first.
    pub fn into_kind(self) -> UserErrorKind {
        use UserError as E;
        match self {
            E::InvalidName { .. } => UserErrorKind::InvalidName,
            E::SshKey(_)
            | E::ExpiryNotInFuture
            | E::ExpiryTooLate
            | E::OidcSubjectEmpty
            | E::OidcSubjectTooLong
            | E::OidcNotConfigured
            | E::MachineWithSso
            | E::NoGroups
            | E::UnknownGroups { .. }
            | E::CertKeyLine(_)
            | E::CertKeyNotTheirs { .. }
            | E::CertZeroLifetime
            | E::HostCertNoPrincipals
            | E::HostCertPrincipal { .. }
            | E::HostCertAddressOutside { .. }
            | E::HostCertTooManyPrincipals { .. } => UserErrorKind::InvalidValue,
            E::MachineNeverEnrolls { .. }
            | E::NotPending { .. }
            | E::CertAccountExpired { .. }
            | E::CertNotActive { .. }
            | E::CertNoPrincipals { .. }
            | E::CertSign(_)
            | E::CertEncode(_)
            | E::CertificatesOff => UserErrorKind::WrongState,
            E::Store(store) => UserErrorKind::Store(store),
        }
    }
}

/// `names` joined with ", ", or "none".
fn names_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The doors, the CLI and the end-to-end tests show and match these
    /// texts; they are the ones the string variants used to carry.
    #[test]
    fn messages_keep_their_text() {
        let name = |s: &str| s.to_string();
        let cases = [
            (
                UserError::InvalidName { name: name("Bob") },
                gatehouse_config::names::check_name("user", "Bob").unwrap_err(),
            ),
            (
                UserError::OidcSubjectTooLong,
                name("the OIDC subject is longer than 255 characters"),
            ),
            (
                UserError::UnknownGroups {
                    unknown: vec![name("a"), name("b")],
                    defined: vec![],
                },
                name("unknown group(s): a, b; the config defines: none"),
            ),
            (
                UserError::UnknownGroups {
                    unknown: vec![name("x")],
                    defined: vec![name("ops"), name("dev")],
                },
                name("unknown group(s): x; the config defines: ops, dev"),
            ),
            (
                UserError::NotPending {
                    name: name("alice"),
                    state: UserState::Disabled,
                },
                name(
                    "alice is disabled, not pending: only a user who has not enrolled (or an active one without an authenticator app) gets an enrollment link",
                ),
            ),
            (
                UserError::CertNotActive {
                    user: name("alice"),
                    standing: Standing::Pending,
                },
                name("alice is pending: certificates are issued to active members only"),
            ),
            (
                UserError::SshKey(SshKeyError::Empty),
                name("SSH key: no public key given: the input is empty"),
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }
}
