//! Admin handlers for users and their SSH keys.

use axum::Json;
use axum::extract::{ConnectInfo, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_config::Config;
use gatehouse_config::api::{
    AddKeyRequest, CreateUserRequest, CreateUserResponse, Enrollment, RemoveKeyQuery,
    SetGroupsRequest, SetNoLoginRequest, SshKeyInfo, UserDetail, UserState, UserSummary,
    VpnAccessState,
};
use gatehouse_config::names::check_name;
use rand_core::{OsRng, RngCore};
use serde_json::json;

use super::Caller;
use super::devices::{LivePeers, device_info};
use super::error::ApiFailure;
use super::extract::{Body, PathArgs, Query};
use crate::gateway::Gateway;
use crate::ssh_keys::parse_public_key;
use crate::store::{Device, NewAuditEvent, NewUser, SshKey, User, hash_token};
use crate::time_fmt::{now_unix, rfc3339, rfc3339_opt};
use crate::vpn::session::VpnAccess;

type ApiResult<T> = Result<Json<T>, ApiFailure>;

pub async fn list(State(gw): State<Gateway>) -> ApiResult<Vec<UserSummary>> {
    let now = now_unix();
    let rows = gw
        .store()
        .read(|r| {
            let users = r.users()?;
            let devices = r.devices(None)?;
            let keys = r.all_ssh_keys()?;
            Ok((users, devices, keys))
        })
        .await?;
    let (users, devices, keys) = rows;
    let summaries = users
        .into_iter()
        .map(|u| UserSummary {
            devices: devices.iter().filter(|d| d.user == u.name).count() as u64,
            ssh_keys: keys.iter().filter(|(owner, _)| *owner == u.name).count() as u64,
            state: u.state,
            expired: u.is_expired(now),
            expires_at: rfc3339_opt(u.expires_at),
            last_seen: rfc3339_opt(u.last_seen),
            groups: u.groups,
            name: u.name,
        })
        .collect();
    Ok(Json(summaries))
}

pub async fn show(
    State(gw): State<Gateway>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<UserDetail> {
    Ok(Json(load_detail(&gw, name).await?))
}

pub async fn create(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Body(req): Body<CreateUserRequest>,
) -> Result<Json<CreateUserResponse>, ApiFailure> {
    let config = gw.config();
    check_name("user", &req.name).map_err(ApiFailure::invalid_name)?;
    let groups = checked_groups(&config, req.groups)?;
    let keys = req
        .ssh_keys
        .iter()
        .map(|line| {
            parse_public_key(line)
                .map_err(|err| ApiFailure::invalid_value(format!("SSH key: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = now_unix();
    let expires_at = match req.expires_in_secs {
        Some(0) => {
            return Err(ApiFailure::invalid_value(
                "the expiry must be in the future",
            ));
        }
        Some(secs) => Some(now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX))),
        None => None,
    };
    let token = new_token();
    let token_hash = hash_token(&token);
    let token_expires = now
        .saturating_add(i64::try_from(config.portal.enrollment_ttl.as_secs()).unwrap_or(i64::MAX));
    let new_user = NewUser {
        name: req.name.clone(),
        groups: groups.clone(),
        created_at: now,
        expires_at,
        no_login: req.no_login,
    };
    let event = NewAuditEvent {
        kind: "user.add".into(),
        actor: caller.actor(),
        source: caller.source(),
        target: req.name.clone(),
        detail: json!({
            "groups": groups,
            "ssh_keys": keys.iter().map(|k| k.fingerprint.clone()).collect::<Vec<_>>(),
            "expires_at": rfc3339_opt(expires_at),
            "no_login": req.no_login,
            "enrollment_expires_at": rfc3339(token_expires),
        }),
    };
    let name = req.name.clone();
    gw.store()
        .write(move |w| {
            w.create_user(new_user)?;
            for mut key in keys {
                key.added_at = now;
                w.add_ssh_key(&name, key)?;
            }
            w.create_enrollment_token(&name, &token_hash, now, token_expires)?;
            w.audit(event)?;
            Ok(())
        })
        .await?;
    let url = match gw.portal_url() {
        Some(base) => format!("{base}/enroll/{token}"),
        None => format!("/enroll/{token}"),
    };
    let user = load_detail(&gw, req.name).await?;
    Ok(Json(CreateUserResponse {
        user,
        enrollment: Enrollment {
            token,
            url,
            expires_at: rfc3339(token_expires),
        },
    }))
}

pub async fn disable(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<UserDetail> {
    set_state(gw, caller, name, UserState::Disabled, "user.disable").await
}

pub async fn enable(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<UserDetail> {
    set_state(gw, caller, name, UserState::Active, "user.enable").await
}

pub async fn remove(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<UserDetail> {
    let before = load_detail(&gw, name.clone()).await?;
    let event = admin_event(
        &caller,
        "user.remove",
        &name,
        json!({ "groups": before.groups, "devices": before.devices.len() }),
    );
    gw.store()
        .write(move |w| {
            w.delete_user(&name)?;
            w.audit(event)?;
            Ok(())
        })
        .await?;
    Ok(Json(before))
}

pub async fn set_groups(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
    Body(req): Body<SetGroupsRequest>,
) -> ApiResult<UserDetail> {
    let groups = checked_groups(&gw.config(), req.groups)?;
    let target = name.clone();
    let caller_actor = (caller.actor(), caller.source());
    gw.store()
        .write(move |w| {
            let before = w.user(&target)?.ok_or_else(|| not_found_user(&target))?;
            w.set_user_groups(&target, groups.clone())?;
            w.audit(NewAuditEvent {
                kind: "user.set_groups".into(),
                actor: caller_actor.0,
                source: caller_actor.1,
                target: target.clone(),
                detail: json!({ "from": before.groups, "to": groups }),
            })?;
            Ok(())
        })
        .await?;
    Ok(Json(load_detail(&gw, name).await?))
}

pub async fn set_no_login(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
    Body(req): Body<SetNoLoginRequest>,
) -> ApiResult<UserDetail> {
    let event = admin_event(
        &caller,
        "user.set_no_login",
        &name,
        json!({ "no_login": req.no_login }),
    );
    let target = name.clone();
    gw.store()
        .write(move |w| {
            w.set_no_login(&target, req.no_login)?;
            w.audit(event)?;
            Ok(())
        })
        .await?;
    Ok(Json(load_detail(&gw, name).await?))
}

pub async fn add_key(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
    Body(req): Body<AddKeyRequest>,
) -> ApiResult<SshKeyInfo> {
    let mut key = parse_public_key(&req.public_key)
        .map_err(|err| ApiFailure::invalid_value(format!("SSH key: {err}")))?;
    key.added_at = now_unix();
    let info = key_info(&key);
    let event = admin_event(
        &caller,
        "user.key.add",
        &name,
        json!({ "fingerprint": key.fingerprint, "algorithm": key.algorithm }),
    );
    gw.store()
        .write(move |w| {
            w.add_ssh_key(&name, key)?;
            w.audit(event)?;
            Ok(())
        })
        .await?;
    Ok(Json(info))
}

pub async fn remove_key(
    State(gw): State<Gateway>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
    Query(query): Query<RemoveKeyQuery>,
) -> ApiResult<SshKeyInfo> {
    let event = admin_event(
        &caller,
        "user.key.remove",
        &name,
        json!({ "fingerprint": query.fingerprint }),
    );
    let removed = gw
        .store()
        .write(move |w| {
            let key = w.remove_ssh_key(&name, &query.fingerprint)?;
            w.audit(event)?;
            Ok(key)
        })
        .await?;
    Ok(Json(key_info(&removed)))
}

/// Everything `user show` prints.
pub(super) async fn load_detail(gw: &Gateway, name: String) -> Result<UserDetail, ApiFailure> {
    let rows = gw
        .store()
        .read(move |r| {
            let user = r.user(&name)?.ok_or_else(|| not_found_user(&name))?;
            let keys = r.ssh_keys(&name)?;
            let devices = r.devices(Some(&name))?;
            Ok((user, keys, devices))
        })
        .await?;
    let (user, keys, devices) = rows;
    let mut detail = user_detail(&gw.config(), user, &keys, &devices);
    let live = LivePeers::of(gw);
    detail.devices = detail.devices.into_iter().map(|d| live.merge(d)).collect();
    Ok(detail)
}

pub(super) fn user_detail(
    config: &Config,
    user: User,
    keys: &[SshKey],
    devices: &[Device],
) -> UserDetail {
    let subnets = config
        .policy()
        .access_for(&user.groups)
        .subnets()
        .iter()
        .map(ToString::to_string)
        .collect();
    let now = now_unix();
    let access = VpnAccess::of(&user, &config.vpn, now);
    let vpn_access = match access {
        VpnAccess::Always => VpnAccessState::Always,
        VpnAccess::Until(end) if now < end => VpnAccessState::Session,
        VpnAccess::Until(_) | VpnAccess::LoginNeeded => VpnAccessState::LoginNeeded,
        VpnAccess::Refused => VpnAccessState::Refused,
    };
    UserDetail {
        expired: user.is_expired(now),
        no_login: user.no_login,
        vpn_access,
        vpn_access_until: rfc3339_opt(access.ends_at().filter(|end| now < *end)),
        state: user.state,
        subnets,
        created_at: rfc3339(user.created_at),
        expires_at: rfc3339_opt(user.expires_at),
        last_seen: rfc3339_opt(user.last_seen),
        ssh_keys: keys.iter().map(key_info).collect(),
        devices: devices.iter().map(device_info).collect(),
        groups: user.groups,
        name: user.name,
    }
}

pub(super) fn admin_event(
    caller: &Caller,
    kind: &str,
    target: &str,
    detail: serde_json::Value,
) -> NewAuditEvent {
    NewAuditEvent {
        kind: kind.into(),
        actor: caller.actor(),
        source: caller.source(),
        target: target.into(),
        detail,
    }
}

pub(super) fn not_found_user(name: &str) -> crate::store::StoreError {
    crate::store::StoreError::NotFound {
        what: "user",
        name: name.to_string(),
    }
}

async fn set_state(
    gw: Gateway,
    caller: Caller,
    name: String,
    state: UserState,
    kind: &str,
) -> ApiResult<UserDetail> {
    let event = admin_event(&caller, kind, &name, json!({}));
    let target = name.clone();
    gw.store()
        .write(move |w| {
            w.set_user_state(&target, state)?;
            w.audit(event)?;
            Ok(())
        })
        .await?;
    Ok(Json(load_detail(&gw, name).await?))
}

/// Sorted, deduplicated, and every one defined in the running config.
fn checked_groups(config: &Config, mut groups: Vec<String>) -> Result<Vec<String>, ApiFailure> {
    if groups.is_empty() {
        return Err(ApiFailure::invalid_value(
            "give at least one group (--group NAME)",
        ));
    }
    groups.sort();
    groups.dedup();
    let unknown: Vec<&str> = groups
        .iter()
        .filter(|g| config.group(g).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
        return Err(ApiFailure::invalid_value(format!(
            "unknown group(s): {}; the config defines: {}",
            unknown.join(", "),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(groups)
}

fn key_info(key: &SshKey) -> SshKeyInfo {
    SshKeyInfo {
        fingerprint: key.fingerprint.clone(),
        algorithm: key.algorithm.clone(),
        comment: key.comment.clone(),
        added_at: rfc3339(key.added_at),
    }
}

/// A fresh enrollment token: 32 random bytes, URL-safe. Shown once; only its
/// hash is stored.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
