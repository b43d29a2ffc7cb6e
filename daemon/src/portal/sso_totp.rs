//! The TOTP step of SSO logins (`[oidc] require_totp = true`): once the
//! provider and the access service have accepted a login, the member also
//! gives a code from their authenticator app, or sets one up at their first
//! such login. Both pages' rules live here; `sso_pages` parses and renders.
//!
//! - [`begin`] stores the login under the SHA-256 of a new random token that
//!   only the browser's `__Host-gh_sso` cookie holds, with the login's audit
//!   detail and, for a member without a TOTP secret, a new one (sealed). It
//!   waits [`STEP_LIFETIME`] at most.
//! - [`finish`] checks a code under the portal's login limits (the member's
//!   lockout and delays, as password logins have them). [`MAX_FAILURES`]
//!   wrong codes end the step; a right one is used once, enrolls the offered
//!   secret if there was one, and opens the session as any login does.
//!
//! Every refusal is audited (`portal.login.fail`, `method: "oidc"`); the
//! login is `portal.login.ok` with `totp: true`. Never a code or a secret.

use std::net::IpAddr;
use std::time::Instant;

use gatehouse_config::api::UserState;
use serde_json::Value;

use super::PortalState;
use super::error::Failure;
use super::flows::{self, LoggedIn, Opening};
use super::sessions::{csrf_for, new_token};
use crate::store::sso::SecondStep;
use crate::store::{LoginMethod, StoreError, hash_token};
use crate::time_fmt::now_unix;
use crate::totp::{self, TotpReject};

/// How long the code page waits for a code.
pub const STEP_LIFETIME: i64 = 300;
/// Wrong codes that end the step (the member starts again at the provider).
pub const MAX_FAILURES: i64 = 3;

/// What the code page asks for.
pub enum Ask {
    /// A code from the app the member set up before.
    Code,
    /// The member has no authenticator app yet: this secret, and a code.
    Enroll { secret: String, otpauth_uri: String },
}

/// A login waiting for its code: the raw token goes to the cookie only.
pub struct Waiting {
    pub token: String,
    pub user: String,
    pub ask: Ask,
}

