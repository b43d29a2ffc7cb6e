//! Admin handlers for the SSH CAs (`ssh.certificates`): the user CA's
//! public side and sshd snippet, the host CA's public side and
//! `known_hosts` line, a certificate for one of a user's keys, and the KRL;
//! the private hosts' certificates: sign, list, revoke, and their KRL.
//! The rules are the access service's (`access::certs`,
//! `access::host_certs`).

use axum::Json;
use axum::extract::{ConnectInfo, State};
use gatehouse_config::api::{
    HostCertInfo, HostCertList, HostKrlResponse, IssueCertRequest, IssuedCert, KrlResponse,
    SignHostCertRequest, SignedHostCert, SshCaInfo, SshHostCaInfo,
};

use super::error::ApiFailure;
use super::extract::{Body, PathArgs};
use super::{AdminState, Caller};

pub async fn ca(State(admin): State<AdminState>) -> Result<Json<SshCaInfo>, ApiFailure> {
    Ok(Json(admin.access.ssh_ca_info()?))
}

pub async fn host_ca(State(admin): State<AdminState>) -> Result<Json<SshHostCaInfo>, ApiFailure> {
    Ok(Json(admin.access.ssh_host_ca_info()?))
}

pub async fn issue(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Body(req): Body<IssueCertRequest>,
) -> Result<Json<IssuedCert>, ApiFailure> {
    let by = caller.requester();
    let lifetime = req.lifetime_secs.map(std::time::Duration::from_secs);
    Ok(Json(
        admin
            .access
            .issue_certificate(&by, &req.user, &req.public_key, lifetime)
            .await?,
    ))
}

pub async fn krl(State(admin): State<AdminState>) -> Result<Json<KrlResponse>, ApiFailure> {
    Ok(Json(admin.access.revocation_list().await?))
}

pub async fn sign_host(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Body(req): Body<SignHostCertRequest>,
) -> Result<Json<SignedHostCert>, ApiFailure> {
    let by = caller.requester();
    let lifetime = req.lifetime_secs.map(std::time::Duration::from_secs);
    Ok(Json(
        admin
            .access
            .sign_host_certificate(&by, &req.public_key, &req.principals, lifetime)
            .await?,
    ))
}

pub async fn host_certs(State(admin): State<AdminState>) -> Result<Json<HostCertList>, ApiFailure> {
    Ok(Json(admin.access.host_certificates().await?))
}

pub async fn revoke_host(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(serial): PathArgs<u64>,
) -> Result<Json<HostCertInfo>, ApiFailure> {
    let by = caller.requester();
    Ok(Json(
        admin.access.revoke_host_certificate(&by, serial).await?,
    ))
}

pub async fn host_krl(
    State(admin): State<AdminState>,
) -> Result<Json<HostKrlResponse>, ApiFailure> {
    Ok(Json(admin.access.host_revocation_list().await?))
}
