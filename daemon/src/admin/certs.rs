//! Admin handlers for the SSH CAs (`ssh.certificates`): the user CA's
//! public side and sshd snippet, the host CA's public side and
//! `known_hosts` line, a certificate for one of a user's keys, and the KRL.
//! The rules are the access service's (`access::certs`).

use axum::Json;
use axum::extract::{ConnectInfo, State};
use gatehouse_config::api::{IssueCertRequest, IssuedCert, KrlResponse, SshCaInfo, SshHostCaInfo};

use super::error::ApiFailure;
use super::extract::Body;
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