/// What a code did.
pub enum Outcome {
    LoggedIn(LoggedIn),
    /// Refused; the page asks again.
    Again(Waiting, &'static str),
    /// The step is over (unknown, expired, too many codes, or the account
    /// changed): start again at the provider.
    Over(String),
}

/// Stores an accepted SSO login until its code; `detail` is its audit
/// detail.
pub async fn begin(state: &PortalState, user: &str, detail: Value) -> Result<Waiting, Failure> {
    let lookup = user.to_string();
    let existing = state
        .core
        .store()
        .read(move |r| r.user(&lookup))
        .await?
        .and_then(|u| u.totp_secret);
    let new_secret = existing.is_none().then(totp::new_secret);
    let token = new_token();
    let token_hash = hash_token(&token);
    let now = now_unix();
    let step = SecondStep {
        user: user.to_string(),
        new_secret: new_secret.clone(),
        login: detail.to_string(),
        created_at: now,
        failures: 0,
    };
    state
        .core
        .store()
        .write(move |w| w.put_second_step(&token_hash, &step, now - STEP_LIFETIME))
        .await?;
    Ok(Waiting {
        token,
        user: user.to_string(),
        ask: ask_for(state, user, new_secret),
    })
}

/// Checks `code` for the login waiting under `token`.
pub async fn finish(
    state: &PortalState,
    source: IpAddr,
    token: &str,
    code: &str,
) -> Result<Outcome, Failure> {
    let start_again = "Your sign-in could not be completed. Start again from the login page.";
    let token_hash = hash_token(token);
    let lookup = token_hash.clone();
    let found = state
        .core
        .store()
        .read(move |r| {
            let Some(step) = r.second_step(&lookup)? else {
                return Ok(None);
            };
            let user = r.user(&step.user)?;
            let last = r.totp_last_step(&step.user)?;
            Ok(user.map(|user| (step, user, last)))
        })
        .await?;
    let now = now_unix();
    let Some((step, user, last_step)) = found else {
        flows::sso_refused(state, source, None, "state", "no TOTP step has this token").await?;
        return Ok(Outcome::Over(start_again.into()));
    };
    let who = step.user.clone();
    if step.created_at < now - STEP_LIFETIME {
        let hash = token_hash.clone();
        state
            .core
            .store()
            .write(move |w| w.take_second_step(&hash))
            .await?;
        flows::sso_refused(
            state,
            source,
            Some(&who),
            "expired",
            "the TOTP step took longer than 5 minutes",
        )
        .await?;
        return Ok(Outcome::Over(start_again.into()));
    }
    if state
        .login_limits
        .check(&who, source, Instant::now())
        .is_err()
    {
        flows::sso_refused(
            state,
            source,
            Some(&who),
            "locked_out",
            "too many failed logins",
        )
        .await?;
        return Ok(Outcome::Over(
            "Too many failed attempts: wait a few minutes, then start again from the login page."
                .into(),
        ));
    }
    let secret = step.new_secret.clone().or(user.totp_secret.clone());
    let last = last_step.and_then(|s| u64::try_from(s).ok());
    let checked = match secret.as_deref() {
        Some(secret) => totp::verify(secret, code, flows::unix_now_u64(), last),
        None => Err(TotpReject::BadSecret),
    };
    let step_no = match checked {
        Ok(step_no) => step_no,
        Err(reject) => return refused(state, source, token, step, reject).await,
    };
    let enrolling = step.new_secret.clone();
    let opening = Opening::new(&state.core.config(), now, source, LoginMethod::Oidc);
    let session = new_token();
    let session_hash = hash_token(&session);
    let mut detail: Value = serde_json::from_str(&step.login).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut detail {
        map.insert("totp".into(), Value::Bool(true));
        map.insert("totp_enrolled".into(), Value::Bool(enrolling.is_some()));
    }
    let record = flows::login_ok(&who, source, detail);
    let name = who.clone();
    let committed = state
        .core
        .store()
        .write(move |w| {
            if !w.take_second_step(&token_hash)? {
                return Ok(Err("the TOTP step was used already"));
            }
            let Some(row) = w.user(&name)? else {
                return Ok(Err("the user is gone"));
            };
            if row.state != UserState::Active || row.is_expired(now) {
                return Ok(Err("the account was disabled or expired meanwhile"));
            }
            let step_no = i64::try_from(step_no).unwrap_or(i64::MAX);
            // Checked again under the write lock: two logins racing with one
            // code cannot both win.
            if w.totp_last_step(&name)?.is_some_and(|last| step_no <= last) {
                return Ok(Err("the code was used already"));
            }
            if let Some(secret) = enrolling {
                if row.totp_secret.is_some() {
                    return Ok(Err("an authenticator app was set up meanwhile"));
                }
                w.set_totp_secret(&name, Some(secret))?;
            }
            w.set_totp_last_step(&name, step_no)?;
            opening.open(w, &name, &session_hash)?;
            w.audit(record)?;
            Ok::<_, StoreError>(Ok(()))
        })
        .await?;
    if let Err(why) = committed {
        flows::sso_refused(state, source, Some(&who), "state", why).await?;
        return Ok(Outcome::Over(start_again.into()));
    }
    state.login_limits.succeeded(&who);
    let config = state.core.config();
    Ok(Outcome::LoggedIn(LoggedIn {
        user: who,
        csrf: csrf_for(&session),
        token: session,
        max_age_secs: config.portal.session_max.as_secs(),
    }))
}

/// Counts, audits and delays a refused code.
async fn refused(
    state: &PortalState,
    source: IpAddr,
    token: &str,
    step: SecondStep,
    reject: TotpReject,
) -> Result<Outcome, Failure> {
    let who = step.user.clone();
    let delay = state.login_limits.failed(&who, source, Instant::now());
    let hash = hash_token(token);
    let still = state
        .core
        .store()
        .write(move |w| w.fail_second_step(&hash, MAX_FAILURES))
        .await?;
    let detail = if still {
        "the TOTP code was refused"
    } else {
        "the TOTP code was refused; too many codes ended the login"
    };
    flows::sso_refused(state, source, Some(&who), reject.reason(), detail).await?;
    tokio::time::sleep(delay).await;
    if !still {
        return Ok(Outcome::Over(
            "Too many wrong codes. Start again from the login page.".into(),
        ));
    }
    let message = match reject {
        TotpReject::Malformed => "Enter the six-digit code your app shows.",
        TotpReject::Reused => "That code was used already: wait for the next one.",
        _ => "That code does not match: check the app's clock and try the next code.",
    };
    Ok(Outcome::Again(
        Waiting {
            token: token.to_string(),
            ask: ask_for(state, &step.user, step.new_secret),
            user: step.user,
        },
        message,
    ))
}

fn ask_for(state: &PortalState, user: &str, new_secret: Option<String>) -> Ask {
    match new_secret {
        None => Ask::Code,
        Some(secret) => {
            let otpauth_uri = totp::otpauth_uri(&secret, &state.core.config().gateway.name, user);
            Ask::Enroll {
                secret,
                otpauth_uri,
            }
        }
    }
}
