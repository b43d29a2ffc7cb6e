//! The admin API: HTTP/1.1 + JSON under `/v1/` on a Unix socket (mode 0660,
//! group `admin.group`), for `accessctl` and `curl --unix-socket`. The
//! caller's uid, from `SO_PEERCRED`, is the actor of every audit record.
//!
//! Owns the socket and the request handlers; the paths and wire types live in
//! `gatehouse_config::api`. Does not own the data: every change goes through
//! the store in one transaction with its audit record.

mod aws;
mod backup;
mod certs;
mod devices;
mod error;
mod extract;
mod ha;
mod ssh;
mod system;
mod users;
mod verify_stream;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::routing::{delete, get, post, put};
use axum::serve::IncomingStream;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::ApiFailure;

use crate::access::{Access, Door, Requester};
use crate::audit::event::{Actor, Source};
use crate::gateway::Core;
use crate::running::Running;

/// What the admin handlers work with: the core, the access service, and
/// the record of what is running (for status and the jump host's channels).
#[derive(Clone)]
pub struct AdminState {
    pub core: Core,
    pub access: Access,
    pub running: Running,
    /// Cancelled when accessd stops: long answers (a streamed audit
    /// check) end with it.
    pub shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot create the admin socket's directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("another accessd is already serving the admin socket {path}")]
    InUse { path: PathBuf },
    #[error("cannot remove the stale admin socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot bind the admin socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot set the permissions of the admin socket {path}: {source}")]
    Permissions { path: PathBuf, source: io::Error },
}

/// Who is calling, from the socket's peer credentials.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

impl Caller {
    /// The admin as the access service and the audit log see them.
    pub fn requester(&self) -> Requester {
        Requester {
            actor: Actor::Admin { uid: self.uid },
            source: Source::AdminSocket { pid: self.pid },
            door: Door::Admin,
        }
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(cred) => Caller {
                uid: Some(cred.uid()),
                pid: cred.pid(),
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the admin caller's credentials");
                Caller {
                    uid: None,
                    pid: None,
                }
            }
        }
    }
}

/// Binds the admin socket: removes a stale socket left by a crash (but never
/// one a live accessd answers on), then sets mode 0660 and the admin group.
pub async fn bind(path: &Path, group: &str) -> Result<UnixListener, AdminError> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|source| AdminError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(AdminError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(|source| AdminError::RemoveStale {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| AdminError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    let permissions = |source| AdminError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(permissions)?;
    match nix::unistd::Group::from_name(group) {
        Ok(Some(group)) => {
            std::os::unix::fs::chown(path, None, Some(group.gid.as_raw())).map_err(permissions)?;
        }
        Ok(None) => tracing::info!(
            group,
            "admin group does not exist; the admin socket stays root-only (mode 0660, owner's group)"
        ),
        Err(err) => tracing::warn!(group, error = %err, "cannot look up the admin group"),
    }
    tracing::info!(socket = %path.display(), "admin API listening");
    Ok(listener)
}

/// Serves the admin API on `listener` until `shutdown` is cancelled, then
/// finishes in-flight requests and removes the socket file.
pub fn spawn_admin_api(
    listener: UnixListener,
    state: AdminState,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let app = router(state).into_make_service_with_connect_info::<Caller>();
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "admin API stopped");
        }
        if let Some(path) = path {
            let _ = std::fs::remove_file(path);
        }
    });
}

/// Every route of the admin API.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/status", get(system::status))
        .route("/v1/reload", post(system::reload))
        .route("/v1/groups", get(system::groups))
        .route("/v1/audit", get(system::audit))
        .route("/v1/audit/summary", get(system::audit_summary))
        .route("/v1/audit/verify", get(system::verify))
        .route("/v1/audit/key", get(system::audit_key))
        .route("/v1/audit/status", get(system::audit_status))
        .route("/v1/users", get(users::list).post(users::create))
        .route("/v1/users/{name}", get(users::show).delete(users::remove))
        .route("/v1/users/{name}/disable", post(users::disable))
        .route("/v1/users/{name}/enable", post(users::enable))
        .route("/v1/users/{name}/groups", put(users::set_groups))
        .route("/v1/users/{name}/no-login", put(users::set_no_login))
        .route(
            "/v1/users/{name}/enrollment",
            post(users::new_enrollment_link),
        )
        .route(
            "/v1/users/{name}/keys",
            post(users::add_key).delete(users::remove_key),
        )
        .route("/v1/users/{name}/devices", post(devices::create))
        .route("/v1/users/{name}/devices/{device}", delete(devices::revoke))
        .route("/v1/devices", get(devices::list))
        .route("/v1/backup", get(backup::backup))
        .route("/v1/ssh/channels", get(ssh::list))
        .route("/v1/ssh/ca", get(certs::ca))
        .route("/v1/ssh/host-ca", get(certs::host_ca))
        .route("/v1/ssh/certificates", post(certs::issue))
        .route("/v1/ssh/krl", get(certs::krl))
        .route(
            "/v1/ssh/host-certificates",
            get(certs::host_certs).post(certs::sign_host),
        )
        .route(
            "/v1/ssh/host-certificates/{serial}",
            delete(certs::revoke_host),
        )
        .route("/v1/ssh/host-krl", get(certs::host_krl))
        .route("/v1/ssh/channels/{id}", delete(ssh::kill))
        .route("/v1/aws/plan", get(aws::plan))
        .route("/v1/aws/apply", post(aws::apply))
        .route("/v1/aws/status", get(aws::status))
        .route("/v1/ha", get(ha::status))
        .route("/v1/ha/handover", post(ha::handover))
        .fallback(|| async {
            ApiFailure::not_found("no such admin API path; see `accessctl --help`")
        })
        .method_not_allowed_fallback(|| async {
            ApiFailure::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                gatehouse_config::api::ErrorCode::BadRequest,
                "method not allowed on this path",
            )
        })
        .with_state(state)
}
