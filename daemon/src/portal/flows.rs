//! What the portal does, once, for both the JSON API and the pages:
//! enrollment, login, logout, and a user's own devices. Each action that
//! changes state commits in one store transaction with its audit record.
//! Audit records name the user, the source address and a reason; never a
//! password, TOTP secret or code, session token or private key.

use std::net::IpAddr;
use std::time::Instant;

use gatehouse_config::api::{DeviceConfigResponse, DeviceInfo, UserState};
use gatehouse_config::names::check_name;
use serde::Deserialize;
use serde_json::json;

use super::PortalState;
use super::error::Failure;
use super::passwords::check_rules;
use super::sessions::{Session, csrf_for, new_token};
use crate::store::{NewAuditEvent, NewDevice, StoreError, hash_token};
use crate::time_fmt::now_unix;
use crate::totp::{self, TotpReject};
use crate::wg_key::is_public_key;

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
    let config = state.gateway.config();
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
    let config = state.gateway.config();
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
        Some(secret) => {
            if secret.len() < 26 {
                return Err(Failure::invalid_value("The TOTP secret is too short."));
            }
            let code = input.totp_code.as_deref().unwrap_or_default();
            let step = totp::verify(secret, code, unix_now_u64(), None).map_err(|reject| {
                Failure::invalid_value(match reject {
                    TotpReject::BadSecret => "The TOTP secret is not valid base32.",
                    TotpReject::Malformed => "Enter the six-digit code your app shows.",
                    _ => "That code does not match: check the app's clock and try the next code.",
                })
            })?;
            Some((secret.to_string(), step))
        }
    };
    let hash = state.passwords.hash(input.password).await.map_err(|err| {
        tracing::error!(error = %err, "portal: cannot hash a password");
        Failure::internal()
    })?;
    let session = new_token();
    let session_hash = hash_token(&session);
    let token_hash = hash_token(token);
    let now = now_unix();
    let source_text = source.to_string();
    let with_totp = totp.is_some();
    let enrolled = user.clone();
    state
        .gateway
        .store()
        .write(move |w| {
            // Using the token inside this transaction makes it single use
            // even when two requests race.
            let user = w.consume_enrollment_token(&token_hash, now)?;
            let row = w.user(&user)?.ok_or_else(|| StoreError::NotFound {
                what: "user",
                name: user.clone(),
            })?;
            if row.state == UserState::Disabled {
                return Err(StoreError::Conflict {
                    what: "disabled user",
                    name: user,
                });
            }
            w.set_password_hash(&user, Some(hash))?;
            match totp {
                Some((secret, step)) => {
                    w.set_totp_secret(&user, Some(secret))?;
                    w.set_totp_last_step(&user, i64::try_from(step).unwrap_or(i64::MAX))?;
                }
                None => w.set_totp_secret(&user, None)?,
            }
            w.set_user_state(&user, UserState::Active)?;
            // A new link resets the account: old sessions end.
            w.delete_user_portal_sessions(&user)?;
            w.create_portal_session(&session_hash, &user, now, &source_text)?;
            // Enrollment ends logged in, so it opens the VPN session too.
            w.activate_user_devices(&user, now)?;
            w.touch_last_seen(&user, now)?;
            w.audit(NewAuditEvent {
                kind: "portal.enroll".into(),
                actor: user.clone(),
                source: source_text,
                target: user.clone(),
                detail: json!({ "totp": with_totp }),
            })?;
            Ok(())
        })
        .await
        .map_err(|err| match err {
            StoreError::Conflict { .. } => Failure::new(
                axum::http::StatusCode::FORBIDDEN,
                "disabled",
                "This account is disabled; ask an admin.",
            ),
            other => other.into(),
        })?;
    Ok(LoggedIn {
        user: enrolled,
        csrf: csrf_for(&session),
        token: session,
        max_age_secs: config.portal.session_max.as_secs(),
    })
}

