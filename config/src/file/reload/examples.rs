//! A config that sets every key, and another valid value for each: for
//! tests that walk every key (here, and the daemon's reload test through
//! the `test-support` feature).

#![allow(clippy::panic, reason = "test data: a wrong key is a broken test")]

/// Every key set, none left to its default where a default is "unset".
pub const FULL: &str = r#"
[gateway]
name = "gw"
public_endpoint = "vpn.example.com"
state_dir = "/var/lib/gatehouse"
secrets_key_file = "/etc/gatehouse/secrets.key"

[vpn]
enabled = true
listen = "0.0.0.0:51820"
interface = "gatehouse0"
pool = "10.200.0.0/24"
mtu = 1420
persistent_keepalive = 25
max_devices_per_user = 10
session_lifetime = "12h"
require_login = true
nat = "route"
private_key_file = "/etc/gatehouse/wireguard.key"

[ssh]
enabled = true
listen = "0.0.0.0:2222"
allowed_ports = [22]
connect_timeout = "10s"
idle_timeout = "1h"
max_channels_per_user = 32
max_connections_per_user = 32
require_totp = false
max_startups = 64
max_startups_per_source = 8
login_grace_time = "30s"
host_key_file = "/etc/gatehouse/ssh_host_ed25519_key"
certificates = true
ca_key_file = "/etc/gatehouse/ssh_user_ca_ed25519_key"
host_ca_key_file = "/etc/gatehouse/ssh_host_ca_ed25519_key"
cert_lifetime = "12h"
host_cert_lifetime = "90d"
host_join = false
host_join_signer_file = "/etc/gatehouse/aws-identity-signer.pem"
host_join_window = "15m"

[portal]
enabled = true
listen = "0.0.0.0:443"
url = "https://vpn.example.com"
tls_cert = "/etc/gatehouse/tls/fullchain.pem"
tls_key = "/etc/gatehouse/tls/privkey.pem"
password_login = true
require_totp = true
enrollment_ttl = "24h"
session_idle = "30m"
session_max = "12h"
login_lockout = "15m"
requests_per_minute = 600
auditor_groups = ["ops"]

[admin]
socket = "/run/gatehouse/admin.sock"
group = "gatehouse-admin"

[metrics]
listen = "127.0.0.1:9586"

[audit]
mirror = "/var/log/gatehouse/audit.jsonl"
mirror_max_mib = 100
mirror_keep = 10
checkpoint_interval = "60s"
flows_per_device = 32

[audit.syslog]
address = "logs.example.org:6514"
server_name = "syslog.example.org"
ca_file = "/etc/gatehouse/syslog-ca.pem"
client_cert_file = "/etc/gatehouse/syslog-client.pem"
client_key_file = "/etc/gatehouse/syslog-client.key"
app_name = "accessd"
hostname = "gw-a.example.org"

