//! What only the portal does, once, for both the JSON API and the pages:
//! enrollment, login and logout. Each action that changes state commits in
//! one store transaction with its audit record. A member's devices and
//! access go through [`crate::access`], as the admin API's do.
//! Audit records name the user, the source address and a reason; never a
//! password, TOTP secret or code, session token or private key.

use std::net::IpAddr;
use std::time::Instant;

use gatehouse_config::api::UserState;
use gatehouse_config::names::check_name;
use serde::Deserialize;
use serde_json::json;

use super::PortalState;
use super::error::Failure;
use super::passwords::check_rules;
use super::sessions::{Session, csrf_for, new_token};
use super::sso_records::{Oidc, SsoLoginFail, meanwhile};
use crate::access::{Door, Requester};
use crate::audit::event::{Actor, Kind, Source as AuditSource, event};
use crate::auth::{self, BudgetRefusal, Charge, LoginRefusal, Standing};
use crate::store::{LoginMethod, NewAuditEvent, StoreError, Writer, hash_token};
use crate::time_fmt::now_unix;
use crate::totp::{self, TotpReject};

/// A login attempt.
#[derive(Deserialize)]
pub struct LoginInput {
    pub user: String,
    pub password: String,
    #[serde(default)]
    pub totp_code: Option<String>,
}

/// A new password and TOTP enrollment for the user an enrollment link names.
#[derive(Deserialize)]
pub struct EnrollInput {
    pub password: String,
    /// When given, must equal `password`.
    #[serde(default)]
    pub password_confirm: Option<String>,
    /// The base32 secret offered by the enrollment page or API.
    #[serde(default)]
    pub totp_secret: Option<String>,
    /// A current code for `totp_secret`, proving the app has it.
    #[serde(default)]
    pub totp_code: Option<String>,
}

/// A started session: the raw token goes to the cookie and nowhere else.
pub struct LoggedIn {
    pub user: String,
    pub token: String,
    pub csrf: String,
    pub max_age_secs: u64,
}

/// What an enrollment page shows for a valid link.
pub struct EnrollOffer {
    pub user: String,
    pub require_totp: bool,
    pub totp_secret: String,
    pub otpauth_uri: String,
}

/// Looks an enrollment link up without using it, and offers a new TOTP
/// secret (kept nowhere until a code for it is verified).
pub async fn enroll_offer(state: &PortalState, token: &str) -> Result<EnrollOffer, Failure> {
    let user = token_user(state, token).await?;
    let config = state.core.config();
    let totp_secret = totp::new_secret();
    let otpauth_uri = totp::otpauth_uri(&totp_secret, &config.gateway.name, &user);
    Ok(EnrollOffer {
        user,
        require_totp: config.portal.require_totp,
        totp_secret,
        otpauth_uri,
    })
}

