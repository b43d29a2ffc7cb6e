//! The access service: every operation that more than one front door
//! performs (the admin API, the portal, SSO, the SSH certificates),
//! written once with its checks, its audit record and its error cases.
//!
//! - [`devices`]: create and revoke a device, list devices with their live
//!   data plane fields, and build a device's config (endpoint, AllowedIPs,
//!   DNS/MTU/keepalive) — the one place a device is created;
//! - [`users`]: create, change and remove users and their SSH keys, a
//!   user's detail and VPN access state;
//! - [`sso`]: who an SSO login is: the identity link, the groups mapped
//!   from the provider's at every login, provisioning;
//! - [`certs`]: members' SSH certificates (who, which key, principals,
//!   lifetime, `source-address`), the CA's public side, the KRL;
//! - [`public`]: what clients are told to connect to: the VPN endpoint, the
//!   portal URL (with the elastic IP standing in for `"auto"`), enrollment
//!   links and the jump host's `known_hosts` line;
//! - [`review`]: what an audit review query means (`accessctl audit`, the
//!   portal's auditor view): its times, networks and page size, checked
//!   once.
//!
//! Front doors parse, call and render; they decide nothing about endpoints,
//! policy or audit detail. Does not own the data (the store) or the policy
//! rules (`gatehouse_config::policy`).

pub mod certs;
pub mod devices;
#[cfg(test)]
mod host_cert_tests;
pub mod host_certs;
pub mod host_join;
pub mod public;
pub mod review;
pub mod sso;
#[cfg(test)]
mod tests;
pub mod user_error;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::audit::event::{Actor, Source};
use crate::gateway::Core;
use crate::vpn::engine::Engine;

pub use devices::{KeyOrigin, LivePeers, device_info};
pub use public::JumpHost;

/// Who asks, from where, and through which door (audited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub actor: Actor,
    pub source: Source,
    pub door: Door,
}

/// The front door a request came through (`via` in audit details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Door {
    /// `accessctl` on the admin socket.
    Admin,
    /// The member's own portal session.
    Portal,
}

impl Door {
    /// The `via` of audit details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Portal => "portal",
        }
    }
}

/// The service; cheap to clone.
#[derive(Clone)]
pub struct Access {
    core: Core,
    /// The running data plane, for live device fields (`None`: not running).
    vpn: Option<Arc<Engine>>,
    /// The running jump host, for `known_hosts` lines (`None`: not running).
    jump_host: Option<SocketAddr>,
    /// The AWS session (`[aws]`), for hosts joining by instance identity.
    aws: Option<Arc<crate::aws::Session>>,
    /// Held while a host joins (`host_join`): one at a time.
    join_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Access {
    /// `vpn` and `jump_host` are what start-up started: the data plane, and
    /// the jump host's bound address.
    pub fn new(core: Core, vpn: Option<Arc<Engine>>, jump_host: Option<SocketAddr>) -> Self {
        Self {
            core,
            vpn,
            jump_host,
            aws: None,
            join_lock: Arc::default(),
        }
    }

    /// The same service with the AWS session start-up connected.
    pub fn with_aws(self, aws: Option<Arc<crate::aws::Session>>) -> Self {
        Self { aws, ..self }
    }

    pub fn core(&self) -> &Core {
        &self.core
    }
}
