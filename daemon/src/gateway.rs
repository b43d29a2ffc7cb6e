//! The handles every subsystem shares: the running config (swapped atomically
//! on reload), the store, the gateway's WireGuard key and the start time.
//! It owns reloading; it does not own any task.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use gatehouse_config::{Config, ConfigError};
use serde_json::json;
use tokio::sync::watch;

use crate::portal::PortalHandle;
use crate::ssh::SshHandle;
use crate::store::{NewAuditEvent, Store, StoreError};
use crate::vpn::engine::Engine;
use crate::wg_key::GatewayKey;

/// Where the config comes from, and the command-line overrides that win over
/// the file on every (re)load.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub overrides: Overrides,
}

/// Command-line settings that replace keys of the file (for tests, demos and
/// running off the default paths).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub admin_socket: Option<PathBuf>,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.path)?;
        let default_mirror = config.gateway.state_dir.join("audit.jsonl");
        if let Some(dir) = &self.overrides.state_dir {
            // The mirror follows the state dir unless the file placed it elsewhere.
            if config.audit.mirror == default_mirror {
                config.audit.mirror = dir.join("audit.jsonl");
            }
            config.gateway.state_dir.clone_from(dir);
        }
        if let Some(socket) = &self.overrides.admin_socket {
            config.admin.socket.clone_from(socket);
        }
        Ok(config)
    }
}

/// Shared by every subsystem; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    source: ConfigSource,
    config: watch::Sender<Arc<Config>>,
    store: Store,
    key: GatewayKey,
    started_at: i64,
    started: Instant,
    vpn: OnceLock<Arc<Engine>>,
    ssh: OnceLock<SshHandle>,
    aws: crate::aws::AwsState,
    portal: OnceLock<PortalHandle>,
}

/// The outcome of a reload that was accepted.
#[derive(Debug)]
pub struct Reloaded {
    pub config: Arc<Config>,
    /// Keys that changed but need a restart to take effect.
    pub restart_required: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("the reload could not be audited, so it was not applied: {0}")]
    Audit(#[from] StoreError),
}

impl Gateway {
    pub fn new(source: ConfigSource, config: Config, store: Store, key: GatewayKey) -> Self {
        let aws = crate::aws::AwsState::load(&config.gateway.state_dir);
        let (config, _) = watch::channel(Arc::new(config));
        Self {
            inner: Arc::new(Inner {
                source,
                config,
                store,
                key,
                started_at: crate::time_fmt::now_unix(),
                started: Instant::now(),
                vpn: OnceLock::new(),
                ssh: OnceLock::new(),
                aws,
                portal: OnceLock::new(),
            }),
        }
    }

    /// The running config.
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.borrow().clone()
    }

    /// Subsystems that react to reloads watch this.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.inner.config.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn key(&self) -> &GatewayKey {
        &self.inner.key
    }

    /// The WireGuard data plane, once it runs (never when `vpn.enabled` is false).
    pub fn vpn(&self) -> Option<Arc<Engine>> {
        self.inner.vpn.get().cloned()
    }

    /// Records the started data plane; called once by start-up.
    pub fn set_vpn(&self, engine: Arc<Engine>) {
        let _ = self.inner.vpn.set(engine);
    }

    /// The SSH jump host, once it runs (never when `ssh.enabled` is false).
    pub fn ssh(&self) -> Option<SshHandle> {
        self.inner.ssh.get().cloned()
    }

    /// Records the started jump host; called once by start-up.
    pub fn set_ssh(&self, handle: SshHandle) {
        let _ = self.inner.ssh.set(handle);
    }

    /// The AWS provisioner's shared state (apply lock, known elastic IP).
    pub fn aws(&self) -> &crate::aws::AwsState {
        &self.inner.aws
    }

    /// `host:port` for device configs: the configured host, or the elastic
    /// IP with `public_endpoint = "auto"` once the provisioner knows it.
    pub fn vpn_endpoint(&self) -> Option<String> {
        crate::aws::vpn_endpoint(&self.config(), &self.inner.aws)
    }

    /// The portal's base URL, with the elastic IP standing in for "auto".
    pub fn portal_url(&self) -> Option<String> {
        crate::aws::portal_url(&self.config(), &self.inner.aws)
    }

    /// The portal, once it runs (never when `portal.enabled` is false).
    pub fn portal(&self) -> Option<PortalHandle> {
        self.inner.portal.get().cloned()
    }

    /// Records the started portal; called once by start-up.
    pub fn set_portal(&self, handle: PortalHandle) {
        let _ = self.inner.portal.set(handle);
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.inner.source.path
    }

    pub fn started_at(&self) -> i64 {
        self.inner.started_at
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }

    /// Re-reads the config file. An invalid file is refused (and the refusal
    /// audited); the running config stays. `actor` is who asked.
    pub async fn reload(&self, actor: &str, source: &str) -> Result<Reloaded, ReloadError> {
        let loader = self.inner.source.clone();
        let loaded = tokio::task::spawn_blocking(move || loader.load())
            .await
            .unwrap_or_else(|join| {
                Err(ConfigError::Read {
                    path: self.inner.source.path.clone(),
                    source: std::io::Error::other(join),
                })
            });
        let path = self.inner.source.path.display().to_string();
        let event = |kind: &str, detail| NewAuditEvent {
            kind: kind.into(),
            actor: actor.into(),
            source: source.into(),
            target: path.clone(),
            detail,
        };
        let config = match loaded {
            Ok(config) => config,
            Err(err) => {
                let detail =
                    json!({ "problems": err.problems().len().max(1), "error": err.to_string() });
                let refused = event("config.reload.fail", detail);
                self.inner
                    .store
                    .write(move |w| w.audit(refused).map(drop))
                    .await?;
                tracing::warn!(error = %err, "config reload refused; the running config stays");
                return Err(err.into());
            }
        };
        let old = self.config();
        let restart_required = restart_required(&old, &config);
        let detail = json!({ "groups": config.groups.len(), "restart_required": restart_required });
        let accepted = event("config.reload", detail);
        self.inner
            .store
            .write(move |w| w.audit(accepted).map(drop))
            .await?;
        let config = Arc::new(config);
        self.inner.config.send_replace(config.clone());
        tracing::info!(
            groups = config.groups.len(),
            ?restart_required,
            "config reloaded"
        );
        Ok(Reloaded {
            config,
            restart_required,
        })
    }
}

/// Keys whose new value only takes effect after a restart.
fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let checks: [(&'static str, bool); 14] = [
        (
            "gateway.state_dir",
            old.gateway.state_dir != new.gateway.state_dir,
        ),
        ("vpn.listen", old.vpn.listen != new.vpn.listen),
        ("vpn.interface", old.vpn.interface != new.vpn.interface),
        ("vpn.enabled", old.vpn.enabled != new.vpn.enabled),
        ("vpn.pool", old.vpn.pool != new.vpn.pool),
        ("vpn.mtu", old.vpn.mtu != new.vpn.mtu),
        ("ssh.listen", old.ssh.listen != new.ssh.listen),
        ("portal.listen", old.portal.listen != new.portal.listen),
        ("portal.enabled", old.portal.enabled != new.portal.enabled),
        ("portal.tls_cert", old.portal.tls != new.portal.tls),
        (
            "portal.login_lockout",
            old.portal.login_lockout != new.portal.login_lockout,
        ),
        (
            "portal.requests_per_minute",
            old.portal.requests_per_minute != new.portal.requests_per_minute,
        ),
        ("admin.socket", old.admin.socket != new.admin.socket),
        ("audit.mirror", old.audit.mirror != new.audit.mirror),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect()
}
