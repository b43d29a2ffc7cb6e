//! The config file: one TOML file (default `/etc/gatehouse/gatehouse.toml`),
//! parsed into [`raw`] structs, then validated into a typed [`Config`].
//! Every problem is reported at once, each naming file, line, column and key.
//! [`reload_keys`] says, for every key, whether a reload applies it or it
//! waits for a restart.

mod raw;
mod reload;
mod source_map;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::policy::{GroupRule, Policy};

#[cfg(feature = "test-support")]
pub use reload::examples as reload_examples;
pub use reload::{Reload, ReloadKey, changed_keys, reload_keys, reload_of, restart_required};

/// Where `accessd` looks when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/gatehouse/gatehouse.toml";

/// The admin API's Unix socket when `admin.socket` is not set, and where
/// `accessctl` looks when no `--socket` is given.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/gatehouse/admin.sock";

/// The audit log mirror's file name; without `audit.mirror` it lives in
/// `gateway.state_dir`. Rotated files add `.1`, `.2`, ...
pub const AUDIT_MIRROR_FILE: &str = "audit.jsonl";
/// `audit.flows_per_device` when the file does not say.
pub const DEFAULT_FLOWS_PER_DEVICE: u32 = 32;
/// The largest `audit.flows_per_device`: each active device's flow table
/// holds this many slots, looked up on every packet.
pub const MAX_FLOWS_PER_DEVICE: u32 = 1024;

/// The validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub vpn: VpnConfig,
    pub ssh: SshConfig,
    pub portal: PortalConfig,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    pub audit: AuditConfig,
    pub groups: Vec<GroupConfig>,
    /// `None`: no AWS call is ever made.
    pub aws: Option<AwsConfig>,
    /// `[store]`: the shared PostgreSQL database; `None` is SQLite under
    /// `gateway.state_dir`.
    pub store: Option<StoreConfig>,
    /// `[ha]`: one gateway of an active/standby pair (needs `[store]`).
    pub ha: Option<HaConfig>,
    /// `[oidc]`: sign-in with the team's OpenID Connect provider.
    pub oidc: Option<OidcConfig>,
}

/// `[oidc]`. The redirect URI is `<portal url>/oidc/callback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// `https://...` (plain `http://` only on loopback), without a trailing
    /// slash; discovery is at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The client secret (0600); `None`: a public client (PKCE only).
    pub client_secret_file: Option<PathBuf>,
    /// The button says "Sign in with <display_name>".
    pub display_name: String,
    /// Always includes `openid`.
    pub scopes: Vec<String>,
    pub groups_claim: String,
    pub username_claim: String,
    /// Lowercase; empty: any.
    pub allowed_email_domains: Vec<String>,
    /// Whether an email passes `allowed_email_domains` only when the token
    /// says it is verified.
    pub email_verified: EmailVerified,
    /// A first login whose groups map to gatehouse groups creates an
    /// active member.
    pub auto_provision: bool,
    /// After the provider, members also give a TOTP code.
    pub require_totp: bool,
    /// Where a member's first authenticator app comes from.
    pub totp_enrollment: TotpEnrollment,
    /// Extra roots (PEM) for the provider's TLS, beside the system's.
    pub ca_file: Option<PathBuf>,
}

/// `oidc.totp_enrollment`: with `oidc.require_totp`, where a member who
/// has no authenticator app yet gets their first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpEnrollment {
    /// Only from an enrollment link an admin issues (the default): the
    /// provider's word alone never sets up the second factor, so whoever
    /// first passes the provider as a member cannot make it theirs.
    AdminLink,
    /// At the member's first SSO login, right after the provider; the
    /// member stays pending (no session, no config, no certificate) until
    /// the code step is done.
    FirstLogin,
}

/// `oidc.email_verified`: which emails count for `allowed_email_domains`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailVerified {
    /// Only an email the token marks `email_verified: true` (the default):
    /// otherwise anyone who may type an address at the provider chooses
    /// their domain.
    Required,
    /// An email counts unless the token marks it unverified: for providers
    /// that send no such claim (Microsoft Entra ID), whose emails the
    /// directory's administrators set.
    IfPresent,
}

