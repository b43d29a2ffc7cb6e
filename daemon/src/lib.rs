//! accessd: the gatehouse access gateway daemon.
//!
//! Layout — one module per subsystem, wired together in [`run`], which owns
//! start-up and shutdown:
//! - [`gateway`]: the handles every subsystem shares (running config, store,
//!   WireGuard key) and config reload.
//! - [`store`]: the SQLite database (users, keys, devices, enrollment tokens,
//!   audit records); every change commits together with its audit record.
//! - [`audit`]: the tamper-evident hash chain, its verification, and the
//!   JSON-lines mirror for log shippers.
//! - [`admin`]: the admin API on a Unix socket, for `accessctl`.
//! - [`metrics`]: Prometheus metrics of the data plane.
//! - [`vpn`]: the WireGuard data plane (boringtun) with per-packet policy.
//! - [`ssh`]: the SSH jump host (russh): direct-tcpip only, under the same policy.
//! - [`portal`]: the HTTPS portal: enrollment, login (argon2id + TOTP),
//!   the user's devices with keys made in the browser.
//! - [`totp`]: TOTP codes (RFC 6238), shared by the portal and the jump host.
//! - [`host_addrs`]: the host's own addresses (always refused by policy).
//! - [`wg_key`]: the gateway's WireGuard key, generated once.
//! - [`aws`]: the AWS provisioner (plan/apply, the key in SSM); idle without `[aws]`.
//! - [`ssh_keys`]: parsing users' OpenSSH public keys.
//! - [`time_fmt`]: unix seconds ⇄ RFC 3339.
//! - [`systemd`]: readiness, stopping and watchdog notifications.
//!
//! Tasks: one root [`CancellationToken`], one [`TaskTracker`]; nothing is
//! spawned detached. Shutdown cancels, waits with a grace timeout, and writes
//! the audit log's last record before the store is dropped.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod admin;
pub mod audit;
pub mod aws;
pub mod gateway;
pub mod host_addrs;
pub mod metrics;
pub mod portal;
pub mod ssh;
pub mod ssh_keys;
pub mod store;
pub mod systemd;
pub mod time_fmt;
pub mod totp;
pub mod vpn;
pub mod wg_key;

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::{ConfigSource, Gateway};
use crate::store::{NewAuditEvent, Store, StoreOptions};

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
    Key(#[from] wg_key::KeyError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("cannot start the WireGuard data plane: {0}")]
    Vpn(#[from] vpn::VpnError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("cannot start the SSH jump host: {0}")]
    Ssh(#[from] ssh::SshError),
    #[error("AWS at start: {0}")]
    Aws(#[from] aws::startup::StartError),
    #[error("cannot start the portal: {0}")]
    Portal(#[from] portal::PortalError),
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
    let store_options = StoreOptions {
        state_dir: state_dir.clone(),
        audit_mirror: config.audit.mirror.clone(),
        mirror_rotation: audit::mirror::Rotation {
            max_bytes: config.audit.mirror_max_bytes,
            keep: config.audit.mirror_keep,
        },
    };
    let store = tokio::task::spawn_blocking(move || Store::open(&store_options)).await??;
    // With [aws], the key's home is SSM; without, no AWS call is ever made.
    let (key, aws_session) = aws::startup::key_and_session(&config, &store, &state_dir).await?;
    let gateway = Gateway::new(source, config, store.clone(), key);

    lifecycle_event(&gateway, "gateway.start").await?;
    tracing::info!(
        gateway = %gateway.config().gateway.name,
        state_dir = %state_dir.display(),
        wireguard_public_key = %gateway.key().public_base64(),
        "accessd started"
    );

    let tracker = TaskTracker::new();
    // The admin socket opens last: once it answers, every subsystem is up.
    let started = async {
        aws::startup::apply_on_start(&gateway, aws_session.as_ref()).await?;
        start_subsystems(&gateway, &tracker, &shutdown).await?;
        let config = gateway.config();
        let listener = admin::bind(&config.admin.socket, &config.admin.group).await?;
        admin::spawn_admin_api(listener, gateway.clone(), &tracker, shutdown.child_token());
        Ok::<(), RunError>(())
    }
    .await;
    tracker.close();
    if let Err(err) = started {
        // Undo what did start, and say in the audit log that we stopped.
        shutdown.cancel();
        tracker.wait().await;
        lifecycle_event(&gateway, "gateway.stop").await?;
        return Err(err);
    }
    tracing::info!("ready");
    systemd::ready("serving");
    systemd::spawn_watchdog(gateway.clone(), &tracker, shutdown.child_token());

    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(()) = signals.reload.recv() => {
                // A refused reload is logged and audited inside; the daemon runs on.
                let _ = gateway.reload("signal:SIGHUP", "local").await;
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
    lifecycle_event(&gateway, "gateway.stop").await?;
    tracing::info!("accessd stopped");
    Ok(())
}

/// Starts the subsystems the config enables, each under its own child token.
async fn start_subsystems(
    gateway: &Gateway,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let config = gateway.config();
    if config.vpn.enabled {
        let engine = vpn::start(gateway, tracker, shutdown.child_token()).await?;
        metrics::spawn_metrics(
            config.metrics.listen,
            engine.clone(),
            tracker,
            shutdown.child_token(),
        )
        .await?;
        gateway.set_vpn(engine);
    }
    if config.ssh.enabled {
        let handle = ssh::start(gateway, tracker, shutdown.child_token()).await?;
        gateway.set_ssh(handle);
    }
    if config.portal.enabled {
        let handle = portal::start(gateway, tracker, shutdown.child_token()).await?;
        gateway.set_portal(handle);
    }
    Ok(())
}

async fn lifecycle_event(gateway: &Gateway, kind: &str) -> Result<(), store::StoreError> {
    let event = NewAuditEvent {
        kind: kind.into(),
        actor: "accessd".into(),
        source: "local".into(),
        target: gateway.config().gateway.name.clone(),
        detail: json!({ "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id() }),
    };
    gateway
        .store()
        .write(move |w| w.audit(event).map(drop))
        .await
}