/// Checks name, password and TOTP code, under the login limits. Every
/// failure looks the same to the client ([`Failure::login_failed`]) and is
/// audited with its real reason.
pub async fn login(
    state: &PortalState,
    source: IpAddr,
    input: LoginInput,
) -> Result<LoggedIn, Failure> {
    let name = input.user.trim().to_string();
    // The audit target is the name tried, when it could be a user name.
    let target = if check_name("user", &name).is_ok() {
        name.clone()
    } else {
        "(not a user name)".to_string()
    };
    if let Err(refused) = state.login_limits.check(&name, source, Instant::now()) {
        // One record per lockout: refused attempts cannot flood the log.
        if refused.first {
            let reason = match refused.by {
                super::limits::Locked::User => "locked_out",
                super::limits::Locked::Source => "source_locked_out",
            };
            audit_failure(state, source, &target, reason).await?;
        }
        return Err(Failure::locked_out());
    }
    let lookup = name.clone();
    let found = if target == name {
        state
            .gateway
            .store()
            .read(move |r| {
                let user = r.user(&lookup)?;
                let last = r.totp_last_step(&lookup)?;
                Ok(user.map(|u| (u, last)))
            })
            .await?
    } else {
        None
    };
    let stored_hash = found.as_ref().and_then(|(u, _)| u.password_hash.clone());
    let password_ok = state.passwords.verify(stored_hash, input.password).await;
    let now = now_unix();
    let config = state.gateway.config();
    let outcome: Result<(String, Option<u64>), &'static str> = match found {
        None => Err("unknown_user"),
        Some((user, last_step)) => {
            if user.password_hash.is_none() {
                Err("not_enrolled")
            } else if !password_ok {
                Err("bad_password")
            } else if user.state != UserState::Active {
                Err("disabled")
            } else if user.is_expired(now) {
                Err("account_expired")
            } else {
                match user.totp_secret.as_deref() {
                    Some(secret) => {
                        let code = input.totp_code.as_deref().unwrap_or_default();
                        let last = last_step.and_then(|s| u64::try_from(s).ok());
                        totp::verify(secret, code, unix_now_u64(), last)
                            .map(|step| (user.name.clone(), Some(step)))
                            .map_err(TotpReject::reason)
                    }
                    None if config.portal.require_totp => Err("totp_not_enrolled"),
                    None => Ok((user.name.clone(), None)),
                }
            }
        }
    };
    let (user, step) = match outcome {
        Ok(ok) => ok,
        Err(reason) => return Err(fail(state, source, &name, &target, reason).await),
    };
    let session = new_token();
    let session_hash = hash_token(&session);
    let source_text = source.to_string();
    let who = user.clone();
    let idle_before = now - i64::try_from(config.portal.session_idle.as_secs()).unwrap_or(0);
    let created_before = now - i64::try_from(config.portal.session_max.as_secs()).unwrap_or(0);
    let committed = state
        .gateway
        .store()
        .write(move |w| {
            if let Some(step) = step {
                // Checked again under the write lock: two logins racing with
                // one code cannot both win.
                let step = i64::try_from(step).unwrap_or(i64::MAX);
                if w.totp_last_step(&who)?.is_some_and(|last| step <= last) {
                    return Ok(false);
                }
                w.set_totp_last_step(&who, step)?;
            }
            w.prune_portal_sessions(idle_before, created_before)?;
            w.create_portal_session(&session_hash, &who, now, &source_text)?;
            w.touch_last_seen(&who, now)?;
            // A login (re)opens the user's VPN session (vpn.require_login).
            w.activate_user_devices(&who, now)?;
            w.audit(NewAuditEvent {
                kind: "portal.login.ok".into(),
                actor: who.clone(),
                source: source_text,
                target: who.clone(),
                detail: json!({ "totp": step.is_some() }),
            })?;
            Ok(true)
        })
        .await?;
    if !committed {
        return Err(fail(state, source, &name, &target, TotpReject::Reused.reason()).await);
    }
    state.login_limits.succeeded(&name);
    Ok(LoggedIn {
        user,
        csrf: csrf_for(&session),
        token: session,
        max_age_secs: config.portal.session_max.as_secs(),
    })
}

/// Ends the session.
pub async fn logout(state: &PortalState, source: IpAddr, session: &Session) -> Result<(), Failure> {
    let hash = session.token_hash.clone();
    let user = session.user.name.clone();
    let source = source.to_string();
    state
        .gateway
        .store()
        .write(move |w| {
            w.delete_portal_session(&hash)?;
            w.audit(NewAuditEvent {
                kind: "portal.logout".into(),
                actor: user.clone(),
                source,
                target: user,
                detail: json!({}),
            })
            .map(drop)
        })
        .await?;
    Ok(())
}

/// Where a device's key pair was made (audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// In the browser or another client: the gateway saw only the public key.
    Client,
    /// The gateway made it because the browser could not; the private key
    /// was returned once and not kept.
    Gateway,
}