[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
ports = [22]
oidc_groups = ["research-team"]
ssh_principals = ["ec2-user", "ubuntu"]

[[group]]
name = "ops"
subnets = ["10.0.2.0/24"]

[oidc]
issuer = "https://accounts.example.org"
client_id = "gatehouse"
client_secret_file = "/etc/gatehouse/oidc-secret"
ca_file = "/etc/gatehouse/idp-ca.pem"
display_name = "Example SSO"
scopes = ["openid", "email", "profile", "groups"]
groups_claim = "groups"
username_claim = "preferred_username"
allowed_email_domains = ["example.org"]
email_verified = "required"
auto_provision = true
require_totp = false
totp_enrollment = "admin_link"

[aws]
region = "eu-west-3"
apply_on_start = false
exclusive_groups = false
private_route_tables = ["rtb-0123456789abcdef0"]
admin_cidrs = ["203.0.113.7/32"]
public_cidrs = ["0.0.0.0/0", "::/0"]
endpoint_url = "http://127.0.0.1:5000"
imds_endpoint = "http://127.0.0.1:8111"
instance_id = "i-0123456789abcdef0"
network_interface_id = "eni-0123456789abcdef0"
vpc_id = "vpc-0123456789abcdef0"
subnet_id = "subnet-0123456789abcdef0"
availability_zone = "eu-west-3a"

[audit.s3]
bucket = "team-audit"
prefix = "gatehouse-audit"
retention = "400d"

[store]
url = "postgresql://gatehouse@db.internal:5432/gatehouse?sslmode=verify-full"
password_file = "/etc/gatehouse/pg-password"
ca_file = "/etc/gatehouse/rds-ca.pem"

[ha]
node = "gw-a"
lease_ttl = "5s"
"#;

/// A different valid value for every key (the first `[[group]]`'s for
/// the group keys).
pub const OTHER: &[(&str, &str)] = &[
    ("gateway.name", r#""gw2""#),
    ("gateway.public_endpoint", r#""gw.example.org""#),
    ("gateway.state_dir", r#""/srv/gatehouse""#),
    (
        "gateway.secrets_key_file",
        r#""/etc/gatehouse/other-secrets.key""#,
    ),
    ("vpn.enabled", "false"),
    ("vpn.listen", r#""0.0.0.0:51821""#),
    ("vpn.interface", r#""gatehouse1""#),
    ("vpn.pool", r#""10.201.0.0/24""#),
    ("vpn.mtu", "1380"),
    ("vpn.persistent_keepalive", "0"),
    ("vpn.max_devices_per_user", "3"),
    ("vpn.session_lifetime", r#""8h""#),
    ("vpn.require_login", "false"),
    ("vpn.nat", r#""masquerade""#),
    (
        "vpn.private_key_file",
        r#""/etc/gatehouse/other-wireguard.key""#,
    ),
    ("ssh.enabled", "false"),
    ("ssh.listen", r#""0.0.0.0:2223""#),
    ("ssh.allowed_ports", "[22, 2022]"),
    ("ssh.connect_timeout", r#""5s""#),
    ("ssh.idle_timeout", r#""2h""#),
    ("ssh.max_channels_per_user", "16"),
    ("ssh.max_connections_per_user", "4"),
    ("ssh.require_totp", "true"),
    ("ssh.max_startups", "65"),
    ("ssh.max_startups_per_source", "9"),
    ("ssh.login_grace_time", r#""20s""#),
    ("ssh.host_key_file", r#""/etc/gatehouse/other_host_key""#),
    ("ssh.certificates", "false"),
    ("ssh.ca_key_file", r#""/etc/gatehouse/other_user_ca_key""#),
    (
        "ssh.host_ca_key_file",
        r#""/etc/gatehouse/other_host_ca_key""#,
    ),
    ("ssh.cert_lifetime", r#""1h""#),
    ("ssh.host_cert_lifetime", r#""30d""#),
    ("ssh.host_join", "true"),
    (
        "ssh.host_join_signer_file",
        r#""/etc/gatehouse/other-aws-signer.pem""#,
    ),
    ("ssh.host_join_window", r#""30m""#),
    ("portal.enabled", "false"),
    ("portal.listen", r#""0.0.0.0:8443""#),
    ("portal.url", r#""https://portal.example.org""#),
    (
        "portal.tls_cert",
        r#""/etc/gatehouse/tls/new-fullchain.pem""#,
    ),
    ("portal.tls_key", r#""/etc/gatehouse/tls/new-privkey.pem""#),
    ("portal.password_login", "false"),
    ("portal.require_totp", "false"),
    ("portal.enrollment_ttl", r#""48h""#),
    ("portal.session_idle", r#""10m""#),
    ("portal.session_max", r#""8h""#),
    ("portal.login_lockout", r#""30m""#),
    ("portal.requests_per_minute", "300"),
    ("portal.auditor_groups", r#"["research"]"#),
    ("admin.socket", r#""/run/gatehouse/other.sock""#),
    ("admin.group", r#""wheel""#),
    ("metrics.listen", r#""127.0.0.1:9587""#),
    ("audit.mirror", r#""/var/log/gatehouse/other.jsonl""#),
    ("audit.mirror_max_mib", "200"),
    ("audit.mirror_keep", "5"),
    ("audit.syslog.address", r#""10.0.2.9:6514""#),
    ("audit.syslog.server_name", r#""logs.example.org""#),
    (
        "audit.syslog.ca_file",
        r#""/etc/gatehouse/syslog-ca-2.pem""#,
    ),
    (
        "audit.syslog.client_cert_file",
        r#""/etc/gatehouse/syslog-client-2.pem""#,
    ),
    (
        "audit.syslog.client_key_file",
        r#""/etc/gatehouse/syslog-client-2.key""#,
    ),
    ("audit.syslog.app_name", r#""gatehouse""#),
    ("audit.syslog.hostname", r#""gw-b.example.org""#),
    ("audit.checkpoint_interval", r#""10s""#),
    ("audit.flows_per_device", "64"),
    ("audit.s3.bucket", r#""other-audit""#),
    ("audit.s3.prefix", r#""elsewhere""#),
    ("audit.s3.retention", r#""800d""#),
    ("group.name", r#""science""#),
    ("group.subnets", r#"["10.0.4.0/24"]"#),
    ("group.ports", "[22, 443]"),
    ("group.oidc_groups", r#"["scientists", "00gabc123"]"#),
    ("group.ssh_principals", r#"["admin"]"#),
    ("aws.region", r#""eu-west-1""#),
    ("aws.apply_on_start", "true"),
    ("aws.exclusive_groups", "true"),
    ("aws.private_route_tables", r#"["rtb-1", "rtb-2"]"#),
    ("aws.admin_cidrs", "[]"),
    ("aws.public_cidrs", r#"["198.51.100.0/24"]"#),
    ("aws.endpoint_url", r#""http://127.0.0.1:5001""#),
    ("aws.imds_endpoint", r#""http://127.0.0.1:8112""#),
    ("aws.instance_id", r#""i-0fedcba987654321""#),
    ("aws.network_interface_id", r#""eni-0fedcba987654321""#),
    ("aws.vpc_id", r#""vpc-0fedcba987654321""#),
    ("aws.subnet_id", r#""subnet-0fedcba987654321""#),
    ("aws.availability_zone", r#""eu-west-3b""#),
    (
        "store.url",
        r#""postgresql://gatehouse@db2.internal:5432/gatehouse?sslmode=verify-full""#,
    ),
    ("store.password_file", r#""/etc/gatehouse/pg-password-2""#),
    ("store.ca_file", r#""/etc/gatehouse/rds-ca-2.pem""#),
    ("ha.node", r#""gw-b""#),
    ("ha.lease_ttl", r#""8s""#),
    ("oidc.issuer", r#""https://login.example.org/realms/team""#),
    ("oidc.client_id", r#""gatehouse-2""#),
    (
        "oidc.client_secret_file",
        r#""/etc/gatehouse/oidc-secret-2""#,
    ),
    ("oidc.ca_file", r#""/etc/gatehouse/idp-ca-2.pem""#),
    ("oidc.display_name", r#""Team login""#),
    ("oidc.scopes", r#"["openid", "email"]"#),
    ("oidc.groups_claim", r#""roles""#),
    ("oidc.username_claim", r#""email""#),
    ("oidc.allowed_email_domains", r#"["example.com"]"#),
    ("oidc.email_verified", r#""if_present""#),
    ("oidc.auto_provision", "false"),
    ("oidc.require_totp", "true"),
    ("oidc.totp_enrollment", r#""first_login""#),
];

/// `text` with `key`'s line in its table (the first `[[group]]` for
/// group keys) set to `value`; panics if `text` does not set the key.
pub fn with_value(text: &str, key: &str, value: &str) -> String {
    let (table, field) = key
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("{key} is not table.key"));
    let header = if table == "group" {
        "[[group]]".to_string()
    } else {
        format!("[{table}]")
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let start = lines
        .iter()
        .position(|l| *l == header)
        .unwrap_or_else(|| panic!("no {header} in the text"));
    let line = lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with('['))
        .position(|l| l.starts_with(&format!("{field} = ")))
        .map(|at| start + 1 + at)
        .unwrap_or_else(|| panic!("FULL does not set {key}"));
    lines[line] = format!("{field} = {value}");
    lines.join("\n")
}
