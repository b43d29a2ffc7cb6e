//! What a reload does with each key of the config file. Every key of the
//! schema (every field of every table in [`super::raw`], `[aws]` and
//! `[[group]]` included) is named here once, with whether the running
//! gateway applies a new value or only reads it at start-up, and how to see
//! that it changed between two [`Config`]s.
//!
//! The tests derive the schema's keys from the raw structs themselves, so a
//! new key without an entry here (or an entry for a key that is gone) fails
//! them; and they change each key in turn to prove its comparison sees
//! exactly that key.
//!
//! Does not own reloading itself: the daemon re-reads the file, swaps the
//! running config, and reports [`restart_required`]; each subsystem reads
//! the keys marked [`Reload::Live`] from the running config when it uses them.

use std::fmt;

use super::{AwsConfig, Config, GroupConfig};

/// When a new value of a key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// On reload: the running gateway reads it from the current config.
    Live,
    /// Read once at start-up (listeners, the data plane, the store, the
    /// gateway's identity): a new value waits for a restart.
    Restart,
}

/// One key of the config file and what a reload does with it.
#[derive(Clone, Copy)]
pub struct ReloadKey {
    /// Dotted as in the file (`vpn.listen`); `group.subnets` stands for the
    /// `subnets` of every `[[group]]`.
    pub key: &'static str,
    pub reload: Reload,
    changed: fn(&Config, &Config) -> bool,
}

impl ReloadKey {
    /// True when this key's value differs between `old` and `new`.
    pub fn changed(&self, old: &Config, new: &Config) -> bool {
        (self.changed)(old, new)
    }
}

impl fmt::Debug for ReloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadKey")
            .field("key", &self.key)
            .field("reload", &self.reload)
            .finish_non_exhaustive()
    }
}

/// Every key of the config file, in the order of the sample config.
pub fn reload_keys() -> &'static [ReloadKey] {
    KEYS
}

/// What a reload does with `key` (dotted, as in [`ReloadKey::key`]).
pub fn reload_of(key: &str) -> Option<Reload> {
    KEYS.iter().find(|k| k.key == key).map(|k| k.reload)
}

/// The keys whose values differ between `old` and `new`, in file order.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.changed(old, new))
        .map(|k| k.key)
        .collect()
}

/// The changed keys that only take effect after a restart, in file order:
/// what a reload from `old` to `new` reports as waiting.
pub fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| k.reload == Reload::Restart && k.changed(old, new))
        .map(|k| k.key)
        .collect()
}

