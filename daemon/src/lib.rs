//! accessd: the gatehouse access gateway daemon.
//!
//! Layout, in layers; a module imports only from its own layer or below,
//! and no two modules import each other, even through others.
//! [`LAYERS`] is this map as data: `tests/layers.rs` in this crate fails on
//! an import that goes up a layer, on a cycle, and on a `pub mod` the map
//! does not name.
//!
//! 1. **Start-up** — [`run`] (this file) binds every listener, builds the
//!    core, starts each subsystem under its own child token, and owns
//!    shutdown.
//! 2. **Front doors** — each parses, calls a service, renders:
//!    - [`admin`]: the admin API on a Unix socket, for `accessctl`;
//!    - [`portal`]: the HTTPS portal: enrollment, login (argon2id + TOTP,
//!      or the team's identity provider), a member's devices with keys
//!      made in the browser;
//!    - [`running`]: what start-up started, handed to the admin API.
//! 3. **Services and subsystems** — each takes a [`gateway::Core`]:
//!    - [`access`]: every operation more than one door performs (devices,
//!      device configs, users, a user's access, enrollment links, SSO
//!      members, SSH certificates, what clients connect to) — written once;
//!    - [`vpn`]: the WireGuard data plane (boringtun) with per-packet policy;
//!    - [`ssh`]: the SSH jump host (russh): direct-tcpip only, same policy;
//!    - [`sso`]: the team's OpenID provider: discovery, the code flow, the
//!      ID token's checks;
//!    - [`aws`]: the AWS provisioner (plan/apply, the keys in SSM); idle
//!      without `[aws]`;
//!    - [`ha`]: which gateway of an HA pair is active: the role's rules
//!      without I/O, its loop, the lease in the shared database; idle
//!      without `[ha]`;
//!    - [`takeover`]: what becoming active does (the elastic IP and pool
//!      routes, fenced by the lease; resuming the devices' tunnels);
//!    - [`export`]: the audit log streamed out, at least once and in order
//!      from a cursor in the store (syslog over TLS); idle without
//!      `[audit.syslog]`;
//!    - [`metrics`]: Prometheus metrics of the data plane and the exporters;
//!    - [`systemd`]: readiness, stopping and watchdog notifications;
//!    - [`checkpointer`]: signs the audit chain's checkpoints on the active
//!      gateway, at least every minute or 1,000 records.
//! 4. **Core** — [`gateway`]: the running config and its reload, the store,
//!    the identity keys, the login budgets, the AWS state it remembers.
//!    Imports no subsystem.
//! 5. **Foundations** — [`store`] (SQLite, or PostgreSQL shared by an HA
//!    pair; every change commits with its audit record), [`audit`] (the
//!    hash chain, the mirror, and the one vocabulary of kinds, actors and
//!    sources), [`auth`] (member authentication: a member's standing, login
//!    budgets charged before judging, the TOTP step, refusals), [`keys`]
//!    (the identity keys: WireGuard, SSH host, SSH user CA, the secrets key
//!    that seals what the store keeps, the portal's TLS pair; their files,
//!    their home in SSM, and which home wins at start), [`ssh_ca`] (signing
//!    and checking SSH certificates with the CA key), [`ssh_keys`] (users'
//!    OpenSSH keys), [`totp`], [`host_addrs`] (the host's own addresses,
//!    always refused), [`capped_listener`] (connection caps per source),
//!    [`time_fmt`].
//!
//! Tasks: one root [`CancellationToken`], one [`TaskTracker`]; nothing is
//! spawned detached. Shutdown cancels, waits with a grace timeout, and writes
//! the audit log's last record before the store is dropped.

#![deny(clippy::print_stdout, clippy::print_stderr)]

/// The layer map above, top first: each layer's modules. A module imports
/// only from its own layer or below (`tests/layers.rs`). Start-up is this
/// file and `main.rs`.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("front doors", &["admin", "portal", "running"]),
    (
        "services and subsystems",
        &[
            "access",
            "vpn",
            "ssh",
            "sso",
            "aws",
            "ha",
            "takeover",
            "export",
            "metrics",
            "systemd",
            "checkpointer",
        ],
    ),
    ("core", &["gateway"]),
    (
        "foundations",
        &[
            "store",
            "audit",
            "auth",
            "keys",
            "ssh_ca",
            "ssh_keys",
            "totp",
            "host_addrs",
            "capped_listener",
            "time_fmt",
        ],
    ),
];

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod capped_listener;
pub mod checkpointer;
pub mod export;
pub mod gateway;
pub mod ha;
pub mod host_addrs;
pub mod keys;
pub mod metrics;
pub mod portal;
pub mod running;
pub mod ssh;
pub mod ssh_ca;
pub mod ssh_keys;
pub mod sso;
pub mod store;
pub mod systemd;
pub mod takeover;
#[cfg(test)]
pub mod testing;
pub mod time_fmt;
pub mod totp;
pub mod vpn;

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::admin::AdminState;
use crate::audit::event::{Actor, Kind, Source, event};
use crate::gateway::{ConfigSource, Core, Keys};
use crate::running::Running;
use crate::store::{Store, StoreOptions};

