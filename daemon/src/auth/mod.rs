//! The member-authentication service: the rules every door (the portal's
//! password and SSO logins, the jump host's keys, certificates and TOTP
//! step) and every subsystem (VPN sessions, channels, certificates) shares,
//! written once:
//!
//! - [`Standing`]: is this member allowed in, now? Nobody else compares a
//!   user's state or expiry (`tests/layers.rs` checks it); [`is_auditor`]:
//!   may they see the auditor's view of the audit log?
//! - [`LoginBudget`]: every attempt is charged before it is judged, one
//!   judgement per member at a time, refunded on success;
//! - [`consume_totp`]: a TOTP code checked and its step stored in the same
//!   write, so a code works once across the portal and the jump host;
//! - [`LoginRefusal`]: why a login is refused, the `reason` of
//!   `portal.login.fail` and `ssh.auth.fail` alike.
//!
//! It sits below the doors and the data plane (each of them imports it,
//! and the access service imports the data plane), so it imports only the
//! foundations: the store, TOTP, the SSH CA's refusals. It owns no task and
//! no I/O of its own: time comes in as `now`, writes happen in the caller's
//! store transaction.

pub mod budget;
pub mod refusal;
pub mod standing;
#[cfg(test)]
mod tests;

pub use budget::{BudgetRefusal, Charge, LoginBudget};
pub use refusal::LoginRefusal;
pub use standing::{Standing, is_auditor};

use crate::store::{StoreError, User, Writer};
use crate::totp;

/// Checks `code` for `user` at unix time `now` and, when it passes, stores
/// its step, in the caller's write transaction: two logins racing with one
/// code cannot both win, and a code taken by the portal is refused by the
/// jump host (and the other way round). `offered` is a secret being set up
/// in this login (enrollment), checked instead of the stored one; the
/// caller stores it. Returns the step, or why the code was refused.
pub fn consume_totp(
    w: &mut Writer<'_>,
    user: &User,
    code: &str,
    now: i64,
    offered: Option<&str>,
) -> Result<Result<u64, LoginRefusal>, StoreError> {
    let Some(secret) = offered.or(user.totp_secret.as_deref()) else {
        return Ok(Err(LoginRefusal::TotpNotEnrolled));
    };
    // A secret being set up has no step used yet.
    let last = match offered {
        Some(_) => None,
        None => w
            .totp_last_step(&user.name)?
            .and_then(|s| u64::try_from(s).ok()),
    };
    let now = u64::try_from(now).unwrap_or(0);
    match totp::verify(secret, code, now, last) {
        Ok(step) => {
            w.set_totp_last_step(&user.name, i64::try_from(step).unwrap_or(i64::MAX))?;
            Ok(Ok(step))
        }
        Err(reject) => Ok(Err(LoginRefusal::Totp(reject))),
    }
}
