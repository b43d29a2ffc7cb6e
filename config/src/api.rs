//! The admin API's wire types: what `accessctl` sends to `accessd` over the
//! admin socket and what comes back. Plain data, shared by both binaries so the
//! two can never disagree on a field name.
//!
//! Paths (all under `/v1`, JSON bodies, HTTP/1.1 over a Unix socket):
//!
//! | method | path | body → response |
//! |---|---|---|
//! | GET | `/v1/status` | → [`StatusResponse`] (with [`VpnStatus`]) |
//! | POST | `/v1/reload` | → [`ReloadResponse`] |
//! | GET | `/v1/users` | → `Vec<`[`UserSummary`]`>` |
//! | POST | `/v1/users` | [`CreateUserRequest`] → [`CreateUserResponse`] |
//! | GET | `/v1/users/{name}` | → [`UserDetail`] |
//! | DELETE | `/v1/users/{name}` | → [`UserDetail`] (as it was) |
//! | POST | `/v1/users/{name}/disable` | → [`UserDetail`] |
//! | POST | `/v1/users/{name}/enable` | → [`UserDetail`] |
//! | PUT | `/v1/users/{name}/groups` | [`SetGroupsRequest`] → [`UserDetail`] |
//! | PUT | `/v1/users/{name}/no-login` | [`SetNoLoginRequest`] → [`UserDetail`] |
//! | POST | `/v1/users/{name}/enrollment` | → [`Enrollment`] (a pending user's new link) |
//! | POST | `/v1/users/{name}/keys` | [`AddKeyRequest`] → [`SshKeyInfo`] |
//! | DELETE | `/v1/users/{name}/keys?fingerprint=SHA256:…` | → [`SshKeyInfo`] |
//! | GET | `/v1/devices[?user=NAME]` | → `Vec<`[`DeviceInfo`]`>` |
//! | POST | `/v1/users/{name}/devices` | [`CreateDeviceRequest`] → [`DeviceConfigResponse`] |
//! | DELETE | `/v1/users/{name}/devices/{device}` | → [`DeviceInfo`] (as it was) |
//! | GET | `/v1/groups` | → `Vec<`[`GroupInfo`]`>` |
//! | GET | `/v1/audit?…` ([`AuditQuery`]) | → `Vec<`[`AuditRecord`]`>` |
//! | GET | `/v1/audit/summary?by=…` ([`AuditQuery`]) | → [`AuditSummary`] |
//! | GET | `/v1/audit/verify` | → [`VerifyReport`] |
//! | GET | `/v1/audit/verify?progress=true` ([`VerifyQuery`]) | → JSON lines ([`VerifyLine`]): [`VerifyProgress`] after each page of records, then the [`VerifyReport`] (or an [`ApiError`]) |
//! | GET | `/v1/backup` | → the database file; [`BackupInfo`] in the [`BACKUP_INFO_HEADER`] header |
//! | GET | `/v1/ssh/channels` | → `Vec<`[`SshChannelInfo`]`>` |
//! | DELETE | `/v1/ssh/channels/{id}` | → [`SshChannelInfo`] (as it was) |
//! | GET | `/v1/aws/plan` | → [`AwsPlanResponse`] |
//! | POST | `/v1/aws/apply` | → [`AwsApplyResponse`] |
//! | GET | `/v1/aws/status` | → [`AwsStatusResponse`] |
//!
//! Every failure is an HTTP error status with an [`ApiError`] body.

use serde::{Deserialize, Serialize};

