//! A member's standing at one instant: the one answer to "is this member
//! allowed in, now?". Every door and subsystem asks [`Standing::of`] and
//! decides from its answer; none compares `UserState` or expiry itself.

use gatehouse_config::Config;
use gatehouse_config::api::UserState;

use super::LoginRefusal;
use crate::store::User;

/// What a member is, at `now`, for every door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Enrolled (or admitted by SSO), enabled and unexpired.
    Active,
    /// An enabled, unexpired machine account (`no_login`): its devices and
    /// SSH keys work, it never signs in to the portal.
    Machine,
    /// Added, not yet enrolled (no password set, no SSO login yet).
    Pending,
    /// Disabled by an admin.
    Disabled,
    /// The account's expiry has been reached.
    Expired,
}

impl Standing {
    /// The standing of `user` at unix time `now`. Disabled wins over
    /// expired, expired over the rest: the strongest "no" is the one told.
    /// A machine account is never pending (marking a pending member as a
    /// machine activates it), so `no_login` wins over the pending state.
    pub fn of(user: &User, now: i64) -> Standing {
        match user.state {
            UserState::Disabled => Standing::Disabled,
            _ if user.is_expired(now) => Standing::Expired,
            _ if user.no_login => Standing::Machine,
            UserState::Pending => Standing::Pending,
            UserState::Active => Standing::Active,
        }
    }

    /// May the member use what they hold (the jump host with a key or a
    /// certificate, a channel, a portal session, a new certificate)?
    /// Active members and machines may; nobody else.
    pub fn in_good_standing(self) -> bool {
        matches!(self, Standing::Active | Standing::Machine)
    }

    /// Refused whatever else holds: disabled or expired. (Pending members
    /// may still enroll or sign in with SSO; machines keep their devices.)
    pub fn is_barred(self) -> bool {
        matches!(self, Standing::Disabled | Standing::Expired)
    }

    /// Why a member of this standing may not use the jump host or a
    /// certificate (`None`: they may).
    pub fn refusal(self) -> Option<LoginRefusal> {
        match self {
            Standing::Active | Standing::Machine => None,
            Standing::Pending => Some(LoginRefusal::Pending),
            Standing::Disabled => Some(LoginRefusal::Disabled),
            Standing::Expired => Some(LoginRefusal::Expired),
        }
    }

    /// Why a member of this standing may not sign in to the portal
    /// (`None`: they may). A machine never signs in.
    pub fn portal_refusal(self) -> Option<LoginRefusal> {
        match self {
            Standing::Machine => Some(LoginRefusal::NoLogin),
            other => other.refusal(),
        }
    }

    /// The word `user show` and messages use.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Active => "active",
            Standing::Machine => "machine",
            Standing::Pending => "pending",
            Standing::Disabled => "disabled",
            Standing::Expired => "expired",
        }
    }
}

