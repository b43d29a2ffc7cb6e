//! One direct-tcpip channel, in its own tracked task: re-check the user,
//! resolve and check the target, connect (bounded by `ssh.connect_timeout`),
//! write `ssh.session.start`, and only then accept the channel; relay until
//! either side closes, the channel idles out, or it is killed or revoked;
//! then write `ssh.session.end` with the byte counts.

use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelOpenFailure};

use super::Shared;
use super::audit::{AskedChannel, ChannelRefused, SessionEnded, SessionStarted, cert_fields};
use super::conn_state::LoginKey;
use super::policy::{Requested, TargetPolicy, parse_requested};
use super::registry::{ChannelGuard, TooManyChannels};
use super::relay::{self, ConnectError};
use crate::audit::event::{Actor, Kind, Source, event};
use crate::auth::Standing;

/// Who opened the channel, and what they asked for.
struct Ask {
    user: String,
    key: LoginKey,
    source: std::net::SocketAddr,
    requested: String,
}

impl Ask {
    /// An audit event of this channel, by its user from their address.
    fn event(&self, kind: Kind) -> crate::store::NewAuditEvent {
        event(
            kind,
            Actor::User(self.user.clone()),
            Source::Peer(self.source),
        )
        .on(self.requested.clone())
    }
}

/// The logged-in user who opens a channel, and the target they ask for.
pub(super) struct Opener<'a> {
    pub user: String,
    pub key: LoginKey,
    pub peer: std::net::SocketAddr,
    pub host: &'a str,
    pub port: u32,
}

/// Called by the handler: decides what it can at once (a well-formed
/// target? under the channel limit, by `reserve`?) and spawns the rest.
/// `reserve` takes the channel's place in the registry (`None`: the
/// connection is no longer logged in).
pub(super) fn open(
    shared: &Arc<Shared>,
    opener: Opener<'_>,
    reserve: impl FnOnce(String, usize) -> Option<Result<ChannelGuard, TooManyChannels>>,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    handle: Handle,
) {
    let shared = shared.clone();
    let ask = Ask {
        user: opener.user,
        key: opener.key,
        source: opener.peer,
        requested: format!("{}:{}", opener.host, opener.port),
    };
    let target = match parse_requested(opener.host, opener.port) {
        Ok(target) => target,
        Err(denied) => {
            shared.tracker.spawn(deny(
                shared.clone(),
                ask,
                denied.code(),
                denied.to_string(),
                reply,
            ));
            return;
        }
    };
    let limit = shared.core.config().ssh.max_channels_per_user as usize;
    let reserved = reserve(ask.requested.clone(), limit);
    let guard = match reserved {
        Some(Ok(guard)) => guard,
        Some(Err(too_many)) => {
            let message = format!(
                "at most {} channels per user (ssh.max_channels_per_user)",
                too_many.limit
            );
            shared.tracker.spawn(deny(
                shared.clone(),
                ask,
                "too_many_channels",
                message,
                reply,
            ));
            return;
        }
        None => return,
    };
    let task_shared = shared.clone();
    shared.tracker.spawn(async move {
        run(task_shared, ask, target, channel, reply, handle, guard).await;
    });
}