/// Where each key's value is read decides its entry: once at start-up
/// (binding a listener, creating the TUN device, opening the store, loading
/// the WireGuard key) is `restart`; read from the running config at each use
/// (per connection, request, sync or admin call) is `live`.
static KEYS: &[ReloadKey] = &[
    // The SSM parameter holding the WireGuard key is named after it, and is
    // read at start.
    restart("gateway.name", |a, b| a.gateway.name != b.gateway.name),
    // Read for each device config and link (the self-signed certificate,
    // made once, keeps the names it was made for).
    live("gateway.public_endpoint", |a, b| {
        a.gateway.public_endpoint != b.gateway.public_endpoint
    }),
    restart("gateway.state_dir", |a, b| {
        a.gateway.state_dir != b.gateway.state_dir
    }),
    // The store opens its secrets with the key loaded at start.
    restart("gateway.secrets_key_file", |a, b| {
        a.gateway.secrets_key_file != b.gateway.secrets_key_file
    }),
    restart("vpn.enabled", |a, b| a.vpn.enabled != b.vpn.enabled),
    restart("vpn.listen", |a, b| a.vpn.listen != b.vpn.listen),
    restart("vpn.interface", |a, b| a.vpn.interface != b.vpn.interface),
    restart("vpn.pool", |a, b| a.vpn.pool != b.vpn.pool),
    restart("vpn.mtu", |a, b| a.vpn.mtu != b.vpn.mtu),
    live("vpn.max_devices_per_user", |a, b| {
        a.vpn.max_devices_per_user != b.vpn.max_devices_per_user
    }),
    live("vpn.persistent_keepalive", |a, b| {
        a.vpn.persistent_keepalive != b.vpn.persistent_keepalive
    }),
    live("vpn.session_lifetime", |a, b| {
        a.vpn.session_lifetime != b.vpn.session_lifetime
    }),
    live("vpn.require_login", |a, b| {
        a.vpn.require_login != b.vpn.require_login
    }),
    // The masquerade rule is installed with the interface.
    restart("vpn.nat", |a, b| a.vpn.nat != b.vpn.nat),
    // The data plane serves the key it loaded at start.
    restart("vpn.private_key_file", |a, b| {
        a.vpn.private_key_file != b.vpn.private_key_file
    }),
    restart("ssh.enabled", |a, b| a.ssh.enabled != b.ssh.enabled),
    restart("ssh.listen", |a, b| a.ssh.listen != b.ssh.listen),
    live("ssh.allowed_ports", |a, b| {
        a.ssh.allowed_ports != b.ssh.allowed_ports
    }),
    live("ssh.connect_timeout", |a, b| {
        a.ssh.connect_timeout != b.ssh.connect_timeout
    }),
    live("ssh.idle_timeout", |a, b| {
        a.ssh.idle_timeout != b.ssh.idle_timeout
    }),
    live("ssh.max_connections_per_user", |a, b| {
        a.ssh.max_connections_per_user != b.ssh.max_connections_per_user
    }),
    live("ssh.max_channels_per_user", |a, b| {
        a.ssh.max_channels_per_user != b.ssh.max_channels_per_user
    }),
    live("ssh.require_totp", |a, b| {
        a.ssh.require_totp != b.ssh.require_totp
    }),
    // Both startup limits are read at each accepted connection.
    live("ssh.max_startups", |a, b| {
        a.ssh.max_startups != b.ssh.max_startups
    }),
    live("ssh.max_startups_per_source", |a, b| {
        a.ssh.max_startups_per_source != b.ssh.max_startups_per_source
    }),
    // The jump host serves the key it loaded at start.
    restart("ssh.host_key_file", |a, b| {
        a.ssh.host_key_file != b.ssh.host_key_file
    }),
    live("ssh.login_grace_time", |a, b| {
        a.ssh.login_grace_time != b.ssh.login_grace_time
    }),
    // The CA key is loaded at start when certificates are on.
    restart("ssh.certificates", |a, b| {
        a.ssh.certificates != b.ssh.certificates
    }),
    restart("ssh.ca_key_file", |a, b| {
        a.ssh.ca_key_file != b.ssh.ca_key_file
    }),
    restart("ssh.host_ca_key_file", |a, b| {
        a.ssh.host_ca_key_file != b.ssh.host_ca_key_file
    }),
    live("ssh.host_join", |a, b| a.ssh.host_join != b.ssh.host_join),
    live("ssh.host_join_signer_file", |a, b| {
        a.ssh.host_join_signer_file != b.ssh.host_join_signer_file
    }),
    live("ssh.host_join_window", |a, b| {
        a.ssh.host_join_window != b.ssh.host_join_window
    }),
    live("ssh.host_cert_lifetime", |a, b| {
        a.ssh.host_cert_lifetime != b.ssh.host_cert_lifetime
    }),
    live("ssh.cert_lifetime", |a, b| {
        a.ssh.cert_lifetime != b.ssh.cert_lifetime
    }),
    restart("portal.enabled", |a, b| {
        a.portal.enabled != b.portal.enabled
    }),
    restart("portal.listen", |a, b| a.portal.listen != b.portal.listen),
    live("portal.url", |a, b| a.portal.url != b.portal.url),
    // The certificate and key are loaded when the portal starts.
    restart("portal.tls_cert", |a, b| tls(a, b, |t| &t.cert)),
    restart("portal.tls_key", |a, b| tls(a, b, |t| &t.key)),
    live("portal.password_login", |a, b| {
        a.portal.password_login != b.portal.password_login
    }),
    live("portal.require_totp", |a, b| {
        a.portal.require_totp != b.portal.require_totp
    }),
    live("portal.enrollment_ttl", |a, b| {
        a.portal.enrollment_ttl != b.portal.enrollment_ttl
    }),
    live("portal.session_idle", |a, b| {
        a.portal.session_idle != b.portal.session_idle
    }),
    live("portal.session_max", |a, b| {
        a.portal.session_max != b.portal.session_max
    }),
    // The login and request limiters are built when the portal starts.
    restart("portal.login_lockout", |a, b| {
        a.portal.login_lockout != b.portal.login_lockout
    }),
    restart("portal.requests_per_minute", |a, b| {
        a.portal.requests_per_minute != b.portal.requests_per_minute
    }),
    // Read at each request of the auditor's view.
    live("portal.auditor_groups", |a, b| {
        a.portal.auditor_groups != b.portal.auditor_groups
    }),
    restart("admin.socket", |a, b| a.admin.socket != b.admin.socket),
    // The socket's group is set when it is bound.
    restart("admin.group", |a, b| a.admin.group != b.admin.group),
    restart("metrics.listen", |a, b| {
        a.metrics.listen != b.metrics.listen
    }),
    // The mirror and its rotation are set up when the store opens.
    restart("audit.mirror", |a, b| a.audit.mirror != b.audit.mirror),
    restart("audit.mirror_max_mib", |a, b| {
        a.audit.mirror_max_bytes != b.audit.mirror_max_bytes
    }),
    restart("audit.mirror_keep", |a, b| {
        a.audit.mirror_keep != b.audit.mirror_keep
    }),
    // The syslog exporter connects with what it read at start.
    restart("audit.syslog.address", |a, b| {
        syslog(a, b, |s| (s.host.clone(), s.port))
    }),
    restart("audit.syslog.server_name", |a, b| {
        syslog(a, b, |s| s.server_name.clone())
    }),
    restart("audit.syslog.ca_file", |a, b| {
        syslog(a, b, |s| s.ca_file.clone())
    }),
    restart("audit.syslog.client_cert_file", |a, b| {
        syslog(a, b, |s| s.client_auth.as_ref().map(|t| t.cert.clone()))
    }),
    restart("audit.syslog.client_key_file", |a, b| {
        syslog(a, b, |s| s.client_auth.as_ref().map(|t| t.key.clone()))
    }),
    restart("audit.syslog.app_name", |a, b| {
        syslog(a, b, |s| s.app_name.clone())
    }),
    restart("audit.syslog.hostname", |a, b| {
        syslog(a, b, |s| s.hostname.clone())
    }),
    // The checkpointer reads its cadence at start.
    restart("audit.checkpoint_interval", |a, b| {
        a.audit.checkpoint_interval != b.audit.checkpoint_interval
    }),
    // The data plane sizes each device's flow table for the minute when
    // the device's first packet of that minute comes.
    live("audit.flows_per_device", |a, b| {
        a.audit.flows_per_device != b.audit.flows_per_device
    }),
    // The S3 exporter writes with what it read at start.
    restart("audit.s3.bucket", |a, b| s3(a, b, |s| s.bucket.clone())),
    restart("audit.s3.prefix", |a, b| s3(a, b, |s| s.prefix.clone())),
    restart("audit.s3.retention", |a, b| s3(a, b, |s| s.retention)),
    // The policy is rebuilt from the running config.
    live("group.name", |a, b| groups(a, b, |g| &g.name)),
    live("group.subnets", |a, b| groups(a, b, |g| &g.subnets)),
    live("group.ports", |a, b| groups(a, b, |g| &g.ports)),
    live("group.oidc_groups", |a, b| groups(a, b, |g| &g.oidc_groups)),
    live("group.ssh_principals", |a, b| {
        groups(a, b, |g| &g.ssh_principals)
    }),
    // Each `accessctl aws` call connects afresh from the running config;
    // `apply_on_start` only ever matters at a start, so it waits for none.
    live("aws.region", |a, b| aws(a, b, |c| &c.region)),
    live("aws.apply_on_start", |a, b| {
        aws(a, b, |c| &c.apply_on_start)
    }),
    live("aws.exclusive_groups", |a, b| {
        aws(a, b, |c| &c.exclusive_groups)
    }),
    live("aws.private_route_tables", |a, b| {
        aws(a, b, |c| &c.private_route_tables)
    }),
    live("aws.admin_cidrs", |a, b| aws(a, b, |c| &c.admin_cidrs)),
    live("aws.public_cidrs", |a, b| aws(a, b, |c| &c.public_cidrs)),
    live("aws.endpoint_url", |a, b| aws(a, b, |c| &c.endpoint_url)),
    live("aws.imds_endpoint", |a, b| aws(a, b, |c| &c.imds_endpoint)),
    live("aws.instance_id", |a, b| {
        aws(a, b, |c| &c.discovery.instance_id)
    }),
    live("aws.network_interface_id", |a, b| {
        aws(a, b, |c| &c.discovery.network_interface_id)
    }),
    live("aws.vpc_id", |a, b| aws(a, b, |c| &c.discovery.vpc_id)),
    live("aws.subnet_id", |a, b| {
        aws(a, b, |c| &c.discovery.subnet_id)
    }),
    live("aws.availability_zone", |a, b| {
        aws(a, b, |c| &c.discovery.availability_zone)
    }),
    // The store is opened, and the lease's timing set, at start-up.
    restart("store.url", |a, b| store(a, b, |s| &s.url)),
    restart("store.password_file", |a, b| {
        store(a, b, |s| &s.password_file)
    }),
    restart("store.ca_file", |a, b| store(a, b, |s| &s.ca_file)),
    restart("ha.node", |a, b| ha(a, b, |h| &h.node)),
    restart("ha.lease_ttl", |a, b| ha(a, b, |h| &h.lease_ttl)),
    // The provider's client is built at start (discovery, its TLS roots);
    // the rest is read at each login.
    restart("oidc.issuer", |a, b| oidc(a, b, |o| &o.issuer)),
    restart("oidc.client_id", |a, b| oidc(a, b, |o| &o.client_id)),
    restart("oidc.client_secret_file", |a, b| {
        oidc(a, b, |o| &o.client_secret_file)
    }),
    restart("oidc.ca_file", |a, b| oidc(a, b, |o| &o.ca_file)),
    live("oidc.display_name", |a, b| oidc(a, b, |o| &o.display_name)),
    live("oidc.scopes", |a, b| oidc(a, b, |o| &o.scopes)),
    live("oidc.groups_claim", |a, b| oidc(a, b, |o| &o.groups_claim)),
    live("oidc.username_claim", |a, b| {
        oidc(a, b, |o| &o.username_claim)
    }),
    live("oidc.allowed_email_domains", |a, b| {
        oidc(a, b, |o| &o.allowed_email_domains)
    }),
    live("oidc.email_verified", |a, b| {
        oidc(a, b, |o| &o.email_verified)
    }),
    live("oidc.auto_provision", |a, b| {
        oidc(a, b, |o| &o.auto_provision)
    }),
    live("oidc.require_totp", |a, b| oidc(a, b, |o| &o.require_totp)),
    live("oidc.totp_enrollment", |a, b| {
        oidc(a, b, |o| &o.totp_enrollment)
    }),
];