/// The body of every error response: a stable machine-readable `code`, a
/// sentence for humans, and optional details (one line each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// Stable error codes. Scripts may match on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body or query could not be parsed.
    BadRequest,
    /// A user, device or group name breaks the naming rule.
    InvalidName,
    /// A value (key, duration, group, ...) is not acceptable.
    InvalidValue,
    /// No such user, device, key or group.
    NotFound,
    /// It exists already (user, device, key) or the pool is full.
    Conflict,
    /// The config file on disk is invalid; the running config stays.
    ConfigInvalid,
    /// The audit record could not be written, so the action was refused.
    AuditUnavailable,
    /// Something failed inside the daemon; its log says more.
    Internal,
    /// The config has no `[aws]` section, so gatehouse makes no AWS call.
    AwsNotConfigured,
    /// An AWS call failed (the message names the action and what to do).
    AwsFailed,
    /// The shared database (PostgreSQL) cannot be reached, so nothing that
    /// needs it is done; try again once it is back.
    StoreUnavailable,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub version: String,
    pub gateway: String,
    /// RFC 3339.
    pub started_at: String,
    pub uptime_secs: u64,
    pub config_path: String,
    /// The gateway's WireGuard public key (base64).
    pub wireguard_public_key: String,
    /// `host:port` that device configs point at, when known.
    pub endpoint: Option<String>,
    pub users: UserCounts,
    pub devices: u64,
    pub groups: u64,
    pub audit_records: u64,
    /// What is wrong with this node's audit chain (records cut or rewritten
    /// in the database, a head file that disagreed at start-up), in a
    /// sentence that says what to do; absent while nothing is known to be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_break: Option<String>,
    /// The WireGuard data plane; absent while it is not running (or from a
    /// daemon that predates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn: Option<VpnStatus>,
    /// The SSH jump host; absent while it is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshStatus>,
    /// The HTTPS portal; absent while it is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<PortalStatus>,
    /// Where the store is: the SQLite file or `postgresql://host:port/db`.
    #[serde(default)]
    pub store: String,
    /// One of an HA pair: this node and its role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaRole>,
    /// The audit log's exporters (`[audit.syslog]`); empty without one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_exports: Vec<AuditExportStatus>,
}

/// One exporter of the audit log, in [`StatusResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditExportStatus {
    /// Its name (`syslog`): its cursor's in the store.
    pub name: String,
    /// Where it sends (`host:port`).
    pub receiver: String,
    /// True while a connection to the receiver is up.
    pub connected: bool,
    /// Records in the store the receiver is not yet known to have.
    pub lag_records: u64,
    /// Connections made after the first one.
    pub reconnects: u64,
}

/// The HA part of [`StatusResponse`] (`accessctl ha status` says more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaRole {
    pub node: String,
    /// `active` or `standby`.
    pub role: String,
    pub generation: i64,
}

/// The portal part of [`StatusResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalStatus {
    /// The TCP `host:port` it listens on (the bound port when 0 was asked).
    pub listen: String,
    /// The URL people open, when known.
    pub url: Option<String>,
    /// `SHA256:` + hex of the DER certificate it serves, for pinning and for
    /// checking a browser's warning about a self-signed certificate.
    pub tls_fingerprint: String,
    /// True when accessd generated the certificate (no `portal.tls_cert`).
    pub self_signed: bool,
    /// Sign-in with the `[oidc]` provider, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<SsoStatus>,
}

/// The portal's identity provider as the gateway last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoStatus {
    pub issuer: String,
    /// RFC 3339: when discovery (and the JWKS) last succeeded; `None`: not
    /// yet, and the login page says SSO is unavailable.
    pub last_discovery: Option<String>,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
}

/// The jump host part of [`StatusResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshStatus {
    /// The TCP `host:port` it listens on (the bound port when 0 was asked).
    pub listen: String,
    /// `SHA256:...` of the ed25519 host key, as `ssh-keygen -lf` prints it.
    pub host_key_fingerprint: String,
    /// The host key as an OpenSSH public key line (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    /// A line for `~/.ssh/known_hosts`, for the public endpoint when known.
    pub known_hosts: String,
    /// `SHA256:...` of the SSH user CA key, with `ssh.certificates`: so
    /// the gateways of a pair can be seen to sign with one CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ca_fingerprint: Option<String>,
    /// `SHA256:...` of the SSH host CA key, with `ssh.certificates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ca_fingerprint: Option<String>,
    /// Authenticated connections now.
    pub connections: u64,
    /// Live direct-tcpip channels (connecting or relaying).
    pub channels: Vec<SshChannelInfo>,
}

