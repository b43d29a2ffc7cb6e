//! Who an SSO login is (`[oidc]`): the rules that turn an identity the
//! provider vouched for into a gatehouse member, written once.
//!
//! - A member is found by the provider identity they are linked to (`iss` +
//!   `sub`), never by a mutable claim. A member is linked when an admin
//!   creates them with `--oidc-subject`, or when `auto_provision` creates
//!   them at their first login.
//! - The email domain must be allowed (`oidc.allowed_email_domains`), and
//!   the email verified: marked `email_verified: true` by default, or not
//!   marked unverified with `oidc.email_verified = "if_present"` (providers
//!   that send no such claim); otherwise anyone who may type an address at
//!   the provider picks their domain.
//! - Groups are re-evaluated at every login from the groups claim
//!   (`group.oidc_groups`): someone removed from an IdP group loses that
//!   group now, and a login that maps to no group is refused (their groups
//!   emptied first, so nothing is left to them).
//! - With `auto_provision`, an unknown identity whose groups map to at least
//!   one group becomes an active member named by `oidc.username_claim`
//!   (refused when that is not a valid user name or is taken).
//! - A disabled or expired member is refused whatever the provider says.
//! - With `oidc.require_totp` the provider's word is not enough to be
//!   active: a member provisioned or linked is activated only once the TOTP
//!   step is done (`portal::sso_totp`). A member with no authenticator app
//!   yet is refused under `oidc.totp_enrollment = "admin_link"` (the
//!   default: the first app comes from an admin's enrollment link), or
//!   sets one up in that step under `"first_login"`.
//!
//! Each change commits with its audit record (`user.add` and
//! `user.set_groups` by `oidc`); refusals are returned for the portal to
//! audit as `portal.login.fail`.

use gatehouse_config::Config;
use gatehouse_config::api::UserState;
use gatehouse_config::file::TotpEnrollment;
use gatehouse_config::names::check_name;
use serde::{Deserialize, Serialize};

use super::Access;
use crate::audit::detail::Detail;
use crate::audit::event::{Actor, Kind, Source, event};
use crate::auth::Standing;
use crate::sso::Verified;
use crate::store::{NewUser, StoreError};
use crate::time_fmt::now_unix;

/// Why an SSO login does not make a member; [`SsoRefusal::reason`] is the
/// audit record's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoRefusal {
    /// The email is missing or not in an allowed domain.
    Domain,
    /// The provider's groups grant no gatehouse group.
    Unmapped,
    /// Unknown identity, and `auto_provision` is off.
    UnknownIdentity,
    /// `auto_provision` could not name the member (the claim is missing,
    /// not a valid user name, or the name is another member's).
    Unnamed(String),
    Disabled,
    Expired,
    /// A machine account never logs in.
    NoLogin,
    /// `require_totp` with `totp_enrollment = "admin_link"`: the member has
    /// no authenticator app yet, and only an admin's link sets one up.
    TotpNotEnrolled,
}

impl SsoRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            SsoRefusal::Domain => "domain",
            SsoRefusal::Unmapped => "unmapped",
            SsoRefusal::UnknownIdentity => "unknown_identity",
            SsoRefusal::Unnamed(_) => "unnamed",
            SsoRefusal::Disabled => "disabled",
            SsoRefusal::Expired => "account_expired",
            SsoRefusal::NoLogin => "no_login",
            SsoRefusal::TotpNotEnrolled => "totp_not_enrolled",
        }
    }

    /// What the member is told (a page, not a secret).
    pub fn message(&self) -> String {
        match self {
            SsoRefusal::Domain => "Your account's email address is not in a domain this gateway admits.".into(),
            SsoRefusal::Unmapped => "Your account is in no group that grants access through this gateway. Ask your administrator to add you to one.".into(),
            SsoRefusal::UnknownIdentity => "Your account is not registered on this gateway. Ask your administrator to add you.".into(),
            SsoRefusal::Unnamed(why) => format!("Your account cannot be registered here: {why}. Ask your administrator to add you."),
            SsoRefusal::Disabled => "Your access through this gateway is disabled.".into(),
            SsoRefusal::Expired => "Your access through this gateway has expired.".into(),
            SsoRefusal::NoLogin => "This account does not log in.".into(),
            SsoRefusal::TotpNotEnrolled => "This gateway also asks for a code from an authenticator app, and you have none set up here yet. Ask your administrator for an enrollment link: it sets the app up (error code: totp_not_enrolled).".into(),
        }
    }
}

