//! Why a login is refused, at any door: one enum whose [`LoginRefusal::code`]
//! is the `reason` of both `portal.login.fail` and `ssh.auth.fail`.

use crate::ssh_ca::CertRefusal;
use crate::totp::TotpReject;

/// Why a login (portal password, SSO's TOTP step, jump host key or TOTP
/// step) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// No member has this name.
    UnknownUser,
    /// The member has no password yet (portal).
    NotEnrolled,
    /// The password does not match (portal).
    BadPassword,
    /// A machine account: it never signs in to the portal.
    NoLogin,
    /// Added, not enrolled yet.
    Pending,
    Disabled,
    Expired,
    /// The key is not one of the member's (jump host).
    UnknownKey,
    /// The member's login budget is spent: attempts are refused unchecked
    /// until the lockout ends.
    LockedOut,
    /// The source address's login budget is spent.
    SourceLockedOut,
    /// Another attempt for this member was being judged for too long.
    Busy,
    /// Too many failures lately for this member at the jump host.
    Penalised,
    /// A TOTP code is needed, and the member has no authenticator app.
    TotpNotEnrolled,
    /// The jump host's key passed, no code followed.
    TotpMissing,
    /// A TOTP code without a key accepted for that same member in that
    /// same connection first.
    TotpBeforeKey,
    /// The TOTP code was refused.
    Totp(TotpReject),
    /// The store could not be read: refused, failing closed.
    StoreUnavailable,
    /// The member holds `ssh.max_connections_per_user` logins already.
    TooManyConnections,
    /// A certificate this gateway's CA did not issue to this member now.
    Certificate(CertRefusal),
}

impl LoginRefusal {
    /// The `reason` of the audit record: stable, machine-readable.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownUser => "unknown_user",
            Self::NotEnrolled => "not_enrolled",
            Self::BadPassword => "bad_password",
            Self::NoLogin => "no_login",
            Self::Pending => "user_pending",
            Self::Disabled => "user_disabled",
            Self::Expired => "user_expired",
            Self::UnknownKey => "unknown_key",
            Self::LockedOut => "locked_out",
            Self::SourceLockedOut => "source_locked_out",
            Self::Busy => "busy",
            Self::Penalised => "penalised",
            Self::TotpNotEnrolled => "totp_not_enrolled",
            Self::TotpMissing => "totp_missing",
            Self::TotpBeforeKey => "totp_before_key",
            Self::Totp(reject) => reject.reason(),
            Self::StoreUnavailable => "store_unavailable",
            Self::TooManyConnections => "too_many_connections",
            Self::Certificate(refusal) => refusal.code(),
        }
    }

    /// A sentence for logs and admins (never shown to the client, which
    /// learns only that the login failed).
    pub fn reason(self) -> &'static str {
        match self {
            Self::UnknownUser => "no member has this name",
            Self::NotEnrolled => "the member has not enrolled yet",
            Self::BadPassword => "the password does not match",
            Self::NoLogin => "a machine account never signs in",
            Self::Pending => "the member has not enrolled yet",
            Self::Disabled => "the member is disabled",
            Self::Expired => "the member's account has expired",
            Self::UnknownKey => "the key is not one of the member's",
            Self::LockedOut => "too many failed logins for this member",
            Self::SourceLockedOut => "too many failed logins from this address",
            Self::Busy => "another login for this member was still being checked",
            Self::Penalised => "too many failed logins for this member at the jump host",
            Self::TotpNotEnrolled => "a TOTP code is required and the member has none set up",
            Self::TotpMissing => "the key passed but no TOTP code followed",
            Self::TotpBeforeKey => "a TOTP code came before a key passed",
            Self::Totp(TotpReject::Malformed) => "the TOTP code is not six digits",
            Self::Totp(TotpReject::Mismatch) => "the TOTP code does not match",
            Self::Totp(TotpReject::Reused) => "the TOTP code was used already",
            Self::Totp(TotpReject::BadSecret) => "the stored TOTP secret is not valid",
            Self::StoreUnavailable => "the store cannot be read",
            Self::TooManyConnections => "the member holds the most connections allowed",
            Self::Certificate(_) => "the certificate is not one this gateway issued to the member",
        }
    }

    /// True for the refusals a lockout answers (HTTP 429 at the portal).
    pub fn is_lockout(self) -> bool {
        matches!(self, Self::LockedOut | Self::SourceLockedOut | Self::Busy)
    }
}

impl std::fmt::Display for LoginRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_words() {
        let all = [
            LoginRefusal::UnknownUser,
            LoginRefusal::NotEnrolled,
            LoginRefusal::BadPassword,
            LoginRefusal::NoLogin,
            LoginRefusal::Pending,
            LoginRefusal::Disabled,
            LoginRefusal::Expired,
            LoginRefusal::UnknownKey,
            LoginRefusal::LockedOut,
            LoginRefusal::SourceLockedOut,
            LoginRefusal::Busy,
            LoginRefusal::Penalised,
            LoginRefusal::TotpNotEnrolled,
            LoginRefusal::TotpMissing,
            LoginRefusal::TotpBeforeKey,
            LoginRefusal::Totp(TotpReject::Malformed),
            LoginRefusal::Totp(TotpReject::Mismatch),
            LoginRefusal::Totp(TotpReject::Reused),
            LoginRefusal::Totp(TotpReject::BadSecret),
            LoginRefusal::StoreUnavailable,
            LoginRefusal::TooManyConnections,
            LoginRefusal::Certificate(CertRefusal::OtherCa),
        ];
        let codes: std::collections::BTreeSet<&str> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
        for code in codes {
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
    }
}