/// Sets the password (and TOTP) of the link's user, uses the link up,
/// activates the user and starts a session.
pub async fn enroll(
    state: &PortalState,
    source: IpAddr,
    token: &str,
    input: EnrollInput,
) -> Result<LoggedIn, Failure> {
    let user = token_user(state, token).await?;
    let config = state.core.config();
    check_rules(&user, &input.password).map_err(Failure::invalid_value)?;
    if input
        .password_confirm
        .as_ref()
        .is_some_and(|c| c != &input.password)
    {
        return Err(Failure::invalid_value("The two passwords differ."));
    }
    let secret = input
        .totp_secret
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let totp = match secret {
        None if config.portal.require_totp => {
            return Err(Failure::invalid_value(
                "This gateway requires an authenticator app: scan the QR code and enter a code.",
            ));
        }
        None => None,
        Some(secret) if secret.len() < 26 => {
            return Err(Failure::invalid_value("The TOTP secret is too short."));
        }
        Some(secret) => Some((
            secret.to_string(),
            input.totp_code.clone().unwrap_or_default(),
        )),
    };
    let hash = state.passwords.hash(input.password).await.map_err(|err| {
        tracing::error!(error = %err, "portal: cannot hash a password");
        Failure::internal()
    })?;
    let session = new_token();
    let session_hash = hash_token(&session);
    let token_hash = hash_token(token);
    let now = now_unix();
    let opening = Opening::new(&config, now, source, LoginMethod::Password);
    let with_totp = totp.is_some();
    let enrolled = user.clone();
    let enrolled_name = user;
    let refused = state
        .core
        .store()
        .write(move |w| {
            let row = w.existing_user(&enrolled_name)?;
            if let Some((secret, code)) = &totp
                && let Err(refusal) = auth::consume_totp(w, &row, code, now, Some(secret))?
            {
                return Ok(Some(refusal));
            }
            // Using the token inside this transaction makes it single use
            // even when two requests race.
            let user = w.consume_enrollment_token(&token_hash, now)?;
            if user != row.name {
                return Err(StoreError::TokenNotFound);
            }
            if Standing::of(&row, now).is_barred() {
                return Err(StoreError::Conflict {
                    what: "disabled user",
                    name: user,
                });
            }
            w.set_password_hash(&user, Some(hash))?;
            w.set_totp_secret(&user, totp.map(|(secret, _)| secret))?;
            w.set_user_state(&user, UserState::Active)?;
            // A new link resets the account: old sessions end.
            w.delete_user_portal_sessions(&user)?;
            // Enrollment ends logged in, so it opens the VPN session too.
            opening.open(w, &user, &session_hash)?;
            w.audit(
                event(
                    Kind::PortalEnroll,
                    Actor::User(user.clone()),
                    AuditSource::Addr(source),
                )
                .on(user.clone())
                .detail(json!({ "totp": with_totp })),
            )?;
            Ok(None)
        })
        .await
        .map_err(|err| match err {
            StoreError::Conflict { .. } => Failure::new(
                axum::http::StatusCode::FORBIDDEN,
                "disabled",
                "This account is disabled or expired; ask an admin.",
            ),
            other => other.into(),
        })?;
    if let Some(refusal) = refused {
        return Err(Failure::invalid_value(match refusal {
            LoginRefusal::Totp(TotpReject::BadSecret) => "The TOTP secret is not valid base32.",
            LoginRefusal::Totp(TotpReject::Malformed) => "Enter the six-digit code your app shows.",
            _ => "That code does not match: check the app's clock and try the next code.",
        }));
    }
    Ok(LoggedIn {
        user: enrolled,
        csrf: csrf_for(&session),
        token: session,
        max_age_secs: config.portal.session_max.as_secs(),
    })
}