/// The member an SSO login is, after the rules above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoMember {
    pub user: String,
    /// Their groups, as re-evaluated now.
    pub groups: Vec<String>,
    /// Made by this login (`auto_provision`).
    pub created: bool,
}

/// The detail of `user.add` by `oidc`: a member `auto_provision` made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoUserAdded {
    pub groups: Vec<String>,
    /// `pending` until the TOTP step with `oidc.require_totp`, else `active`.
    pub state: UserState,
    pub issuer: String,
    pub subject: String,
    /// Always true: the only way SSO adds a member.
    pub auto_provision: bool,
}

impl Detail for SsoUserAdded {
    const KINDS: &'static [Kind] = &[Kind::UserAdd];
}

/// The detail of `user.set_groups` by `oidc`: the groups re-evaluated at a
/// login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoGroupsSet {
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// [`GROUPS_AT_LOGIN`].
    pub reason: String,
}

impl Detail for SsoGroupsSet {
    const KINDS: &'static [Kind] = &[Kind::UserSetGroups];
}

/// The `reason` of [`SsoGroupsSet`].
pub const GROUPS_AT_LOGIN: &str = "the provider's groups at login";

/// The outcome: the member, or why not (with the user it concerns, when
/// there is one, for the audit record).
pub type SsoOutcome = Result<SsoMember, (SsoRefusal, Option<String>)>;

impl Access {
    /// Applies the rules to `login`, committing what they change.
    pub async fn sso_member(&self, login: &Verified) -> Result<SsoOutcome, StoreError> {
        let config = self.core.config();
        let Some(oidc) = config.oidc.as_ref() else {
            return Ok(Err((SsoRefusal::UnknownIdentity, None)));
        };
        if !oidc.allowed_email_domains.is_empty() {
            let domain = login
                .email
                .as_deref()
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase());
            let unverified = !oidc.email_verified.accepts(login.email_verified);
            if unverified || !domain.is_some_and(|d| oidc.allowed_email_domains.contains(&d)) {
                return Ok(Err((SsoRefusal::Domain, None)));
            }
        }
        let groups = mapped_groups(&config, &login.groups);
        let auto_provision = oidc.auto_provision;
        let require_totp = oidc.require_totp;
        let admin_link = oidc.totp_enrollment == TotpEnrollment::AdminLink;
        let login = login.clone();
        let now = now_unix();
        self.core
            .store()
            .write(move |w| {
                let linked = w.user_by_sso_identity(&login.issuer, &login.subject)?;
                let Some(name) = linked else {
                    if !auto_provision {
                        return Ok(Err((SsoRefusal::UnknownIdentity, None)));
                    }
                    if groups.is_empty() {
                        return Ok(Err((SsoRefusal::Unmapped, None)));
                    }
                    let name = match provisioned_name(login.username.as_deref()) {
                        Ok(name) => name,
                        Err(why) => return Ok(Err((SsoRefusal::Unnamed(why), None))),
                    };
                    if w.user(&name)?.is_some() {
                        let why = format!("the user name {name:?} is taken");
                        return Ok(Err((SsoRefusal::Unnamed(why), Some(name))));
                    }
                    w.create_user(NewUser {
                        name: name.clone(),
                        groups: groups.clone(),
                        created_at: now,
                        expires_at: None,
                        no_login: false,
                    })?;
                    // With require_totp, active only once the TOTP step is done.
                    let state = match require_totp {
                        true => UserState::Pending,
                        false => {
                            w.set_user_state(&name, UserState::Active)?;
                            UserState::Active
                        }
                    };
                    w.link_sso_identity(&name, &login.issuer, &login.subject, now)?;
                    w.audit(
                        event(Kind::UserAdd, Actor::Sso, Source::Local)
                            .on(name.clone())
                            .with(&SsoUserAdded {
                                groups: groups.clone(),
                                state,
                                issuer: login.issuer.clone(),
                                subject: login.subject.clone(),
                                auto_provision: true,
                            }),
                    )?;
                    if require_totp && admin_link {
                        return Ok(Err((SsoRefusal::TotpNotEnrolled, Some(name))));
                    }
                    return Ok(Ok(SsoMember {
                        user: name,
                        groups,
                        created: true,
                    }));
                };
                let user = w.existing_user(&name)?;
                if user.groups != groups {
                    w.set_user_groups(&name, groups.clone())?;
                    w.audit(
                        event(Kind::UserSetGroups, Actor::Sso, Source::Local)
                            .on(name.clone())
                            .with(&SsoGroupsSet {
                                from: user.groups.clone(),
                                to: groups.clone(),
                                reason: GROUPS_AT_LOGIN.into(),
                            }),
                    )?;
                }
                let refusal = match Standing::of(&user, now) {
                    _ if groups.is_empty() => Some(SsoRefusal::Unmapped),
                    Standing::Machine => Some(SsoRefusal::NoLogin),
                    Standing::Disabled => Some(SsoRefusal::Disabled),
                    Standing::Expired => Some(SsoRefusal::Expired),
                    Standing::Active | Standing::Pending => None,
                };
                if let Some(refusal) = refusal {
                    return Ok(Err((refusal, Some(name))));
                }
                if require_totp && admin_link && user.totp_secret.is_none() {
                    return Ok(Err((SsoRefusal::TotpNotEnrolled, Some(name))));
                }
                // A member an admin created for SSO signs in without
                // enrolling a password: the provider vouched for them (and,
                // with require_totp, the TOTP step activates them).
                if Standing::of(&user, now) == Standing::Pending && !require_totp {
                    w.set_user_state(&name, UserState::Active)?;
                }
                Ok(Ok(SsoMember {
                    user: name,
                    groups,
                    created: false,
                }))
            })
            .await
    }
}

