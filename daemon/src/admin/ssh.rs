//! Admin handlers for the SSH jump host: list the live channels, kill one
//! (audited as `ssh.channel.kill`; the channel's own `ssh.session.end`
//! follows with the reason).

use axum::Json;
use axum::extract::{ConnectInfo, State};
use gatehouse_config::api::SshChannelInfo;
use serde_json::json;

use super::error::ApiFailure;
use super::extract::PathArgs;
use super::{AdminState, Caller};
use crate::audit::event::{Kind, event};

pub async fn list(
    State(admin): State<AdminState>,
) -> Result<Json<Vec<SshChannelInfo>>, ApiFailure> {
    let ssh = admin.running.ssh.as_ref().ok_or_else(not_running)?;
    Ok(Json(ssh.registry().channels()))
}

pub async fn kill(
    State(admin): State<AdminState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    PathArgs(id): PathArgs<u64>,
) -> Result<Json<SshChannelInfo>, ApiFailure> {
    let ssh = admin.running.ssh.as_ref().ok_or_else(not_running)?;
    let Some(channel) = ssh.registry().channels().into_iter().find(|c| c.id == id) else {
        return Err(ApiFailure::not_found(format!(
            "no live SSH channel {id}; see `accessctl ssh list`"
        )));
    };
    // Audited before it takes effect: if the record cannot be written, the
    // channel stays.
    let by = caller.requester();
    let record = event(Kind::SshChannelKill, by.actor.clone(), by.source)
        .on(channel.requested.clone())
        .detail(json!({ "channel": id, "user": channel.user, "source": channel.source }));
    admin
        .core
        .store()
        .write(move |w| w.audit(record).map(drop))
        .await?;
    let reason = format!("killed by {}", by.actor);
    let killed = ssh
        .registry()
        .kill_channel(id, &reason)
        .ok_or_else(|| ApiFailure::not_found(format!("SSH channel {id} closed meanwhile")))?;
    Ok(Json(killed))
}

fn not_running() -> ApiFailure {
    ApiFailure::not_found("the SSH jump host is not running (ssh.enabled = false)")
}