/// One live direct-tcpip channel of the jump host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshChannelInfo {
    /// The id `accessctl ssh kill` takes; unique while accessd runs.
    pub id: u64,
    pub user: String,
    /// `SHA256:...` of the key the user logged in with.
    pub key_fingerprint: String,
    /// The client's `address:port`.
    pub source: String,
    /// `host:port` as the client asked for it.
    pub requested: String,
    /// The checked address relayed to; absent while still connecting.
    pub resolved: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// Bytes client → target.
    pub bytes_up: u64,
    /// Bytes target → client.
    pub bytes_down: u64,
}

/// `GET /v1/ssh/ca` (and the portal's `GET /api/v1/ssh/ca`): the user CA
/// that signs members' SSH certificates (`ssh.certificates`), for the
/// private hosts' `TrustedUserCAKeys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshCaInfo {
    /// The CA's public line (`ssh-ed25519 AAAA... <comment>`).
    pub public_key: String,
    /// `SHA256:...` of the CA key.
    pub fingerprint: String,
    /// A ready `sshd_config` snippet for a private host.
    pub sshd_snippet: String,
    /// Whether the gateway issues certificates now (`ssh.certificates`).
    pub enabled: bool,
}

/// `GET /v1/ssh/host-ca`: the host CA that signs the private hosts'
/// certificates (`ssh.certificates`), for members' `known_hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshHostCaInfo {
    /// The CA's public line (`ssh-ed25519 AAAA... <comment>`).
    pub public_key: String,
    /// `SHA256:...` of the CA key.
    pub fingerprint: String,
    /// `@cert-authority <patterns> <public line>`: the CA trusted for the
    /// hosts of every group's IPv4 subnets ([`crate::known_hosts`]); a
    /// comment saying so when no group has one.
    pub known_hosts: String,
}

/// `POST /v1/ssh/certificates`: a certificate for one of `user`'s keys
/// (the admin side; the portal's takes only `public_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueCertRequest {
    pub user: String,
    /// An OpenSSH public key line that is one of the user's keys.
    pub public_key: String,
    /// Shorter than `ssh.cert_lifetime` if given; never longer.
    #[serde(default)]
    pub lifetime_secs: Option<u64>,
}

/// An issued SSH user certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// The `ssh-...-cert-v01@openssh.com` line, for `~/.ssh/id_<type>-cert.pub`.
    pub certificate: String,
    pub serial: u64,
    /// `<user>@<gateway name>`.
    pub key_id: String,
    /// The login names it is valid for.
    pub principals: Vec<String>,
    /// Unix seconds.
    pub valid_after: i64,
    /// Unix seconds.
    pub valid_before: i64,
    /// `SHA256:...` of the certified key.
    pub key_fingerprint: String,
    /// The `source-address` critical option (CIDRs, comma-separated).
    pub source_address: String,
}

/// `GET /v1/ssh/krl`: an OpenSSH KRL of every unexpired certificate issued
/// to a disabled or removed member, for the private hosts' `RevokedKeys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KrlResponse {
    /// The KRL file, base64 (standard, padded).
    pub krl_base64: String,
    pub revoked: Vec<RevokedCert>,
}

/// One certificate a KRL revokes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCert {
    pub serial: u64,
    pub user: String,
    /// Unix seconds.
    pub valid_before: i64,
    /// `removed`, `disabled`, `expired`, `pending`, `key_removed` or
    /// `principals_changed`.
    pub why: String,
}

/// `POST /v1/ssh/host-certificates`: a certificate for a private host's
/// own key, signed by the host CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignHostCertRequest {
    /// The host's OpenSSH public key line (its
    /// `/etc/ssh/ssh_host_ed25519_key.pub`).
    pub public_key: String,
    /// The names and addresses members reach the host by.
    pub principals: Vec<String>,
    /// Shorter than `ssh.host_cert_lifetime` if given; never longer.
    #[serde(default)]
    pub lifetime_secs: Option<u64>,
}

