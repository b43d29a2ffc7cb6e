//! What the provisioner does while accessd starts, before any listener
//! opens: take the WireGuard key from SSM (or put it there), then, with
//! `aws.apply_on_start`, apply the plan.

use std::path::Path;

use gatehouse_config::Config;
use serde_json::json;

use super::desired::ssm_parameter_name;
use super::ssm_key::{self, KeyOrigin};
use super::{AwsError, Session, apply};
use crate::audit::event::{Actor, Kind, Source, event};
use crate::gateway::Core;
use crate::store::Store;
use crate::wg_key::{GatewayKey, KEY_FILE, KeyError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "cannot get the gateway's WireGuard key from SSM, and there is no local copy to fall back on (making a new key would break every device config): {0}"
    )]
    NoKey(AwsError),
    #[error("aws.apply_on_start is set, but AWS cannot be reached: {0}")]
    Connect(AwsError),
    #[error("aws.apply_on_start: {0}")]
    Apply(#[from] apply::ApplyFailure),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The gateway's key, and with `[aws]` a connected session. Without `[aws]`
/// this is the local key and no AWS call is made.
pub async fn key_and_session(
    config: &Config,
    store: &Store,
    state_dir: &Path,
) -> Result<(GatewayKey, Option<Session>), StartError> {
    let local = || {
        let dir = state_dir.to_path_buf();
        tokio::task::spawn_blocking(move || GatewayKey::load_or_create(&dir))
    };
    // A key file the operator shares between the gateways of a pair wins.
    if let Some(file) = config.vpn.private_key_file.clone() {
        let key = tokio::task::spawn_blocking(move || GatewayKey::load_shared(&file)).await??;
        let session = match &config.aws {
            Some(aws) => Some(Session::connect(aws).await.map_err(StartError::Connect)?),
            None => None,
        };
        return Ok((key, session));
    }
    let Some(aws) = &config.aws else {
        return Ok((local().await??, None));
    };
    let has_local_copy = state_dir.join(KEY_FILE).exists();
    let session = match Session::connect(aws).await {
        Ok(session) => session,
        Err(err) if aws.apply_on_start => return Err(StartError::Connect(err)),
        Err(err) if has_local_copy => {
            tracing::warn!(error = %err, "AWS unreachable at start; running with the local copy of the WireGuard key");
            return Ok((local().await??, None));
        }
        Err(err) => return Err(StartError::NoKey(err)),
    };
    let name = &config.gateway.name;
    match ssm_key::load_or_store(&session, name, state_dir).await {
        Ok((key, origin)) => {
            if origin == KeyOrigin::StoredInSsm {
                let record = event(Kind::AwsChange, Actor::Gateway, Source::Local)
                    .on(format!("ssm parameter {}", ssm_parameter_name(name)))
                    .detail(json!({
                        "kind": "create",
                        "change": "store the gateway's WireGuard private key (SecureString)",
                        "reason": "no key in SSM at start",
                        "result": format!("public key {}", key.public_base64()),
                    }));
                if let Err(err) = store.write(move |w| w.audit(record).map(drop)).await {
                    tracing::warn!(error = %err, "cannot audit storing the key in SSM");
                }
            }
            Ok((key, Some(session)))
        }
        Err(err) if has_local_copy && !aws.apply_on_start => {
            tracing::warn!(error = %err, "cannot use SSM for the WireGuard key; running with the local copy");
            Ok((local().await??, Some(session)))
        }
        Err(err) => Err(StartError::NoKey(err)),
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