/// Registers a device for the session's user.
pub async fn add_device(
    state: &PortalState,
    source: IpAddr,
    session: &Session,
    name: String,
    public_key: String,
    origin: KeyOrigin,
) -> Result<DeviceConfigResponse, Failure> {
    let config = state.gateway.config();
    check_name("device", &name).map_err(|e| Failure::invalid_value(e.to_string()))?;
    if !is_public_key(&public_key) {
        return Err(Failure::invalid_value(
            "public_key is not a WireGuard public key (32 bytes, base64)",
        ));
    }
    let endpoint = config.vpn_endpoint().ok_or_else(|| {
        Failure::invalid_value("The gateway's public address is not known yet; ask an admin.")
    })?;
    let pool = config.vpn.pool;
    let reserved = [config.vpn.gateway_address()];
    let user = session.user.name.clone();
    let new = NewDevice {
        user: user.clone(),
        name: name.clone(),
        public_key,
        created_at: now_unix(),
    };
    let source = source.to_string();
    let origin = match origin {
        KeyOrigin::Client => "client",
        KeyOrigin::Gateway => "gateway",
    };
    let device = state
        .gateway
        .store()
        .write(move |w| {
            let device = w.create_device(new, pool, &reserved)?;
            w.audit(NewAuditEvent {
                kind: "device.create".into(),
                actor: user.clone(),
                source,
                target: format!("{user}/{name}"),
                detail: json!({
                    "address": device.address.to_string(),
                    "public_key": device.public_key,
                    "via": "portal",
                    "key_made_by": origin,
                }),
            })?;
            Ok(device)
        })
        .await?;
    let allowed_ips = config
        .policy()
        .access_for(&session.user.groups)
        .subnets()
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(DeviceConfigResponse {
        interface_address: match device.address {
            IpAddr::V4(v4) => format!("{v4}/32"),
            IpAddr::V6(v6) => format!("{v6}/128"),
        },
        device: crate::admin::device_info(&device),
        gateway_public_key: state.gateway.key().public_base64(),
        endpoint,
        allowed_ips,
        persistent_keepalive: config.vpn.persistent_keepalive,
        mtu: config.vpn.mtu,
    })
}

/// Removes one of the session user's devices.
pub async fn revoke_device(
    state: &PortalState,
    source: IpAddr,
    session: &Session,
    name: String,
) -> Result<DeviceInfo, Failure> {
    let user = session.user.name.clone();
    let source = source.to_string();
    let removed = state
        .gateway
        .store()
        .write(move |w| {
            let removed = w.delete_device(&user, &name)?;
            w.audit(NewAuditEvent {
                kind: "device.revoke".into(),
                actor: user.clone(),
                source,
                target: format!("{user}/{name}"),
                detail: json!({
                    "address": removed.address.to_string(),
                    "public_key": removed.public_key,
                    "via": "portal",
                }),
            })?;
            Ok(removed)
        })
        .await?;
    Ok(crate::admin::device_info(&removed))
}

/// The session user's devices, with live data plane fields.
pub async fn devices(state: &PortalState, session: &Session) -> Result<Vec<DeviceInfo>, Failure> {
    let user = session.user.name.clone();
    let devices = state
        .gateway
        .store()
        .read(move |r| r.devices(Some(&user)))
        .await?;
    let live = crate::admin::LivePeers::of(&state.gateway);
    Ok(devices
        .iter()
        .map(|d| live.merge(crate::admin::device_info(d)))
        .collect())
}

async fn token_user(state: &PortalState, token: &str) -> Result<String, Failure> {
    if token.is_empty() || token.len() > 128 {
        return Err(StoreError::TokenNotFound.into());
    }
    let hash = hash_token(token);
    let now = now_unix();
    Ok(state
        .gateway
        .store()
        .read(move |r| r.enrollment_token_user(&hash, now))
        .await?)
}

/// Counts, audits and delays a failed login; returns the generic failure.
async fn fail(
    state: &PortalState,
    source: IpAddr,
    name: &str,
    target: &str,
    reason: &'static str,
) -> Failure {
    let delay = state.login_limits.failed(name, source, Instant::now());
    if let Err(err) = audit_failure(state, source, target, reason).await {
        return err;
    }
    tokio::time::sleep(delay).await;
    Failure::login_failed()
}

async fn audit_failure(
    state: &PortalState,
    source: IpAddr,
    target: &str,
    reason: &'static str,
) -> Result<(), Failure> {
    let event = NewAuditEvent {
        kind: "portal.login.fail".into(),
        actor: "anonymous".into(),
        source: source.to_string(),
        target: target.to_string(),
        detail: json!({ "reason": reason, "source": source.to_string() }),
    };
    state
        .gateway
        .store()
        .write(move |w| w.audit(event).map(drop))
        .await?;
    Ok(())
}

/// The user's VPN access now, as `accessctl user show` reports it: the
/// state and, for a login session, when it ends.
pub fn vpn_access(
    user: &crate::store::User,
    config: &gatehouse_config::Config,
    now: i64,
) -> (gatehouse_config::api::VpnAccessState, Option<i64>) {
    use crate::vpn::session::VpnAccess;
    use gatehouse_config::api::VpnAccessState;
    let access = VpnAccess::of(user, &config.vpn, now);
    let state = match access {
        VpnAccess::Always => VpnAccessState::Always,
        VpnAccess::Until(end) if now < end => VpnAccessState::Session,
        VpnAccess::Until(_) | VpnAccess::LoginNeeded => VpnAccessState::LoginNeeded,
        VpnAccess::Refused => VpnAccessState::Refused,
    };
    (state, access.ends_at().filter(|end| now < *end))
}

fn unix_now_u64() -> u64 {
    u64::try_from(now_unix()).unwrap_or(0)
}