/// May `user` see the auditor's view of the audit log at `now`? Only a
/// member who may sign in to the portal (not pending, disabled, expired,
/// nor a machine) and is in one of `portal.auditor_groups`. Being an
/// auditor grants nothing else: no subnet, no admin power.
pub fn is_auditor(user: &User, config: &Config, now: i64) -> bool {
    Standing::of(user, now).portal_refusal().is_none()
        && user
            .groups
            .iter()
            .any(|group| config.portal.auditor_groups.contains(group))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn user(state: UserState, no_login: bool, expires_at: Option<i64>) -> User {
        User {
            name: "alice".into(),
            state,
            groups: vec!["research".into()],
            created_at: 1,
            expires_at,
            last_seen: None,
            password_hash: None,
            totp_secret: None,
            no_login,
            vpn_login_at: None,
        }
    }

    #[test]
    fn each_state_has_its_standing() {
        let now = 1_000;
        assert_eq!(
            Standing::of(&user(UserState::Active, false, None), now),
            Standing::Active
        );
        assert_eq!(
            Standing::of(&user(UserState::Active, true, None), now),
            Standing::Machine
        );
        assert_eq!(
            Standing::of(&user(UserState::Pending, false, None), now),
            Standing::Pending
        );
        assert_eq!(
            Standing::of(&user(UserState::Disabled, false, None), now),
            Standing::Disabled
        );
    }

    #[test]
    fn an_auditor_is_in_an_auditor_group_and_may_sign_in_now() {
        let config = Config::parse(
            "[gateway]\nname = \"gw\"\npublic_endpoint = \"vpn.example.com\"\n\n[portal]\nauditor_groups = [\"auditors\"]\n\n[[group]]\nname = \"research\"\nsubnets = [\"10.0.3.0/24\"]\n\n[[group]]\nname = \"auditors\"\n",
            "t.toml",
        )
        .unwrap();
        let mut carol = user(UserState::Active, false, Some(1_000));
        assert!(!is_auditor(&carol, &config, 10), "research only");
        carol.groups.push("auditors".into());
        assert!(is_auditor(&carol, &config, 10));
        assert!(!is_auditor(&carol, &config, 1_000), "expired");
        for (state, no_login) in [
            (UserState::Pending, false),
            (UserState::Disabled, false),
            (UserState::Active, true),
        ] {
            let other = User {
                state,
                no_login,
                ..carol.clone()
            };
            assert!(!is_auditor(&other, &config, 10), "{state:?} {no_login}");
        }
        let none = Config::parse(
            "[gateway]\nname = \"gw\"\npublic_endpoint = \"vpn.example.com\"\n\n[[group]]\nname = \"auditors\"\nsubnets = [\"10.0.9.0/24\"]\n",
            "t.toml",
        )
        .unwrap();
        assert!(
            !is_auditor(&carol, &none, 10),
            "no auditor_groups: nobody, whatever the groups are called"
        );
    }

    #[test]
    fn expiry_takes_effect_at_now_exactly() {
        let alice = user(UserState::Active, false, Some(1_000));
        assert_eq!(Standing::of(&alice, 999), Standing::Active);
        assert_eq!(Standing::of(&alice, 1_000), Standing::Expired);
        assert_eq!(Standing::of(&alice, 1_001), Standing::Expired);
        let machine = user(UserState::Active, true, Some(1_000));
        assert_eq!(Standing::of(&machine, 999), Standing::Machine);
        assert_eq!(Standing::of(&machine, 1_000), Standing::Expired);
    }

    #[test]
    fn the_strongest_no_is_told() {
        let disabled_and_expired = user(UserState::Disabled, false, Some(5));
        assert_eq!(Standing::of(&disabled_and_expired, 10), Standing::Disabled);
        let pending_and_expired = user(UserState::Pending, false, Some(5));
        assert_eq!(Standing::of(&pending_and_expired, 10), Standing::Expired);
        let disabled_machine = user(UserState::Disabled, true, None);
        assert_eq!(Standing::of(&disabled_machine, 10), Standing::Disabled);
        let pending_machine = user(UserState::Pending, true, None);
        assert_eq!(Standing::of(&pending_machine, 10), Standing::Machine);
    }

    #[test]
    fn who_is_in_good_standing_and_who_may_sign_in() {
        use Standing::*;
        let table = [
            (Active, true, false, None, None),
            (Machine, true, false, None, Some("no_login")),
            (
                Pending,
                false,
                false,
                Some("user_pending"),
                Some("user_pending"),
            ),
            (
                Disabled,
                false,
                true,
                Some("user_disabled"),
                Some("user_disabled"),
            ),
            (
                Expired,
                false,
                true,
                Some("user_expired"),
                Some("user_expired"),
            ),
        ];
        for (standing, good, barred, refusal, portal) in table {
            assert_eq!(standing.in_good_standing(), good, "{standing:?}");
            assert_eq!(standing.is_barred(), barred, "{standing:?}");
            assert_eq!(standing.refusal().map(LoginRefusal::code), refusal);
            assert_eq!(standing.portal_refusal().map(LoginRefusal::code), portal);
        }
    }
}
