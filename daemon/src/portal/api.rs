//! The JSON API under `/api/v1/`, shared by the pages' script and by other
//! clients. Bodies are JSON (`Content-Type: application/json` is required,
//! which also keeps cross-site forms out); a logged-in client sends the
//! session cookie and, on every state-changing call, `X-CSRF-Token` from the
//! login answer.
//!
//! | Method | Path | Body → answer |
//! |---|---|---|
//! | POST | `/api/v1/login` | `{user, password, totp_code}` → [`LoginAnswer`] + cookie |
//! | POST | `/api/v1/logout` | → 204 |
//! | GET | `/api/v1/whoami` | → [`WhoAmI`] |
//! | GET | `/api/v1/devices` | → `[DeviceInfo]` |
//! | POST | `/api/v1/devices` | `{name, public_key}` → `DeviceConfigResponse` |
//! | DELETE | `/api/v1/devices/{name}` | → `DeviceInfo` (as it was) |
//! | POST | `/api/v1/devices/gateway-keyed` | `{name}` → [`GatewayKeyed`]: for browsers without X25519 |
//! | GET | `/api/v1/ssh/ca` | → `SshCaInfo` (with `ssh.certificates`) |
//! | POST | `/api/v1/ssh/certificates` | `{public_key}` → `IssuedCert` (a new key is added to the member's first) |
//! | GET | `/api/v1/enroll/{token}` | → [`EnrollOfferAnswer`] |
//! | POST | `/api/v1/enroll/{token}` | `{password, totp_secret, totp_code}` → [`LoginAnswer`] + cookie |

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_config::api::{
    DeviceConfigResponse, DeviceInfo, IssuedCert, SignedHostCert, SshCaInfo, SshKeyInfo,
    VpnAccessState,
};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

use super::PortalState;
use super::error::Failure;
use super::flows::{self, EnrollInput, LoggedIn, LoginInput};
use super::sessions::{ClientAddr, Session, clear_session_cookie, session_cookie};
use crate::access::KeyOrigin;
use crate::access::host_join::{JoinError, JoinRequest};
use crate::time_fmt::{now_unix, rfc3339, rfc3339_opt};

/// The answer to a login or enrollment.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginAnswer {
    pub user: String,
    /// Send as `X-CSRF-Token` on every state-changing call.
    pub csrf_token: String,
}

/// Who is logged in, and what they may reach.
#[derive(Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    pub user: String,
    pub groups: Vec<String>,
    pub subnets: Vec<String>,
    /// RFC 3339; the account's expiry set by an admin.
    pub account_expires_at: Option<String>,
    /// RFC 3339; when this session ends at the latest.
    pub session_expires_at: String,
    /// How this session's login was made: `password` or `oidc`.
    pub login_method: &'static str,
    /// Whether this user's devices are peers now, and why.
    pub vpn_access: VpnAccessState,
    /// RFC 3339; when VPN access from the last login ends (a login
    /// session under `vpn.require_login` only).
    pub vpn_access_until: Option<String>,
    pub csrf_token: String,
}

/// `POST /api/v1/ssh-keys`.
#[derive(Debug, Deserialize)]
pub struct NewSshKey {
    /// One OpenSSH public key line.
    pub public_key: String,
}

/// `DELETE /api/v1/ssh-keys?fingerprint=SHA256:...`.
#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    pub fingerprint: String,
}

#[derive(Debug, Deserialize)]
pub struct NewDevice {
    pub name: String,
    pub public_key: String,
}

#[derive(Debug, Deserialize)]
pub struct NewGatewayKeyedDevice {
    pub name: String,
}

/// A device whose key pair the gateway made because the browser could not:
/// the private key is in this answer only, and was never stored.
#[derive(Serialize, Deserialize)]
pub struct GatewayKeyed {
    pub config: DeviceConfigResponse,
    pub private_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnrollOfferAnswer {
    pub user: String,
    pub require_totp: bool,
    pub totp_secret: String,
    pub otpauth_uri: String,
}

pub async fn login(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    body: Result<Json<LoginInput>, JsonRejection>,
) -> Result<Response, Failure> {
    let Json(input) = body.map_err(json_failure)?;
    let logged_in = flows::login(&state, source, input).await?;
    Ok(logged_in_answer(logged_in))
}

pub async fn logout(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    session: Session,
) -> Result<Response, Failure> {
    session.check_csrf(Session::header_csrf(&headers))?;
    flows::logout(&state, source, &session).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(SET_COOKIE, clear_session_cookie())],
    )
        .into_response())
}