/// A host certificate the host CA signed, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCertInfo {
    pub serial: u64,
    pub key_id: String,
    pub principals: Vec<String>,
    /// Unix seconds.
    pub valid_after: i64,
    pub valid_before: i64,
    /// `SHA256:...` of the host key it certifies.
    pub key_fingerprint: String,
    pub issued_at: i64,
    /// The audit actor who asked (`uid:0`).
    pub issued_by: String,
    /// Unix seconds; `None` while it is not revoked.
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    /// It expires within [`HostCertList::expiring_within_secs`] and is not
    /// revoked: sign the host again.
    pub expires_soon: bool,
}

/// A signed host certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHostCert {
    /// The `ssh-...-cert-v01@openssh.com` line, for the host's
    /// `/etc/ssh/ssh_host_ed25519_key-cert.pub`.
    pub certificate: String,
    pub info: HostCertInfo,
}

/// `GET /v1/ssh/host-certificates`: every unexpired host certificate,
/// the soonest to expire first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCertList {
    /// What "soon" is (14 days).
    pub expiring_within_secs: u64,
    pub certificates: Vec<HostCertInfo>,
}

/// `GET /v1/ssh/host-krl`: an OpenSSH KRL of every unexpired host
/// certificate an admin revoked, for members' `RevokedHostKeys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKrlResponse {
    /// The KRL file, base64 (standard, padded).
    pub krl_base64: String,
    /// `@revoked <patterns> <key>` lines, one per revoked certificate's
    /// host key, for members without the KRL.
    pub known_hosts_revoked: Vec<String>,
    pub revoked: Vec<HostCertInfo>,
}

/// The response header of `GET /v1/backup` that carries [`BackupInfo`] as JSON.
pub const BACKUP_INFO_HEADER: &str = "x-gatehouse-backup";

/// What a backup holds: a consistent copy of the whole database, audit log
/// included, whose last audit record is the chain head it restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// RFC 3339.
    pub created_at: String,
    pub schema_version: i64,
    pub users: u64,
    pub devices: u64,
    pub audit_records: u64,
    /// `seq` and `hash` of the last audit record (absent for an empty log).
    pub audit_head_seq: Option<u64>,
    pub audit_head_hash: Option<String>,
    /// The database file's size.
    pub bytes: u64,
}

/// A device counts as connected while its last handshake is younger than
/// this: WireGuard rejects a session this old (`REJECT_AFTER_TIME`).
pub const CONNECTED_WITHIN_SECS: u64 = 180;

/// The data plane part of [`StatusResponse`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpnStatus {
    /// The TUN interface, e.g. `gatehouse0`.
    pub interface: String,
    /// The UDP `host:port` WireGuard listens on.
    pub listen: String,
    /// Devices that are peers in the data plane right now.
    pub peers: u64,
    /// Peers with a handshake in the last [`CONNECTED_WITHIN_SECS`] seconds.
    pub connected: u64,
    /// One row per peer, with the live fields of [`DeviceInfo`] filled in.
    #[serde(default)]
    pub peers_detail: Vec<DeviceInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserCounts {
    pub total: u64,
    pub pending: u64,
    pub active: u64,
    pub disabled: u64,
}

/// `POST /v1/reload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResponse {
    pub config_path: String,
    pub groups: u64,
    /// Keys that changed but only take effect after a restart (listen
    /// addresses, state_dir, admin socket, ...).
    #[serde(default)]
    pub restart_required: Vec<String>,
}

/// A user's life cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserState {
    /// Created by an admin, has not finished enrollment in the portal.
    Pending,
    Active,
    Disabled,
}

impl UserState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }
}

/// One row of `GET /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserSummary {
    pub name: String,
    pub state: UserState,
    pub groups: Vec<String>,
    pub devices: u64,
    pub ssh_keys: u64,
    /// RFC 3339, when the account expires.
    pub expires_at: Option<String>,
    /// True when `expires_at` has passed.
    pub expired: bool,
    pub last_seen: Option<String>,
}

