//! The config file exactly as written: serde structs with every default
//! filled in. Values that need checking (addresses, subnets, durations) stay
//! strings here, so that validation can report all of their problems at once
//! rather than serde stopping at the first.
//!
//! Tests serialize these structs to list the schema's keys (see
//! `reload.rs`), hence `Serialize` under `cfg(test)`.

use serde::Deserialize;

use super::DEFAULT_FLOWS_PER_DEVICE;

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub gateway: RawGateway,
    pub vpn: RawVpn,
    pub ssh: RawSsh,
    pub portal: RawPortal,
    pub admin: RawAdmin,
    pub metrics: RawMetrics,
    pub audit: RawAudit,
    #[serde(rename = "group")]
    pub groups: Vec<RawGroup>,
    pub aws: Option<RawAws>,
    pub store: Option<RawStore>,
    pub ha: Option<RawHa>,
    pub oidc: Option<RawOidc>,
}

/// `[oidc]`: members sign in with the team's OpenID Connect provider.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOidc {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_file: Option<String>,
    pub display_name: Option<String>,
    pub scopes: Vec<String>,
    pub groups_claim: String,
    pub username_claim: String,
    pub allowed_email_domains: Vec<String>,
    pub email_verified: String,
    pub totp_enrollment: String,
    pub auto_provision: bool,
    pub require_totp: bool,
    pub ca_file: Option<String>,
}

impl Default for RawOidc {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret_file: None,
            display_name: None,
            scopes: ["openid", "email", "profile", "groups"]
                .map(String::from)
                .to_vec(),
            groups_claim: "groups".into(),
            username_claim: "preferred_username".into(),
            allowed_email_domains: Vec::new(),
            email_verified: "required".into(),
            totp_enrollment: "admin_link".into(),
            auto_provision: false,
            require_totp: false,
            ca_file: None,
        }
    }
}

/// `[store]`: the shared PostgreSQL database (without it, SQLite under
/// `state_dir`).
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStore {
    pub url: String,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
}

/// `[ha]`: this gateway is one of a pair.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHa {
    pub node: String,
    pub lease_ttl: String,
}

impl Default for RawHa {
    fn default() -> Self {
        Self {
            node: String::new(),
            lease_ttl: "5s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawGateway {
    pub name: Option<String>,
    pub public_endpoint: String,
    pub state_dir: String,
    pub secrets_key_file: Option<String>,
}

impl Default for RawGateway {
    fn default() -> Self {
        Self {
            name: None,
            public_endpoint: "auto".into(),
            state_dir: "/var/lib/gatehouse".into(),
            secrets_key_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawVpn {
    pub enabled: bool,
    pub listen: String,
    pub interface: String,
    pub pool: String,
    pub mtu: u16,
    pub persistent_keepalive: u16,
    pub max_devices_per_user: u32,
    pub session_lifetime: String,
    pub require_login: bool,
    pub nat: String,
    pub private_key_file: Option<String>,
}

impl Default for RawVpn {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:51820".into(),
            interface: "gatehouse0".into(),
            pool: "10.200.0.0/24".into(),
            mtu: 1420,
            persistent_keepalive: 25,
            max_devices_per_user: 10,
            session_lifetime: "12h".into(),
            require_login: true,
            nat: "route".into(),
            private_key_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSsh {
    pub enabled: bool,
    pub listen: String,
    pub allowed_ports: Vec<u16>,
    pub connect_timeout: String,
    pub idle_timeout: String,
    pub max_channels_per_user: u32,
    pub max_connections_per_user: u32,
    pub require_totp: bool,
    pub max_startups: u32,
    pub max_startups_per_source: u32,
    pub login_grace_time: String,
    pub host_key_file: Option<String>,
    pub certificates: bool,
    pub ca_key_file: Option<String>,
    pub host_ca_key_file: Option<String>,
    pub cert_lifetime: String,
    pub host_cert_lifetime: String,
    pub host_join: bool,
    pub host_join_signer_file: Option<String>,
    pub host_join_window: String,
}

impl Default for RawSsh {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:2222".into(),
            allowed_ports: vec![22],
            connect_timeout: "10s".into(),
            idle_timeout: "1h".into(),
            max_channels_per_user: 32,
            max_connections_per_user: 32,
            require_totp: false,
            max_startups: 64,
            max_startups_per_source: 8,
            login_grace_time: "30s".into(),
            host_key_file: None,
            certificates: false,
            ca_key_file: None,
            host_ca_key_file: None,
            cert_lifetime: "12h".into(),
            host_cert_lifetime: "90d".into(),
            host_join: false,
            host_join_signer_file: None,
            host_join_window: "15m".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPortal {
    pub enabled: bool,
    pub listen: String,
    pub url: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub require_totp: bool,
    pub password_login: bool,
    pub enrollment_ttl: String,
    pub session_idle: String,
    pub session_max: String,
    pub login_lockout: String,
    pub requests_per_minute: u32,
    pub auditor_groups: Vec<String>,
}

impl Default for RawPortal {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:443".into(),
            url: None,
            tls_cert: None,
            tls_key: None,
            require_totp: true,
            password_login: true,
            enrollment_ttl: "24h".into(),
            session_idle: "30m".into(),
            session_max: "12h".into(),
            login_lockout: "15m".into(),
            requests_per_minute: 600,
            auditor_groups: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdmin {
    pub socket: String,
    pub group: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            socket: super::DEFAULT_ADMIN_SOCKET.into(),
            group: "gatehouse-admin".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMetrics {
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9586".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAudit {
    pub mirror: Option<String>,
    pub mirror_max_mib: u64,
    pub mirror_keep: u32,
    pub checkpoint_interval: String,
    pub flows_per_device: u32,
    pub syslog: Option<RawSyslog>,
    pub s3: Option<RawS3Export>,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            mirror: None,
            mirror_max_mib: 100,
            mirror_keep: 10,
            checkpoint_interval: "60s".into(),
            flows_per_device: DEFAULT_FLOWS_PER_DEVICE,
            syslog: None,
            s3: None,
        }
    }
}

/// `[audit.s3]`.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawS3Export {
    pub bucket: String,
    pub prefix: String,
    pub retention: String,
}

impl Default for RawS3Export {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            prefix: "gatehouse-audit".into(),
            retention: "400d".into(),
        }
    }
}

/// `[audit.syslog]`.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSyslog {
    pub address: String,
    pub server_name: Option<String>,
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    pub app_name: String,
    pub hostname: Option<String>,
}

impl Default for RawSyslog {
    fn default() -> Self {
        Self {
            address: String::new(),
            server_name: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            app_name: "accessd".into(),
            hostname: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawGroup {
    pub name: Option<String>,
    pub subnets: Option<Vec<String>>,
    pub ports: Option<Vec<u16>>,
    pub oidc_groups: Vec<String>,
    pub ssh_principals: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAws {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub imds_endpoint: Option<String>,
    pub apply_on_start: bool,
    pub exclusive_groups: bool,
    pub private_route_tables: Vec<String>,
    pub admin_cidrs: Vec<String>,
    pub public_cidrs: Vec<String>,
    pub instance_id: Option<String>,
    pub network_interface_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub availability_zone: Option<String>,
}

impl Default for RawAws {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            imds_endpoint: None,
            apply_on_start: false,
            exclusive_groups: false,
            private_route_tables: Vec::new(),
            admin_cidrs: Vec::new(),
            public_cidrs: vec!["0.0.0.0/0".into(), "::/0".into()],
            instance_id: None,
            network_interface_id: None,
            vpc_id: None,
            subnet_id: None,
            availability_zone: None,
        }
    }
}
