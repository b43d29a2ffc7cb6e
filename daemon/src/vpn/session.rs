//! The VPN session rule: when a user's devices may be peers in the data
//! plane. With `vpn.require_login` (the default) a portal login opens a
//! session of `vpn.session_lifetime`; `no_login` users (machines) and
//! `require_login = false` keep devices live while the user is enabled.
//! Pure: the caller brings the time; [`super::sync`] applies and expires it.

use std::time::Duration;

use gatehouse_config::file::VpnConfig;

use crate::auth::Standing;
use crate::store::User;

/// A user's VPN access as the session rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpnAccess {
    /// Disabled or expired: no devices, login or not.
    Refused,
    /// Live while the user is enabled: no portal login needed.
    Always,
    /// Live until this Unix time (then the session expires).
    Until(i64),
    /// Needs a portal login first (none yet, or the last one has expired).
    LoginNeeded,
}

impl VpnAccess {
    /// The access of `user` at `now`, under `vpn`.
    pub fn of(user: &User, vpn: &VpnConfig, now: i64) -> Self {
        match Standing::of(user, now) {
            Standing::Disabled | Standing::Expired => return Self::Refused,
            Standing::Machine => return Self::Always,
            Standing::Active | Standing::Pending if !vpn.require_login => return Self::Always,
            Standing::Active | Standing::Pending => {}
        }
        match user.vpn_login_at {
            Some(login) => Self::Until(login.saturating_add(secs(vpn.session_lifetime))),
            None => Self::LoginNeeded,
        }
    }

    /// True when the user's devices should be peers at `now`.
    pub fn is_live(self, now: i64) -> bool {
        match self {
            Self::Always => true,
            Self::Until(end) => now < end,
            Self::Refused | Self::LoginNeeded => false,
        }
    }

    /// True when a login session exists and has run out at `now`: the
    /// data plane audits `vpn.session.expire` and ends it.
    pub fn has_expired(self, now: i64) -> bool {
        matches!(self, Self::Until(end) if now >= end)
    }

    /// Until when access lasts, when it is a timed session.
    pub fn ends_at(self) -> Option<i64> {
        match self {
            Self::Until(end) => Some(end),
            _ => None,
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::Config;
    use gatehouse_config::api::UserState;

    fn vpn(require_login: bool) -> VpnConfig {
        let text = format!(
            "[gateway]\nname = \"gw\"\npublic_endpoint = \"gw.example\"\n\
             [vpn]\nsession_lifetime = \"1h\"\nrequire_login = {require_login}\n"
        );
        Config::parse(&text, "t.toml").unwrap().vpn
    }

    fn user(state: UserState, no_login: bool, vpn_login_at: Option<i64>) -> User {
        User {
            name: "alice".into(),
            state,
            groups: Vec::new(),
            created_at: 0,
            expires_at: Some(100_000),
            last_seen: None,
            password_hash: None,
            totp_secret: None,
            no_login,
            vpn_login_at,
        }
    }

    #[test]
    fn a_login_opens_a_session_of_the_configured_lifetime() {
        let access = VpnAccess::of(
            &user(UserState::Active, false, Some(1_000)),
            &vpn(true),
            1_500,
        );
        assert_eq!(access, VpnAccess::Until(4_600));
        assert!(access.is_live(4_599));
        assert!(!access.is_live(4_600));
        assert!(!access.has_expired(4_599));
        assert!(access.has_expired(4_600));
    }

    #[test]
    fn without_a_login_nothing_is_live() {
        let access = VpnAccess::of(&user(UserState::Active, false, None), &vpn(true), 5);
        assert_eq!(access, VpnAccess::LoginNeeded);
        assert!(!access.is_live(5));
        assert!(!access.has_expired(5));
    }

    #[test]
    fn machines_and_require_login_false_stay_live_while_enabled() {
        let machine = user(UserState::Active, true, None);
        assert_eq!(VpnAccess::of(&machine, &vpn(true), 5), VpnAccess::Always);
        let person = user(UserState::Pending, false, None);
        assert_eq!(VpnAccess::of(&person, &vpn(false), 5), VpnAccess::Always);
        assert!(VpnAccess::Always.is_live(i64::MAX));
    }

    #[test]
    fn disabled_or_expired_users_are_refused_even_with_a_session() {
        let disabled = user(UserState::Disabled, true, Some(1_000));
        assert_eq!(
            VpnAccess::of(&disabled, &vpn(false), 1_001),
            VpnAccess::Refused
        );
        let expired = user(UserState::Active, false, Some(99_000));
        assert_eq!(
            VpnAccess::of(&expired, &vpn(true), 100_000),
            VpnAccess::Refused
        );
        assert!(!VpnAccess::Refused.is_live(0));
    }
}
