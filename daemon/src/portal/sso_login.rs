//! The rules of an SSO login at the portal (`[oidc]`), for the handlers in
//! [`super::sso_pages`], which parse and render:
//!
//! - [`start`]: a new login under way, stored under the hash of its
//!   `state`, bound to the hash of a pre-login token the browser's cookie
//!   holds, with its nonce and PKCE verifier;
//! - [`callback`]: the provider's answer: the login under way taken (used
//!   once) if this browser started it within [`PENDING_LIFETIME`]; the code
//!   and ID token checked by the provider client; who the member is, said
//!   by the access service; then the session opens ([`open_session`]), or
//!   the TOTP step of `oidc.require_totp` begins;
//! - every refusal is audited ([`flows::sso_refused`]: `portal.login.fail`,
//!   `method: "oidc"`, with its reason) and comes back with what to tell the member.
//!
//! Anonymous requests are bounded per source, as password logins are: a
//! source starts at most [`limits::SSO_STARTS_PER_SOURCE`] logins per
//! period (each keeps a row until used or pruned), and every callback is
//! charged against the source's login budget before it is judged
//! ([`crate::auth::LoginBudget::charge_source`]), refunded when it signs in.
//! A spent budget answers `429` with one record per lockout; the refusals
//! it did not record are counted in the next record from that source.
//!
//! [`limits::SSO_STARTS_PER_SOURCE`]: super::limits::SSO_STARTS_PER_SOURCE

use std::net::IpAddr;
use std::time::Instant;

use serde::Deserialize;

use super::PortalState;
use super::error::Failure;
use super::flows::{self, LoggedIn, Opening};
use super::sessions::{csrf_for, new_token};
use super::sso_records::{self, Oidc, SsoLoginOk};
use super::sso_totp::{self, Waiting};
use crate::store::sso::{PendingLogin, TakenLogin};
use crate::store::{LoginMethod, hash_token};
use crate::time_fmt::now_unix;

/// How long a login may take between `/oidc/start` and the callback.
pub const PENDING_LIFETIME: i64 = 600;

/// What a refused login tells the member.
const START_AGAIN: &str = "Your sign-in could not be completed. Start again from the login page.";

/// What the provider sends back.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// How a new login began.
pub enum Started {
    /// Send the browser to `url`; `binding` goes to the pre-login cookie.
    Redirect {
        url: String,
        binding: String,
    },
    /// The provider cannot be reached (its discovery failed).
    Unavailable,
    /// This source started too many logins lately (`429`).
    Limited,
    Failed(Failure),
}

/// How a callback ended.
pub enum Finished {
    SignedIn(LoggedIn),
    /// `oidc.require_totp`: a code page comes next.
    AskTotp(Waiting),
    /// Refused (audited); `message` is for the member.
    Refused {
        message: String,
    },
    /// Refused unjudged: the source's or the member's login budget is
    /// spent (`429`); `code` is the refusal's.
    Limited {
        code: &'static str,
        message: &'static str,
    },
    Failed(Failure),
}

/// Begins a login at `provider` for a browser at `source`.
pub async fn start(
    state: &PortalState,
    provider: &crate::sso::Provider,
    source: IpAddr,
) -> Started {
    if !state.sso_starts.allow(source, Instant::now()) {
        tracing::debug!(%source, "SSO login refused: too many started from this source");
        return Started::Limited;
    }
    let config = state.core.config();
    let scopes = config
        .oidc
        .as_ref()
        .map(|o| o.scopes.clone())
        .unwrap_or_default();
    let begun = match provider.begin(&scopes).await {
        Ok(begun) => begun,
        Err(refused) => {
            tracing::warn!(
                reason = refused.reason(),
                detail = refused.detail(),
                "SSO login cannot start"
            );
            return Started::Unavailable;
        }
    };
    let binding = new_token();
    let now = now_unix();
    let pending = PendingLogin {
        binding_hash: hash_token(&binding),
        nonce: begun.nonce,
        verifier: begun.verifier,
        created_at: now,
    };
    let state_hash = hash_token(&begun.state);
    let stored = state
        .core
        .store()
        .write(move |w| {
            w.prune_pending_logins(now - PENDING_LIFETIME)?;
            w.put_pending_login(&state_hash, &pending)
        })
        .await;
    match stored {
        Ok(()) => Started::Redirect {
            url: begun.url,
            binding,
        },
        Err(err) => Started::Failed(err.into()),
    }
}

/// The provider's answer for the browser whose pre-login cookie holds
/// `binding`, charged against the source's login budget before it is
/// judged: a refusal spends it (answered after the budget's delay), a
/// login refunds it.
pub async fn callback(
    state: &PortalState,
    provider: &crate::sso::Provider,
    source: IpAddr,
    binding: &str,
    params: &Callback,
) -> Finished {
    let lockout = state.core.config().portal.login_lockout;
    let charge = match state
        .core
        .login_budget()
        .charge_source(source, lockout)
        .await
    {
        Ok(charge) => charge,
        Err(refused) => {
            return match flows::sso_limited(state, source, None, refused).await {
                Ok((code, message)) => Finished::Limited { code, message },
                Err(failure) => Finished::Failed(failure),
            };
        }
    };
    let meanwhile = charge.refused_meanwhile();
    let finished = judge(state, provider, source, binding, params, meanwhile).await;
    if let Finished::Refused { .. } = finished {
        charge.refuse().await;
    } else {
        charge.succeeded();
    }
    finished
}