const fn live(key: &'static str, changed: fn(&Config, &Config) -> bool) -> ReloadKey {
    ReloadKey {
        key,
        reload: Reload::Live,
        changed,
    }
}

const fn restart(key: &'static str, changed: fn(&Config, &Config) -> bool) -> ReloadKey {
    ReloadKey {
        key,
        reload: Reload::Restart,
        changed,
    }
}

/// A field of the TLS files (none at all counts as a value too).
fn tls<T: PartialEq>(a: &Config, b: &Config, field: impl Fn(&super::TlsFiles) -> &T) -> bool {
    a.portal.tls.as_ref().map(&field) != b.portal.tls.as_ref().map(&field)
}

/// A field of the groups, position by position (a group added or removed
/// changes every group key).
fn groups<T: PartialEq>(a: &Config, b: &Config, field: impl Fn(&GroupConfig) -> &T) -> bool {
    a.groups.iter().map(&field).ne(b.groups.iter().map(&field))
}

/// A field of `[aws]` (adding or removing the section changes every one).
fn aws<T: PartialEq>(a: &Config, b: &Config, field: impl Fn(&AwsConfig) -> &T) -> bool {
    a.aws.as_ref().map(&field) != b.aws.as_ref().map(&field)
}

/// A field of `[audit.syslog]` (adding or removing the section changes
/// every one).
fn syslog<T: PartialEq>(a: &Config, b: &Config, field: impl Fn(&super::SyslogConfig) -> T) -> bool {
    a.audit.syslog.as_ref().map(&field) != b.audit.syslog.as_ref().map(&field)
}

