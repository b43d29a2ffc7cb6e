//! Admin handlers for users and their SSH keys: parse, call
//! [`crate::access`], render.

use axum::Json;
use axum::extract::{ConnectInfo, State};
use gatehouse_config::api::{
    AddKeyRequest, CreateUserRequest, CreateUserResponse, Enrollment, RemoveKeyQuery,
    SetGroupsRequest, SetNoLoginRequest, SshKeyInfo, UserDetail, UserState, UserSummary,
};

use super::error::ApiFailure;
use super::extract::{Body, PathArgs, Query};
use super::{AdminState, Caller};
use crate::access::users::NewMember;

type ApiResult<T> = Result<Json<T>, ApiFailure>;

pub async fn list(State(admin): State<AdminState>) -> ApiResult<Vec<UserSummary>> {
    Ok(Json(admin.access.users().await?))
}

pub async fn show(
    State(admin): State<AdminState>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<UserDetail> {
    Ok(Json(admin.access.user_detail(&name).await?))
}

pub async fn create(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Body(req): Body<CreateUserRequest>,
) -> ApiResult<CreateUserResponse> {
    let new = NewMember {
        name: req.name,
        groups: req.groups,
        ssh_keys: req.ssh_keys,
        expires_in_secs: req.expires_in_secs,
        no_login: req.no_login,
        oidc_subject: req.oidc_subject,
    };
    let (user, enrollment) = admin.access.create_user(&caller.requester(), new).await?;
    Ok(Json(CreateUserResponse { user, enrollment }))
}

pub async fn disable(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<UserDetail> {
    let by = caller.requester();
    Ok(Json(
        admin
            .access
            .set_user_state(&by, &name, UserState::Disabled)
            .await?,
    ))
}

pub async fn enable(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<UserDetail> {
    let by = caller.requester();
    Ok(Json(
        admin
            .access
            .set_user_state(&by, &name, UserState::Active)
            .await?,
    ))
}

pub async fn remove(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<UserDetail> {
    Ok(Json(
        admin.access.remove_user(&caller.requester(), &name).await?,
    ))
}

pub async fn set_groups(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
    Body(req): Body<SetGroupsRequest>,
) -> ApiResult<UserDetail> {
    let by = caller.requester();
    Ok(Json(
        admin.access.set_user_groups(&by, &name, req.groups).await?,
    ))
}

pub async fn set_no_login(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
    Body(req): Body<SetNoLoginRequest>,
) -> ApiResult<UserDetail> {
    let by = caller.requester();
    Ok(Json(
        admin.access.set_no_login(&by, &name, req.no_login).await?,
    ))
}

pub async fn new_enrollment_link(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<Enrollment> {
    let by = caller.requester();
    Ok(Json(admin.access.new_enrollment_link(&by, &name).await?))
}

pub async fn add_key(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
    Body(req): Body<AddKeyRequest>,
) -> ApiResult<SshKeyInfo> {
    let by = caller.requester();
    Ok(Json(
        admin
            .access
            .add_ssh_key(&by, &name, &req.public_key)
            .await?,
    ))
}

pub async fn remove_key(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(name): PathArgs<String>,
    Query(query): Query<RemoveKeyQuery>,
) -> ApiResult<SshKeyInfo> {
    let by = caller.requester();
    Ok(Json(
        admin
            .access
            .remove_ssh_key(&by, &name, &query.fingerprint)
            .await?,
    ))
}