/// Checks name, password and TOTP code, charged against the member's and
/// the source's login budgets before anything is judged. Every failure
/// looks the same to the client ([`Failure::login_failed`]) and is audited
/// with its real reason.
pub async fn login(
    state: &PortalState,
    source: IpAddr,
    input: LoginInput,
) -> Result<LoggedIn, Failure> {
    let config = state.core.config();
    if !config.portal.password_login {
        return Err(Failure::new(
            axum::http::StatusCode::FORBIDDEN,
            "password_login_disabled",
            "This gateway signs members in with their identity provider only: use the sign-in button on the login page.",
        ));
    }
    let name = input.user.trim().to_string();
    // The audit target is the name tried, when it could be a user name.
    let target = if check_name("user", &name).is_ok() {
        name.clone()
    } else {
        "(not a user name)".to_string()
    };
    let budget = state.core.login_budget();
    let charge = match budget
        .charge(&name, source, config.portal.login_lockout)
        .await
    {
        Ok(charge) => charge,
        Err(refused) => {
            // One record per lockout: refused attempts cannot flood the log.
            if refused.first {
                audit_failure(state, source, &target, refused.refusal, 0).await?;
            }
            return Err(Failure::locked_out());
        }
    };
    let refused_meanwhile = charge.refused_meanwhile();
    let lookup = name.clone();
    let found = if target == name {
        state.core.store().read(move |r| r.user(&lookup)).await?
    } else {
        None
    };
    let stored_hash = found.as_ref().and_then(|u| u.password_hash.clone());
    let password_ok = state.passwords.verify(stored_hash, input.password).await;
    let now = now_unix();
    let judged = match found {
        None => Err(LoginRefusal::UnknownUser),
        Some(user) if user.password_hash.is_none() => Err(LoginRefusal::NotEnrolled),
        Some(_) if !password_ok => Err(LoginRefusal::BadPassword),
        Some(user) => match Standing::of(&user, now).portal_refusal() {
            Some(refusal) => Err(refusal),
            None if user.totp_secret.is_none() && config.portal.require_totp => {
                Err(LoginRefusal::TotpNotEnrolled)
            }
            None => Ok(user),
        },
    };
    let user = match judged {
        Ok(user) => user,
        Err(refusal) => {
            return Err(fail(state, source, &target, refusal, charge, refused_meanwhile).await);
        }
    };
    let session = new_token();
    let session_hash = hash_token(&session);
    let who = user.name.clone();
    let opening = Opening::new(&config, now, source, LoginMethod::Password);
    let code = input.totp_code.unwrap_or_default();
    let committed = state
        .core
        .store()
        .write(move |w| {
            let with_totp = user.totp_secret.is_some();
            if with_totp && let Err(refusal) = auth::consume_totp(w, &user, &code, now, None)? {
                return Ok(Err(refusal));
            }
            opening.open(w, &user.name, &session_hash)?;
            let mut detail = json!({ "method": "password", "totp": with_totp });
            if refused_meanwhile > 0 {
                detail["refused_while_locked_out"] = json!(refused_meanwhile);
            }
            w.audit(login_ok(&user.name, source).detail(detail))?;
            Ok(Ok(()))
        })
        .await?;
    if let Err(refusal) = committed {
        return Err(fail(state, source, &target, refusal, charge, refused_meanwhile).await);
    }
    charge.succeeded();
    Ok(LoggedIn {
        user: who,
        csrf: csrf_for(&session),
        token: session,
        max_age_secs: config.portal.session_max.as_secs(),
    })
}

/// What every login (password, enrollment, SSO) does once it knows who:
/// sessions past their limits are pruned, the new one is stored (its hash
/// only), the member is seen, and their VPN session (re)opens
/// (`vpn.require_login`), in the caller's transaction.
pub struct Opening {
    now: i64,
    source: String,
    method: LoginMethod,
    idle_before: i64,
    created_before: i64,
}

impl Opening {
    pub fn new(
        config: &gatehouse_config::Config,
        now: i64,
        source: IpAddr,
        method: LoginMethod,
    ) -> Opening {
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(0);
        Opening {
            now,
            source: source.to_string(),
            method,
            idle_before: now - secs(config.portal.session_idle),
            created_before: now - secs(config.portal.session_max),
        }
    }

    pub fn open(
        &self,
        w: &mut Writer<'_>,
        who: &str,
        session_hash: &str,
    ) -> Result<(), StoreError> {
        w.prune_portal_sessions(self.idle_before, self.created_before)?;
        w.create_portal_session(session_hash, who, self.now, &self.source, self.method)?;
        w.touch_last_seen(who, self.now)?;
        w.activate_user_devices(who, self.now)
    }
}

/// The `portal.login.ok` record of `who`'s login, its detail to add.
pub(super) fn login_ok(who: &str, source: IpAddr) -> NewAuditEvent {
    event(
        Kind::PortalLoginOk,
        Actor::User(who.to_string()),
        AuditSource::Addr(source),
    )
    .on(who.to_string())
}

/// Audits a refused SSO login (`portal.login.fail`, `method: "oidc"`) with
/// its reason and what happened; `user` when the login concerned one;
/// `refused_meanwhile`: the attempts a lockout that ended refused unaudited
/// (the login budget's summary).
pub async fn sso_refused(
    state: &PortalState,
    source: IpAddr,
    user: Option<&str>,
    reason: &'static str,
    detail: &str,
    refused_meanwhile: u32,
) -> Result<(), Failure> {
    let detail = SsoLoginFail {
        method: Oidc::Oidc,
        reason: reason.into(),
        detail: detail.into(),
        source: source.to_string(),
        refused_while_locked_out: meanwhile(refused_meanwhile),
    };
    let record = event(
        Kind::PortalLoginFail,
        match user {
            Some(user) => Actor::Claimed(user.to_string()),
            None => Actor::Anonymous,
        },
        AuditSource::Addr(source),
    )
    .on(user.unwrap_or("(sso)"))
    .with(&detail);
    write_record(state, record).await
}