/// `GET /v1/users/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDetail {
    pub name: String,
    pub state: UserState,
    pub groups: Vec<String>,
    /// The union of the user's groups' subnets: exactly what their devices'
    /// `AllowedIPs` say.
    pub subnets: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub expired: bool,
    pub last_seen: Option<String>,
    /// A machine that cannot log in: its devices need no portal login.
    #[serde(default)]
    pub no_login: bool,
    /// Whether the user's devices are peers now, and why (or why not).
    #[serde(default)]
    pub vpn_access: VpnAccessState,
    /// RFC 3339: when the current VPN session ends (a timed session only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_access_until: Option<String>,
    pub ssh_keys: Vec<SshKeyInfo>,
    pub devices: Vec<DeviceInfo>,
    /// The identity at the `[oidc]` provider the user signs in as, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<SsoIdentityInfo>,
}

/// A user's link to their identity at the provider: found by issuer and
/// subject at every SSO login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoIdentityInfo {
    pub issuer: String,
    pub subject: String,
    /// RFC 3339.
    pub linked_at: String,
}

/// A user's VPN access under `vpn.require_login` and `vpn.session_lifetime`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VpnAccessState {
    /// Devices are live while the user is enabled (no login needed).
    Always,
    /// Devices are live until `vpn_access_until` (a portal login).
    Session,
    /// Devices wait for a portal login.
    #[default]
    LoginNeeded,
    /// Disabled or expired.
    Refused,
}

impl VpnAccessState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always (no login needed)",
            Self::Session => "portal session",
            Self::LoginNeeded => "waits for a portal login",
            Self::Refused => "refused (disabled or expired)",
        }
    }
}

/// An SSH public key registered to a user (never a private key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKeyInfo {
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    pub algorithm: String,
    pub comment: String,
    pub added_at: String,
}

/// One WireGuard device of a user. The live fields (`rx_bytes`, `tx_bytes`,
/// `live`) come from the data plane: absent when it is not running, and from
/// daemons that predate them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub user: String,
    pub name: String,
    pub public_key: String,
    /// The device's VPN address, stable for the device's life.
    pub address: String,
    pub created_at: String,
    pub last_activation: Option<String>,
    /// RFC 3339: the data plane's when the device is live, else the store's.
    pub last_handshake: Option<String>,
    /// `ip:port` the device was last heard from, authenticated: the data
    /// plane's when the device is live, else the store's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Bytes received from the device in its current session(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    /// Bytes sent to the device in its current session(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    /// True while the device is a peer in the data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<bool>,
}

/// `POST /v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUserRequest {
    pub name: String,
    pub groups: Vec<String>,
    /// OpenSSH public key lines (`ssh-ed25519 AAAA... comment`).
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// The account expires this many seconds after creation.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// A machine that cannot log in to the portal (see [`UserDetail::no_login`]).
    #[serde(default)]
    pub no_login: bool,
    /// Link the user to this subject (`sub`) at the `[oidc]` provider: they
    /// sign in with SSO, without an enrollment link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_subject: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUserResponse {
    pub user: UserDetail,
    /// The person's one-time link; none for a machine account (`no_login`),
    /// which is active at once and never enrolls.
    pub enrollment: Option<Enrollment>,
}

/// A one-time enrollment link. The token is shown here once; the gateway
/// keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    pub token: String,
    pub url: String,
    pub expires_at: String,
}

/// `PUT /v1/users/{name}/groups`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetGroupsRequest {
    pub groups: Vec<String>,
}

/// `PUT /v1/users/{name}/no-login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetNoLoginRequest {
    pub no_login: bool,
}

/// `POST /v1/users/{name}/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddKeyRequest {
    pub public_key: String,
}

/// Query of `DELETE /v1/users/{name}/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveKeyQuery {
    pub fingerprint: String,
}

/// Query of `GET /v1/devices`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeviceListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `POST /v1/users/{name}/devices`: the device's public key. The private key
/// never reaches the gateway: `accessctl` generates the pair itself when the
/// admin does not bring a public key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateDeviceRequest {
    pub name: String,
    pub public_key: String,
}

