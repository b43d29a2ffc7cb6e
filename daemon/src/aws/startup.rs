//! What the provisioner does while accessd starts, before any listener
//! opens: connect, take the secrets key (before the store opens), the
//! WireGuard key, the SSH host key and the portal's self-signed certificate
//! from SSM (or put them there), then, with `aws.apply_on_start`, apply the
//! plan.

use std::path::Path;
use std::sync::Arc;

use gatehouse_config::Config;
use russh::keys::PrivateKey;
use serde_json::json;

use super::ssm_key::{self, KeyOrigin, SsmKey};
use super::{AwsError, LocalKeyError, Session, apply};
use crate::audit::event::{Actor, Kind, Source, event};
use crate::gateway::Core;
use crate::portal::tls::{self, SelfSigned};
use crate::secrets_key::{SecretsKey, SecretsKeyError};
use crate::ssh_ca::UserCa;
use crate::ssh_host_key;
use crate::store::{NewAuditEvent, Store};
use crate::wg_key::GatewayKey;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot get {what} from SSM, and there is no local copy to fall back on ({why_not_new}): {source}"
    )]
    NoKey {
        what: &'static str,
        why_not_new: &'static str,
        source: Arc<AwsError>,
    },
    #[error("aws.apply_on_start is set, but AWS cannot be reached: {0}")]
    Connect(AwsError),
    #[error("aws.apply_on_start: {0}")]
    Apply(#[from] apply::ApplyFailure),
    #[error(transparent)]
    Key(#[from] LocalKeyError),
    #[error(transparent)]
    SecretsKey(#[from] SecretsKeyError),
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// AWS at start.
pub enum Connection {
    /// No `[aws]`: no AWS call is ever made.
    Off,
    Up(Arc<Session>),
    /// Unreachable; each key falls back on its local copy.
    Down(Arc<AwsError>),
}

impl Connection {
    /// The session, when AWS answered.
    pub fn session(&self) -> Option<Arc<Session>> {
        match self {
            Connection::Up(session) => Some(session.clone()),
            Connection::Off | Connection::Down(_) => None,
        }
    }
}

/// Connects when `[aws]` is set. AWS out of reach is an error only with
/// `aws.apply_on_start`; otherwise the keys' local copies carry the start.
pub async fn connect(config: &Config) -> Result<Connection, StartError> {
    let Some(aws) = &config.aws else {
        return Ok(Connection::Off);
    };
    match Session::connect(aws).await {
        Ok(session) => Ok(Connection::Up(Arc::new(session))),
        Err(err) if aws.apply_on_start => Err(StartError::Connect(err)),
        Err(err) => Ok(Connection::Down(Arc::new(err))),
    }
}

/// The key that seals the store's secrets, needed before the store opens:
/// `gateway.secrets_key_file` when set (never an AWS call), else from SSM
/// with `[aws]`, else `state_dir/secrets.key`. With the record to audit
/// once the store is open, when the key was stored in SSM now.
pub async fn secrets_key(
    config: &Config,
    aws: &Connection,
    state_dir: &Path,
) -> Result<(SecretsKey, Option<NewAuditEvent>), StartError> {
    if let Some(path) = config.gateway.secrets_key_file.clone() {
        let key = tokio::task::spawn_blocking(move || SecretsKey::load_file(&path)).await??;
        return Ok((key, None));
    }
    ssm_or_local(config, aws, state_dir).await
}

/// The gateway's WireGuard key: `vpn.private_key_file` when set (the file
/// the gateways of a pair share), else from SSM with `[aws]`, else the
/// local key.
pub async fn wireguard_key(
    config: &Config,
    aws: &Connection,
    store: &Store,
    state_dir: &Path,
) -> Result<GatewayKey, StartError> {
    if let Some(file) = config.vpn.private_key_file.clone() {
        let key = tokio::task::spawn_blocking(move || GatewayKey::load_shared(&file))
            .await?
            .map_err(LocalKeyError::from)?;
        return Ok(key);
    }
    let (key, stored) = ssm_or_local::<GatewayKey>(config, aws, state_dir).await?;
    audit_stored_key(store, stored).await;
    Ok(key)
}

/// The jump host's SSH host key: `ssh.host_key_file` when set (never
/// created), else from SSM with `[aws]`, else the local key.
pub async fn ssh_host_key(
    config: &Config,
    aws: &Connection,
    store: &Store,
    state_dir: &Path,
) -> Result<PrivateKey, StartError> {
    if let Some(file) = config.ssh.host_key_file.clone() {
        let dir = state_dir.to_path_buf();
        let key =
            tokio::task::spawn_blocking(move || ssh_host_key::load_host_key(Some(&file), &dir))
                .await?
                .map_err(LocalKeyError::from)?;
        return Ok(key);
    }
    let (key, stored) = ssm_or_local::<PrivateKey>(config, aws, state_dir).await?;
    audit_stored_key(store, stored).await;
    Ok(key)
}

/// With `ssh.certificates`: the SSH user CA key, from SSM with `[aws]`,
/// else the local key (made now if new).
pub async fn ssh_user_ca(
    config: &Config,
    aws: &Connection,
    store: &Store,
    state_dir: &Path,
) -> Result<Option<UserCa>, StartError> {
    if !config.ssh.certificates {
        return Ok(None);
    }
    let (key, stored) = ssm_or_local::<UserCa>(config, aws, state_dir).await?;
    audit_stored_key(store, stored).await;
    Ok(Some(key))
}

/// With `[aws]`, an enabled portal and no `portal.tls_cert`: the portal's
/// self-signed pair from SSM (or this gateway's, made now for `hosts` if
/// new, stored there), as the local copy the portal then serves.
pub async fn portal_certificate(
    core: &Core,
    aws: &Connection,
    hosts: Vec<String>,
) -> Result<(), StartError> {
    let config = core.config();
    if !config.portal.enabled || config.portal.tls.is_some() || config.aws.is_none() {
        return Ok(());
    }
    let state_dir = config.gateway.state_dir.clone();
    let dir = state_dir.clone();
    tokio::task::spawn_blocking(move || tls::ensure_self_signed(&dir, hosts))
        .await?
        .map_err(LocalKeyError::from)?;
    let (_, stored) = ssm_or_local::<SelfSigned>(&config, aws, &state_dir).await?;
    audit_stored_key(core.store(), stored).await;
    Ok(())
}

/// Writes the record of a key stored in SSM at start; a failure is logged
/// (the key is stored either way).
pub async fn audit_stored_key(store: &Store, record: Option<NewAuditEvent>) {
    let Some(record) = record else { return };
    if let Err(err) = store.write(move |w| w.audit(record).map(drop)).await {
        tracing::warn!(error = %err, "cannot audit storing a key in SSM");
    }
}

/// `K` from SSM (stored there when missing), or its local copy when AWS
/// is off, or out of reach and a copy exists.
async fn ssm_or_local<K: SsmKey>(
    config: &Config,
    aws: &Connection,
    state_dir: &Path,
) -> Result<(K, Option<NewAuditEvent>), StartError> {
    let local = || {
        let dir = state_dir.to_path_buf();
        tokio::task::spawn_blocking(move || K::load_or_create_local(&dir))
    };
    let has_local_copy = state_dir.join(K::LOCAL_FILE).exists();
    let no_key = |source| StartError::NoKey {
        what: K::WHAT,
        why_not_new: K::WHY_NOT_NEW,
        source,
    };
    let session = match aws {
        Connection::Off => return Ok((local().await??, None)),
        Connection::Up(session) => session,
        Connection::Down(err) if has_local_copy => {
            tracing::warn!(error = %err, "AWS unreachable at start; running with the local copy of {}", K::WHAT);
            return Ok((local().await??, None));
        }
        Connection::Down(err) => return Err(no_key(err.clone())),
    };
    let apply_on_start = config.aws.as_ref().is_some_and(|aws| aws.apply_on_start);
    let gateway = &config.gateway.name;
    match ssm_key::load_or_store::<K>(session, gateway, state_dir).await {
        Ok((key, KeyOrigin::StoredInSsm)) => {
            let record = event(Kind::AwsChange, Actor::Gateway, Source::Local)
                .on(format!("ssm parameter {}", K::parameter_name(gateway)))
                .detail(json!({
                    "kind": "create",
                    "change": format!("store {} (SecureString)", K::WHAT),
                    "reason": "no key in SSM at start",
                    "result": key.label(),
                }));
            Ok((key, Some(record)))
        }
        Ok((key, KeyOrigin::Ssm)) => Ok((key, None)),
        Err(err) if has_local_copy && !apply_on_start => {
            tracing::warn!(error = %err, "cannot use SSM for {}; running with the local copy", K::WHAT);
            Ok((local().await??, None))
        }
        Err(err) => Err(no_key(Arc::new(err))),
    }
}

/// Applies the plan when `aws.apply_on_start` is set.
pub async fn apply_on_start(core: &Core, session: Option<&Session>) -> Result<(), StartError> {
    let config = core.config();
    let (Some(aws), Some(session)) = (&config.aws, session) else {
        return Ok(());
    };
    if !aws.apply_on_start {
        return Ok(());
    }
    // One of an HA pair starts as the standby: the elastic IP and the pool
    // routes are the active gateway's, moved on taking the lease.
    let scope = match config.ha {
        Some(_) => apply::Scope::Shared,
        None => apply::Scope::All,
    };
    let applied = apply::apply_scoped(
        core,
        session,
        Actor::Gateway,
        Source::Setting("apply_on_start"),
        scope,
        &|| true,
    )
    .await?;
    tracing::info!(
        changes = applied.actions.len(),
        elastic_ip = applied.elastic_ip.as_deref().unwrap_or("none"),
        "aws apply on start done"
    );
    Ok(())
}