/// The callback's rules; `meanwhile` is the budget's summary for the
/// record this callback writes.
async fn judge(
    state: &PortalState,
    provider: &crate::sso::Provider,
    source: IpAddr,
    binding: &str,
    params: &Callback,
    meanwhile: u32,
) -> Finished {
    let refuse = |reason: &'static str, detail: String, user: Option<String>, message: String| async move {
        tracing::info!(%source, reason, detail = %detail, "SSO login refused");
        match flows::sso_refused(state, source, user.as_deref(), reason, &detail, meanwhile).await {
            Ok(()) => Finished::Refused { message },
            Err(failure) => Finished::Failed(failure),
        }
    };
    let Some(login_state) = params
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return refuse(
            "state",
            "the callback has no state".into(),
            None,
            START_AGAIN.into(),
        )
        .await;
    };
    let state_hash = hash_token(login_state);
    let binding_hash = hash_token(binding);
    let now = now_unix();
    let taken = state
        .core
        .store()
        .write(move |w| w.take_pending_login(&state_hash, &binding_hash, now - PENDING_LIFETIME))
        .await;
    let pending = match taken {
        Ok(TakenLogin::Found(pending)) => pending,
        Ok(TakenLogin::Unknown) => {
            let why = "no login under way has this state (unknown, or used already)";
            return refuse("state", why.into(), None, START_AGAIN.into()).await;
        }
        Ok(TakenLogin::OtherBrowser) => {
            let why = "the login was started by another browser";
            return refuse("state", why.into(), None, START_AGAIN.into()).await;
        }
        Ok(TakenLogin::Expired) => {
            let why = "the login took longer than 10 minutes";
            return refuse("expired", why.into(), None, START_AGAIN.into()).await;
        }
        Err(err) => return Finished::Failed(err.into()),
    };
    if let Some(error) = &params.error {
        let said: String = format!(
            "{error}: {}",
            params.error_description.as_deref().unwrap_or("")
        )
        .chars()
        .take(300)
        .collect();
        return refuse(
            "provider_error",
            format!("the provider answered {said}"),
            None,
            "The identity provider did not sign you in. Start again from the login page.".into(),
        )
        .await;
    }
    let Some(code) = params
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 4096)
    else {
        let why = "the callback has no code";
        return refuse("provider_error", why.into(), None, START_AGAIN.into()).await;
    };
    let config = state.core.config();
    let Some(oidc) = config.oidc.as_ref() else {
        return Finished::Failed(Failure::not_found("Single sign-on is not set up."));
    };
    let verified = match provider
        .finish(
            code,
            &pending.verifier,
            &pending.nonce,
            &oidc.username_claim,
            &oidc.groups_claim,
        )
        .await
    {
        Ok(verified) => verified,
        Err(refused) => {
            let detail = refused.detail().to_string();
            return refuse(refused.reason(), detail, None, START_AGAIN.into()).await;
        }
    };
    let member = match state.access.sso_member(&verified).await {
        Ok(Ok(member)) => member,
        Ok(Err((refusal, user))) => {
            let detail = format!("subject {:?} of {}", verified.subject, verified.issuer);
            return refuse(refusal.reason(), detail, user, refusal.message()).await;
        }
        Err(err) => return Finished::Failed(err.into()),
    };
    let mut detail = login_detail(&verified, &member);
    detail.refused_while_locked_out = sso_records::meanwhile(meanwhile);
    if oidc.require_totp {
        return match sso_totp::begin(state, &member.user, &detail).await {
            Ok(waiting) => Finished::AskTotp(waiting),
            Err(failure) => Finished::Failed(failure),
        };
    }
    match open_session(state, source, &member, detail).await {
        Ok(logged_in) => Finished::SignedIn(logged_in),
        Err(failure) => Finished::Failed(failure),
    }
}

/// The audit detail of an accepted SSO login: the subject and the groups
/// as they were mapped now (no TOTP step yet).
pub fn login_detail(
    login: &crate::sso::Verified,
    member: &crate::access::sso::SsoMember,
) -> SsoLoginOk {
    SsoLoginOk {
        method: Oidc::Oidc,
        issuer: login.issuer.clone(),
        subject: login.subject.clone(),
        idp_groups: login.groups.clone(),
        groups: member.groups.clone(),
        provisioned: member.created,
        totp: false,
        totp_enrolled: None,
        activated: None,
        refused_while_locked_out: None,
    }
}

/// An SSO login the provider and the access service both accepted, when no
/// TOTP step is asked: opens the session as a password login does
/// (`portal.login.ok` with `detail`, [`login_detail`], and `totp: false`).
pub async fn open_session(
    state: &PortalState,
    source: IpAddr,
    member: &crate::access::sso::SsoMember,
    detail: SsoLoginOk,
) -> Result<LoggedIn, Failure> {
    let config = state.core.config();
    let now = now_unix();
    let session = new_token();
    let session_hash = hash_token(&session);
    let who = member.user.clone();
    let opening = Opening::new(&config, now, source, LoginMethod::Oidc);
    let record = flows::login_ok(&who, source).with(&SsoLoginOk {
        totp: false,
        ..detail
    });
    state
        .core
        .store()
        .write(move |w| {
            opening.open(w, &who, &session_hash)?;
            w.audit(record).map(drop)
        })
        .await?;
    Ok(LoggedIn {
        user: member.user.clone(),
        csrf: csrf_for(&session),
        token: session,
        max_age_secs: config.portal.session_max.as_secs(),
    })
}
