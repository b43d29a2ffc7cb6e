//! The audit details of SSO logins at the portal, typed
//! ([`crate::audit::detail`]): `portal.login.ok` and `portal.login.fail`
//! with `method: "oidc"`. Written by [`super::sso_login`],
//! [`super::sso_totp`] and [`super::flows::sso_refused`]; password logins'
//! records are not these.
//!
//! Owns no rule: the fields only, named once.

use serde::{Deserialize, Serialize};

use crate::audit::detail::Detail;
use crate::audit::event::Kind;

/// The `method` of an SSO login's records: always `"oidc"` (a password
/// login's record does not parse as one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Oidc {
    #[serde(rename = "oidc")]
    Oidc,
}

/// The detail of an accepted SSO login (`portal.login.ok`): the subject and
/// the groups as they were mapped now. Also what a TOTP step keeps of the
/// login until its code (`sso_totp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoLoginOk {
    pub method: Oidc,
    pub issuer: String,
    pub subject: String,
    /// The provider's groups claim.
    pub idp_groups: Vec<String>,
    /// The gatehouse groups they map to.
    pub groups: Vec<String>,
    /// Made by this login (`auto_provision`).
    pub provisioned: bool,
    /// Whether the TOTP step was done.
    pub totp: bool,
    /// With the TOTP step: whether it set up the authenticator app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_enrolled: Option<bool>,
    /// With the TOTP step: whether it activated a pending member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated: Option<bool>,
    /// The refusals a lockout that ended did not record (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_while_locked_out: Option<u32>,
}

impl Detail for SsoLoginOk {
    const KINDS: &'static [Kind] = &[Kind::PortalLoginOk];
}

/// The detail of a refused SSO login (`portal.login.fail`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoLoginFail {
    pub method: Oidc,
    /// The refusal's code (`state`, `expired`, `totp_not_enrolled`, ...).
    pub reason: String,
    /// What happened, in words.
    pub detail: String,
    pub source: String,
    /// The refusals a lockout that ended did not record (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_while_locked_out: Option<u32>,
}

impl Detail for SsoLoginFail {
    const KINDS: &'static [Kind] = &[Kind::PortalLoginFail];
}

/// `Some(n)` for `n > 0`: the records leave the field out otherwise.
pub fn meanwhile(refused: u32) -> Option<u32> {
    (refused > 0).then_some(refused)
}