/// An SSO request refused by a spent login budget: the first refusal of
/// its lockout is audited; returns the refusal's code and what to tell the
/// member (every one is answered, `429`).
pub async fn sso_limited(
    state: &PortalState,
    source: IpAddr,
    user: Option<&str>,
    refused: BudgetRefusal,
) -> Result<(&'static str, &'static str), Failure> {
    let code = refused.refusal.code();
    if refused.first {
        tracing::info!(%source, reason = code, "SSO login refused: login budget spent");
        sso_refused(state, source, user, code, refused.refusal.reason(), 0).await?;
    }
    let message = match refused.refusal {
        LoginRefusal::Busy => {
            "Another sign-in for this account is still being checked. Start again from the login page."
        }
        LoginRefusal::LockedOut => {
            "Too many failed attempts for this account: wait a few minutes, then start again from the login page."
        }
        _ => {
            "Too many failed sign-ins from your address: wait a few minutes, then start again from the login page."
        }
    };
    Ok((code, message))
}

/// Ends the session.
pub async fn logout(state: &PortalState, source: IpAddr, session: &Session) -> Result<(), Failure> {
    let hash = session.token_hash.clone();
    let user = session.user.name.clone();
    let record = event(
        Kind::PortalLogout,
        Actor::User(user.clone()),
        AuditSource::Addr(source),
    )
    .on(user)
    .detail(json!({}));
    state
        .core
        .store()
        .write(move |w| {
            w.delete_portal_session(&hash)?;
            w.audit(record).map(drop)
        })
        .await?;
    Ok(())
}

/// The session user as the access service and the audit log see them.
pub fn requester(source: IpAddr, session: &Session) -> Requester {
    Requester {
        actor: Actor::User(session.user.name.clone()),
        source: AuditSource::Addr(source),
        door: Door::Portal,
    }
}

async fn token_user(state: &PortalState, token: &str) -> Result<String, Failure> {
    if token.is_empty() || token.len() > 128 {
        return Err(StoreError::TokenNotFound.into());
    }
    let hash = hash_token(token);
    let now = now_unix();
    Ok(state
        .core
        .store()
        .read(move |r| r.enrollment_token_user(&hash, now))
        .await?)
}

/// Settles a failed login's charge, audits it and answers after the
/// budget's delay (holding the member's turn until then); returns the
/// generic failure.
async fn fail(
    state: &PortalState,
    source: IpAddr,
    target: &str,
    refusal: LoginRefusal,
    mut charge: Charge,
    refused_meanwhile: u32,
) -> Failure {
    let delay = charge.failed(Instant::now());
    if let Err(err) = audit_failure(state, source, target, refusal, refused_meanwhile).await {
        return err;
    }
    charge.answer_after(delay).await;
    Failure::login_failed()
}

async fn audit_failure(
    state: &PortalState,
    source: IpAddr,
    target: &str,
    refusal: LoginRefusal,
    refused_meanwhile: u32,
) -> Result<(), Failure> {
    let mut detail = json!({ "reason": refusal.code(), "source": source.to_string() });
    if refused_meanwhile > 0 {
        detail["refused_while_locked_out"] = json!(refused_meanwhile);
    }
    let record = event(
        Kind::PortalLoginFail,
        Actor::Anonymous,
        AuditSource::Addr(source),
    )
    .on(target)
    .detail(detail);
    write_record(state, record).await
}

/// Writes one audit record on its own.
async fn write_record(state: &PortalState, record: NewAuditEvent) -> Result<(), Failure> {
    state
        .core
        .store()
        .write(move |w| w.audit(record).map(drop))
        .await?;
    Ok(())
}
