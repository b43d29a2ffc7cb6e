//! What start-up started: the data plane, the jump host, the portal, the
//! HA role and the audit log's exporters.
//! Built once by [`crate::run`] and handed only to those that report on them
//! (the admin API's status and SSH channel handlers). Nothing looks it up.

use std::sync::Arc;

use crate::export::ExportHandle;
use crate::ha::Ha;
use crate::portal::PortalHandle;
use crate::ssh::SshHandle;
use crate::vpn::engine::Engine;

/// The running subsystems; `None` for one the config disables.
#[derive(Clone, Default)]
pub struct Running {
    pub vpn: Option<Arc<Engine>>,
    pub ssh: Option<SshHandle>,
    pub portal: Option<PortalHandle>,
    /// One of an HA pair (`[ha]`).
    pub ha: Option<Ha>,
    /// The audit log's exporters (`[audit.syslog]`).
    pub exports: Vec<ExportHandle>,
}