/// How long shutdown waits for tasks to finish before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] gatehouse_config::ConfigError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    HostAddrs(#[from] host_addrs::HostAddrsError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("cannot start the WireGuard data plane: {0}")]
    Vpn(#[from] vpn::VpnError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("cannot start the SSH jump host: {0}")]
    Ssh(#[from] ssh::SshError),
    /// The keys (from SSM with `[aws]`) and `aws.apply_on_start`; each
    /// message says which.
    #[error(transparent)]
    Aws(#[from] aws::startup::StartError),
    #[error("cannot start the portal: {0}")]
    Portal(#[from] portal::PortalError),
    #[error(transparent)]
    Installation(#[from] ha::installation::InstallationError),
    #[error("cannot start as an HA node: {0}")]
    Ha(#[from] ha::HaError),
    #[error("cannot start the audit log's syslog export: {0}")]
    Export(#[from] export::ExportError),
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Things outside the daemon that it reacts to: SIGHUP-style reload requests.
pub struct Signals {
    /// Each message asks for a config reload.
    pub reload: tokio::sync::mpsc::Receiver<()>,
}

/// Runs the gateway until `shutdown` is cancelled.
pub async fn run(
    source: ConfigSource,
    mut signals: Signals,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let config = source.load()?;
    let state_dir = config.gateway.state_dir.clone();
    store::create_state_dir(&state_dir)?;
    // With [aws], the keys' home is SSM; without, no AWS call is ever made.
    // The store opens its sealed secrets with the secrets key.
    let aws = aws::startup::connect(&config).await?;
    let (secrets, stored) = aws::startup::secrets_key(&config, &aws, &state_dir).await?;
    let store_options = StoreOptions::from_config(&config, std::sync::Arc::new(secrets))?;
    let store = tokio::task::spawn_blocking(move || Store::open(&store_options)).await??;
    aws::startup::audit_stored_key(&store, stored).await;
    let wireguard = aws::startup::wireguard_key(&config, &aws, &store, &state_dir).await?;
    let ssh_host = aws::startup::ssh_host_key(&config, &aws, &store, &state_dir).await?;
    let user_ca = aws::startup::ssh_ca(&config, &aws, &store, &state_dir).await?;
    let host_ca = aws::startup::ssh_ca(&config, &aws, &store, &state_dir).await?;
    // No list of its own addresses, no start: policy must refuse them.
    let host_addrs = host_addrs::HostAddrs::load()?;
    let keys = Keys {
        wireguard,
        ssh_host,
        user_ca,
        host_ca,
    };
    let core = Core::new(source, config, store, keys, host_addrs);

    lifecycle_event(&core, Kind::GatewayStart).await?;
    tracing::info!(
        gateway = %core.config().gateway.name,
        state_dir = %state_dir.display(),
        wireguard_public_key = %core.key().public_base64(),
        "accessd started"
    );

    let tracker = TaskTracker::new();
    store::changes::spawn_listener(core.store(), &tracker, shutdown.child_token());
    if core.config().aws.is_some() {
        aws::spawn_audit_retry(&core, &tracker, shutdown.child_token());
    }
    let aws_session = aws.session();
    // The admin socket opens last: once it answers, every subsystem is up.
    let started = async {
        // First of all an HA node claims its name (refused while another
        // installation reports under it), before it touches AWS.
        let mut pending_ha = match core.config().ha.as_ref() {
            Some(config) => {
                let installation = ha::installation::InstallationId::load_or_create(&state_dir)?;
                ha::prepare(core.store(), config, installation)
            }
            None => None,
        };
        if let Some(pending) = pending_ha.as_mut() {
            pending.register(&core.host_addrs().reachable()).await?;
        }
        aws::startup::apply_on_start(&core, aws_session.as_deref()).await?;
        aws::startup::learn_elastic_ip(&core, aws_session.as_deref()).await;
        // After apply: the certificate is made for the elastic IP too.
        aws::startup::portal_certificate(&core, &aws, portal::certificate_hosts(&core)).await?;
        let ha = pending_ha.as_ref().map(ha::Pending::handle);
        let mut running =
            start_subsystems(&core, ha, aws_session.clone(), &tracker, &shutdown).await?;
        if let Some(pending) = pending_ha {
            running.0.ha = Some(spawn_ha(
                &core,
                pending,
                &running.0,
                aws_session.clone(),
                &tracker,
                &shutdown,
            ));
        }
        let writer = running.0.ha.clone();
        checkpointer::spawn(
            core.store().clone(),
            audit::checkpoint::Cadence {
                every: core.config().audit.checkpoint_interval,
                ..audit::checkpoint::Cadence::default()
            },
            move || writer.as_ref().is_none_or(ha::Ha::is_active),
            &tracker,
            shutdown.child_token(),
        );
        let config = core.config();
        let listener = admin::bind(&config.admin.socket, &config.admin.group).await?;
        Ok::<_, RunError>((running, listener))
    }
    .await;
    let started = started.map(|((running, access), listener)| {
        let admin_shutdown = shutdown.child_token();
        let state = AdminState {
            core: core.clone(),
            access,
            running,
            shutdown: admin_shutdown.clone(),
        };
        admin::spawn_admin_api(listener, state, &tracker, admin_shutdown);
    });
    tracker.close();
    if let Err(err) = started {
        // Undo what did start, and say in the audit log that we stopped.
        shutdown.cancel();
        tracker.wait().await;
        lifecycle_event(&core, Kind::GatewayStop).await?;
        return Err(err);
    }
    tracing::info!("ready");
    systemd::ready("serving");
    systemd::spawn_watchdog(core.clone(), &tracker, shutdown.child_token());

    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(()) = signals.reload.recv() => {
                // A refused reload is logged and audited inside; the daemon runs on.
                let _ = core.reload(Actor::Signal("SIGHUP"), Source::Local).await;
            }
        }
    }

    tracing::info!("shutting down");
    systemd::stopping();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "some tasks did not stop in time");
    }
    // The audit log is written last: nothing after this point changes state.
    lifecycle_event(&core, Kind::GatewayStop).await?;
    tracing::info!("accessd stopped");
    Ok(())
}

/// Binds the listeners of the subsystems the config enables (so a taken
/// port fails start-up before anything serves), then starts each under its
/// own child token. Returns what runs, and the access service over it.
async fn start_subsystems(
    core: &Core,
    ha: Option<ha::Ha>,
    aws_session: Option<std::sync::Arc<aws::Session>>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(Running, Access), RunError> {
    let config = core.config();
    let metrics_listener = match config.vpn.enabled {
        true => Some(metrics::bind(config.metrics.listen).await?),
        false => None,
    };
    let ssh_listener = match config.ssh.enabled {
        true => Some(ssh::bind(config.ssh.listen).await?),
        false => None,
    };
    let portal_listener = match config.portal.enabled {
        true => Some(portal::bind(config.portal.listen).await?),
        false => None,
    };
    let mut running = Running::default();
    // Before anything serves: a bad TLS file of [audit.syslog] stops start-up.
    let exports: Vec<export::ExportHandle> =
        export::spawn_syslog_export(core, ha.clone(), tracker, shutdown.child_token())?
            .into_iter()
            .chain(export::spawn_s3_export(
                core,
                ha.clone(),
                aws_session.clone(),
                tracker,
                shutdown.child_token(),
            ))
            .collect();
    if config.vpn.enabled {
        let engine = vpn::spawn_data_plane(core, tracker, shutdown.child_token()).await?;
        if let Some(listener) = metrics_listener {
            metrics::spawn_metrics(
                listener,
                metrics::Sources {
                    engine: engine.clone(),
                    ha,
                    exports: exports.clone(),
                    host_certs: config.ssh.certificates.then(|| core.store().clone()),
                },
                tracker,
                shutdown.child_token(),
            );
        }
        running.vpn = Some(engine);
    }
    running.exports = exports;
    if let Some(listener) = ssh_listener {
        running.ssh = Some(ssh::spawn_jump_host(
            core,
            listener,
            tracker,
            shutdown.child_token(),
        )?);
    }
    let jump_host = running.ssh.as_ref().map(ssh::SshHandle::listen);
    let access = Access::new(core.clone(), running.vpn.clone(), jump_host).with_aws(aws_session);
    if let Some(listener) = portal_listener {
        let handle =
            portal::spawn_portal(&access, listener, tracker, shutdown.child_token()).await?;
        running.portal = Some(handle);
    }
    Ok((running, access))
}

/// Starts the HA role's loop, handing it the take-over: on becoming the
/// active gateway it moves the pair's traffic here ([`takeover`]).
fn spawn_ha(
    core: &Core,
    pending: ha::Pending,
    running: &Running,
    aws_session: Option<std::sync::Arc<aws::Session>>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> ha::Ha {
    let engine = running.vpn.clone();
    let work = takeover::TrafficTakeover::new(
        core,
        engine.clone(),
        aws_session,
        tracker,
        shutdown.child_token(),
    );
    let ha = pending.spawn(std::sync::Arc::new(work), tracker, shutdown.child_token());
    if let Some(engine) = engine {
        takeover::spawn_resume_stopper(&ha, engine, tracker, shutdown.child_token());
    }
    ha
}

async fn lifecycle_event(core: &Core, kind: Kind) -> Result<(), store::StoreError> {
    let record = event(kind, Actor::Gateway, Source::Local)
        .on(core.config().gateway.name.clone())
        .detail(json!({ "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id() }));
    core.store().write(move |w| w.audit(record).map(drop)).await
}
