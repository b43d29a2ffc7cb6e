//! The core every subsystem takes: the running config (swapped atomically on
//! reload), the store, the gateway's identity keys, the host's own addresses,
//! the login budgets, what it remembers of AWS (the elastic IP, the apply
//! lock) and its start time. It owns config reloading.
//!
//! It imports nothing from the subsystems (data plane, jump host, portal,
//! admin API, provisioner): they take a [`Core`], never the other way round.
//! What is running is recorded by start-up in [`crate::running::Running`]
//! and handed only to those that need it. It owns no task.

mod aws_state;
mod config_source;
mod reload;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use gatehouse_config::Config;
use russh::keys::PrivateKey;
use tokio::sync::watch;

pub use aws_state::{AwsState, ELASTIC_IP_FILE};
pub use config_source::{ConfigSource, Overrides};
pub use reload::{ReloadError, Reloaded};

use crate::auth::LoginBudget;
use crate::host_addrs::HostAddrs;
use crate::keys::ssh_ca_key::{HostCa, UserCa};
use crate::keys::wireguard::GatewayKey;
use crate::store::Store;

/// The keys that are the gateway's identity to clients.
pub struct Keys {
    /// The WireGuard static key (device configs pin its public half).
    pub wireguard: GatewayKey,
    /// The jump host's SSH host key (`known_hosts` pins its public half).
    pub ssh_host: PrivateKey,
    /// The SSH user CA (`ssh.certificates` at start).
    pub user_ca: Option<UserCa>,
    /// The SSH host CA (`ssh.certificates` at start).
    pub host_ca: Option<HostCa>,
}

/// Shared by every subsystem; cheap to clone.
#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

struct Inner {
    source: ConfigSource,
    config: watch::Sender<Arc<Config>>,
    store: Store,
    keys: Keys,
    host_addrs: HostAddrs,
    aws: AwsState,
    /// Every login's budget, shared by the portal and the jump host.
    login_budget: Arc<LoginBudget>,
    started_at: i64,
    started: Instant,
}

impl Core {
    pub fn new(
        source: ConfigSource,
        config: Config,
        store: Store,
        keys: Keys,
        host_addrs: HostAddrs,
    ) -> Self {
        let aws = AwsState::load(&config.gateway.state_dir);
        let (config, _) = watch::channel(Arc::new(config));
        Self {
            inner: Arc::new(Inner {
                source,
                config,
                store,
                keys,
                host_addrs,
                aws,
                login_budget: LoginBudget::new(),
                started_at: crate::time_fmt::now_unix(),
                started: Instant::now(),
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

    /// The gateway's WireGuard key.
    pub fn key(&self) -> &GatewayKey {
        &self.inner.keys.wireguard
    }

    /// The jump host's SSH host key.
    pub fn ssh_host_key(&self) -> &PrivateKey {
        &self.inner.keys.ssh_host
    }

    /// The SSH user CA, when `ssh.certificates` was on at start.
    pub fn user_ca(&self) -> Option<&UserCa> {
        self.inner.keys.user_ca.as_ref()
    }

    /// The SSH host CA, when `ssh.certificates` was on at start.
    pub fn host_ca(&self) -> Option<&HostCa> {
        self.inner.keys.host_ca.as_ref()
    }

    /// The host's own addresses (always refused by policy).
    pub fn host_addrs(&self) -> &HostAddrs {
        &self.inner.host_addrs
    }

    /// What the gateway remembers of AWS (apply lock, known elastic IP).
    pub fn aws(&self) -> &AwsState {
        &self.inner.aws
    }

    /// The login budgets of members and sources (portal and jump host).
    pub fn login_budget(&self) -> &Arc<LoginBudget> {
        &self.inner.login_budget
    }

    pub fn config_path(&self) -> &Path {
        &self.inner.source.path
    }

    pub fn started_at(&self) -> i64 {
        self.inner.started_at
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.inner.started.elapsed()
    }
}