/// Everything a client needs for its wg-quick file, except its private key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceConfigResponse {
    pub device: DeviceInfo,
    /// `Address`: the device's address with a host prefix (`/32` or `/128`).
    pub interface_address: String,
    /// The gateway's WireGuard public key.
    pub gateway_public_key: String,
    /// `host:port`.
    pub endpoint: String,
    /// Exactly the user's reachable subnets: a split tunnel, never a default route.
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: u16,
    pub mtu: u16,
}

/// One `[[group]]` of the running config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub subnets: Vec<String>,
    /// `None`: every port.
    pub ports: Option<Vec<u16>>,
    pub members: u64,
}

/// Query of `GET /v1/audit`. Times are RFC 3339 (UTC).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Records whose actor or target is this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A kind prefix, matched on whole dotted segments (`user` matches
    /// `user.add`, not `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only records with a larger `seq` (for `--follow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// Only records with this seq or a smaller one (with `after_seq`: one
    /// page of the log, oldest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through_seq: Option<u64>,
    /// At most this many: the oldest ones after `after_seq` when it is
    /// given (a page), else the newest ones (still returned oldest first).
    /// For `/v1/audit/summary`: rows per page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Records whose target is exactly this (`10.0.3.140:22`, `alice/laptop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Records whose client address is in this CIDR (or is this address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Records about a private host in this CIDR (or this address): a
    /// `vpn.flow`'s destination, the jump host's resolved target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// `/v1/audit/summary` only: how to group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<SummaryBy>,
    /// `/v1/audit/summary` only: rows to skip (the next page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

pub use crate::audit_facets::{Outcome, Via};

/// How `GET /v1/audit/summary` groups the matching records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SummaryBy {
    /// Per user: the hosts they reached (VPN and SSH), first and last seen, bytes.
    User,
    /// Per host: the users who reached it, with the same figures.
    Host,
    /// Per day (UTC): logins, refusals, denials, changes, flows, sessions.
    Day,
    /// Per hour (UTC), with the same counts: the auditor's timeline.
    Hour,
    /// Per kind: how many records, first and last.
    Kind,
}

/// `GET /v1/audit/summary`: one page of rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSummary {
    #[serde(flatten)]
    pub rows: SummaryRows,
    /// The rows skipped before this page.
    pub offset: u64,
    /// Whether more rows follow (ask again with `offset` + rows).
    pub more: bool,
}

/// The rows of an [`AuditSummary`], by grouping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", content = "rows", rename_all = "snake_case")]
pub enum SummaryRows {
    /// Sorted by user, then host.
    User(Vec<HostUse>),
    /// Sorted by host, then user.
    Host(Vec<HostUse>),
    /// Oldest first.
    Day(Vec<PeriodCounts>),
    Hour(Vec<PeriodCounts>),
    /// Most records first.
    Kind(Vec<KindCount>),
}

/// A user's use of one host (and port, device, way in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostUse {
    pub user: String,
    /// The WireGuard device, for traffic through the VPN.
    pub device: Option<String>,
    pub host: String,
    pub via: Via,
    pub port: Option<u16>,
    /// RFC 3339, UTC.
    pub first: String,
    pub last: String,
    pub records: u64,
    /// User to host.
    pub bytes_up: u64,
    /// Host to user.
    pub bytes_down: u64,
}

/// A day's (or an hour's) counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodCounts {
    /// `2026-12-05`, or `2026-12-05T14:00Z` per hour.
    pub period: String,
    pub records: u64,
    /// Portal logins and enrollments, tunnels up.
    pub logins: u64,
    /// Failed logins, refused jump host channels.
    pub refusals: u64,
    /// Data plane denials.
    pub denials: u64,
    /// Changes to users, devices, keys, certificates, config, AWS.
    pub changes: u64,
    pub flows: u64,
    /// Jump host connections.
    pub sessions: u64,
}

/// How many records of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCount {
    pub kind: String,
    pub records: u64,
    pub first: String,
    pub last: String,
}

