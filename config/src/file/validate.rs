//! Turns the raw file into a [`Config`], collecting every problem on the way.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{RawAws, RawConfig, RawGroup};
use super::source_map::SourceMap;
use super::*;
use crate::names::{NAME_RULE, is_valid_name};
use crate::policy::{always_refused_nets, overlaps};

mod s3_export;
mod syslog;

/// The longest duration a key may have: 100 years. Longer ones would
/// overflow clocks and timestamps (and mean "never", which no key means).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

pub(crate) fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let map = SourceMap::new(text);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            let offset = err.span().map_or(0, |s| s.start);
            let pos = map.position(offset);
            let problem = Problem {
                file: file.to_string(),
                line: pos.line,
                column: pos.column,
                key: map.path_at(offset).unwrap_or_default().to_string(),
                message: err.message().trim().to_string(),
            };
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                problems: vec![problem],
            });
        }
    };
    let mut checker = Checker {
        map,
        file,
        problems: Vec::new(),
    };
    let config = checker.config(raw);
    match config {
        Some(config) if checker.problems.is_empty() => Ok(config),
        _ => {
            checker.problems.sort_by_key(|p| (p.line, p.column));
            Err(ConfigError::Invalid {
                file: file.to_string(),
                problems: checker.problems,
            })
        }
    }
}

/// The first host of a pool: the gateway's own tunnel address.
pub(crate) fn first_host(pool: &IpNet) -> IpAddr {
    pool.hosts().next().unwrap_or(pool.network())
}