pub async fn whoami(State(state): State<PortalState>, session: Session) -> Json<WhoAmI> {
    let config = state.core.config();
    let max = i64::try_from(config.portal.session_max.as_secs()).unwrap_or(i64::MAX);
    let access = state.access.member_access(&session.user, now_unix());
    Json(WhoAmI {
        user: session.user.name.clone(),
        groups: session.user.groups.clone(),
        subnets: access.subnets,
        account_expires_at: session.user.expires_at.map(rfc3339),
        session_expires_at: rfc3339(session.created_at.saturating_add(max)),
        login_method: session.method.as_str(),
        vpn_access: access.vpn,
        vpn_access_until: rfc3339_opt(access.vpn_until),
        csrf_token: session.csrf.clone(),
    })
}

pub async fn devices(
    State(state): State<PortalState>,
    session: Session,
) -> Result<Json<Vec<DeviceInfo>>, Failure> {
    Ok(Json(state.access.devices(Some(&session.user.name)).await?))
}

pub async fn add_device(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    session: Session,
    body: Result<Json<NewDevice>, JsonRejection>,
) -> Result<Json<DeviceConfigResponse>, Failure> {
    session.check_csrf(Session::header_csrf(&headers))?;
    let Json(req) = body.map_err(json_failure)?;
    let config = state
        .access
        .create_device(
            &flows::requester(source, &session),
            &session.user.name,
            &req.name,
            &req.public_key,
            KeyOrigin::Client,
        )
        .await?;
    Ok(Json(config))
}

pub async fn add_device_gateway_keyed(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    session: Session,
    body: Result<Json<NewGatewayKeyedDevice>, JsonRejection>,
) -> Result<Json<GatewayKeyed>, Failure> {
    session.check_csrf(Session::header_csrf(&headers))?;
    let Json(req) = body.map_err(json_failure)?;
    let secret = StaticSecret::random_from_rng(OsRng);
    let public = STANDARD.encode(PublicKey::from(&secret).as_bytes());
    let config = state
        .access
        .create_device(
            &flows::requester(source, &session),
            &session.user.name,
            &req.name,
            &public,
            KeyOrigin::Gateway,
        )
        .await?;
    // Returned once; `secret` is dropped (and zeroed) when this returns.
    let private_key = STANDARD.encode(secret.to_bytes());
    Ok(Json(GatewayKeyed {
        config,
        private_key,
    }))
}

/// The member's SSH keys for the jump host.
pub async fn ssh_keys(
    State(state): State<PortalState>,
    session: Session,
) -> Result<Json<Vec<SshKeyInfo>>, Failure> {
    let detail = state.access.user_detail(&session.user.name).await?;
    Ok(Json(detail.ssh_keys))
}

/// Adds one of the member's own SSH keys (the service `accessctl user
/// add-key` uses; audited `user.key.add` via portal).
pub async fn add_ssh_key(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    session: Session,
    body: Result<Json<NewSshKey>, JsonRejection>,
) -> Result<Json<SshKeyInfo>, Failure> {
    session.check_csrf(Session::header_csrf(&headers))?;
    let Json(req) = body.map_err(json_failure)?;
    let by = flows::requester(source, &session);
    Ok(Json(
        state
            .access
            .add_ssh_key(&by, &session.user.name, &req.public_key)
            .await?,
    ))
}

/// The SSH user CA's public side (`ssh.certificates`).
pub async fn ssh_ca(
    State(state): State<PortalState>,
    _session: Session,
) -> Result<Json<SshCaInfo>, Failure> {
    Ok(Json(state.access.ssh_ca_info()?))
}