/// One audit record, exactly as stored and hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    /// RFC 3339, UTC, whole seconds or finer.
    pub time: String,
    pub kind: String,
    pub actor: String,
    pub source: String,
    pub target: String,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// `GET /v1/audit/key`: the public key the audit checkpoints are signed
/// with, which is what third parties verify them against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKeyResponse {
    /// `ssh-ed25519 AAAA... gatehouse-audit@<gateway>`.
    pub public_key: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The `SSHSIG` namespace of the signatures (`ssh-keygen -Y verify -n`).
    pub namespace: String,
    /// The line of an `allowed_signers` file for `ssh-keygen -Y verify`.
    pub allowed_signers: String,
}

/// `GET /v1/audit/status`: how far the log has come, and how far behind
/// each exporter is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStatus {
    /// The newest record's seq (0: the log is empty).
    pub newest_seq: u64,
    /// The newest signed checkpoint's seq and time, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<AuditCheckpointStatus>,
    /// The exporters the config enables, and any other whose cursor the
    /// store keeps.
    pub exporters: Vec<AuditExporterStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpointStatus {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditExporterStatus {
    /// `s3` or `syslog`.
    pub name: String,
    /// Whether the config enables it now.
    pub enabled: bool,
    /// The last record its receiver is known to have.
    pub cursor: u64,
    /// Records not yet exported: `newest_seq - cursor`.
    pub lag: u64,
    /// When the cursor last moved (RFC 3339, UTC); `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
}

/// `GET /v1/audit/verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    /// True when every record is intact and the chain reaches the recorded head.
    pub intact: bool,
    /// Records checked.
    pub records: u64,
    /// The first problem found, if any.
    pub problem: Option<VerifyProblem>,
    /// Signed checkpoints checked (each signature verified).
    #[serde(default)]
    pub checkpoints: u64,
    /// The first record of the keyed chain (HMAC under the audit key);
    /// `None`: no keyed record was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyed_from: Option<u64>,
}

/// Query of `GET /v1/audit/verify`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyQuery {
    /// Answer JSON lines as the check goes ([`VerifyLine`]) instead of one
    /// [`VerifyReport`] at the end.
    #[serde(default)]
    pub progress: bool,
}

/// How far a verification got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyProgress {
    /// Records checked so far.
    pub checked: u64,
    /// Records in the log when the check began.
    pub total: u64,
}

/// One line of `GET /v1/audit/verify?progress=true`: progress lines, then
/// the report, or an error if the check could not finish.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VerifyLine {
    Progress(VerifyProgress),
    Report(VerifyReport),
    Error(ApiError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyProblem {
    /// The record where the chain first breaks.
    pub seq: u64,
    pub kind: VerifyProblemKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyProblemKind {
    /// The record's contents no longer match its hash.
    Altered,
    /// A record is missing (a gap in `seq`, or a broken `prev_hash` link).
    Removed,
    /// Records are out of order.
    Reordered,
    /// The chain ends before the recorded head: records were cut from the end.
    Truncated,
    /// The head file (the anchor) is missing while records exist: a cut end
    /// cannot be detected.
    AnchorMissing,
}

/// What an AWS action does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsActionKind {
    Create,
    Modify,
    Delete,
}

/// One step of an AWS plan, with the reason it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsAction {
    pub kind: AwsActionKind,
    /// E.g. `security group sg-0abc (gatehouse-gw-gateway)`.
    pub resource: String,
    /// E.g. `revoke ingress TCP 22 from 0.0.0.0/0`.
    pub change: String,
    pub reason: String,
}

/// The instance facts the provisioner works with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsFacts {
    pub region: String,
    pub instance_id: String,
    pub availability_zone: String,
    pub network_interface_id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    /// True when instance metadata (IMDSv2) was asked; false: all from the config.
    pub from_metadata: bool,
}

