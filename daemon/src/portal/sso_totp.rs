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
//!   lockout and delays, as password logins have them; a token no step has
//!   is charged to the source's budget alone, so forged steps are bounded
//!   per source as forged callbacks are). [`MAX_FAILURES`]
//!   wrong codes end the step; a right one is used once, enrolls the offered
//!   secret if there was one, and opens the session as any login does.
//!
//! Every refusal is audited (`portal.login.fail`, `method: "oidc"`); the
//! login is `portal.login.ok` with `totp: true`. Never a code or a secret.

use std::net::IpAddr;

use super::PortalState;
use super::error::Failure;
use super::flows::{self, LoggedIn, Opening};
use super::sessions::{csrf_for, new_token};
use super::sso_records::{self, SsoLoginOk};
use crate::auth::{self, Charge, LoginRefusal, Standing};
use crate::store::sso::SecondStep;
use crate::store::{LoginMethod, StoreError, hash_token};
use crate::time_fmt::now_unix;
use crate::totp::{self, TotpReject};
use gatehouse_config::api::UserState;

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
    /// Refused unjudged: a login budget is spent (`429`).
    Limited {
        code: &'static str,
        message: &'static str,
    },
}

/// Stores an accepted SSO login until its code; `detail` is its audit
/// detail.
pub async fn begin(
    state: &PortalState,
    user: &str,
    detail: &SsoLoginOk,
) -> Result<Waiting, Failure> {
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
        // Strings, numbers and lists always serialize; were it ever empty,
        // `finish` would end the step (start again).
        login: serde_json::to_string(detail).unwrap_or_default(),
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

/// Checks `code` for the login waiting under `token`, charged against the
/// member's and the source's login budgets before it is judged.
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
        .read(move |r| r.second_step(&lookup))
        .await?;
    let now = now_unix();
    let lockout = state.core.config().portal.login_lockout;
    let budget = state.core.login_budget();
    let charged = match &found {
        Some(step) => budget.charge(&step.user, source, lockout).await,
        None => budget.charge_source(source, lockout).await,
    };
    let charge = match charged {
        Ok(charge) => charge,
        Err(refused) => {
            let who = found.as_ref().map(|step| step.user.as_str());
            let (code, message) = flows::sso_limited(state, source, who, refused).await?;
            return Ok(Outcome::Limited { code, message });
        }
    };
    let meanwhile = charge.refused_meanwhile();
    let Some(step) = found else {
        let why = ("state", "no TOTP step has this token");
        return over(state, source, None, charge, why, start_again).await;
    };
    let who = step.user.clone();
    if step.created_at < now - STEP_LIFETIME {
        let hash = token_hash.clone();
        state
            .core
            .store()
            .write(move |w| w.take_second_step(&hash))
            .await?;
        let why = ("expired", "the TOTP step took longer than 5 minutes");
        return over(state, source, Some(&who), charge, why, start_again).await;
    }
    let enrolling = step.new_secret.clone();
    let opening = Opening::new(&state.core.config(), now, source, LoginMethod::Oidc);
    let session = new_token();
    let session_hash = hash_token(&session);
    let Ok(login) = serde_json::from_str::<SsoLoginOk>(&step.login) else {
        let why = ("state", "the TOTP step's login could not be read");
        return over(state, source, Some(&who), charge, why, start_again).await;
    };
    let mut detail = SsoLoginOk {
        totp: true,
        totp_enrolled: Some(enrolling.is_some()),
        ..login
    };
    if meanwhile > 0 {
        detail.refused_while_locked_out = sso_records::meanwhile(meanwhile);
    }
    let record = flows::login_ok(&who, source);
    let admin_link = state
        .core
        .config()
        .oidc
        .as_ref()
        .is_none_or(|o| o.totp_enrollment == gatehouse_config::file::TotpEnrollment::AdminLink);
    let (name, code) = (who.clone(), code.to_string());
    let take = token_hash.clone();
    let committed = state
        .core
        .store()
        .write(move |w| {
            if w.second_step(&take)?.is_none() {
                return Ok(Judged::Over("the TOTP step was used already"));
            }
            let Some(row) = w.user(&name)? else {
                return Ok(Judged::Over("the user is gone"));
            };
            // A member is pending until their first TOTP step is done
            // (access::sso); anything else but active is over.
            let activate = match Standing::of(&row, now) {
                Standing::Active => false,
                Standing::Pending => true,
                _ => {
                    return Ok(Judged::Over(
                        "the account was disabled or expired meanwhile",
                    ));
                }
            };
            if enrolling.is_some() && row.totp_secret.is_some() {
                return Ok(Judged::Over("an authenticator app was set up meanwhile"));
            }
            if enrolling.is_some() && admin_link {
                return Ok(Judged::Over(
                    "oidc.totp_enrollment is admin_link now: no app is set up through the provider",
                ));
            }
            if let Err(refusal) = auth::consume_totp(w, &row, &code, now, enrolling.as_deref())? {
                return Ok(Judged::Refused(refusal));
            }
            w.take_second_step(&take)?;
            if let Some(secret) = enrolling {
                w.set_totp_secret(&name, Some(secret))?;
            }
            if activate {
                w.set_user_state(&name, UserState::Active)?;
            }
            opening.open(w, &name, &session_hash)?;
            let detail = SsoLoginOk {
                activated: Some(activate),
                ..detail
            };
            w.audit(record.with(&detail))?;
            Ok::<_, StoreError>(Judged::LoggedIn)
        })
        .await?;
    match committed {
        Judged::LoggedIn => {}
        Judged::Refused(refusal) => {
            return refused(state, source, token, step, refusal, charge).await;
        }
        Judged::Over(why) => {
            let why = ("state", why);
            return over(state, source, Some(&who), charge, why, start_again).await;
        }
    }
    charge.succeeded();
    let config = state.core.config();
    Ok(Outcome::LoggedIn(LoggedIn {
        user: who,
        csrf: csrf_for(&session),
        token: session,
        max_age_secs: config.portal.session_max.as_secs(),
    }))
}