/// A certificate for one of the member's SSH keys (a new key becomes
/// one of theirs first), valid for `ssh.cert_lifetime`.
pub async fn issue_certificate(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    session: Session,
    body: Result<Json<NewSshKey>, JsonRejection>,
) -> Result<Json<IssuedCert>, Failure> {
    session.check_csrf(Session::header_csrf(&headers))?;
    let Json(req) = body.map_err(json_failure)?;
    let by = flows::requester(source, &session);
    Ok(Json(
        state
            .access
            .issue_certificate(&by, &session.user.name, &req.public_key, None)
            .await?,
    ))
}

/// A private EC2 host joining by instance identity (`ssh.host_join`): no
/// session, the signed identity document is the proof; the rules are
/// `access::host_join`'s.
pub async fn join_host(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    body: Result<Json<JoinRequest>, JsonRejection>,
) -> Result<Json<SignedHostCert>, Failure> {
    if !state.host_joins.allow(source, std::time::Instant::now()) {
        return Err(Failure::rate_limited());
    }
    let Json(request) = body.map_err(json_failure)?;
    match state.access.join_host(source, &request).await {
        Ok(signed) => Ok(Json(signed)),
        Err(JoinError::Off) => Err(Failure::not_found(JoinError::Off.to_string())),
        Err(JoinError::Refused(refusal)) => Err(Failure::new(
            StatusCode::FORBIDDEN,
            refusal.code(),
            format!("refused: {refusal}"),
        )),
        Err(JoinError::Unavailable(why)) => {
            tracing::warn!(%source, reason = %why, "a host join could not be judged");
            Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the gateway cannot check instances now; try again later",
            ))
        }
        Err(JoinError::Sign(err)) => Err(err.into()),
    }
}

/// Removes one of the member's SSH keys.
pub async fn remove_ssh_key(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    session: Session,
    Query(query): Query<KeyQuery>,
) -> Result<Json<SshKeyInfo>, Failure> {
    session.check_csrf(Session::header_csrf(&headers))?;
    let by = flows::requester(source, &session);
    Ok(Json(
        state
            .access
            .remove_ssh_key(&by, &session.user.name, &query.fingerprint)
            .await?,
    ))
}

pub async fn revoke_device(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    session: Session,
    Path(name): Path<String>,
) -> Result<Json<DeviceInfo>, Failure> {
    session.check_csrf(Session::header_csrf(&headers))?;
    let by = flows::requester(source, &session);
    Ok(Json(
        state
            .access
            .revoke_device(&by, &session.user.name, &name)
            .await?,
    ))
}

pub async fn enroll_offer(
    State(state): State<PortalState>,
    Path(token): Path<String>,
) -> Result<Json<EnrollOfferAnswer>, Failure> {
    let offer = flows::enroll_offer(&state, &token).await?;
    Ok(Json(EnrollOfferAnswer {
        user: offer.user,
        require_totp: offer.require_totp,
        totp_secret: offer.totp_secret,
        otpauth_uri: offer.otpauth_uri,
    }))
}

pub async fn enroll(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    Path(token): Path<String>,
    body: Result<Json<EnrollInput>, JsonRejection>,
) -> Result<Response, Failure> {
    let Json(input) = body.map_err(json_failure)?;
    let logged_in = flows::enroll(&state, source, &token, input).await?;
    Ok(logged_in_answer(logged_in))
}

fn logged_in_answer(logged_in: LoggedIn) -> Response {
    (
        [(
            SET_COOKIE,
            session_cookie(&logged_in.token, logged_in.max_age_secs),
        )],
        Json(LoginAnswer {
            user: logged_in.user,
            csrf_token: logged_in.csrf,
        }),
    )
        .into_response()
}

fn json_failure(rejection: JsonRejection) -> Failure {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_request",
            "Send the body as JSON with Content-Type: application/json.",
        ),
        JsonRejection::BytesRejection(too_large)
            if too_large.status() == StatusCode::PAYLOAD_TOO_LARGE =>
        {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "The request body is larger than {} bytes.",
                    super::MAX_BODY_BYTES
                ),
            )
        }
        other => Failure::bad_request(format!("Malformed JSON request: {}", other.body_text())),
    }
}
