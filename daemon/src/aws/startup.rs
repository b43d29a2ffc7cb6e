//! What the provisioner does while accessd starts, before any listener
//! opens: connect, take the secrets key (before the store opens), the
//! WireGuard key, the SSH host key, the SSH user CA and the portal's
//! self-signed certificate (where each comes from is
//! [`crate::keys::resolve`]'s rule; SSM is this module's [`Session`]),
//! audit each key stored in SSM now, then, with `aws.apply_on_start`,
//! apply the plan.

use std::path::Path;
use std::sync::Arc;

use gatehouse_config::Config;
use gatehouse_config::file::PublicEndpoint;
use russh::keys::PrivateKey;
use serde_json::json;

use super::{AwsError, Session, apply, observed};
use crate::audit::event::{Actor, Kind, Source, event};
use crate::gateway::Core;
use crate::keys::resolve::{self, Remote, ResolveError, Resolved};
use crate::keys::secrets::SecretsKey;
use crate::keys::ssh_ca_key::{CaKey, CaRole};
use crate::keys::ssm::SsmKey;
use crate::keys::wireguard::GatewayKey;
use crate::store::{NewAuditEvent, Store};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("aws.apply_on_start is set, but AWS cannot be reached: {0}")]
    Connect(AwsError),
    #[error("aws.apply_on_start: {0}")]
    Apply(#[from] apply::ApplyFailure),
    /// No key, or a key file that cannot be used; the message says which.
    #[error(transparent)]
    Key(#[from] ResolveError),
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

    /// SSM as the keys' resolution sees it.
    fn remote(&self) -> Remote<'_, Session> {
        match self {
            Connection::Off => Remote::Off,
            Connection::Up(session) => Remote::Up(session),
            Connection::Down(err) => Remote::Down(err.clone()),
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

/// The key that seals the store's secrets, needed before the store opens
/// ([`resolve::secrets_key`]). With the record to audit once the store is
/// open, when the key was stored in SSM now.
pub async fn secrets_key(
    config: &Config,
    aws: &Connection,
    state_dir: &Path,
) -> Result<(SecretsKey, Option<NewAuditEvent>), StartError> {
    let resolved = resolve::secrets_key(config, &aws.remote(), state_dir).await?;
    Ok(stored_record(config, resolved))
}

/// The gateway's WireGuard key ([`resolve::wireguard_key`]).
pub async fn wireguard_key(
    config: &Config,
    aws: &Connection,
    store: &Store,
    state_dir: &Path,
) -> Result<GatewayKey, StartError> {
    let resolved = resolve::wireguard_key(config, &aws.remote(), state_dir).await?;
    Ok(audited(config, store, resolved).await)
}

/// The jump host's SSH host key ([`resolve::ssh_host_key`]).
pub async fn ssh_host_key(
    config: &Config,
    aws: &Connection,
    store: &Store,
    state_dir: &Path,
) -> Result<PrivateKey, StartError> {
    let resolved = resolve::ssh_host_key(config, &aws.remote(), state_dir).await?;
    Ok(audited(config, store, resolved).await)
}

/// With `ssh.certificates`: one of the SSH CA keys, the user CA's or the
/// host CA's ([`resolve::ssh_ca`]).
pub async fn ssh_ca<R: CaRole>(
    config: &Config,
    aws: &Connection,
    store: &Store,
    state_dir: &Path,
) -> Result<Option<CaKey<R>>, StartError> {
    match resolve::ssh_ca::<R, _>(config, &aws.remote(), state_dir).await? {
        Some(resolved) => Ok(Some(audited(config, store, resolved).await)),
        None => Ok(None),
    }
}

/// With `[aws]`, an enabled portal and no `portal.tls_cert`: the portal's
/// self-signed pair from SSM, as the local copy the portal then serves
/// ([`resolve::portal_certificate`]).
pub async fn portal_certificate(
    core: &Core,
    aws: &Connection,
    hosts: Vec<String>,
) -> Result<(), StartError> {
    let config = core.config();
    if let Some(resolved) = resolve::portal_certificate(&config, &aws.remote(), hosts).await? {
        audited(&config, core.store(), resolved).await;
    }
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

/// The key, once the record of storing it in SSM (if it was) is written.
async fn audited<K: SsmKey>(config: &Config, store: &Store, resolved: Resolved<K>) -> K {
    let (key, record) = stored_record(config, resolved);
    audit_stored_key(store, record).await;
    key
}

/// The key, and the record to audit when it was stored in SSM now.
fn stored_record<K: SsmKey>(config: &Config, resolved: Resolved<K>) -> (K, Option<NewAuditEvent>) {
    let Resolved { key, stored_in_ssm } = resolved;
    if !stored_in_ssm {
        return (key, None);
    }
    let gateway = &config.gateway.name;
    let record = event(Kind::AwsChange, Actor::Gateway, Source::Local)
        .on(format!("ssm parameter {}", K::parameter_name(gateway)))
        .detail(json!({
            "kind": "create",
            "change": format!("store {} (SecureString)", K::WHAT),
            "reason": "no key in SSM at start",
            "result": key.label(),
        }));
    (key, Some(record))
}

/// With `[aws]` and `public_endpoint = "auto"`, a gateway that knows no
/// elastic IP yet (a new `state_dir`, or the standby of a pair, which
/// never applies) learns the one tagged for it, by a read-only describe,
/// so device configs name it at once. The pair shares one address: either
/// node renders configs with it. A failed describe is logged, not fatal:
/// configs then say `endpoint_unknown` until an apply finds it.
pub async fn learn_elastic_ip(core: &Core, session: Option<&Session>) {
    let config = core.config();
    let (Some(_), Some(session)) = (&config.aws, session) else {
        return;
    };
    if config.gateway.public_endpoint != PublicEndpoint::Auto || core.aws().elastic_ip().is_some() {
        return;
    }
    match observed::elastic_ip(session, &config.gateway.name).await {
        Ok(Some(found)) => match found.public_ip.parse() {
            Ok(ip) => {
                tracing::info!(elastic_ip = %ip, "learned the elastic IP tagged for this gateway");
                core.aws().set_elastic_ip(Some(ip));
            }
            Err(_) => tracing::warn!(
                address = found.public_ip,
                "AWS gave the elastic IP tagged for this gateway in a form accessd cannot read"
            ),
        },
        Ok(None) => tracing::info!(
            "no elastic IP is tagged for this gateway yet: device configs name no endpoint \
             until `accessctl aws apply` makes one"
        ),
        Err(error) => tracing::warn!(
            %error,
            "cannot learn the elastic IP tagged for this gateway; device configs name no \
             endpoint until an apply finds it"
        ),
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
        apply::Guard::Unfenced,
    )
    .await?;
    tracing::info!(
        changes = applied.actions.len(),
        elastic_ip = applied.elastic_ip.as_deref().unwrap_or("none"),
        "aws apply on start done"
    );
    Ok(())
}