/// A field of `[audit.s3]` (adding or removing the section changes every
/// one).
fn s3<T: PartialEq>(a: &Config, b: &Config, field: impl Fn(&super::S3ExportConfig) -> T) -> bool {
    a.audit.s3.as_ref().map(&field) != b.audit.s3.as_ref().map(&field)
}

/// A field of `[store]` (adding or removing the section changes every one).
fn store<T: PartialEq>(a: &Config, b: &Config, field: impl Fn(&super::StoreConfig) -> &T) -> bool {
    a.store.as_ref().map(&field) != b.store.as_ref().map(&field)
}

/// A field of `[ha]` (adding or removing the section changes every one).
fn ha<T: PartialEq>(a: &Config, b: &Config, field: impl Fn(&super::HaConfig) -> &T) -> bool {
    a.ha.as_ref().map(&field) != b.ha.as_ref().map(&field)
}

/// A field of `[oidc]` (adding or removing the section changes every one).
fn oidc<T: PartialEq>(a: &Config, b: &Config, field: impl Fn(&super::OidcConfig) -> &T) -> bool {
    a.oidc.as_ref().map(&field) != b.oidc.as_ref().map(&field)
}

#[cfg(any(test, feature = "test-support"))]
pub mod examples;
#[cfg(test)]
mod tests;