async fn run(
    shared: Arc<Shared>,
    ask: Ask,
    target: Requested,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    handle: Handle,
    guard: ChannelGuard,
) {
    let config = shared.core.config();
    // The groups (and state) now, not at login: a change applies to the
    // next channel at once.
    let name = ask.user.clone();
    let now = crate::time_fmt::now_unix();
    let user = match shared.core.store().read(move |r| r.user(&name)).await {
        Ok(Some(user)) if Standing::of(&user, now).in_good_standing() => user,
        Ok(_) => {
            return deny(
                shared,
                ask,
                "user_not_active",
                "access revoked".into(),
                reply,
            )
            .await;
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot read the store for an SSH channel");
            return deny(
                shared,
                ask,
                "store_error",
                "the gateway cannot check access now".into(),
                reply,
            )
            .await;
        }
    };
    let policy = config.policy();
    let local_addrs = shared.local_addrs();
    let check = TargetPolicy {
        policy: &policy,
        user_groups: &user.groups,
        allowed_ports: &config.ssh.allowed_ports,
        local_addrs: &local_addrs,
    };
    let timeout = config.ssh.connect_timeout;
    let connected = tokio::select! {
        connected = relay::connect(&target, &check, timeout) => connected,
        () = guard.token().cancelled() => {
            let reason = guard.stats().reason().unwrap_or_else(|| "gateway shutting down".into());
            return deny(shared, ask, "closed", reason, reply).await;
        }
    };
    let (stream, addr) = match connected {
        Ok(connected) => connected,
        Err(ConnectError::Denied(denied)) => {
            return deny(shared, ask, denied.code(), denied.to_string(), reply).await;
        }
        Err(err) => {
            let code = match err {
                ConnectError::Timeout { .. } => "connect_timeout",
                _ => "connect_failed",
            };
            return reject(shared, ask, code, err.to_string(), reply, 2).await;
        }
    };
    guard.set_resolved(addr);
    let start = ask.event(Kind::SshSessionStart).with(&SessionStarted::new(
        guard.id(),
        &ask.key,
        ask.requested.clone(),
        addr,
    ));
    // Audited before it is acknowledged; no record, no channel.
    if !shared.audit(start).await {
        reply
            .reject(ChannelOpenFailure::Other {
                code: 2,
                reason: "the gateway cannot write its audit log".into(),
            })
            .await;
        return;
    }
    let channel_id = channel.id();
    reply.accept().await;
    let (incoming, outgoing) = channel.split();
    let reason = relay::relay(
        incoming,
        &outgoing,
        stream,
        guard.stats(),
        config.ssh.idle_timeout,
        guard.token(),
    )
    .await;
    // Shutdown cancels every channel at once, without a per-channel reason.
    let reason = if shared.shutdown.is_cancelled() && guard.stats().reason().is_none() {
        "the gateway is shutting down".to_string()
    } else {
        reason
    };
    let _ = handle.close(channel_id).await;
    let stats = guard.stats();
    let (cert_serial, cert_key_id) = cert_fields(&ask.key);
    let end = ask.event(Kind::SshSessionEnd).with(&SessionEnded {
        channel: guard.id(),
        key_fingerprint: ask.key.fingerprint.clone(),
        cert_serial,
        cert_key_id,
        resolved: addr.to_string(),
        bytes_up: stats.up.load(std::sync::atomic::Ordering::Relaxed),
        bytes_down: stats.down.load(std::sync::atomic::Ordering::Relaxed),
        duration_ms: u64::try_from(guard.started().elapsed().as_millis()).unwrap_or(u64::MAX),
        reason,
    });
    shared.record(end).await;
    drop(guard);
}

/// Refused by policy: `ssh.forward.deny`, administratively prohibited.
async fn deny(
    shared: Arc<Shared>,
    ask: Ask,
    code: &'static str,
    message: String,
    reply: ChannelOpenHandle,
) {
    reject(shared, ask, code, message, reply, 1).await;
}

async fn reject(
    shared: Arc<Shared>,
    ask: Ask,
    code: &'static str,
    message: String,
    reply: ChannelOpenHandle,
    failure_code: u32,
) {
    let (cert_serial, cert_key_id) = cert_fields(&ask.key);
    let record = ask.event(Kind::SshForwardDeny).with(&ChannelRefused {
        asked: AskedChannel {
            channel: "direct-tcpip".into(),
            target: ask.requested.clone(),
        },
        key_fingerprint: ask.key.fingerprint.clone(),
        cert_serial,
        cert_key_id,
        reason: code.into(),
        message: message.clone(),
    });
    shared.audit_refusal(record, code).await;
    reply
        .reject(ChannelOpenFailure::Other {
            code: failure_code,
            reason: message,
        })
        .await;
}