struct Checker<'a> {
    map: SourceMap<'a>,
    file: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let aws = raw.aws.map(|aws| self.aws(aws));
        let shared_secrets_key = aws.is_some() || raw.gateway.secrets_key_file.is_some();
        let gateway = self.gateway(raw.gateway, aws.is_some());
        let vpn = self.vpn(raw.vpn);
        if raw.ssh.host_join && aws.is_none() {
            self.problem(
                "ssh.host_join",
                "needs [aws]: a joining instance is looked up in EC2 (its VPC and tag)",
            );
        }
        let ssh = self.ssh(raw.ssh);
        let portal = self.portal(raw.portal);
        let admin = self.admin(raw.admin);
        let metrics = self
            .socket("metrics.listen", &raw.metrics.listen)
            .map(|listen| MetricsConfig { listen });
        let mirror = match raw.audit.mirror {
            Some(path) => self.absolute_path("audit.mirror", &path),
            None => gateway
                .as_ref()
                .map(|g| g.state_dir.join(AUDIT_MIRROR_FILE)),
        };
        let mirror_keep = raw.audit.mirror_keep;
        if mirror_keep == 0 {
            self.problem(
                "audit.mirror_keep",
                "must be at least 1 (rotated files are how the mirror keeps its history)",
            );
        }
        let syslog = match (raw.audit.syslog, &gateway) {
            (Some(syslog), Some(gateway)) => self.syslog(syslog, &gateway.name).map(Some),
            (Some(_), None) => None,
            (None, _) => Some(None),
        };
        let checkpoint_interval = self
            .duration("audit.checkpoint_interval", &raw.audit.checkpoint_interval)
            .and_then(|d| {
                if (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&d) {
                    Some(d)
                } else {
                    self.problem(
                        "audit.checkpoint_interval",
                        format!("{:?} is outside 1s to 60s: a checkpoint is signed at least every minute", raw.audit.checkpoint_interval),
                    );
                    None
                }
            });
        let flows_per_device = raw.audit.flows_per_device;
        if !(1..=MAX_FLOWS_PER_DEVICE).contains(&flows_per_device) {
            self.problem(
                "audit.flows_per_device",
                format!("{flows_per_device} is outside 1 to {MAX_FLOWS_PER_DEVICE}: the vpn.flow records a device may have per minute before the rest are summed in one"),
            );
        }
        let s3 = match raw.audit.s3 {
            Some(s3) => self.s3_export(s3, aws.is_some()).map(Some),
            None => Some(None),
        };
        let groups = self.groups(
            raw.groups,
            vpn.as_ref().map(|v| v.pool),
            portal.as_ref().map_or(&[][..], |p| &p.auditor_groups),
        );
        if let Some(portal) = &portal {
            self.auditor_groups(&portal.auditor_groups, &groups);
        }
        let store = raw.store.map(|store| self.store(store));
        let ha = raw.ha.map(|ha| self.ha(ha, store.is_some()));
        let oidc = raw.oidc.map(|oidc| self.oidc(oidc));
        if let Some(portal) = &portal {
            self.sign_in(portal, oidc.is_some(), &groups);
        }
        if let (Some(Some(_)), Some(vpn), Some(ssh), Some(portal)) = (&ha, &vpn, &ssh, &portal) {
            self.pair_identity(vpn, ssh, portal, aws.as_ref().is_some_and(Option::is_some));
        }
        if ha.is_some() && !shared_secrets_key {
            self.problem(
                "ha.node",
                "[ha] needs a secrets key both gateways share: set gateway.secrets_key_file to one 0600 file given to both (or use [aws], which keeps it in SSM); each would otherwise make its own, and neither could open the TOTP secrets the other sealed",
            );
        }
        if let (Some(ssh), Some(portal), Some(metrics)) = (&ssh, &portal, &metrics) {
            let mut listeners = Vec::with_capacity(3);
            if ssh.enabled {
                listeners.push(("ssh.listen", ssh.listen));
            }
            listeners.push(("portal.listen", portal.listen));
            listeners.push(("metrics.listen", metrics.listen));
            self.distinct_tcp_listeners(&listeners);
        }
        Some(Config {
            gateway: gateway?,
            vpn: vpn?,
            ssh: ssh?,
            portal: portal?,
            admin: admin?,
            metrics: metrics?,
            audit: AuditConfig {
                mirror: mirror?,
                mirror_max_bytes: raw.audit.mirror_max_mib.saturating_mul(1024 * 1024),
                mirror_keep,
                checkpoint_interval: checkpoint_interval?,
                flows_per_device,
                syslog: syslog?,
                s3: s3?,
            },
            groups,
            aws: aws.flatten(),
            store: present_and_valid(store)?,
            ha: present_and_valid(ha)?,
            oidc: present_and_valid(oidc)?,
        })
    }

    fn oidc(&mut self, raw: raw::RawOidc) -> Option<OidcConfig> {
        let issuer = raw.issuer.trim().trim_end_matches('/').to_string();
        if issuer.is_empty() {
            self.problem(
                "oidc.issuer",
                "is required in [oidc]: the provider's issuer URL, e.g. https://accounts.example.org (discovery is read from <issuer>/.well-known/openid-configuration)",
            );
        } else if let Some(why) = issuer_problem(&issuer) {
            self.problem("oidc.issuer", format!("{issuer:?} {why}"));
        }
        if raw.client_id.trim().is_empty() {
            self.problem(
                "oidc.client_id",
                "is required in [oidc]: the client id the provider gave gatehouse",
            );
        }
        let client_secret_file = match &raw.client_secret_file {
            Some(text) => Some(self.absolute_path("oidc.client_secret_file", text)?),
            None => None,
        };
        let ca_file = match &raw.ca_file {
            Some(text) => Some(self.absolute_path("oidc.ca_file", text)?),
            None => None,
        };
        if !raw.scopes.iter().any(|s| s == "openid") {
            self.problem(
                "oidc.scopes",
                "must include \"openid\" (without it the provider issues no ID token)",
            );
        }
        for (key, claim) in [
            ("oidc.groups_claim", &raw.groups_claim),
            ("oidc.username_claim", &raw.username_claim),
        ] {
            if claim.trim().is_empty() {
                self.problem(key, "is empty: name the ID token claim to read");
            }
        }
        let mut domains = Vec::new();
        for (i, domain) in raw.allowed_email_domains.iter().enumerate() {
            let domain = domain.trim().to_ascii_lowercase();
            let valid = !domain.is_empty()
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && domain.contains('.')
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if valid {
                domains.push(domain);
            } else {
                self.problem(
                    &format!("oidc.allowed_email_domains[{i}]"),
                    format!("{domain:?} is not a domain name, e.g. \"example.org\""),
                );
            }
        }
        let email_verified = match raw.email_verified.as_str() {
            "required" => EmailVerified::Required,
            "if_present" => EmailVerified::IfPresent,
            other => {
                self.problem(
                    "oidc.email_verified",
                    format!(
                        "{other:?} is not one of \"required\" (the default: only emails the token marks verified) or \"if_present\" (for providers that send no email_verified claim)"
                    ),
                );
                EmailVerified::Required
            }
        };
        let totp_enrollment = match raw.totp_enrollment.as_str() {
            "admin_link" => TotpEnrollment::AdminLink,
            "first_login" => TotpEnrollment::FirstLogin,
            other => {
                self.problem(
                    "oidc.totp_enrollment",
                    format!(
                        "{other:?} is not one of \"admin_link\" (the default: a member's first authenticator comes from an admin's enrollment link) or \"first_login\" (set up at the first SSO login)"
                    ),
                );
                TotpEnrollment::AdminLink
            }
        };
        let display_name = raw
            .display_name
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| issuer_host(&issuer).unwrap_or("SSO").to_string());
        Some(OidcConfig {
            issuer,
            client_id: raw.client_id.trim().to_string(),
            client_secret_file,
            display_name,
            scopes: raw.scopes,
            groups_claim: raw.groups_claim.trim().to_string(),
            username_claim: raw.username_claim.trim().to_string(),
            allowed_email_domains: domains,
            email_verified,
            auto_provision: raw.auto_provision,
            require_totp: raw.require_totp,
            totp_enrollment,
            ca_file,
        })
    }

    /// How members sign in must leave them a way to: SSO only needs
    /// `[oidc]`, and a group that names IdP groups needs `[oidc]` to read
    /// them from. (With the portal off, `[oidc]` simply has no door: the
    /// daemon says so at start.)
    fn sign_in(&mut self, portal: &PortalConfig, has_oidc: bool, groups: &[GroupConfig]) {
        if !portal.password_login && !has_oidc {
            self.problem(
                "portal.password_login",
                "is false without [oidc]: members would have no way to sign in to the portal; add [oidc], or keep password_login = true",
            );
        }
        if !has_oidc && let Some(i) = groups.iter().position(|g| !g.oidc_groups.is_empty()) {
            self.problem(
                &format!("group[{i}].oidc_groups"),
                "is set without [oidc]: the identity provider's groups are read at an SSO login; add [oidc] or remove oidc_groups",
            );
        }
    }

    fn store(&mut self, raw: raw::RawStore) -> Option<StoreConfig> {
        let url = raw.url.trim();
        if url.is_empty() {
            self.problem(
                "store.url",
                "is required in [store]: postgresql://USER@HOST:5432/DB?sslmode=verify-full (remove [store] to keep the embedded SQLite database)",
            );
        } else if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            self.problem(
                "store.url",
                format!("{url:?} is not a PostgreSQL URL: write postgresql://USER@HOST:5432/DB"),
            );
        } else if url_has_password(url) {
            self.problem(
                "store.url",
                "must not carry the password: put it in store.password_file (mode 0600) or the PGPASSWORD environment",
            );
        }
        let password_file = match &raw.password_file {
            Some(text) => Some(self.absolute_path("store.password_file", text)?),
            None => None,
        };
        let ca_file = match &raw.ca_file {
            Some(text) => Some(self.absolute_path("store.ca_file", text)?),
            None => None,
        };
        if !self.problems.iter().any(|p| p.key.starts_with("store.")) {
            return Some(StoreConfig {
                url: url.to_string(),
                password_file,
                ca_file,
            });
        }
        None
    }

    /// The two gateways of a pair must look like one to clients: the same
    /// WireGuard key, SSH host key and portal certificate, from SSM with
    /// `[aws]` (accessd keeps them there) or from files both read.
    fn pair_identity(
        &mut self,
        vpn: &VpnConfig,
        ssh: &SshConfig,
        portal: &PortalConfig,
        has_aws: bool,
    ) {
        if has_aws {
            return;
        }
        if vpn.enabled && vpn.private_key_file.is_none() {
            self.problem(
                "ha.node",
                "the gateways of a pair must share their WireGuard key, or devices stop working after a failover: set vpn.private_key_file to a key file both read (or add [aws], which keeps the key in SSM)",
            );
        }
        if ssh.enabled && ssh.host_key_file.is_none() {
            self.problem(
                "ha.node",
                "the gateways of a pair must share their SSH host key, or `ssh -J` warns of a changed host key after a failover: set ssh.host_key_file to a key file both read (or add [aws], which keeps the key in SSM)",
            );
        }
        if portal.enabled && portal.tls.is_none() {
            self.problem(
                "ha.node",
                "the gateways of a pair must serve one portal certificate: set portal.tls_cert and portal.tls_key to files both read (or add [aws], which keeps a self-signed one in SSM)",
            );
        }
        if ssh.certificates && (ssh.ca_key_file.is_none() || ssh.host_ca_key_file.is_none()) {
            self.problem(
                "ssh.certificates",
                "the gateways of a pair must sign with one SSH user CA and one host CA, or the private hosts refuse the certificates of the other (and members the hosts it signed): set ssh.ca_key_file and ssh.host_ca_key_file to CA key files both read (or add [aws], which keeps the CA keys in SSM)",
            );
        }
    }

    fn ha(&mut self, raw: raw::RawHa, has_store: bool) -> Option<HaConfig> {
        if !has_store {
            self.problem(
                "ha.node",
                "[ha] needs [store]: the two gateways of a pair share their state and the lease through one PostgreSQL database",
            );
        }
        if !is_valid_name(&raw.node) {
            self.problem(
                "ha.node",
                format!("{:?} is not a node name ({NAME_RULE}); give each gateway of the pair its own, e.g. \"gw-a\"", raw.node),
            );
        }
        let lease_ttl = self.duration("ha.lease_ttl", &raw.lease_ttl)?;
        if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&lease_ttl) {
            self.problem(
                "ha.lease_ttl",
                format!(
                    "{:?} is outside {}s..{}s (the lease is renewed every second)",
                    raw.lease_ttl,
                    MIN_LEASE_TTL.as_secs(),
                    MAX_LEASE_TTL.as_secs()
                ),
            );
            return None;
        }
        (has_store && is_valid_name(&raw.node)).then_some(HaConfig {
            node: raw.node,
            lease_ttl,
        })
    }

    fn gateway(&mut self, raw: raw::RawGateway, has_aws: bool) -> Option<GatewayConfig> {
        let name = match raw.name {
            None => {
                self.problem("gateway.name", "is required: it tags AWS resources and names the SSM parameter (e.g. \"research-gw\")");
                None
            }
            Some(name) if !is_gateway_name(&name) => {
                self.problem("gateway.name", format!("{name:?} is not a usable name: 1 to 64 letters, digits or '-', starting with a letter or digit"));
                None
            }
            Some(name) => Some(name),
        };
        let endpoint = match raw.public_endpoint.as_str() {
            "auto" if !has_aws => {
                self.problem(
                    "gateway.public_endpoint",
                    "\"auto\" means the elastic IP that the [aws] section provisions, but there is no [aws] section: set the host name or address devices should connect to",
                );
                None
            }
            "auto" => Some(PublicEndpoint::Auto),
            host => self.endpoint_host(host).map(PublicEndpoint::Host),
        };
        let state_dir = self.absolute_path("gateway.state_dir", &raw.state_dir);
        let secrets_key_file = match &raw.secrets_key_file {
            Some(text) => Some(self.absolute_path("gateway.secrets_key_file", text)?),
            None => None,
        };
        Some(GatewayConfig {
            name: name?,
            public_endpoint: endpoint?,
            state_dir: state_dir?,
            secrets_key_file,
        })
    }

    fn endpoint_host(&mut self, host: &str) -> Option<String> {
        const KEY: &str = "gateway.public_endpoint";
        let bare_v6 = host.parse::<std::net::Ipv6Addr>().is_ok();
        if host.contains(':') && !bare_v6 {
            self.problem(KEY, format!("{host:?}: give the host only, without scheme or port (the port comes from vpn.listen)"));
        } else if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
            self.problem(KEY, format!("{host:?} is not a host name or address"));
        } else {
            return Some(host.to_string());
        }
        None
    }

    fn vpn(&mut self, raw: raw::RawVpn) -> Option<VpnConfig> {
        let listen = self.socket("vpn.listen", &raw.listen);
        if !is_interface_name(&raw.interface) {
            self.problem(
                "vpn.interface",
                format!(
                    "{:?} is not a usable interface name: 1 to 15 letters, digits, '_', '-' or '.'",
                    raw.interface
                ),
            );
        }
        let pool = self.network("vpn.pool", &raw.pool).filter(|pool| {
            let room = match pool { IpNet::V4(_) => 30, IpNet::V6(_) => 126 };
            if pool.prefix_len() > room {
                self.problem("vpn.pool", format!("{pool} is too small: it needs room for the gateway and at least one device (a /{room} or larger)"));
                return false;
            }
            true
        });
        if !(1280..=9000).contains(&raw.mtu) {
            self.problem(
                "vpn.mtu",
                format!("{} is out of range: 1280 to 9000", raw.mtu),
            );
        }
        let session_lifetime = self.duration("vpn.session_lifetime", &raw.session_lifetime);
        let nat = match raw.nat.as_str() {
            "route" => Some(NatMode::Route),
            "masquerade" => Some(NatMode::Masquerade),
            other => {
                self.problem(
                    "vpn.nat",
                    format!("{other:?} is not a NAT mode: use \"route\" or \"masquerade\""),
                );
                None
            }
        };
        Some(VpnConfig {
            enabled: raw.enabled,
            listen: listen?,
            interface: raw.interface,
            pool: pool?,
            mtu: raw.mtu,
            persistent_keepalive: raw.persistent_keepalive,
            max_devices_per_user: raw.max_devices_per_user,
            session_lifetime: session_lifetime?,
            require_login: raw.require_login,
            nat: nat?,
            private_key_file: match &raw.private_key_file {
                Some(text) => Some(self.absolute_path("vpn.private_key_file", text)?),
                None => None,
            },
        })
    }

    fn ssh(&mut self, raw: raw::RawSsh) -> Option<SshConfig> {
        let listen = self.socket("ssh.listen", &raw.listen);
        if raw.allowed_ports.is_empty() {
            self.problem(
                "ssh.allowed_ports",
                "must list at least one port (usually [22])",
            );
        }
        self.ports("ssh.allowed_ports", &raw.allowed_ports);
        let connect_timeout = self.duration("ssh.connect_timeout", &raw.connect_timeout);
        let idle_timeout = self.duration("ssh.idle_timeout", &raw.idle_timeout);
        if raw.max_channels_per_user == 0 {
            self.problem("ssh.max_channels_per_user", "must be at least 1");
        }
        if raw.max_connections_per_user == 0 {
            self.problem("ssh.max_connections_per_user", "must be at least 1");
        }
        if raw.max_startups == 0 {
            self.problem("ssh.max_startups", "must be at least 1");
        }
        if raw.max_startups_per_source == 0 {
            self.problem("ssh.max_startups_per_source", "must be at least 1");
        } else if raw.max_startups_per_source > raw.max_startups {
            self.problem(
                "ssh.max_startups_per_source",
                format!(
                    "{} is more than ssh.max_startups ({})",
                    raw.max_startups_per_source, raw.max_startups
                ),
            );
        }
        let login_grace_time = self.duration("ssh.login_grace_time", &raw.login_grace_time);
        let cert_lifetime = self.duration("ssh.cert_lifetime", &raw.cert_lifetime);
        if let Some(lifetime) = cert_lifetime
            && !(Duration::from_secs(60)..=Duration::from_secs(30 * 86_400)).contains(&lifetime)
        {
            self.problem(
                "ssh.cert_lifetime",
                "must be between 1m and 30d: certificates are meant to be short-lived (12h is a working day)",
            );
        }
        let host_cert_lifetime = self.duration("ssh.host_cert_lifetime", &raw.host_cert_lifetime);
        if let Some(lifetime) = host_cert_lifetime
            && !(Duration::from_secs(3600)..=Duration::from_secs(400 * 86_400)).contains(&lifetime)
        {
            self.problem(
                "ssh.host_cert_lifetime",
                "must be between 1h and 400d: a host certificate is renewed before it expires (90d is a quarter)",
            );
        }
        let host_join_window = self.duration("ssh.host_join_window", &raw.host_join_window);
        if let Some(window) = host_join_window
            && !(Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&window)
        {
            self.problem(
                "ssh.host_join_window",
                "must be between 1m and 24h: a new instance joins at its first boot",
            );
        }
        let host_join_signer_file = match &raw.host_join_signer_file {
            Some(text) => Some(self.absolute_path("ssh.host_join_signer_file", text)?),
            None => None,
        };
        if raw.host_join && !raw.certificates {
            self.problem(
                "ssh.host_join",
                "needs ssh.certificates = true: a joining host gets a certificate from the host CA",
            );
        }
        if raw.host_join && host_join_signer_file.is_none() {
            self.problem(
                "ssh.host_join",
                "needs ssh.host_join_signer_file: the region's AWS certificate for instance identity signatures (RSA-2048), from the EC2 documentation",
            );
        }
        let host_key_file = match &raw.host_key_file {
            Some(text) => Some(self.absolute_path("ssh.host_key_file", text)?),
            None => None,
        };
        let ca_key_file = match &raw.ca_key_file {
            Some(text) => Some(self.absolute_path("ssh.ca_key_file", text)?),
            None => None,
        };
        let host_ca_key_file = match &raw.host_ca_key_file {
            Some(text) => Some(self.absolute_path("ssh.host_ca_key_file", text)?),
            None => None,
        };
        Some(SshConfig {
            enabled: raw.enabled,
            listen: listen?,
            allowed_ports: raw.allowed_ports,
            connect_timeout: connect_timeout?,
            idle_timeout: idle_timeout?,
            max_channels_per_user: raw.max_channels_per_user,
            max_connections_per_user: raw.max_connections_per_user,
            require_totp: raw.require_totp,
            max_startups: raw.max_startups,
            max_startups_per_source: raw.max_startups_per_source,
            login_grace_time: login_grace_time?,
            host_key_file,
            certificates: raw.certificates,
            ca_key_file,
            host_ca_key_file,
            cert_lifetime: cert_lifetime?,
            host_cert_lifetime: host_cert_lifetime?,
            host_join: raw.host_join,
            host_join_signer_file,
            host_join_window: host_join_window?,
        })
    }

    fn portal(&mut self, raw: raw::RawPortal) -> Option<PortalConfig> {
        let listen = self.socket("portal.listen", &raw.listen);
        if let Some(url) = &raw.url
            && !url.starts_with("https://")
        {
            self.problem("portal.url", format!("{url:?} must start with https://"));
        }
        let tls = match (raw.tls_cert, raw.tls_key) {
            (None, None) => Some(None),
            (Some(cert), Some(key)) => {
                let cert = self.absolute_path("portal.tls_cert", &cert);
                let key = self.absolute_path("portal.tls_key", &key);
                cert.zip(key)
                    .map(|(cert, key)| Some(TlsFiles { cert, key }))
            }
            (Some(_), None) => {
                self.problem("portal.tls_cert", "is set without portal.tls_key: give both, or neither for a self-signed certificate");
                None
            }
            (None, Some(_)) => {
                self.problem("portal.tls_key", "is set without portal.tls_cert: give both, or neither for a self-signed certificate");
                None
            }
        };
        let enrollment_ttl = self.duration("portal.enrollment_ttl", &raw.enrollment_ttl);
        let session_idle = self.duration("portal.session_idle", &raw.session_idle);
        let session_max = self.duration("portal.session_max", &raw.session_max);
        let login_lockout = self.duration("portal.login_lockout", &raw.login_lockout);
        if raw.requests_per_minute == 0 {
            self.problem(
                "portal.requests_per_minute",
                "must be at least 1 (every page load is a request)",
            );
        }
        Some(PortalConfig {
            enabled: raw.enabled,
            listen: listen?,
            url: raw.url,
            tls: tls?,
            require_totp: raw.require_totp,
            password_login: raw.password_login,
            enrollment_ttl: enrollment_ttl?,
            session_idle: session_idle?,
            session_max: session_max?,
            login_lockout: login_lockout?,
            requests_per_minute: raw.requests_per_minute.max(1),
            auditor_groups: raw.auditor_groups,
        })
    }

    /// Each of `portal.auditor_groups` names a `[[group]]` (whose members
    /// are given it as any other group: by an admin, or mapped from the
    /// identity provider's with `oidc_groups`).
    fn auditor_groups(&mut self, auditors: &[String], groups: &[GroupConfig]) {
        for (i, name) in auditors.iter().enumerate() {
            if !groups.iter().any(|g| &g.name == name) {
                self.problem(
                    &format!("portal.auditor_groups[{i}]"),
                    format!("{name:?} names no [[group]]: define it (a group only for auditors needs no subnets)"),
                );
            }
        }
    }

    fn admin(&mut self, raw: raw::RawAdmin) -> Option<AdminConfig> {
        let socket = self.absolute_path("admin.socket", &raw.socket);
        if raw.group.is_empty() {
            self.problem(
                "admin.group",
                "must name the group allowed to use the admin socket",
            );
        }
        Some(AdminConfig {
            socket: socket?,
            group: raw.group,
        })
    }

    /// The `[[group]]`s. A group named in `auditors` (`portal.auditor_groups`)
    /// may have no subnets: it then only grants the auditor's view.
    fn groups(
        &mut self,
        raw: Vec<RawGroup>,
        pool: Option<IpNet>,
        auditors: &[String],
    ) -> Vec<GroupConfig> {
        let mut seen = HashSet::new();
        let mut groups = Vec::new();
        for (i, group) in raw.into_iter().enumerate() {
            let key = format!("group[{i}]");
            let name = match group.name {
                None => {
                    self.problem(&key, "has no name");
                    None
                }
                Some(name) if !is_valid_name(&name) => {
                    self.problem(
                        &format!("{key}.name"),
                        format!("{name:?} is not a valid group name: {NAME_RULE}"),
                    );
                    None
                }
                Some(name) if !seen.insert(name.clone()) => {
                    self.problem(
                        &format!("{key}.name"),
                        format!("group {name:?} is defined twice"),
                    );
                    None
                }
                Some(name) => Some(name),
            };
            let mut subnets = Vec::new();
            let auditors_only = name.as_ref().is_some_and(|n| auditors.contains(n));
            match group.subnets {
                // A group only for auditors may reach nothing.
                ref list if auditors_only && list.as_ref().is_none_or(Vec::is_empty) => {}
                None => self.problem(&key, "has no subnets: list the CIDRs its members may reach (or name it in portal.auditor_groups, for auditors only)"),
                Some(list) if list.is_empty() => self.problem(
                    &format!("{key}.subnets"),
                    "is empty: list the CIDRs its members may reach",
                ),
                Some(list) => {
                    for (j, text) in list.iter().enumerate() {
                        let key = format!("{key}.subnets[{j}]");
                        if let Some(net) = self.group_subnet(&key, text, pool) {
                            subnets.push(net);
                        }
                    }
                }
            }
            if let Some(ports) = &group.ports {
                if ports.is_empty() {
                    self.problem(
                        &format!("{key}.ports"),
                        "is empty: leave it out to allow every port",
                    );
                }
                self.ports(&format!("{key}.ports"), ports);
            }
            if let Some(name) = name {
                for (j, idp_group) in group.oidc_groups.iter().enumerate() {
                    if idp_group.trim().is_empty() {
                        self.problem(
                            &format!("{key}.oidc_groups[{j}]"),
                            "is empty: give the identity provider's group name or id",
                        );
                    }
                }
                for (j, principal) in group.ssh_principals.iter().enumerate() {
                    if !is_login_name(principal) {
                        self.problem(
                            &format!("{key}.ssh_principals[{j}]"),
                            format!("{principal:?} is not a login name: letters, digits, '.', '_', '-', at most 32, not starting with '-'"),
                        );
                    }
                }
                groups.push(GroupConfig {
                    name,
                    subnets,
                    ports: group.ports,
                    oidc_groups: group.oidc_groups,
                    ssh_principals: group.ssh_principals,
                });
            }
        }
        groups
    }

    fn group_subnet(&mut self, key: &str, text: &str, pool: Option<IpNet>) -> Option<IpNet> {
        let net = self.network(key, text)?;
        if net.prefix_len() == 0 {
            self.problem(key, format!("{net} is a default route: gatehouse gives split tunnels only; list the private subnets instead"));
            return None;
        }
        if let Some(pool) = pool
            && overlaps(&net, &pool)
        {
            self.problem(
                key,
                format!("{net} overlaps the VPN pool {pool} (vpn.pool)"),
            );
            return None;
        }
        if let Some((refused, range)) = always_refused_nets()
            .into_iter()
            .find(|(r, _)| r.contains(&net))
        {
            self.problem(key, format!("{net} lies inside {refused}: {range} addresses are always refused, so this grants nothing"));
            return None;
        }
        Some(net)
    }

    fn aws(&mut self, raw: RawAws) -> Option<AwsConfig> {
        if raw.region.as_deref() == Some("") {
            self.problem(
                "aws.region",
                "is empty: leave it out to take the instance's region",
            );
        }
        for (key, url) in [
            ("aws.endpoint_url", &raw.endpoint_url),
            ("aws.imds_endpoint", &raw.imds_endpoint),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                self.problem(key, format!("{url:?} must be an http:// or https:// URL"));
            }
        }
        for (i, table) in raw.private_route_tables.iter().enumerate() {
            if !table.starts_with("rtb-") {
                self.problem(
                    &format!("aws.private_route_tables[{i}]"),
                    format!("{table:?} is not a route table id (rtb-...)"),
                );
            }
        }
        let admin_cidrs = self.networks("aws.admin_cidrs", &raw.admin_cidrs);
        let public_cidrs = self.networks("aws.public_cidrs", &raw.public_cidrs);
        for (key, value, prefix) in [
            ("aws.instance_id", &raw.instance_id, "i-"),
            (
                "aws.network_interface_id",
                &raw.network_interface_id,
                "eni-",
            ),
            ("aws.vpc_id", &raw.vpc_id, "vpc-"),
            ("aws.subnet_id", &raw.subnet_id, "subnet-"),
        ] {
            if let Some(id) = value
                && !aws_id(id, prefix)
            {
                self.problem(key, format!("{id:?} is not an AWS id ({prefix}...)"));
            }
        }
        if raw.availability_zone.as_deref() == Some("") {
            self.problem(
                "aws.availability_zone",
                "is empty: leave it out to take the instance's zone",
            );
        }
        Some(AwsConfig {
            region: raw.region,
            endpoint_url: raw.endpoint_url,
            imds_endpoint: raw.imds_endpoint,
            apply_on_start: raw.apply_on_start,
            exclusive_groups: raw.exclusive_groups,
            private_route_tables: raw.private_route_tables,
            admin_cidrs,
            public_cidrs,
            discovery: AwsDiscoveryOverrides {
                instance_id: raw.instance_id,
                network_interface_id: raw.network_interface_id,
                vpc_id: raw.vpc_id,
                subnet_id: raw.subnet_id,
                availability_zone: raw.availability_zone,
            },
        })
    }

    fn distinct_tcp_listeners(&mut self, listeners: &[(&str, SocketAddr)]) {
        for (i, (key_a, a)) in listeners.iter().enumerate() {
            for (key_b, b) in &listeners[i + 1..] {
                let same_ip =
                    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
                // Port 0 asks the kernel for a free port: never a clash.
                if a.port() == b.port() && a.port() != 0 && same_ip {
                    self.problem(key_b, format!("{b} clashes with {key_a} ({a})"));
                }
            }
        }
    }

    fn socket(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        self.parsed(
            key,
            text,
            "an address with a port, like \"0.0.0.0:2222\" or \"[::]:2222\"",
        )
    }

    fn network(&mut self, key: &str, text: &str) -> Option<IpNet> {
        let net: IpNet = self.parsed(key, text, "a CIDR like \"10.0.3.0/24\"")?;
        if net.trunc() != net {
            self.problem(
                key,
                format!("{net} has host bits set: did you mean {}?", net.trunc()),
            );
            return None;
        }
        Some(net)
    }

    fn networks(&mut self, key: &str, list: &[String]) -> Vec<IpNet> {
        let parsed: Vec<_> = list
            .iter()
            .enumerate()
            .map(|(i, text)| self.network(&format!("{key}[{i}]"), text))
            .collect();
        parsed.into_iter().flatten().collect()
    }

    fn ports(&mut self, key: &str, ports: &[u16]) {
        for (i, port) in ports.iter().enumerate() {
            if *port == 0 {
                self.problem(&format!("{key}[{i}]"), "port 0 is not a port");
            }
        }
    }

    fn duration(&mut self, key: &str, text: &str) -> Option<Duration> {
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.problem(key, format!("{text:?} must be longer than zero"));
                None
            }
            Ok(d) if d > MAX_DURATION => {
                self.problem(
                    key,
                    format!("{text:?} is too long: at most 100 years (\"36500d\")"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(err) => {
                self.problem(key, format!("{text:?} is not a duration ({err}); write e.g. \"90s\", \"15m\", \"12h\" or \"7d\""));
                None
            }
        }
    }

    fn absolute_path(&mut self, key: &str, text: &str) -> Option<PathBuf> {
        let path = PathBuf::from(text);
        if path.is_absolute() {
            Some(path)
        } else {
            self.problem(key, format!("{text:?} must be an absolute path"));
            None
        }
    }

    fn parsed<T: FromStr>(&mut self, key: &str, text: &str, expected: &str) -> Option<T> {
        match text.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.problem(key, format!("{text:?} is not {expected}"));
                None
            }
        }
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let pos = self.map.locate(key);
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            key: key.to_string(),
            message: message.into(),
        });
    }
}