/// The gatehouse groups whose `oidc_groups` name one of `idp_groups`, in
/// config order.
pub fn mapped_groups(config: &Config, idp_groups: &[String]) -> Vec<String> {
    config
        .groups
        .iter()
        .filter(|g| g.oidc_groups.iter().any(|name| idp_groups.contains(name)))
        .map(|g| g.name.clone())
        .collect()
}

/// The user name `auto_provision` gives: the claim as it is, if it is a
/// valid user name (never changed to fit: two people must not end up as
/// one).
fn provisioned_name(claim: Option<&str>) -> Result<String, String> {
    let claim = claim.ok_or("the provider sent no user name claim")?;
    check_name("user", claim).map_err(|e| e.to_string())?;
    Ok(claim.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_through_oidc_groups_only() {
        let config = gatehouse_config::Config::parse(
            "[gateway]\nname = \"gw\"\npublic_endpoint = \"vpn.example.com\"\n\
             [[group]]\nname = \"research\"\nsubnets = [\"10.0.3.0/24\"]\noidc_groups = [\"research-team\"]\n\
             [[group]]\nname = \"ops\"\nsubnets = [\"10.0.2.0/24\"]\noidc_groups = [\"ops\", \"sre\"]\n\
             [[group]]\nname = \"db\"\nsubnets = [\"10.0.4.0/24\"]\n\
             [oidc]\nissuer = \"https://idp.example.org\"\nclient_id = \"g\"\n",
            "t.toml",
        )
        .unwrap();
        let idp = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            mapped_groups(&config, &idp(&["sre", "research-team"])),
            ["research", "ops"]
        );
        assert!(
            mapped_groups(&config, &idp(&["db", "research"])).is_empty(),
            "by IdP name only"
        );
        assert!(mapped_groups(&config, &[]).is_empty());
    }

    #[test]
    fn a_provisioned_name_is_the_claim_or_nothing() {
        assert_eq!(provisioned_name(Some("alice")).unwrap(), "alice");
        assert!(provisioned_name(Some("Alice Smith")).is_err());
        assert!(provisioned_name(None).is_err());
    }
}