impl EmailVerified {
    /// Does an email whose token says `claim` count?
    pub fn accepts(self, claim: Option<bool>) -> bool {
        match self {
            EmailVerified::Required => claim == Some(true),
            EmailVerified::IfPresent => claim != Some(false),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Tags AWS resources and names the SSM parameter.
    pub name: String,
    pub public_endpoint: PublicEndpoint,
    pub state_dir: PathBuf,
    /// The key that seals the store's secrets (32 bytes base64, 0600),
    /// shared by both gateways of a pair; `None`: with `[aws]` in SSM,
    /// otherwise made once under `state_dir`.
    pub secrets_key_file: Option<PathBuf>,
}

/// The host name or address that device configs and links point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicEndpoint {
    /// The elastic IP the AWS provisioner manages.
    Auto,
    Host(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct VpnConfig {
    /// False: no WireGuard at all (an SSH-only gateway).
    pub enabled: bool,
    pub listen: SocketAddr,
    pub interface: String,
    /// Device addresses come from here; its first host is the gateway's.
    pub pool: IpNet,
    pub mtu: u16,
    pub persistent_keepalive: u16,
    /// Devices one user may have (each holds an address of the pool).
    pub max_devices_per_user: u32,
    pub session_lifetime: Duration,
    pub require_login: bool,
    pub nat: NatMode,
    /// A WireGuard private key file the gateways of a pair share (never
    /// created; without it the key is under `state_dir`, or in SSM with
    /// `[aws]`).
    pub private_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMode {
    /// The kernel forwards; VPC routes bring replies back to the gateway.
    Route,
    /// Source addresses are rewritten to the gateway's.
    Masquerade,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SshConfig {
    /// False: no SSH jump host at all (a VPN-only gateway).
    pub enabled: bool,
    pub listen: SocketAddr,
    pub allowed_ports: Vec<u16>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_channels_per_user: u32,
    /// Logged-in jump host connections one user may hold at once.
    pub max_connections_per_user: u32,
    pub require_totp: bool,
    /// Unauthenticated connections allowed at once, overall ...
    pub max_startups: u32,
    /// ... and from one source address.
    pub max_startups_per_source: u32,
    /// A connection that has not authenticated after this long is closed.
    pub login_grace_time: Duration,
    /// The host key shared by every gateway of a pair (OpenSSH format,
    /// 0600); `None`: generated once under `gateway.state_dir`.
    pub host_key_file: Option<PathBuf>,
    /// The gateway is the team's SSH user CA: it issues members short-lived
    /// OpenSSH certificates (key from `ca_key_file`, or under `state_dir`,
    /// or SSM with `[aws]`).
    pub certificates: bool,
    /// The user CA key shared by every gateway of a pair (OpenSSH format,
    /// 0600, never created); `None`: SSM with `[aws]`, else generated once
    /// under `gateway.state_dir`.
    pub ca_key_file: Option<PathBuf>,
    /// The same for the SSH host CA, which signs the private hosts'
    /// certificates (on with `certificates`).
    pub host_ca_key_file: Option<PathBuf>,
    /// The longest a certificate is valid (never past the member's expiry).
    pub cert_lifetime: Duration,
    /// The longest a private host's certificate is valid, and the default.
    pub host_cert_lifetime: Duration,
    /// Private EC2 hosts get their certificate by instance identity
    /// (`POST /api/v1/hosts/join` on the portal; needs `[aws]`).
    pub host_join: bool,
    /// The region's AWS certificate (PEM) that signs instance identity
    /// documents (the RSA-2048 one); required with `host_join`.
    pub host_join_signer_file: Option<PathBuf>,
    /// A document is accepted this long after its instance launched.
    pub host_join_window: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortalConfig {
    /// false: no portal listener (enrollment links then cannot be used).
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The base URL people open; derived from the endpoint when not given.
    pub url: Option<String>,
    pub tls: Option<TlsFiles>,
    pub require_totp: bool,
    /// false: SSO only (the password form is hidden and its API refused).
    pub password_login: bool,
    pub enrollment_ttl: Duration,
    /// A session ends after this long without a request ...
    pub session_idle: Duration,
    /// ... and this long after login, whatever happens.
    pub session_max: Duration,
    /// How long a user or source stays locked out after too many failed logins.
    pub login_lockout: Duration,
    /// Requests per minute one source address may make (burst: the same).
    pub requests_per_minute: u32,
    /// Members of these groups (in good standing) see the read-only
    /// auditor's view (`/audit`); being in one grants no network access.
    pub auditor_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub socket: PathBuf,
    /// The group that owns the socket (mode 0660), when it exists.
    pub group: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// The JSON-lines mirror of the audit log.
    pub mirror: PathBuf,
    /// The mirror is rotated once it reaches this size (0: never) ...
    pub mirror_max_bytes: u64,
    /// ... keeping this many older files (`audit.jsonl.1` the newest).
    pub mirror_keep: u32,
    /// The active gateway signs a checkpoint of the chain at least this
    /// often while records come in (1 s to 60 s).
    pub checkpoint_interval: Duration,
    /// `vpn.flow` records per device and minute, beyond which a device's
    /// flows are counted in one "other" record
    /// ([`MAX_FLOWS_PER_DEVICE`] at most).
    pub flows_per_device: u32,
    /// `[audit.syslog]`: every record streamed to the team's syslog over TLS.
    pub syslog: Option<SyslogConfig>,
    /// `[audit.s3]`: the records and checkpoints anchored in S3 with Object
    /// Lock (needs `[aws]`).
    pub s3: Option<S3ExportConfig>,
}

/// `[audit.s3]`: where the audit export's objects go, and how long S3
/// keeps each one locked (compliance mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3ExportConfig {
    /// A bucket created with Object Lock enabled.
    pub bucket: String,
    /// The key prefix, without leading or trailing slashes (may be empty).
    pub prefix: String,
    /// How long each object stays locked after it is written.
    pub retention: Duration,
}

/// `[audit.syslog]`: where the audit records stream to, as RFC 5424
/// messages over TLS (RFC 5425).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// The receiver's host name or address (an IPv6 address without
    /// brackets) ...
    pub host: String,
    /// ... and TCP port (6514 is syslog over TLS's).
    pub port: u16,
    /// The name the receiver's certificate must carry (default: the host).
    pub server_name: String,
    /// PEM certificates that sign the receiver's; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The gateway's client certificate and key (PEM), for receivers that
    /// ask for one.
    pub client_auth: Option<TlsFiles>,
    /// Each message's APP-NAME (1 to 48 printable ASCII characters).
    pub app_name: String,
    /// Each message's HOSTNAME (default: `gateway.name`).
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub name: String,
    pub subnets: Vec<IpNet>,
    pub ports: Option<Vec<u16>>,
    /// The identity provider's group names (or ids) that grant this group
    /// at an SSO login.
    pub oidc_groups: Vec<String>,
    /// The login names this group's members may use on its hosts: the
    /// principals of their SSH certificates.
    pub ssh_principals: Vec<String>,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `postgresql://USER@HOST:PORT/DB?sslmode=...`, never with a password.
    pub url: String,
    /// A file holding the password (else `PGPASSWORD`).
    pub password_file: Option<PathBuf>,
    /// PEM certificates that sign the server's, for TLS.
    pub ca_file: Option<PathBuf>,
}

/// `[ha]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// This gateway's name in the pair, unique per instance.
    pub node: String,
    /// How long the lease lasts unrenewed: the standby takes over this long
    /// after the active stops renewing.
    pub lease_ttl: Duration,
}

/// The shortest and longest `ha.lease_ttl`: renewals run every second, so
/// a shorter lease would be lost to one slow round trip; a longer one makes
/// failover slow for nothing.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub imds_endpoint: Option<String>,
    pub apply_on_start: bool,
    /// Detach the instance's other security groups that open TCP 22, the
    /// portal or the jump port wider than configured (default: only warn).
    pub exclusive_groups: bool,
    pub private_route_tables: Vec<String>,
    pub admin_cidrs: Vec<IpNet>,
    pub public_cidrs: Vec<IpNet>,
    /// Facts normally discovered from instance metadata (IMDSv2); each one
    /// set here wins, so tests and off-instance runs need no metadata service.
    pub discovery: AwsDiscoveryOverrides,
}

/// `[aws]` keys that replace what instance metadata would say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsDiscoveryOverrides {
    pub instance_id: Option<String>,
    pub network_interface_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub availability_zone: Option<String>,
}

impl AwsDiscoveryOverrides {
    /// True when every fact is given, so discovery needs no metadata service
    /// (the region comes from `aws.region` or the AWS environment then).
    pub fn complete(&self) -> bool {
        self.instance_id.is_some()
            && self.network_interface_id.is_some()
            && self.vpc_id.is_some()
            && self.subnet_id.is_some()
            && self.availability_zone.is_some()
    }
}

/// A config that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The dotted key path, e.g. `group[1].subnets[0]`; empty for a syntax error.
    pub key: String,
    pub message: String,
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Validates config `text`; `file` names it in messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        validate::parse(text, file)
    }

    /// The access policy of this config.
    pub fn policy(&self) -> Policy {
        let groups = self.groups.iter().map(|g| {
            let rule = GroupRule {
                subnets: g.subnets.clone(),
                ports: g.ports.as_ref().map(|p| p.iter().copied().collect()),
            };
            (g.name.clone(), rule)
        });
        Policy::new(groups).with_gateway_addrs([self.vpn.gateway_address()])
    }

    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// `host:port` for device configs, once the host is known.
    pub fn vpn_endpoint(&self) -> Option<String> {
        match &self.gateway.public_endpoint {
            PublicEndpoint::Auto => None,
            PublicEndpoint::Host(host) => Some(host_port(host, self.vpn.listen.port())),
        }
    }

    /// The portal's base URL (no trailing slash), once the host is known.
    pub fn portal_url(&self) -> Option<String> {
        if let Some(url) = &self.portal.url {
            return Some(url.trim_end_matches('/').to_string());
        }
        let PublicEndpoint::Host(host) = &self.gateway.public_endpoint else {
            return None;
        };
        Some(match self.portal.listen.port() {
            443 => format!("https://{}", bracket_v6(host)),
            port => format!("https://{}", host_port(host, port)),
        })
    }
}

impl VpnConfig {
    /// The gateway's own tunnel address: the pool's first host.
    pub fn gateway_address(&self) -> IpAddr {
        validate::first_host(&self.pool)
    }
}

impl ConfigError {
    /// The problems of an invalid file (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            Self::Read { .. } => &[],
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    let count = problems.len();
    let noun = if count == 1 { "problem" } else { "problems" };
    let mut out = format!("{file}: {count} {noun}");
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn host_port(host: &str, port: u16) -> String {
    format!("{}:{port}", bracket_v6(host))
}