fn is_gateway_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn is_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `prefix` followed by at least one lowercase hex digit, and nothing else.
/// An optional section: `Some(None)` when absent, `None` when present but
/// invalid (its problems are recorded).
fn present_and_valid<T>(section: Option<Option<T>>) -> Option<Option<T>> {
    match section {
        None => Some(None),
        Some(valid) => valid.map(Some),
    }
}

/// True when a `postgresql://user:password@...` URL carries a password.
/// Why `issuer` cannot be an issuer URL, if it cannot: it must be https
/// (plain http only on loopback, for a provider on the same host), with a
/// host, and no query or fragment.
fn issuer_problem(issuer: &str) -> Option<&'static str> {
    let rest = match issuer.split_once("://") {
        Some(("https", rest)) => rest,
        Some(("http", rest)) => {
            let host = rest.split(['/', ':']).next().unwrap_or("");
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Some("must be https:// (plain http only for a provider on loopback)");
            }
            rest
        }
        _ => return Some("is not an https:// URL"),
    };
    if rest.split(['/', ':']).next().unwrap_or("").is_empty() {
        return Some("has no host");
    }
    if rest.contains(['?', '#']) {
        return Some("must not carry a query or a fragment");
    }
    None
}

/// The issuer's host, for the default button label.
fn issuer_host(issuer: &str) -> Option<&str> {
    let rest = issuer.split_once("://")?.1;
    rest.split(['/', ':']).next().filter(|h| !h.is_empty())
}

fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

fn aws_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// A POSIX-ish login name, as a certificate principal: letters, digits,
/// `.`, `_`, `-`, at most 32, not starting with `-`.
fn is_login_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