/// `GET /v1/aws/plan`: what `apply` would do now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AwsPlanResponse {
    pub gateway: String,
    pub facts: AwsFacts,
    /// Empty when AWS matches the config.
    pub actions: Vec<AwsAction>,
    /// What apply leaves alone but a person should know: other security
    /// groups on the gateway instance that open TCP 22, the portal or the
    /// jump port wider than configured (detached with `aws.exclusive_groups`).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `POST /v1/aws/apply`: what was done. A failure half-way is an
/// [`ApiError`] (`aws_failed`) whose details list the changes made before it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AwsApplyResponse {
    pub gateway: String,
    pub facts: AwsFacts,
    pub applied: Vec<AwsAction>,
    /// The elastic IP device configs use with `public_endpoint = "auto"`.
    pub elastic_ip: Option<String>,
    /// A fresh plan after the apply; empty unless something changed meanwhile.
    pub remaining: Vec<AwsAction>,
}

/// `GET /v1/aws/status`: the footprint as AWS describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AwsStatusResponse {
    pub gateway: String,
    pub facts: AwsFacts,
    pub elastic_ip: Option<AwsElasticIp>,
    pub security_groups: Vec<AwsGroupStatus>,
    pub source_dest_check: Option<bool>,
    pub routes: Vec<AwsRouteStatus>,
    pub ssm_parameter: AwsParameterStatus,
    /// What `apply` would do; empty when in sync.
    pub pending: Vec<AwsAction>,
    /// As in [`AwsPlanResponse::warnings`].
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsElasticIp {
    pub public_ip: String,
    pub allocation_id: String,
    pub network_interface_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsGroupStatus {
    /// `gateway` or `targets`.
    pub role: String,
    pub id: String,
    pub name: String,
    /// One line per ingress rule, e.g. `UDP 51820 from 0.0.0.0/0`.
    pub ingress: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsRouteStatus {
    pub route_table_id: String,
    pub destination: String,
    /// `ok`, `missing`, or `points at <target>`.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsParameterStatus {
    pub name: String,
    pub present: bool,
    pub secure_string: bool,
}

/// `GET /v1/ha`: an HA pair as this node and the shared database see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HaStatusResponse {
    /// This node (`ha.node`).
    pub node: String,
    /// This node's role: `active` or `standby`.
    pub role: String,
    /// The lease generation this node holds or last held (0: never).
    pub generation: i64,
    pub lease_ttl_secs: u64,
    /// The lease in the database; absent when it cannot be read.
    pub lease: Option<HaLease>,
    /// Each node's last report.
    pub nodes: Vec<HaNode>,
    /// The last failover (`ha.failover` in the audit log), if any.
    pub last_failover: Option<HaFailover>,
    /// Why the database could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_error: Option<String>,
}

/// The lease row. Times are RFC 3339 with milliseconds, by the database's clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HaLease {
    /// Who holds a live lease (none: released or run out).
    pub holder: Option<String>,
    pub generation: i64,
    pub acquired_at: Option<String>,
    pub renewed_at: Option<String>,
    pub expires_at: String,
    /// Until expiry, from the database's now (negative: run out).
    pub expires_in_ms: i64,
}

/// One node of the pair, as it last reported itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HaNode {
    pub node: String,
    /// `active`, `standby` or `stopped`.
    pub role: String,
    pub generation: i64,
    pub seen_at: String,
    pub seen_ago_ms: i64,
    /// Its last renewal of the lease (RFC 3339), if it was active.
    pub last_renewal: Option<String>,
    pub failovers: u64,
}

/// A failover: the standby took over from an active whose lease ran out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HaFailover {
    /// When it was recorded (RFC 3339).
    pub at: String,
    pub from: Option<String>,
    pub to: String,
    pub generation: i64,
    /// `expired` for a failover.
    pub cause: String,
    /// From the old active's last renewal to the take-over (ms).
    pub without_active_ms: Option<i64>,
    /// How long moving the traffic took (ms).
    pub takeover_ms: Option<u64>,
}

/// `POST /v1/ha/handover`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HaHandoverResponse {
    pub node: String,
    /// The generation released; the other node takes over with the next.
    pub released_generation: i64,
}