/// What the code's write transaction decided.
enum Judged {
    LoggedIn,
    Refused(LoginRefusal),
    /// The step cannot go on (start again at the provider).
    Over(&'static str),
}

/// Settles, audits and delays a step that cannot go on (holding the
/// turn until the answer).
async fn over(
    state: &PortalState,
    source: IpAddr,
    who: Option<&str>,
    mut charge: Charge,
    (reason, why): (&'static str, &'static str),
    message: &str,
) -> Result<Outcome, Failure> {
    let delay = charge.failed(std::time::Instant::now());
    let meanwhile = charge.refused_meanwhile();
    flows::sso_refused(state, source, who, reason, why, meanwhile).await?;
    charge.answer_after(delay).await;
    Ok(Outcome::Over(message.into()))
}

/// Settles, audits and delays a refused code (holding the member's turn
/// until the answer).
async fn refused(
    state: &PortalState,
    source: IpAddr,
    token: &str,
    step: SecondStep,
    refusal: LoginRefusal,
    mut charge: Charge,
) -> Result<Outcome, Failure> {
    let who = step.user.clone();
    let delay = charge.failed(std::time::Instant::now());
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
    let meanwhile = charge.refused_meanwhile();
    flows::sso_refused(state, source, Some(&who), refusal.code(), detail, meanwhile).await?;
    charge.answer_after(delay).await;
    if !still {
        return Ok(Outcome::Over(
            "Too many wrong codes. Start again from the login page.".into(),
        ));
    }
    let message = match refusal {
        LoginRefusal::Totp(TotpReject::Malformed) => "Enter the six-digit code your app shows.",
        LoginRefusal::Totp(TotpReject::Reused) => {
            "That code was used already: wait for the next one."
        }
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
